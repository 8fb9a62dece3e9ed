"""DL_combined: deep features (+ clinical, perfusion) → scaler → LASSO → classifier.

Everything that learns from data (imputation, one-hot, scaling, the LASSO
penalty, the classifier's hyperparameters) is fitted inside the training part
of each outer CV fold, so the out-of-fold AUC of every classifier family is
honest. The family with the best mean CV AUC is refitted on all training rows
and the test set is scored once, at the very end. Test rows (features and
labels) are not touched before that.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.impute import SimpleImputer
from sklearn.svm import SVC
from sklearn.svm import l1_min_c
from sklearn.utils.validation import check_is_fitted, validate_data

from ceusfusion.core.errors import CaseError, CeusError

FAMILIES = ("lr", "svm", "knn", "rf", "et", "xgb", "lgbm", "mlp")
FAMILY_NAMES = {"lr": "LogisticRegression", "svm": "SVM", "knn": "KNN", "rf": "RandomForest", "et": "ExtraTrees",
                "xgb": "XGBoost", "lgbm": "LightGBM", "mlp": "MLP"}
META_KEY = b"ceusfusion"


# --------------------------------------------------------------------------- LASSO selector


class LassoSelector(SelectorMixin, BaseEstimator):
    """L1-logistic feature selection; the penalty C is chosen by inner CV (AUC) inside ``fit``.

    Because C is picked in ``fit``, cloning this step into every outer fold
    re-chooses the penalty from that fold's training rows only. ``one_se``
    takes the most penalised C whose mean AUC is within one standard error of
    the best. If no feature survives, the ``fallback_k`` features with the
    largest absolute coefficient at the least-penalised C are kept
    (``fallback_`` is then True) so a pipeline never breaks.
    """

    def __init__(self, n_cs: int = 20, c_span: float = 3.0, cv: int = 5, one_se: bool = False,
                 fallback_k: int = 10, random_state: int = 0, max_iter: int = 1000, tol: float = 1e-4,
                 store_path: bool = False):
        self.n_cs = n_cs
        self.c_span = c_span
        self.cv = cv
        self.one_se = one_se
        self.fallback_k = fallback_k
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.store_path = store_path

    def _lr(self, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=self.max_iter, tol=self.tol,
                                  random_state=self.random_state)

    def fit(self, X, y):
        X, y = validate_data(self, X, y)
        y = np.asarray(y).astype(int)
        # The grid starts at the smallest C with any non-zero coefficient
        # (everything is zero there) and spans c_span decades above it.
        c0 = l1_min_c(X, y, loss="log") if np.ptp(X, axis=0).any() else 1.0
        Cs = c0 * np.logspace(0, self.c_span, self.n_cs)
        k = int(min(self.cv, np.bincount(y, minlength=2).min()))
        if k < 2:
            raise CeusError("LASSO selection needs at least 2 cases of each class in the training part of a fold")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.random_state)
        scores = np.full((k, len(Cs)), 0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for f, (tr, va) in enumerate(splitter.split(X, y)):
                for i, C in enumerate(Cs):
                    m = self._lr(C).fit(X[tr], y[tr])
                    if np.any(m.coef_):
                        scores[f, i] = roc_auc_score(y[va], m.decision_function(X[va]))
            mean = scores.mean(axis=0)
            se = scores.std(axis=0, ddof=1) / np.sqrt(k)
            i_best = int(np.argmax(mean))
            i_1se = int(np.flatnonzero(mean >= mean[i_best] - se[i_best])[0])
            i_use = i_1se if self.one_se else i_best
            coef = self._lr(Cs[i_use]).fit(X, y).coef_.ravel()
            support = coef != 0
            fallback = not support.any()
            if fallback:
                coef = self._lr(Cs[-1]).fit(X, y).coef_.ravel()
                order = np.argsort(-np.abs(coef), kind="stable")[: max(1, min(self.fallback_k, X.shape[1]))]
                support = np.zeros(X.shape[1], dtype=bool)
                support[order] = True
            self.path_ = np.array([self._lr(C).fit(X, y).coef_.ravel() for C in Cs]) if self.store_path else None
        self.Cs_, self.cv_scores_, self.cv_mean_, self.cv_se_ = Cs, scores, mean, se
        self.C_best_, self.C_1se_, self.C_ = float(Cs[i_best]), float(Cs[i_1se]), float(Cs[i_use])
        self.coef_, self.support_, self.fallback_ = coef, support, bool(fallback)
        return self

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_


# --------------------------------------------------------------------------- classifier families


def _grid(family: str, fast: bool, n_train: int) -> dict:
    """A small hyperparameter grid per family (``fast``: one or two points, for tests)."""
    if family == "lr":
        return {"C": [0.1, 1.0] if fast else [0.01, 0.1, 1.0, 10.0]}
    if family == "svm":
        return {"estimator__C": [1.0] if fast else [0.1, 1.0, 10.0], "estimator__gamma": ["scale"]}
    if family == "knn":
        ks = [k for k in ([5, 11] if fast else [5, 11, 21]) if k <= n_train] or [max(1, n_train)]
        return {"n_neighbors": ks, "weights": ["uniform", "distance"] if not fast else ["uniform"]}
    if family in ("rf", "et"):
        return {"max_depth": [None, 3] if fast else [None, 3, 6], "min_samples_leaf": [1] if fast else [1, 5]}
    if family == "xgb":
        return {"max_depth": [2] if fast else [2, 3], "learning_rate": [0.1] if fast else [0.03, 0.1]}
    if family == "lgbm":
        return {"num_leaves": [4] if fast else [4, 8], "learning_rate": [0.1] if fast else [0.03, 0.1]}
    if family == "mlp":
        return {"hidden_layer_sizes": [(16,)] if fast else [(16,), (64,)], "alpha": [1e-2] if fast else [1e-3, 1e-1]}
    raise CeusError(f"unknown classifier family {family!r}; choose from {', '.join(FAMILIES)}")


def _classifier(family: str, seed: int, fast: bool):
    """A seeded, single-threaded estimator of one family."""
    n_trees = 50 if fast else 300
    if family == "lr":
        return LogisticRegression(max_iter=2000)
    if family == "svm":
        # Platt scaling on seeded inner folds, one SVC refitted on all rows (SVC(probability=True) is deprecated).
        return CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", ensemble=False,
                                      cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=seed))
    if family == "knn":
        return KNeighborsClassifier()
    if family == "rf":
        return RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    if family == "et":
        return ExtraTreesClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    if family == "xgb":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=50 if fast else 200, subsample=0.8, colsample_bytree=0.8, tree_method="hist",
                             eval_metric="logloss", n_jobs=1, random_state=seed, verbosity=0)
    if family == "lgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=50 if fast else 200, min_child_samples=5, subsample=0.8, subsample_freq=1,
                              colsample_bytree=0.8, n_jobs=1, random_state=seed, deterministic=True,
                              force_row_wise=True, verbose=-1)
    if family == "mlp":
        return MLPClassifier(max_iter=1000, early_stopping=False, random_state=seed)
    raise CeusError(f"unknown classifier family {family!r}; choose from {', '.join(FAMILIES)}")


def parse_families(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'lr,svm' → ('lr', 'svm'); rejects unknown names in one line."""
    items = text.split(",") if isinstance(text, str) else list(text)
    fams = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    bad = [f for f in fams if f not in FAMILIES]
    if bad or not fams:
        raise CeusError(f"unknown classifier famil{'ies' if len(bad) > 1 else 'y'} {', '.join(bad) or '(none)'}; "
                        f"choose from {','.join(FAMILIES)}")
    return fams


# --------------------------------------------------------------------------- inputs


@dataclass
class FusionData:
    """The joined training/test table and what each column is."""

    frame: pd.DataFrame  # case_id, set, y, then feature columns
    deep: list[str]
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    groups: pd.Series | None = None  # patient group per row (from the cohort), aligned with frame
    inputs: list[dict] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return self.deep + self.numeric + self.categorical


def read_features(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """One features parquet: validated table and its `ceusfusion` metadata (name falls back to the stem)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: features file not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise CeusError(f"{path}: cannot read as parquet ({str(exc).splitlines()[0]})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        raise CeusError(f"{path}: the 'ceusfusion' schema metadata is not valid JSON") from None
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.setdefault("name", path.stem)
    df = table.to_pandas()
    missing = [c for c in ("case_id", "set", "y") if c not in df.columns]
    if missing:
        raise CeusError(f"{path}: missing column(s) {', '.join(missing)} (expected case_id, set, y, f0000, ...)")
    df["case_id"] = df["case_id"].astype(str)
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise CaseError(dup.iloc[0], str(path), "case_id appears more than once")
    feats = [c for c in df.columns if c not in ("case_id", "set", "y")]
    if not feats:
        raise CeusError(f"{path}: no feature columns besides case_id, set, y")
    for c in feats:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise CeusError(f"{path}: feature column {c!r} is not numeric")
    for cid, s, y in zip(df["case_id"], df["set"], df["y"]):
        if s not in ("train", "test"):
            raise CaseError(cid, str(path), f"set must be 'train' or 'test', got {s!r}")
        if pd.isna(y) or float(y) not in (0.0, 1.0):
            raise CaseError(cid, str(path), f"y must be 0 or 1, got {y!r}")
    vals = df[feats].to_numpy(dtype=float)
    bad = ~np.isfinite(vals)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CaseError(df["case_id"].iloc[r], str(path), f"non-finite value in feature column {feats[c]!r}")
    df["y"] = df["y"].astype(int)
    df["set"] = df["set"].astype(str)
    return df, meta


def _cases(ids, limit: int = 5) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:limit]) + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


def join_features(paths: list[str | Path], drop_missing: bool = False) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """Join feature files on case_id; columns become '<model>__<column>' so they stay traceable."""
    from ceusfusion.core.fsutil import sha256_file

    if not paths:
        raise CeusError("no --features file given")
    base, cols, inputs, names = None, [], [], set()
    for path in paths:
        df, meta = read_features(path)
        name = str(meta["name"])
        if name in names:
            raise CeusError(f"{path}: model name {name!r} is used by another features file; names must be unique")
        names.add(name)
        feats = [c for c in df.columns if c not in ("case_id", "set", "y")]
        df = df.rename(columns={c: f"{name}__{c}" for c in feats})
        inputs.append({"kind": "features", "path": str(path), "sha256": sha256_file(path), "meta": meta,
                       "n_features": len(feats), "n_cases": len(df)})
        if base is None:
            base = df
        else:
            a, b = set(base["case_id"]), set(df["case_id"])
            if a != b and not drop_missing:
                miss = [f"{len(a - b)} missing from {path}: {_cases(a - b)}"] if a - b else []
                miss += [f"{len(b - a)} only in {path}: {_cases(b - a)}"] if b - a else []
                raise CeusError(f"feature files cover different cases ({'; '.join(miss)}); "
                                "pass --drop-missing to keep only the shared cases")
            m = base.merge(df, on="case_id", how="inner", suffixes=("", "__other"))
            bad = m["case_id"][(m["set"] != m["set__other"]) | (m["y"] != m["y__other"])]
            if len(bad):
                raise CeusError(f"{path}: set or label disagrees with {paths[0]} for {len(bad)} case(s): {_cases(bad)}")
            base = m.drop(columns=["set__other", "y__other"])
        cols += [f"{name}__{c}" for c in feats]
    return base.reset_index(drop=True), cols, inputs


def load_inputs(features: list[str | Path], cohort: str | Path | None = None, clinical: list[str] | None = None,
                perfusion: str | Path | None = None, drop_missing: bool = False) -> FusionData:
    """Deep features joined with optional clinical covariates (cohort manifest) and perfusion parameters."""
    from ceusfusion.core.fsutil import sha256_file

    frame, deep, inputs = join_features(list(features), drop_missing=drop_missing)
    numeric: list[str] = []
    categorical: list[str] = []
    groups = None
    clinical = list(clinical or [])
    if clinical and cohort is None:
        raise CeusError("--clinical needs --cohort COHORT.csv to read the covariates from")
    if cohort is not None:
        from ceusfusion.ingest.cohort import load_cohort

        co = load_cohort(cohort).copy()
        co["case_id"] = co["case_id"].astype(str)
        missing = sorted(set(frame["case_id"]) - set(co["case_id"]))
        if missing:
            raise CeusError(f"{cohort}: {len(missing)} case(s) with features are not in the cohort: {_cases(missing)}")
        co = co.set_index("case_id").loc[frame["case_id"]]
        bad = frame["case_id"][frame["y"].to_numpy() != co["label"].to_numpy()]
        if len(bad):
            raise CeusError(f"{cohort}: label disagrees with the features for {len(bad)} case(s): {_cases(bad)}")
        if "split" in co.columns:
            s = co["split"].astype(str).to_numpy()
            bad = frame["case_id"][(s != frame["set"].to_numpy()) & (co["split"].notna().to_numpy())]
            if len(bad):
                raise CeusError(f"{cohort}: split disagrees with the features' set for {len(bad)} case(s): {_cases(bad)}")
        groups = pd.Series(co["group"].astype(str).to_numpy(), index=frame.index)
        for col in clinical:
            if col not in co.columns:
                raise CeusError(f"{cohort}: clinical column {col!r} not found (columns: {', '.join(map(str, co.columns))})")
            raw = co[col]
            if raw.isna().all():
                raise CeusError(f"{cohort}: clinical column {col!r} is empty")
            num = pd.to_numeric(raw, errors="coerce")
            name = f"clin__{col}"
            if num.notna().sum() == raw.notna().sum():  # every given value is a number
                frame[name] = num.astype(float).replace([np.inf, -np.inf], np.nan).to_numpy()
                numeric.append(name)
            else:  # missing is its own category; the encoder is fitted inside the pipeline
                frame[name] = raw.fillna("missing").astype(str).to_numpy(dtype=object)
                categorical.append(name)
        inputs.append({"kind": "cohort", "path": str(cohort), "sha256": sha256_file(cohort), "clinical": clinical})
    if perfusion is not None:
        path = Path(perfusion)
        if not path.is_file():
            raise CeusError(f"{path}: perfusion file not found")
        pf = pd.read_csv(path, dtype={"case_id": str})
        if "case_id" not in pf.columns:
            raise CeusError(f"{path}: missing column case_id")
        if pf["case_id"].duplicated().any():
            raise CaseError(pf["case_id"][pf["case_id"].duplicated()].iloc[0], str(path), "case_id appears more than once")
        # A case without a row (e.g. no usable video) gets its parameters imputed inside the pipeline.
        missing = sorted(set(frame["case_id"]) - set(pf["case_id"]))
        pf = pf.set_index("case_id").reindex(frame["case_id"])
        pcols = []
        for col in pf.columns:
            vals = pd.to_numeric(pf[col], errors="coerce")
            if vals.notna().sum() != pf[col].notna().sum():
                raise CeusError(f"{path}: perfusion column {col!r} is not numeric")
            vals = vals.astype(float).replace([np.inf, -np.inf], np.nan)  # treated as missing
            if vals.notna().any():  # an all-empty parameter carries nothing
                frame[f"perf__{col}"] = vals.astype(float).to_numpy()
                pcols.append(f"perf__{col}")
        numeric += pcols
        inputs.append({"kind": "perfusion", "path": str(path), "sha256": sha256_file(path), "columns": pcols,
                       "cases_without_row": missing})
    return FusionData(frame=frame, deep=deep, numeric=numeric, categorical=categorical, groups=groups, inputs=inputs)


# --------------------------------------------------------------------------- pipeline


@dataclass
class FusionConfig:
    classifiers: tuple[str, ...] = FAMILIES
    folds: int = 5
    inner_folds: int = 5
    seed: int = 0
    one_se: bool = False
    n_cs: int = 20
    fallback_k: int = 10
    fast: bool = False  # tiny grids and few trees (tests, smoke runs)
    name: str = "DL_combined"


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


def make_search(family: str, cfg: FusionConfig, n_train: int) -> GridSearchCV:
    """The family's estimator with its small grid, searched by inner stratified CV on AUC."""
    k = cfg.inner_folds
    grid = _grid(family, cfg.fast, int(n_train * (k - 1) / k))
    return GridSearchCV(_classifier(family, cfg.seed, cfg.fast), grid, scoring="roc_auc", n_jobs=1, refit=True,
                        cv=StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.seed), error_score="raise")


def _fit_search(family, cfg, Z, y) -> GridSearchCV:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*feature names.*")
        return make_search(family, cfg, len(y)).fit(Z, y)


def outer_splits(data: FusionData, cfg: FusionConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer folds over the training rows only (patient-grouped when the cohort gives groups)."""
    tr = data.frame.index[data.frame["set"] == "train"].to_numpy()
    y = data.frame.loc[tr, "y"].to_numpy()
    n_min = int(np.bincount(y, minlength=2).min())
    if n_min < cfg.folds:
        raise CeusError(f"{cfg.folds} folds need at least {cfg.folds} training cases of each class; "
                        f"the smaller class has {n_min}")
    if data.groups is not None and data.groups.loc[tr].duplicated().any():
        g = data.groups.loc[tr].to_numpy()
        splitter = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
        return [(tr[a], tr[b]) for a, b in splitter.split(tr, y, g)]
    splitter = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    return [(tr[a], tr[b]) for a, b in splitter.split(tr, y)]


@dataclass
class FusionResult:
    predictions: pd.DataFrame
    cv_results: pd.DataFrame
    selected: pd.DataFrame
    summary: dict
    model: Pipeline  # the chosen family refitted on all training rows
    oof: pd.DataFrame  # out-of-fold probability of every family for every training case


def run_fusion(data: FusionData, cfg: FusionConfig) -> FusionResult:
    """Outer CV for every family, choose by mean CV AUC, refit on all training rows, score the test set once."""
    families = parse_families(cfg.classifiers)
    df = data.frame
    X = df[data.columns]
    y = df["y"].to_numpy()
    splits = outer_splits(data, cfg)
    train_idx = np.sort(np.concatenate([va for _, va in splits]))
    fold_of = pd.Series(-1, index=df.index)
    oof = {f: pd.Series(np.nan, index=df.index) for f in families}
    fold_auc = {f: [] for f in families}
    fold_params = {f: [] for f in families}
    fold_lasso, sel_count = [], {}
    for k, (tr, va) in enumerate(splits):
        fold_of.loc[va] = k
        front = clone(make_front(data, cfg)).fit(X.loc[tr], y[tr])
        lasso = front.named_steps["lasso"]
        names = front[:-1].get_feature_names_out()
        for n in names[lasso.support_]:
            sel_count[n] = sel_count.get(n, 0) + 1
        fold_lasso.append({"fold": k, "C": lasso.C_, "n_selected": int(lasso.support_.sum()), "fallback": lasso.fallback_})
        Z_tr, Z_va = front.transform(X.loc[tr]), front.transform(X.loc[va])
        for fam in families:
            search = _fit_search(fam, cfg, Z_tr, y[tr])
            p = search.predict_proba(Z_va)[:, 1]
            oof[fam].loc[va] = p
            fold_auc[fam].append(float(roc_auc_score(y[va], p)))
            fold_params[fam].append(_jsonable(search.best_params_))
    rows = []
    for fam in families:
        a = np.array(fold_auc[fam])
        row = {"family": fam, "classifier": FAMILY_NAMES[fam], "mean_auc": a.mean(),
               "sd_auc": a.std(ddof=1) if len(a) > 1 else 0.0,
               "pooled_oof_auc": float(roc_auc_score(y[train_idx], oof[fam].loc[train_idx]))}
        row.update({f"auc_fold{k}": v for k, v in enumerate(a)})
        row["best_params"] = json.dumps(fold_params[fam])
        rows.append(row)
    cv = pd.DataFrame(rows)
    chosen = families[int(np.argmax(cv["mean_auc"].to_numpy()))]  # first family wins a tie
    cv["chosen"] = cv["family"] == chosen

    # Refit the chosen family on every training row; only now are test rows used.
    front = clone(make_front(data, cfg))
    front.set_params(lasso__store_path=True)
    front.fit(X.loc[train_idx], y[train_idx])
    search = _fit_search(chosen, cfg, front.transform(X.loc[train_idx]), y[train_idx])
    model = Pipeline(front.steps + [("clf", search)])
    test_idx = df.index[df["set"] == "test"].to_numpy()
    prob = oof[chosen].copy()
    if len(test_idx):
        prob.loc[test_idx] = model.predict_proba(X.loc[test_idx])[:, 1]
    order = np.concatenate([train_idx, test_idx])
    preds = pd.DataFrame({"case_id": df.loc[order, "case_id"].to_numpy(), "set": df.loc[order, "set"].to_numpy(),
                          "fold": fold_of.loc[order].to_numpy(), "y": y[order], "prob": prob.loc[order].to_numpy()})
    lasso = model.named_steps["lasso"]
    names = model[:-2].get_feature_names_out()
    selected = _selected_table(names, lasso, sel_count, len(splits))
    summary = {
        "name": cfg.name, "chosen_family": chosen, "chosen_classifier": FAMILY_NAMES[chosen],
        "cv_auc_mean": float(cv.loc[cv["chosen"], "mean_auc"].iloc[0]),
        "best_params": _jsonable(search.best_params_),
        "lasso": {"C": lasso.C_, "C_best": lasso.C_best_, "C_1se": lasso.C_1se_, "one_se": cfg.one_se,
                  "n_features_in": int(len(names)), "n_selected": int(lasso.support_.sum()),
                  "fallback": lasso.fallback_,
                  "fallback_note": (f"LASSO kept no feature; the top {int(lasso.support_.sum())} by |coefficient| at the "
                                    "least-penalised C were kept instead") if lasso.fallback_ else None,
                  "folds": fold_lasso},
        "cv": {"folds": cfg.folds, "inner_folds": cfg.inner_folds, "grouped": bool(data.groups is not None and
               data.groups.loc[train_idx].duplicated().any()), "classifiers": list(families), "fast_grid": cfg.fast},
        "seed": cfg.seed,
        "n_train": int(len(train_idx)), "n_train_pos": int(y[train_idx].sum()),
        "n_test": int(len(test_idx)), "n_test_pos": int(y[test_idx].sum()) if len(test_idx) else 0,
        "columns": {"deep": len(data.deep), "numeric": data.numeric, "categorical": data.categorical},
        "inputs": data.inputs,
        "versions": _versions(),
    }
    oof_all = pd.DataFrame({f: oof[f].loc[train_idx].to_numpy() for f in families},
                           index=pd.Index(df.loc[train_idx, "case_id"].to_numpy(), name="case_id"))
    return FusionResult(predictions=preds, cv_results=cv, selected=selected, summary=summary, model=model, oof=oof_all)


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
    import sklearn

    out = {"scikit-learn": sklearn.__version__}
    for mod in ("xgboost", "lightgbm"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return out


# --------------------------------------------------------------------------- outputs


def write_outputs(result: FusionResult, out: str | Path, figures: bool = True) -> dict[str, Path]:
    """predictions/<name>.csv, selected_features.csv, cv_results.csv, fusion.json, model.joblib, figures/."""
    import joblib

    from ceusfusion.core.fsutil import atomic_path, write_csv, write_json

    out = Path(out)
    name = result.summary["name"]
    paths = {"predictions": out / "predictions" / f"{name}.csv", "selected": out / "selected_features.csv",
             "cv_results": out / "cv_results.csv", "summary": out / "fusion.json", "model": out / "model.joblib"}
    write_csv(paths["predictions"], result.predictions)
    write_csv(paths["selected"], result.selected)
    write_csv(paths["cv_results"], result.cv_results)
    with atomic_path(paths["model"]) as tmp:
        joblib.dump(result.model, tmp)
    if figures:
        from ceusfusion.figures.fusion import write_figures

        paths.update(write_figures(result, out / "figures"))
    summary = dict(result.summary, outputs={k: str(v) for k, v in paths.items()})
    write_json(paths["summary"], summary)
    return paths


def fuse(features: list[str | Path], out: str | Path, cohort: str | Path | None = None,
         clinical: list[str] | None = None, perfusion: str | Path | None = None, drop_missing: bool = False,
         cfg: FusionConfig | None = None, figures: bool = True) -> FusionResult:
    """The `ceusfusion fuse` stage: read inputs, cross-validate, choose, refit, score test once, write."""
    cfg = cfg or FusionConfig()
    if cfg.folds < 2 or cfg.inner_folds < 2:
        raise CeusError("--folds and --inner-folds must be at least 2")
    data = load_inputs(features, cohort=cohort, clinical=clinical, perfusion=perfusion, drop_missing=drop_missing)
    result = run_fusion(data, cfg)
    write_outputs(result, out, figures=figures)
    return result
