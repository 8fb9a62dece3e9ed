"""Evaluation statistics that agree with R's pROC, rms and dcurves.

Plain-array functions, usable from notebooks: ``auc_ci(y, score)`` and
``delong_test(y, score_a, score_b)`` and the rest below. Inputs with missing
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
from ceusfusion.stats.dca import THRESHOLDS as DCA_THRESHOLDS
from ceusfusion.stats.dca import decision_curves, net_benefit, treat_all
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
from ceusfusion.stats.table1 import table1
from ceusfusion.stats.thresholds import Youden, bootstrap_ci, confusion, metrics_at, threshold_for_sensitivity, wilson_ci, youden

__all__ = [
    "AUCResult", "DeLongTest", "RocCurve", "Youden", "DCA_THRESHOLDS",
    "auc_ci", "delong_test", "delong_test_unpaired", "compare_aucs", "placements", "roc_curve",
    "youden", "threshold_for_sensitivity", "confusion", "metrics_at", "wilson_ci", "bootstrap_ci",
    "brier", "logistic_recalibration", "calibration_in_the_large", "calibration_errors", "smooth_curve",
    "binned_curve", "hosmer_lemeshow", "calibration_summary",
    "net_benefit", "treat_all", "decision_curves", "table1",
]
