"""Evaluation statistics that agree with R's pROC, rms and dcurves.

Plain-array functions, usable from notebooks: ``auc_ci(y, score)`` and
``delong_test(y, score_a, score_b)`` and the rest below; what a clinical statistician adds
(Hmisc/rms/pmsampsize/dcurves/metafor-grade): ``nri``/``idi``/``improve_prob`` (reclassification),
``net_interventions_avoided``/``interventions_table``, ``bootstrap_validate``/``validate_logistic``
(optimism correction), ``nomogram``, ``pmsampsize_binary`` (sample size), ``subgroup_auc``; for several rows per
patient ``clustered_auc_ci``/``clustered_auc_test`` (Obuchowski) and ``clustered_metrics_at``; the test/out-of-fold
logit scale ``logit_scale``. Inputs with missing
values or a single outcome class raise :class:`ceusfusion.core.errors.CeusError`.
"""

from ceusfusion.stats.calibration import (
                          binned_curve,
                          brier,
                          calibration_errors,
                          calibration_in_the_large,
                          calibration_summary,
                          hosmer_lemeshow,
                          logistic_recalibration,
                          smooth_curve,
)
from ceusfusion.stats.clustered import (
                          ClusteredAUC,
                          cluster_bootstrap_ci,
                          clustered_auc_ci,
                          clustered_auc_test,
                          clustered_auc_test_unpaired,
                          clustered_metrics_at,
                          clustered_proportion,
                          wilson_interval,
)
from ceusfusion.stats.dca import (
                          CLINICAL_THRESHOLDS,
                          THRESHOLD_RULE,
                          decision_curves,
                          interventions_table,
                          net_benefit,
                          net_intervention_avoided,
                          net_interventions_avoided,
                          thresholds_around,
                          treat_all,
)
from ceusfusion.stats.dca import THRESHOLDS as DCA_THRESHOLDS
from ceusfusion.stats.delong import (
                          AUCResult,
                          DeLongTest,
                          RocCurve,
                          auc_ci,
                          compare_aucs,
                          delong_test,
                          delong_test_unpaired,
                          placements,
                          roc_curve,
)
from ceusfusion.stats.logistic import LogisticFit, fit_logistic, gini_md
from ceusfusion.stats.nomogram import Nomogram, NomogramAxis, build_nomogram, nomogram, r_pretty
from ceusfusion.stats.optimism import Validation, bootstrap_validate, discrimination_indexes, validate_logistic
from ceusfusion.stats.reclassification import (
                          IDI,
                          ImproveProb,
                          categorical_nri,
                          continuous_nri,
                          idi,
                          improve_prob,
                          nri,
                          risk_category,
)
from ceusfusion.stats.samplesize import SampleSize, cox_snell_r2, cstat2rsq, pmsampsize, pmsampsize_binary, sample_size_adequacy
from ceusfusion.stats.scale import SCALE_RANGE, ScaleCheck, bootstrap_sd, logit_scale, prob_logit
from ceusfusion.stats.subgroups import Heterogeneity, heterogeneity, subgroup_auc
from ceusfusion.stats.table1 import table1
from ceusfusion.stats.thresholds import Youden, bootstrap_ci, confusion, metrics_at, threshold_for_sensitivity, wilson_ci, youden

__all__ = [
    "AUCResult", "DeLongTest", "RocCurve", "Youden", "DCA_THRESHOLDS",
    "auc_ci", "delong_test", "delong_test_unpaired", "compare_aucs", "placements", "roc_curve",
    "youden", "threshold_for_sensitivity", "confusion", "metrics_at", "wilson_ci", "bootstrap_ci",
    "brier", "logistic_recalibration", "calibration_in_the_large", "calibration_errors", "smooth_curve",
    "binned_curve", "hosmer_lemeshow", "calibration_summary",
    "net_benefit", "treat_all", "decision_curves", "table1",
    "net_interventions_avoided", "net_intervention_avoided", "interventions_table", "CLINICAL_THRESHOLDS", "THRESHOLD_RULE", "thresholds_around",
    "ImproveProb", "IDI", "improve_prob", "nri", "continuous_nri", "categorical_nri", "idi", "risk_category",
    "Validation", "bootstrap_validate", "validate_logistic", "discrimination_indexes",
    "LogisticFit", "fit_logistic", "gini_md",
    "Nomogram", "NomogramAxis", "nomogram", "build_nomogram", "r_pretty",
    "SampleSize", "pmsampsize", "pmsampsize_binary", "cstat2rsq", "cox_snell_r2", "sample_size_adequacy",
    "Heterogeneity", "heterogeneity", "subgroup_auc",
    "ClusteredAUC", "clustered_auc_ci", "clustered_auc_test", "clustered_auc_test_unpaired", "clustered_metrics_at",
    "clustered_proportion", "cluster_bootstrap_ci", "wilson_interval",
    "SCALE_RANGE", "ScaleCheck", "logit_scale", "bootstrap_sd", "prob_logit",
]
