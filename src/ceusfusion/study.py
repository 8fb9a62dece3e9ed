"""`ceusfusion study study.yaml`: every stage of a study, resumable.

validate → prepare → train (every modality × architecture × input) → select
the best model per modality by mean CV AUC (never the test set) → features →
fuse → evaluate → explain → report. Each stage records a fingerprint of its
configuration and inputs in RUN/manifest.json; a rerun skips a stage whose
fingerprint is unchanged and whose outputs exist. ``--force STAGE`` redoes
that stage and everything downstream of it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from ceusfusion import __version__
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file, write_csv, write_json

STAGES = ("validate", "prepare", "train", "select", "features", "fuse", "evaluate", "explain", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepareConfig(_Strict):
    size: int = Field(256, ge=8)
    frames: int = Field(5, ge=1)
    period: float = Field(2.0, gt=0)
    policy: Literal["study", "uniform", "peak"] = "study"
    margin: float = Field(0.1, ge=0)
    workers: int = Field(2, ge=1)


class TrainSection(_Strict):
    archs: list[str] = ["densenet121", "densenet169", "densenet201", "resnet18", "resnet34"]
    modalities: list[Literal["image", "video"]] = ["image", "video"]
    video_inputs: list[Literal["stack", "temporal", "summary"]] = ["stack"]
    weights: str = "imagenet"
    require_weights: bool = False
    epochs: int = Field(30, ge=1)
    folds: int = Field(5, ge=2)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    patience: int = Field(8, ge=1)
    select: Literal["best", "last"] = "best"  # checkpoint kept per fold: best fold-validation AUC (early stopping) or last
    crop: int = Field(224, ge=8)
    size: int | None = None
    freeze_bn: bool = False
    precise_bn: bool = True  # exact BatchNorm statistics over the fold's training cases before each validation

    @field_validator("archs")
    @classmethod
    def _known(cls, v):
        from ceusfusion.models.backbones import ARCHS

        bad = [a for a in v if a not in ARCHS]
        if bad:
            raise ValueError(f"unknown architecture(s) {bad}; choose from {list(ARCHS)}")
        if not v:
            raise ValueError("at least one architecture is needed")
        return v


class FusionSection(_Strict):
    enabled: bool = True
    inputs: Literal["features", "scores"] = "features"  # penultimate deep features, or each model's out-of-fold logit
    classifiers: list[str] = ["lr", "svm", "knn", "rf", "et", "xgb", "lgbm", "mlp"]
    folds: int = Field(5, ge=2)
    one_se: bool = False
    clinical: list[str] = []
    perfusion: bool = False
    fast: bool = False


class ExplainSection(_Strict):
    enabled: bool = True
    per_class: int = Field(2, ge=1)
    method: Literal["gradcam", "gradcam++", "scorecam"] = "gradcam"
    target: Literal["predicted", "positive"] = "predicted"  # class each map explains
    layer: str | None = None  # default: the deepest block with a map of at least 7x7


class StudyConfig(_Strict):
    cohort: Path
    out: Path
    seed: int = 0
    device: str = "auto"
    title: str = "ceusfusion study"
    prepare: PrepareConfig = PrepareConfig()
    train: TrainSection = TrainSection()
    fusion: FusionSection = FusionSection()
    explain: ExplainSection = ExplainSection()


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML; paths inside are relative to the YAML's folder."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"{path}: study config not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CeusError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise CeusError(f"{path}: the study config must be a mapping of keys to values")
    for key in ("cohort", "out"):
        if key in raw and raw[key] is not None and not Path(str(raw[key])).is_absolute():
            raw[key] = str(path.parent / str(raw[key]))
    return parse_config(raw, source=str(path))


def parse_config(raw: dict, source: str = "config") -> StudyConfig:
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"])
            what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            msgs.append(f"{loc}: {what}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and "input" in e and not isinstance(e["input"], dict) else ""))
        raise CeusError(f"{source}: bad study config: " + "; ".join(msgs)) from None


# ----------------------------------------------------------------------------- run manifest


def environment() -> dict:
    import numpy
    import sklearn
    import torch
    import torchvision

    return {"ceusfusion": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "user": getpass.getuser(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__, "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Study:
    """Runs the stages of one study config in its run directory."""

    def __init__(self, cfg: StudyConfig, console: Console | None = None, progress: bool = True):
        self.cfg = cfg
        self.run = Path(cfg.out)
        self.console = console or Console()
        self.progress = progress
        self.manifest_path = self.run / "manifest.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
        self.manifest.setdefault("stages", {})
        self.t0 = time.perf_counter()

    # -- bookkeeping -------------------------------------------------------------------------
    def _save(self) -> None:
        self.manifest.update({"ceusfusion": __version__, "config": json.loads(self.cfg.model_dump_json()),
                              "environment": environment(), "seed": self.cfg.seed,
                              "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        write_json(self.manifest_path, self.manifest)

    def _stage(self, name: str, fingerprint: str, outputs: list[Path], fn: Callable[[], dict | None], force: set[str]) -> None:
        rec = self.manifest["stages"].get(name, {})
        done = rec.get("fingerprint") == fingerprint and rec.get("status") == "done" and all(p.exists() for p in outputs)
        i = STAGES.index(name) + 1
        if done and name not in force:
            self.console.print(f"[dim][{i}/{len(STAGES)}] {name}: unchanged, skipped[/dim]")
            return
        self.console.print(f"[bold][{i}/{len(STAGES)}] {name}[/bold] (elapsed {time.perf_counter() - self.t0:.0f} s)")
        t = time.perf_counter()
        info = fn() or {}
        self.manifest["stages"][name] = {"status": "done", "fingerprint": fingerprint, "seconds": round(time.perf_counter() - t, 2),
                                         "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
        self._save()

    def fp(self, name: str) -> str:
        return self.manifest["stages"].get(name, {}).get("fingerprint", "")

    # -- the stages --------------------------------------------------------------------------
    def run_all(self, force: list[str] | None = None) -> Path:
        force_set: set[str] = set()
        for f in force or []:
            if f not in STAGES:
                raise CeusError(f"--force: unknown stage {f!r}; stages are {', '.join(STAGES)}")
            force_set.update(STAGES[STAGES.index(f):])  # a redone stage invalidates what follows
        c = self.cfg
        if not Path(c.cohort).is_file():
            raise CeusError(f"{c.cohort}: cohort manifest not found")
        cohort_hash = sha256_file(c.cohort)
        self.manifest["inputs"] = {"cohort": {"path": str(c.cohort), "sha256": cohort_hash}}
        self.run.mkdir(parents=True, exist_ok=True)

        self._stage("validate", _fingerprint(cohort_hash), [], self._validate, force_set)
        self._stage("prepare", _fingerprint(self.fp("validate"), c.prepare.model_dump()), [self.run / "prepared" / "index.csv"], self._prepare, force_set)
        self._stage("train", _fingerprint(self.fp("prepare"), c.train.model_dump(), c.seed), [self.run / "models"], self._train, force_set)
        self._stage("select", _fingerprint(self.fp("train")), [self.run / "selection.json"], self._select, force_set)
        if c.fusion.enabled:
            self._stage("features", _fingerprint(self.fp("select"), c.fusion.inputs), [self.run / "features"], self._features, force_set)
            self._stage("fuse", _fingerprint(self.fp("features"), c.fusion.model_dump(), c.seed), [self.run / "predictions" / "DL_combined.csv"], self._fuse, force_set)
        self._stage("evaluate", _fingerprint(self.fp("select"), self.fp("fuse") if c.fusion.enabled else ""), [self.run / "evaluation" / "metrics.json"], self._evaluate, force_set)
        if c.explain.enabled:
            self._stage("explain", _fingerprint(self.fp("select"), c.explain.model_dump()), [self.run / "explain"], self._explain, force_set)
        self._stage("report", _fingerprint(*(self.fp(s) for s in STAGES[:-1]), __version__), [self.run / "report.html"], self._report, force_set)
        self.manifest["safeguards"] = self._safeguards()
        self.manifest["total_seconds"] = round(time.perf_counter() - self.t0, 1)
        self._save()
        from ceusfusion.report.html import build_report

        build_report(self.run, title=c.title)  # refresh with the final manifest (safeguards, timings)
        return self.run / "report.html"

    def _validate(self) -> dict:
        from ceusfusion.ingest.cohort import load_cohort, validate

        df, problems = validate(self.cfg.cohort)
        if problems:
            lines = "; ".join(p.line() for p in problems[:5])
            raise CeusError(f"{self.cfg.cohort}: {len(problems)} problem(s) (run `ceusfusion validate` for all): {lines}")
        df = load_cohort(self.cfg.cohort)
        if "split" not in df.columns:
            raise CeusError(f"{self.cfg.cohort}: no split column; run `ceusfusion split` first and point the study at its output")
        return {"n_cases": len(df), "n_train": int((df["split"] == "train").sum()), "n_test": int((df["split"] == "test").sum())}

    def _prepare(self) -> dict:
        from ceusfusion.ingest.prepare import PrepareParams, prepare

        p = self.cfg.prepare
        params = PrepareParams(size=p.size, frames=p.frames, period=p.period, policy=p.policy, margin=p.margin)
        res = prepare(self.cfg.cohort, self.run, params, workers=p.workers, progress=self.progress,
                      on_failure=lambda cid, f, prob: self.console.print(f"[red]failed[/red] case {cid} ({f}): {prob}", highlight=False))
        if res.n_ok == 0:
            raise CeusError("no case could be prepared; see RUN/prepared/failures.csv")
        return {"n_ok": res.n_ok, "n_failed": len(res.failures)}

    def model_specs(self) -> list[tuple[str, str, str]]:
        t = self.cfg.train
        specs = []
        for modality in t.modalities:
            for arch in t.archs:
                for inp in (["single"] if modality == "image" else t.video_inputs):
                    specs.append((modality, arch, inp))
        return specs

    def _train(self) -> dict:
        from ceusfusion.models.train import TrainConfig, train

        t = self.cfg.train
        names = []
        specs = self.model_specs()
        t_start = time.perf_counter()
        for k, (modality, arch, inp) in enumerate(specs, start=1):
            tc = TrainConfig(modality=modality, arch=arch, input_mode=inp, weights=t.weights, require_weights=t.require_weights,
                             epochs=t.epochs, folds=t.folds, batch_size=t.batch_size, lr=t.lr, patience=t.patience, select=t.select,
                             crop=t.crop, size=t.size, freeze_bn=t.freeze_bn, precise_bn=t.precise_bn, seed=self.cfg.seed, device=self.cfg.device)
            name = tc.resolved().name
            done = time.perf_counter() - t_start
            eta = f", about {done / (k - 1) * (len(specs) - k + 1):.0f} s left for training" if k > 1 else ""
            self.console.print(f"  model {k}/{len(specs)}: {name}{eta}")
            same = self._same_config(self._safe_config(name), tc)
            if same and (self.run / "models" / name / "summary.json").is_file():
                self.console.print("  [dim]already trained with these settings, kept[/dim]")
            else:  # resume an interrupted run with the same settings; replace one with other settings
                train(self.run, tc, resume=same, overwrite=not same, progress=self.progress)
            names.append(name)
        return {"models": names}

    def _safe_config(self, name: str) -> dict | None:
        from ceusfusion.models.train import read_config

        try:
            return read_config(self.run, name)
        except CeusError:
            return None

    @staticmethod
    def _same_config(old: dict | None, tc) -> bool:
        if not old:
            return False
        from dataclasses import asdict

        new = asdict(tc.resolved())
        keys = [k for k in new if k not in ("device", "extra")]
        return all(old.get(k) == new[k] for k in keys)

    def _select(self) -> dict:
        from ceusfusion.models.train import rank_models

        wanted = {self._name(s) for s in self.model_specs()}
        best, tables = {}, []
        for modality in self.cfg.train.modalities:
            df = rank_models(self.run, modality)
            df = df[df["name"].isin(wanted)]
            if df.empty:
                raise CeusError(f"no trained {modality} model to select from")
            best[modality] = df.iloc[0]["name"]
            tables.append(df)
        ranking = pd.concat(tables, ignore_index=True)
        write_csv(self.run / "evaluation" / "cv_ranking.csv", ranking)
        write_json(self.run / "selection.json", {"rule": "highest mean CV AUC inside the training split; the test set is not used", "best": best})
        self._cv_figures(ranking)
        return {"best": best}

    def _name(self, spec) -> str:
        from ceusfusion.models.train import TrainConfig

        modality, arch, inp = spec
        return TrainConfig(modality=modality, arch=arch, input_mode=inp).resolved().name

    def _cv_figures(self, ranking: pd.DataFrame) -> None:
        """Figure 3: out-of-fold ROC of every architecture, one panel per modality."""
        from ceusfusion.evaluate.evaluate import read_csv_exact
        from ceusfusion.figures.curves import roc_figure, save_figure
        from ceusfusion.stats import auc_ci, roc_curve

        for modality, df in ranking.groupby("modality"):
            curves = []
            for name in df["name"]:
                pred = read_csv_exact(self.run / "predictions" / f"{name}.csv")
                tr = pred[pred["set"] == "train"]
                roc, a = roc_curve(tr["y"].to_numpy(), tr["prob"].to_numpy()), auc_ci(tr["y"].to_numpy(), tr["prob"].to_numpy())
                curves.append({"name": name, "fpr": 1 - roc.specificity, "tpr": roc.sensitivity, "auc": a.auc, "ci": a.ci})
            save_figure(roc_figure(curves, f"Cross-validated (out-of-fold) ROC, {modality} models"), self.run / "evaluation" / "figures" / f"cv_roc_{modality}")

    def _best(self) -> dict:
        return json.loads((self.run / "selection.json").read_text())["best"]

    def _features(self) -> dict:
        from ceusfusion.fusion.extract import features, score_features

        paths = {}
        for modality, name in self._best().items():
            if self.cfg.fusion.inputs == "scores":
                paths[modality] = str(score_features(self.run, name))
                continue
            path, _ = features(self.run / "models" / name, self.run / "features" / f"{name}.parquet", device=self.cfg.device)
            paths[modality] = str(path)
        return {"features": paths}

    def _fuse(self) -> dict:
        from ceusfusion.fusion.pipeline import FusionConfig, fuse, parse_families

        f = self.cfg.fusion
        suffix = ".score.parquet" if f.inputs == "scores" else ".parquet"
        feats = [self.run / "features" / f"{n}{suffix}" for n in self._best().values()]
        cfg = FusionConfig(classifiers=parse_families(f.classifiers), folds=f.folds, seed=self.cfg.seed, one_se=f.one_se, fast=f.fast)
        res = fuse(feats, self.run / "fusion", cohort=self.run / "cohort.csv" if f.clinical else None, clinical=f.clinical or None,
                   perfusion=(self.run / "prepared" / "perfusion.csv") if f.perfusion else None, cfg=cfg)
        src = self.run / "fusion" / "predictions" / f"{cfg.name}.csv"
        from ceusfusion.core.fsutil import write_bytes

        write_bytes(self.run / "predictions" / f"{cfg.name}.csv", src.read_bytes())
        return {"chosen": res.summary.get("chosen_family")}

    def _evaluate(self) -> dict:
        from ceusfusion.ingest.cohort import clinical_columns, read_manifest
        from ceusfusion.evaluate.evaluate import evaluate
        from ceusfusion.stats import table1

        names = list(self._best().values()) + (["DL_combined"] if self.cfg.fusion.enabled else [])
        paths = [self.run / "predictions" / f"{n}.csv" for n in names]
        metrics = evaluate(paths, self.run / "evaluation", seed=self.cfg.seed)
        cohort = read_manifest(self.run / "cohort.csv")
        cols = [c for c in clinical_columns(cohort)]
        if cols:
            write_csv(self.run / "evaluation" / "table1.csv", table1(cohort, columns=cols, class_names=("OLNM-", "OLNM+")))
        test = metrics["sets"].get("test", {}).get("models", {})
        return {"test_auc": {k: v.get("auc") for k, v in test.items()}}

    def _explain(self) -> dict:
        from ceusfusion.explain.cases import explain
        from ceusfusion.figures.explain import figure5

        truth = Path(self.cfg.cohort).parent / "truth.csv"  # the synthetic cohort records where the signal lives
        device = "cuda" if self.cfg.device in ("cuda", "auto") and __import__("torch").cuda.is_available() else "cpu"
        outs = {}
        for modality, name in self._best().items():
            outs[modality] = explain(self.run, name, self.run / "explain" / name, per_class=self.cfg.explain.per_class,
                                     method=self.cfg.explain.method, truth=truth if truth.is_file() else None,
                                     sanity=True, seed=self.cfg.seed, device=device, layer=self.cfg.explain.layer,
                                     target=self.cfg.explain.target)
        if {"image", "video"} <= set(outs):
            figure5(self.run / "explain" / self._best()["image"], self.run / "explain" / self._best()["video"], self.run / "explain" / "figure5")
        return {}

    def _report(self) -> dict:
        from ceusfusion.report.html import build_report

        build_report(self.run, title=self.cfg.title)
        return {}

    def _safeguards(self) -> dict:
        cohort = pd.read_csv(self.run / "cohort.csv", dtype=str) if (self.run / "cohort.csv").is_file() else None
        grouped = None
        if cohort is not None and "split" in cohort:
            g = cohort["group"].fillna(cohort["case_id"]) if "group" in cohort else cohort["case_id"]
            grouped = not (set(g[cohort["split"] == "train"]) & set(g[cohort["split"] == "test"]))
        sel = self.run / "selection.json"
        metrics = self.run / "evaluation" / "metrics.json"
        thr = None
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            thr = all(v.get("threshold_source") == "train" for v in m["sets"].get("test", {}).get("models", {}).values())
        return {
            "patient-level splits (no group in both train and test)": grouped,
            "model selection on cross-validation inside the training set only (selection.json)": sel.is_file(),
            "test set scored once, after training (mean of the fold models)": sel.is_file(),
            "thresholds fixed on the training set and carried to test": thr,
            "fusion fitted inside each CV fold (scaler, LASSO, classifier)": (self.run / "fusion" / "fusion.json").is_file() or None,
        }


def run_study(config: str | Path | StudyConfig, force: list[str] | None = None, console: Console | None = None, progress: bool = True) -> Path:
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    return Study(cfg, console=console, progress=progress).run_all(force)
