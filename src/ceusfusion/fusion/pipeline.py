"""DL_combined: deep features (+ clinical, perfusion) → scaler → LASSO → classifier.

Everything that learns from data (imputation, one-hot, scaling, the LASSO
penalty, the classifier's hyperparameters) is fitted inside the training part
of each outer CV fold, so the out-of-fold AUC of every classifier family is
honest. The family with the best mean CV AUC is refitted on all training rows
and the test set is scored once, at the very end. Test rows (features and
labels) are not touched before that.

Patients: a patient's nodules are near-identical rows, so every CV here is
split by patient group (StratifiedGroupKFold): the outer folds, the grid
search's inner folds, the LASSO penalty's folds and the SVM's Platt-scaling
folds; each gets the groups of its own training rows, and its number of folds
is reduced to the patients of the smaller class when there are fewer.

Nesting: the grid search runs over the whole pipeline (columns → scaler →
LASSO → classifier), so the scaler and LASSO are refitted inside every inner
fold and an inner validation row never helps choose the features it is scored
on. The front does not depend on the classifier's hyperparameters, so its fit
on one inner fold is cached (Pipeline ``memory``, a temporary folder) and shared
by every grid point and family: k + 1 LASSO fits per outer fold, not one per
grid point.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
from pydantic import ConfigDict, Field, field_validator
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ceusfusion.core.config import StageConfig
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path, claim, write_csv, write_json
from ceusfusion.figures.fusion import write_figures
from ceusfusion.fusion.families import FAMILIES, FAMILY_NAMES, get_family, parse_families
from ceusfusion.fusion.inputs import GROUP_SOURCES, FusionData, load_inputs
from ceusfusion.fusion.lasso import LassoSelector, groups_per_class, inner_folds
from ceusfusion.stats.selection import bbc_cv


class FusionConfig(StageConfig):
    """Settings of one fusion run; invalid settings raise CeusError (one line), not a ValidationError."""

    model_config = ConfigDict(extra="forbid")

    classifiers: tuple[str, ...] = FAMILIES  # family keys, see families.py
    folds: int = Field(5, ge=2)
    inner_folds: int = Field(5, ge=2)
    seed: int = 0
    one_se: bool = False
    n_cs: int = 20
    fallback_k: int = 10
    fast: bool = False  # tiny grids and few trees (tests, smoke runs)
    name: str = "DL_combined"
    # internal validation of the fitted procedure (fusion.validation; 0: none): the most resamples of Harrell's
    # bootstrap (a single "lr" family), which the fit budget may lower
    bootstrap: int = Field(200, ge=0)
    # repeats of the nested CV of the whole procedure (several families, or a flexible one); None: from the fit budget
    validation_repeats: int | None = Field(None, ge=1)

    @field_validator("classifiers", mode="before")
    @classmethod
    def _known_families(cls, v):
        return parse_families(v)


# --------------------------------------------------------------------------- the sklearn pipeline


def make_front(data: FusionData, cfg: FusionConfig) -> Pipeline:
    """Column handling → StandardScaler → LASSO: the part shared by every classifier family."""
    parts = []
    if data.deep:
        parts.append(("deep", "passthrough", data.deep))
    if data.numeric:
        parts.append(("num", SimpleImputer(strategy="median", keep_empty_features=True), data.numeric))
    if data.categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), data.categorical))
    cols = ColumnTransformer(parts, verbose_feature_names_out=False)
    lasso = LassoSelector(n_cs=cfg.n_cs, cv=cfg.inner_folds, one_se=cfg.one_se, fallback_k=cfg.fallback_k,
                          random_state=cfg.seed)
    return Pipeline([("columns", cols), ("scale", StandardScaler()), ("lasso", lasso)])


def make_search(family: str, data: FusionData, cfg: FusionConfig, y, groups, memory=None) -> GridSearchCV:
    """GridSearchCV over front + the family's estimator with its small grid, on AUC, by patient-grouped
    inner folds (fewer when the rows have fewer patients of a class than ``inner_folds``)."""
    fam = get_family(family)
    splitter = inner_folds(cfg.inner_folds, y, groups, cfg.seed, "the grid search")
    n_fit = min(len(a) for a, _ in splitter.split(np.zeros(len(y)), y, groups))  # smallest inner training part
    grid = {f"clf__{p}": v for p, v in fam.grid(cfg.fast, n_fit).items()}
    pipe = Pipeline(make_front(data, cfg).steps + [("clf", fam.make(cfg.seed, cfg.fast))], memory=memory)
    return GridSearchCV(pipe, grid, scoring="roc_auc", n_jobs=1, refit=True, cv=splitter, error_score="raise")


def fit_search(family: str, data: FusionData, cfg: FusionConfig, X, y, groups, memory=None) -> GridSearchCV:
    """``make_search`` fitted on rows X (untransformed): the patient groups go to the inner splitter, to
    LASSO and, for a family that runs its own CV, to the estimator; without convergence/feature-name noise."""
    groups = np.asarray(groups).astype(str)
    params = {"groups": groups, "lasso__groups": groups}
    if get_family(family).takes_groups:
        params["clf__groups"] = groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*feature names.*")
        warnings.filterwarnings("ignore", message="Persisting input arguments")  # the cache hashing a large X
        return make_search(family, data, cfg, y, groups, memory).fit(X, y, **params)


def outer_splits(data: FusionData, cfg: FusionConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer folds over the training rows only, always by patient group (StratifiedGroupKFold)."""
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    y = data.frame.loc[tr, "y"].to_numpy()
    g = data.groups.loc[tr].to_numpy()
    n_min = groups_per_class(y, g)
    if n_min < cfg.folds:
        raise CeusError(f"{cfg.folds} folds need at least {cfg.folds} training patients (groups) of each class; "
                        f"the smaller class has {n_min}")
    splitter = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    return [(tr[a], tr[b]) for a, b in splitter.split(tr, y, g)]


def _clf_params(best_params: dict) -> dict:
    """The classifier's chosen hyperparameters without the pipeline's ``clf__`` prefix."""
    return _jsonable({k.removeprefix("clf__"): v for k, v in best_params.items()})


# --------------------------------------------------------------------------- cross-validation, choice, refit


@dataclass
class FusionResult:
    predictions: pd.DataFrame
    cv_results: pd.DataFrame
    selected: pd.DataFrame
    summary: dict
    model: Pipeline  # the chosen family refitted on all training rows
    oof: pd.DataFrame  # out-of-fold probability of every family for every training case


@dataclass
class OuterCV:
    """What the outer CV loop records, per fold and per family."""

    fold_of: pd.Series  # outer fold of every row (-1: not a training row)
    oof: dict[str, pd.Series]  # family -> out-of-fold probability per row
    fold_auc: dict[str, list[float]]  # family -> AUC of each fold
    fold_params: dict[str, list[dict]]  # family -> chosen hyperparameters of each fold
    fold_lasso: list[dict] = field(default_factory=list)  # the LASSO fit of each fold
    sel_count: dict[str, int] = field(default_factory=dict)  # feature -> number of folds that kept it

    @classmethod
    def start(cls, index: pd.Index, families: tuple[str, ...]) -> OuterCV:
        return cls(fold_of=pd.Series(-1, index=index), oof={f: pd.Series(np.nan, index=index) for f in families},
                   fold_auc={f: [] for f in families}, fold_params={f: [] for f in families})

    def record_front(self, k: int, model: Pipeline) -> None:
        """The front (columns → scaler → LASSO) of a pipeline fitted on outer fold k's training part."""
        lasso = model.named_steps["lasso"]
        names = model[:-2].get_feature_names_out()
        for n in names[lasso.support_]:
            self.sel_count[n] = self.sel_count.get(n, 0) + 1
        self.fold_lasso.append({"fold": k, "C": lasso.C_, "n_selected": int(lasso.support_.sum()),
                                "fallback": lasso.fallback_})


def cross_validate(data: FusionData, cfg: FusionConfig, families: tuple[str, ...], splits, memory=None) -> OuterCV:
    """Every family's nested search (front refitted per inner fold) on each outer fold's training part;
    score its held-out part. The front is the same for every family (same rows, same seed)."""
    df = data.frame
    X, y = df[data.columns], df["y"].to_numpy()
    cv = OuterCV.start(df.index, families)
    for k, (tr, va) in enumerate(splits):
        cv.fold_of.loc[va] = k
        for i, fam in enumerate(families):
            search = fit_search(fam, data, cfg, X.loc[tr], y[tr], data.groups.loc[tr], memory)
            if i == 0:
                cv.record_front(k, search.best_estimator_)
            p = search.predict_proba(X.loc[va])[:, 1]
            cv.oof[fam].loc[va] = p
            cv.fold_auc[fam].append(float(roc_auc_score(y[va], p)))
            cv.fold_params[fam].append(_clf_params(search.best_params_))
    return cv


def cv_table(cv: OuterCV, families: tuple[str, ...], y: np.ndarray, train_idx: np.ndarray) -> pd.DataFrame:
    """One row per family: mean/SD of the fold AUCs, pooled out-of-fold AUC, per-fold AUCs and parameters, chosen."""
    rows = []
    for fam in families:
        a = np.array(cv.fold_auc[fam])
        row = {"family": fam, "classifier": FAMILY_NAMES[fam], "mean_auc": a.mean(),
               "sd_auc": a.std(ddof=1) if len(a) > 1 else 0.0,
               "pooled_oof_auc": float(roc_auc_score(y[train_idx], cv.oof[fam].loc[train_idx]))}
        row.update({f"auc_fold{k}": v for k, v in enumerate(a)})
        row["best_params"] = json.dumps(cv.fold_params[fam])
        rows.append(row)
    table = pd.DataFrame(rows)
    chosen = families[int(np.argmax(table["mean_auc"].to_numpy()))]  # first family wins a tie
    table["chosen"] = table["family"] == chosen
    return table


def refit(data: FusionData, cfg: FusionConfig, family: str, train_idx: np.ndarray,
          memory=None) -> tuple[Pipeline, dict]:
    """The family's nested search on every training row (no test row): the final model
    (columns, scale, lasso, clf; LASSO path added for the figure) and its hyperparameters."""
    X, y = data.frame[data.columns].loc[train_idx], data.frame["y"].to_numpy()[train_idx]
    search = fit_search(family, data, cfg, X, y, data.groups.loc[train_idx], memory)
    model = search.best_estimator_
    model.set_params(memory=None)  # the cache folder is temporary; the saved model must not point at it
    model.named_steps["lasso"].compute_path(model[:-2].transform(X), y)
    return model, _clf_params(search.best_params_)


def predictions_table(data: FusionData, cv: OuterCV, family: str, model: Pipeline, rows: tuple[np.ndarray, np.ndarray],
                      corrected: dict | None = None) -> pd.DataFrame:
    """case_id, set, fold, y, prob, scoring: out-of-fold for training rows (optimistic when a family was chosen
    on them; the label then gives the selection-corrected AUC of fusion.json), the final model's for test rows."""
    train_idx, test_idx = rows
    df = data.frame
    prob = cv.oof[family].copy()
    if len(test_idx):
        prob.loc[test_idx] = model.predict_proba(df[data.columns].loc[test_idx])[:, 1]
    order = np.concatenate([train_idx, test_idx])
    auc = (corrected or {}).get("auc")
    fix = f"; selection-corrected AUC {auc:.3f} by BBC-CV in fusion.json" if auc is not None else ""
    train_label = ("out-of-fold" if len(cv.oof) == 1 else
                   f"out-of-fold, classifier family chosen on these folds among {len(cv.oof)} (optimistic{fix})")
    scoring = np.where(df.loc[order, "set"].to_numpy() == "train", train_label, "refit on all training cases")
    return pd.DataFrame({"case_id": df.loc[order, "case_id"].to_numpy(), "set": df.loc[order, "set"].to_numpy(),
                         "fold": cv.fold_of.loc[order].to_numpy(), "y": df["y"].to_numpy()[order],
                         "prob": prob.loc[order].to_numpy(), "scoring": scoring})


@dataclass
class Procedure:
    """What ``run_fusion`` fits before it scores or writes anything: every family's outer CV, the choice, the refit."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    cv: OuterCV
    table: pd.DataFrame
    chosen: str
    model: Pipeline  # the chosen family refitted on every training row
    params: dict  # its chosen hyperparameters
    train_idx: np.ndarray
    families: tuple[str, ...]


def fit_procedure(data: FusionData, cfg: FusionConfig) -> Procedure:
    """Outer CV of every family on the training rows, the choice by mean CV AUC, the refit on every training row.
    Test rows are not read. ``fusion.nested`` reruns exactly this inside each of its outer training parts."""
    families = parse_families(cfg.classifiers)
    splits = outer_splits(data, cfg)
    train_idx = np.sort(np.concatenate([va for _, va in splits]))
    with tempfile.TemporaryDirectory(prefix="ceusfusion-front-") as tmp:
        memory = joblib.Memory(tmp, verbose=0)  # fitted fronts shared by grid points and families
        cv = cross_validate(data, cfg, families, splits, memory)
        table = cv_table(cv, families, data.frame["y"].to_numpy(), train_idx)
        chosen = str(table.loc[table["chosen"], "family"].iloc[0])
        model, params = refit(data, cfg, chosen, train_idx, memory)
    return Procedure(splits, cv, table, chosen, model, params, train_idx, families)


def selection_corrected(data: FusionData, proc: Procedure, seed: int, B: int = 1000) -> dict:
    """fusion.json ``selection_corrected``: the chosen family's out-of-fold AUC corrected for the choice among the
    families (BBC-CV over every family's out-of-fold predictions, patients resampled), at no refit."""
    y = data.frame["y"].to_numpy()[proc.train_idx]
    oof = np.column_stack([proc.cv.oof[f].loc[proc.train_idx].to_numpy() for f in proc.families])
    try:
        r = bbc_cv(oof, y, groups=data.groups.loc[proc.train_idx].astype(str).to_numpy(), B=B, seed=seed).to_dict()
    except CeusError as e:
        return {"auc": None, "ci": None, "method": "BBC-CV", "n_candidates": len(proc.families), "note": str(e)}
    return {"auc": r["auc"], "ci": r["ci"], "method": r["method"], "n_candidates": r["n_candidates"],
            "apparent": r["apparent"], "n_boot": r["n_boot"], "seed": seed,
            "chosen_share": dict(zip(proc.families, r["chosen_share"])),
            "note": ("BBC-CV chooses by pooled out-of-fold AUC, the fusion by mean fold AUC; both the best of "
                     f"{len(proc.families)} famil{'ies' if len(proc.families) > 1 else 'y'} on the same rows")}


def run_fusion(data: FusionData, cfg: FusionConfig) -> FusionResult:
    """Outer CV for every family, choose by mean CV AUC, refit on all training rows, score the test set once."""
    df = data.frame
    proc = fit_procedure(data, cfg)
    test_idx = df.index[df["set"] == "test"].to_numpy()
    corrected = selection_corrected(data, proc, cfg.seed)
    preds = predictions_table(data, proc.cv, proc.chosen, proc.model, (proc.train_idx, test_idx), corrected)
    names = proc.model[:-2].get_feature_names_out()
    selected = _selected_table(names, proc.model.named_steps["lasso"], proc.cv.sel_count, len(proc.splits))
    summary = _summary(data, cfg, proc.families, proc.table, proc.cv, (proc.model, proc.params), proc.train_idx, test_idx)
    summary["selection_corrected"] = corrected
    oof_all = pd.DataFrame({f: proc.cv.oof[f].loc[proc.train_idx].to_numpy() for f in proc.families},
                           index=pd.Index(df.loc[proc.train_idx, "case_id"].to_numpy(), name="case_id"))
    return FusionResult(predictions=preds, cv_results=proc.table, selected=selected, summary=summary, model=proc.model,
                        oof=oof_all)


def cv_summary(data: FusionData, cfg: FusionConfig, families: tuple[str, ...], train_idx: np.ndarray,
               test_idx: np.ndarray) -> dict:
    """fusion.json ``cv``: the set-up, and which CV was split by patient group and from where the groups came.

    ``grouped`` has one entry per CV that ran (``svm_calibration`` only when the SVM family was compared):
    True when split by the recorded groups; with ``group_source`` "case_id" no patient is known (every
    case its own group), so nothing is patient-grouped and every value is False."""
    known = data.group_source != "case_id"
    g_train = data.groups.loc[train_idx]
    levels = ("outer", "lasso", "grid_search") + (("svm_calibration",) if "svm" in families else ())
    return {"folds": cfg.folds, "inner_folds": cfg.inner_folds, "classifiers": list(families), "fast_grid": cfg.fast,
            "groups": data.group_source, "group_source": data.group_source,
            "group_note": GROUP_SOURCES[data.group_source],
            "grouped": {level: known for level in levels},
            "n_groups_train": int(g_train.nunique()),
            "n_groups_with_several_train_rows": int((g_train.value_counts() > 1).sum()),
            "n_groups_in_train_and_test": len(set(g_train) & set(data.groups.loc[test_idx])),
            "nested": True,
            "nesting": ("GridSearchCV over columns → scaler → LASSO → classifier: the scaler and LASSO are "
                        "refitted inside every inner fold of the grid search")}


def _summary(data: FusionData, cfg: FusionConfig, families: tuple[str, ...], table: pd.DataFrame, cv: OuterCV,
             fitted: tuple[Pipeline, dict], train_idx: np.ndarray, test_idx: np.ndarray) -> dict:
    """fusion.json (without its outputs): the choice, the final LASSO, the CV set-up, the data and versions."""
    model, params = fitted
    y = data.frame["y"].to_numpy()
    chosen = str(table.loc[table["chosen"], "family"].iloc[0])
    lasso = model.named_steps["lasso"]
    n_in = len(model[:-2].get_feature_names_out())
    n_sel = int(lasso.support_.sum())
    return {
        "name": cfg.name, "chosen_family": chosen, "chosen_classifier": FAMILY_NAMES[chosen],
        "cv_auc_mean": float(table.loc[table["chosen"], "mean_auc"].iloc[0]),
        "best_params": params,
        "lasso": {"C": lasso.C_, "C_best": lasso.C_best_, "C_1se": lasso.C_1se_, "one_se": cfg.one_se,
                  "n_features_in": int(n_in), "n_selected": n_sel, "fallback": lasso.fallback_,
                  "fallback_note": (f"LASSO kept no feature; the top {n_sel} by |coefficient| at the "
                                    "least-penalised C were kept instead") if lasso.fallback_ else None,
                  "folds": cv.fold_lasso},
        "cv": cv_summary(data, cfg, families, train_idx, test_idx),
        "seed": cfg.seed,
        "n_train": int(len(train_idx)), "n_train_pos": int(y[train_idx].sum()),
        "n_test": int(len(test_idx)), "n_test_pos": int(y[test_idx].sum()) if len(test_idx) else 0,
        "columns": {"deep": len(data.deep), "numeric": data.numeric, "categorical": data.categorical},
        "inputs": data.inputs,
        "versions": _versions(),
    }


def _selected_table(names, lasso: LassoSelector, sel_count: dict, n_folds: int) -> pd.DataFrame:
    """Every feature kept by the final fit or by any outer fold, strongest first."""
    names = np.asarray(names)
    final = dict(zip(names[lasso.support_], lasso.coef_[lasso.support_]))
    rows = [{"feature": n, "source": n.split("__", 1)[0], "coefficient": float(final.get(n, 0.0)),
             "selected": n in final, "selection_frequency": sel_count.get(n, 0) / n_folds}
            for n in sorted(set(final) | set(sel_count))]
    out = pd.DataFrame(rows, columns=["feature", "source", "coefficient", "selected", "selection_frequency"])
    if len(out):
        key = out["coefficient"].abs()
        out = out.assign(_abs=key).sort_values(["selected", "_abs", "selection_frequency", "feature"],
                                               ascending=[False, False, False, True]).drop(columns="_abs")
    return out.reset_index(drop=True)


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v.item() if hasattr(v, "item") else v) for k, v in d.items()}


def _versions() -> dict:
    out = {"scikit-learn": sklearn.__version__}
    for mod in ("xgboost", "lightgbm"):
        try:  # imported only here and by their families (heavy, optional)
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return out


# --------------------------------------------------------------------------- outputs


def output_paths(out: str | Path, name: str) -> dict[str, Path]:
    """The files ``fuse`` writes in ``out`` for the model ``name`` (besides figures/)."""
    out = Path(out)
    return {"predictions": out / "predictions" / f"{name}.csv", "selected": out / "selected_features.csv",
            "cv_results": out / "cv_results.csv", "summary": out / "fusion.json", "model": out / "model.joblib"}


def claim_outputs(out: str | Path, name: str, inputs=(), force: bool = False, figures: bool = True) -> None:
    """Before anything is fitted: refuse to write over a file of ``out`` ceusfusion did not write (unless
    ``force``) or over one of ``inputs`` (ever), and record fuse's outputs there (``core.fsutil.claim``)."""
    out = Path(out)
    claim(out, files=list(output_paths(out, name).values()), folders=[out / "figures"] if figures else [], force=force,
          inputs=inputs)


def write_outputs(result: FusionResult, out: str | Path, figures: bool = True) -> dict[str, Path]:
    """predictions/<name>.csv, selected_features.csv, cv_results.csv, fusion.json, model.joblib, figures/."""
    out = Path(out)
    paths = output_paths(out, result.summary["name"])
    write_csv(paths["predictions"], result.predictions)
    write_csv(paths["selected"], result.selected)
    write_csv(paths["cv_results"], result.cv_results)
    with atomic_path(paths["model"]) as tmp:
        joblib.dump(result.model, tmp)
    if figures:
        paths.update(write_figures(result, out / "figures"))
    summary = dict(result.summary, outputs={k: str(v) for k, v in paths.items()})
    write_json(paths["summary"], summary)
    return paths


def fuse(features: list[str | Path], out: str | Path, cohort: str | Path | None = None,
         clinical: list[str] | None = None, perfusion: str | Path | None = None, drop_missing: bool = False,
         cfg: FusionConfig | None = None, figures: bool = True) -> FusionResult:
    """The `ceusfusion fuse` stage: read inputs, cross-validate, choose, refit, score test once, write."""
    cfg = cfg or FusionConfig()  # folds and inner_folds >= 2 are checked by FusionConfig
    data = load_inputs(features, cohort=cohort, clinical=clinical, perfusion=perfusion, drop_missing=drop_missing)
    result = run_fusion(data, cfg)
    write_outputs(result, out, figures=figures)
    return result
