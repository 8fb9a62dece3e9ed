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
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy
import pandas as pd
import sklearn
import torch
import torchvision
from rich.console import Console

from ceusfusion import __version__
from ceusfusion.config import StudyConfig, load_config, stage_kwargs
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import RECORD, check_writable, claim, record_created, sha256_file, write_bytes, write_csv, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.evaluate.clinical import ClinicalOptions
from ceusfusion.evaluate.evaluate import evaluate
from ceusfusion.explain.cases import explain
from ceusfusion.explain.results import figure5_from_folders
from ceusfusion.fusion.extract import features, score_features
from ceusfusion.fusion.inputs import load_inputs
from ceusfusion.fusion.pipeline import FusionConfig, fuse
from ceusfusion.fusion.validation import internal_validation
from ceusfusion.ingest.cache import read_index
from ceusfusion.ingest.cohort import clinical_columns, load_cohort, read_manifest, validate
from ceusfusion.ingest.prepare import PrepareParams, prepare, roi_source_counts
from ceusfusion.models.registry import ModelRecord, read_config
from ceusfusion.models.select import read_selection, select
from ceusfusion.models.train import TrainConfig, TrainSettings, settings_differ, train
from ceusfusion.radiomics.compare import compare
from ceusfusion.radiomics.settings import RadiomicsConfig
from ceusfusion.radiomics.stage import radiomics
from ceusfusion.report.html import build_report
from ceusfusion.safeguards import safeguards
from ceusfusion.segment.link import record_link
from ceusfusion.stats.table1 import analysed_and_excluded, table1

STAGES = ("validate", "prepare", "train", "select", "features", "fuse", "evaluate", "explain", "report")
# with a radiomics section: its features after prepare, the Rad / DLR / DLR + clinical fits after fuse
RADIOMICS_STAGES = ("validate", "prepare", "radiomics", "train", "select", "features", "fuse", "compare", "evaluate",
                    "explain", "report")


# ----------------------------------------------------------------------------- run manifest


def environment() -> dict:
    """What manifest.json records of the machine: versions, not who ran it where (researchers share
    reports). ``CEUSFUSION_RECORD_HOST=1`` adds the host and user name for a lab's own records."""
    import os  # read here only: the one use of the environment in this module

    env = {"ceusfusion": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
           "scikit-learn": sklearn.__version__, "pandas": pd.__version__, "cuda": torch.cuda.is_available(),
           "threads": torch.get_num_threads()}
    if os.environ.get("CEUSFUSION_RECORD_HOST", "").strip() == "1":
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (containers)
            user = "unknown"
        env.update(host=socket.gethostname(), user=user)
    return env


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Study:
    """Runs the stages of one study config in its run directory."""

    def __init__(self, cfg: StudyConfig, console: Console | None = None, progress: bool = True,
                 overwrite_files: bool = False):
        self.cfg = cfg
        self.overwrite_files = overwrite_files
        self.run = Path(cfg.out)
        self.layout = RunLayout(self.run)
        self.console = console or Console()
        self.progress = progress
        self.manifest_path = self.run / "manifest.json"
        self.manifest = self._read_manifest()
        self.manifest.setdefault("stages", {})
        self.t0 = time.perf_counter()

    # -- bookkeeping -------------------------------------------------------------------------
    def _read_manifest(self) -> dict:
        """The run's manifest.json (resume), refusing one the tool did not write."""
        if not self.manifest_path.is_file():
            return {}
        check_writable(self.manifest_path, self.run, self.overwrite_files, flag="--overwrite-files")
        try:
            m = json.loads(self.manifest_path.read_text())
        except ValueError:
            raise CeusError(f"{self.manifest_path}: not valid JSON (not a ceusfusion manifest?)") from None
        if not isinstance(m, dict):
            raise CeusError(f"{self.manifest_path}: not a ceusfusion manifest (a JSON object)")
        return m

    def claim_outputs(self) -> None:
        """Check and record every output of the study before a stage writes: a study pointed at a folder of
        the user's (``out: .``) must not write over a report.html or metrics.json it did not create."""
        L = self.layout
        files, folders = [L.report, *L.stage_files], list(L.stage_folders)
        folders += [L.radiomics] if self.cfg.radiomics is not None else []
        if not (self.run / RECORD).exists() and self.manifest.get("stages"):  # a run made before the record existed
            record_created(self.run, files, folders)
        claim(self.run, files=files, folders=folders, force=self.overwrite_files, inputs=[self.cfg.cohort, *([self.cfg.boxes] if self.cfg.boxes else [])],
              flag="--overwrite-files")

    def _save(self) -> None:
        self.manifest.update({"ceusfusion": __version__, "config": json.loads(self.cfg.model_dump_json()),
                              "environment": environment(), "seed": self.cfg.seed,
                              "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        write_json(self.manifest_path, self.manifest)

    def _stage(self, name: str, fingerprint: str, outputs: list[Path], fn: Callable[[], dict | None], force: set[str]) -> None:
        rec = self.manifest["stages"].get(name, {})
        done = rec.get("fingerprint") == fingerprint and rec.get("status") == "done" and all(p.exists() for p in outputs)
        stages = self.stages()
        i = stages.index(name) + 1
        if done and name not in force:
            self.console.print(f"[dim][{i}/{len(stages)}] {name}: unchanged, skipped[/dim]")
            return
        self.console.print(f"[bold][{i}/{len(stages)}] {name}[/bold] (elapsed {time.perf_counter() - self.t0:.0f} s)")
        t = time.perf_counter()
        info = fn() or {}
        self.manifest["stages"][name] = {"status": "done", "fingerprint": fingerprint, "seconds": round(time.perf_counter() - t, 2),
                                         "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
        self._save()

    def _skip(self, names: tuple[str, ...], why: str) -> None:
        """Stages that do not apply to this study: said, recorded with the reason, and their old outputs removed
        (a fusion of an earlier configuration must not be reported, evaluated or exported as this one's)."""
        for name in names:
            self.console.print(f"[{self.stages().index(name) + 1}/{len(self.stages())}] {name}: skipped ({why})", highlight=False)
            self.manifest["stages"][name] = {"status": "skipped", "reason": why}
        for stale in (self.layout.fusion, self.layout.predictions("DL_combined")):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.is_file():
                stale.unlink()
        self._save()

    def stages(self) -> tuple[str, ...]:
        """This study's stages: radiomics and compare only with a radiomics section."""
        return STAGES if self.cfg.radiomics is None else RADIOMICS_STAGES

    def fp(self, name: str) -> str:
        return self.manifest["stages"].get(name, {}).get("fingerprint", "")

    # -- the stages --------------------------------------------------------------------------
    def run_all(self, force: list[str] | None = None) -> Path:
        force_set: set[str] = set()
        stages = self.stages()
        for f in force or []:
            if f not in stages:
                raise CeusError(f"--force: unknown stage {f!r}; stages are {', '.join(stages)}")
            force_set.update(stages[stages.index(f):])  # a redone stage invalidates what follows
        c = self.cfg
        if not Path(c.cohort).is_file():
            raise CeusError(f"{c.cohort}: cohort manifest not found")
        cohort_hash = sha256_file(c.cohort)
        self.manifest["inputs"] = {"cohort": {"path": str(c.cohort), "sha256": cohort_hash}}
        if c.boxes is not None:  # its boxes are part of the cohort: a changed file redoes validate and prepare
            if not Path(c.boxes).is_file():
                raise CeusError(f"{c.boxes}: boxes file not found")
            self.manifest["inputs"]["boxes"] = {"path": str(c.boxes), "sha256": sha256_file(c.boxes)}
            cohort_hash = _fingerprint(cohort_hash, self.manifest["inputs"]["boxes"]["sha256"])
        self.run.mkdir(parents=True, exist_ok=True)
        self.claim_outputs()

        self._stage("validate", _fingerprint(cohort_hash), [], self._validate, force_set)
        self._stage("prepare", _fingerprint(self.fp("validate"), c.prepare.model_dump()), [self.layout.prepared_index], self._prepare, force_set)
        if c.radiomics is not None:
            self._stage("radiomics", _fingerprint(self.fp("prepare"), c.radiomics.model_dump(), c.seed), [self.layout.features("radiomics")], self._radiomics, force_set)
        self._stage("train", _fingerprint(self.fp("prepare"), c.train.model_dump(), c.seed), [self.run / "models"], self._train, force_set)
        self._stage("select", _fingerprint(self.fp("train")), [self.run / "selection.json"], self._select, force_set)
        fused, why = self.fused_name() if c.fusion.enabled else (None, "fusion.enabled is false")
        if fused:
            self._stage("features", _fingerprint(self.fp("select"), c.fusion.inputs), [self.run / "features"], self._features, force_set)
            self._stage("fuse", _fingerprint(self.fp("features"), c.fusion.model_dump(), c.seed, *([fused] if fused != "DL_combined" else [])), [self.layout.predictions(fused)], self._fuse, force_set)
        elif c.fusion.enabled:
            self._skip(("features", "fuse"), why)
        if c.radiomics is not None:
            self._stage("compare", _fingerprint(self.fp("radiomics"), self.fp("select"), self.fp("fuse"), c.fusion.model_dump(), c.seed), [self.layout.radiomics / "comparison.json"], self._compare, force_set)
        words = c.outcome.model_dump()  # the outcome's words are in metrics.json, Table 1 and Figure 5
        self._stage("evaluate", _fingerprint(self.fp("select"), self.fp("fuse") if c.fusion.enabled else "", words, c.evaluate.model_dump(), *([self.fp("compare")] if c.radiomics is not None else [])), [self.run / "evaluation" / "metrics.json"], self._evaluate, force_set)
        if c.explain.enabled:
            self._stage("explain", _fingerprint(self.fp("select"), c.explain.model_dump(), words), [self.run / "explain"], self._explain, force_set)
        self._stage("report", _fingerprint(*(self.fp(s) for s in stages[:-1]), __version__), [self.run / "report.html"], self._report, force_set)
        self.manifest["safeguards"] = safeguards(self.run)
        self.manifest["total_seconds"] = round(time.perf_counter() - self.t0, 1)
        self._save()
        build_report(self.run, title=c.title)  # refresh with the final manifest (safeguards, timings)
        return self.run / "report.html"

    def _validate(self) -> dict:
        df, problems = validate(self.cfg.cohort, boxes=self.cfg.boxes)
        if problems:
            lines = "; ".join(p.line() for p in problems[:5])
            raise CeusError(f"{self.cfg.cohort}: {len(problems)} problem(s) (run `ceusfusion validate` for all): {lines}")
        df = load_cohort(self.cfg.cohort, self.cfg.boxes)
        if "split" not in df.columns:
            raise CeusError(f"{self.cfg.cohort}: no split column; run `ceusfusion split` first and point the study at its output")
        return {"n_cases": len(df), "n_train": int((df["split"] == "train").sum()), "n_test": int((df["split"] == "test").sum())}

    def _prepare(self) -> dict:
        p = self.cfg.prepare
        params = PrepareParams(**stage_kwargs(p, PrepareParams))
        res = prepare(self.cfg.cohort, self.run, params, workers=p.workers, progress=self.progress, boxes=self.cfg.boxes,
                      on_failure=lambda cid, f, prob: self.console.print(f"[red]failed[/red] case {cid} ({f}): {prob}", highlight=False))
        if res.n_ok == 0:
            raise CeusError("no case could be prepared; see RUN/prepared/failures.csv")
        link = record_link(self.run)  # which segmenter made the predicted masks (report, card, safeguard)
        return {"n_ok": res.n_ok, "n_failed": len(res.failures), "segmenters": len(link.segmenters) if link else 0}

    def model_configs(self) -> list[TrainConfig]:
        """One TrainConfig per modality × architecture × input mode of the study."""
        t = self.cfg.train
        return [TrainConfig(**{**stage_kwargs(t, TrainSettings), "weights": t.weights_of(arch)}, modality=modality, arch=arch,
                            input_mode=inp, seed=self.cfg.seed, device=self.cfg.device)
                for modality in t.modalities for arch in t.archs
                for inp in (["single"] if modality == "image" else t.video_inputs)]

    def _train(self) -> dict:
        names = []
        configs = self.model_configs()
        t_start = time.perf_counter()
        for k, tc in enumerate(configs, start=1):
            done = time.perf_counter() - t_start
            eta = f", about {done / (k - 1) * (len(configs) - k + 1):.0f} s left for training" if k > 1 else ""
            self.console.print(f"  model {k}/{len(configs)}: {tc.name}{eta}")
            old = self._saved_config(tc.name)
            same = (old is not None and not settings_differ(old.raw, tc.model_dump())
                    and old.prepare_fingerprint in (None, read_run_record(self.run).fingerprint))
            if same and self.layout.model_summary(tc.name).is_file():
                self.console.print("  [dim]already trained with these settings, kept[/dim]")
            else:  # resume an interrupted run with the same settings; replace one with other settings
                train(self.run, tc, resume=same, overwrite=not same, progress=self.progress)
            names.append(tc.name)
        # which weights each model really started from (models.resolver's record), for the manifest
        weights = {n: self._summary(n).get("weights_source", {}) for n in names}
        return {"models": names, "weights": weights}

    def _summary(self, name: str) -> dict:
        path = self.layout.model_summary(name)
        return json.loads(path.read_text()) if path.is_file() else {}

    def _saved_config(self, name: str) -> ModelRecord | None:
        try:
            return read_config(self.run, name)
        except CeusError:
            return None

    def _select(self) -> dict:
        rec = select(self.run, list(self.cfg.train.modalities), names={c.name for c in self.model_configs()})
        return {"best": rec["best"]}

    def _best(self) -> dict:
        return read_selection(self.run)

    def _features(self) -> dict:
        paths = {}
        for modality, name in self._best().items():
            if self.cfg.fusion.inputs == "scores":
                paths[modality] = str(score_features(self.run, name))
                continue
            path, _ = features(self.layout.model(name), self.layout.features(name), device=self.cfg.device)
            paths[modality] = str(path)
        return {"features": paths}

    def _radiomics(self) -> dict:
        r = self.cfg.radiomics
        rec = radiomics(self.run, RadiomicsConfig(**stage_kwargs(r, RadiomicsConfig), seed=self.cfg.seed), workers=r.workers,
                        force=self.overwrite_files, on_failure=lambda line: self.console.print(f"[red]failed[/red] {line}", highlight=False))
        return {k: rec[k] for k in ("n_cases", "n_failed", "n_features_extracted", "n_dropped_icc", "n_features_kept")}

    def _compare(self) -> dict:
        """Rad, DLR and DLR + clinical, fitted as the fusion is (``radiomics.compare``)."""
        f = self.cfg.fusion
        deep = []
        for name in self._best().values():
            path = self.layout.score_features(name) if f.inputs == "scores" else self.layout.features(name)
            if not path.is_file():
                path = score_features(self.run, name) if f.inputs == "scores" else features(self.layout.model(name), path, device=self.cfg.device)[0]
            deep.append(Path(path))
        dl = (self.fused_name()[0] if f.enabled else None) or next(iter(self._best().values()))
        clinical = f.clinical or clinical_columns(read_manifest(self.layout.cohort))
        rec = compare(self.run, deep, FusionConfig(**stage_kwargs(f, FusionConfig), seed=self.cfg.seed), clinical, dl)
        return {"models": list(rec["models"]), "dl": dl}

    def _compared(self) -> list[str]:
        """The comparison models evaluate scores beside the deep ones (none without a radiomics section)."""
        path = self.layout.radiomics / "comparison.json"
        if self.cfg.radiomics is None or not path.is_file():
            return []
        return [n for n in json.loads(path.read_text()).get("models", {}) if self.layout.predictions(n).is_file()]

    def _fusion_args(self) -> tuple[list[Path], dict, FusionConfig]:
        """The fuse stage's inputs: feature files, cohort/clinical/perfusion arguments, config (also for its validation)."""
        f = self.cfg.fusion
        feats = [self.layout.score_features(n) if f.inputs == "scores" else self.layout.features(n) for n in self._best().values()]
        cfg = FusionConfig(**stage_kwargs(f, FusionConfig), seed=self.cfg.seed)
        kw = {"cohort": self.layout.cohort if f.clinical else None, "clinical": f.clinical or None,
              "perfusion": self.layout.perfusion if f.perfusion else None}
        return feats, kw, cfg

    def fused_name(self) -> tuple[str | None, str]:
        """(the fused model's name, or None when there is nothing to fuse; why it is named or skipped so). DL_combined
        fuses the image and the video model; one modality's model alone is fused only with clinical covariates or
        perfusion parameters, and named for what it is (``DL_image+clinical``): refitting its own score or features
        alone is no fusion (its DeLong difference from the model it copies is 0)."""
        best, f = self._best(), self.cfg.fusion
        if len(best) > 1:
            return "DL_combined", "fuses the image and the video models"
        only = next(iter(best))
        extra = [k for k, on in (("clinical", bool(f.clinical)), ("perfusion", f.perfusion)) if on]
        if extra:
            return f"DL_{only}+{'+'.join(extra)}", f"one modality ({only}), fused with the {' and '.join(extra)} inputs only"
        return None, (f"one modality ({only}) and no clinical or perfusion inputs: nothing to fuse its model with "
                      f"(a 'DL_combined' would refit that model's own output)")

    def _fuse(self) -> dict:
        feats, kw, cfg = self._fusion_args()
        name, why = self.fused_name()
        cfg = cfg.model_copy(update={"name": name})
        res = fuse(feats, self.layout.fusion, cfg=cfg, **kw)
        src = self.layout.fusion / "predictions" / f"{cfg.name}.csv"
        write_bytes(self.layout.predictions(cfg.name), src.read_bytes())
        return {"chosen": res.summary.get("chosen_family"), "model": name, "why": why}

    def _evaluate(self) -> dict:
        fused = self.fused_name()[0] if self.cfg.fusion.enabled else None
        names = list(self._best().values()) + ([fused] if fused else []) + self._compared()
        validation = self._fusion_validation() if fused else None
        selection = self._selection_corrected(validation)
        if fused and fused != "DL_combined" and "DL_combined" in selection:  # the fusion's record, under its name
            selection[fused] = selection.pop("DL_combined")
        metrics = evaluate([self.layout.predictions(n) for n in names], self.layout.evaluation, seed=self.cfg.seed,
                           cohort=self.layout.cohort, clinical=self._clinical_options(), validation=validation,
                           selection=selection)
        self._table1()
        test = metrics["sets"].get("test", {}).get("models", {})
        return {"test_auc": {k: v.get("auc") for k, v in test.items()},
                "bootstrap_seconds": validation.get("seconds") if validation else None}

    def _selection_corrected(self, validation: dict | None = None) -> dict[str, dict]:
        """Each reported model's training AUC corrected for its selection: the architectures' (selection.json,
        BBC-CV over every candidate); the fusion's from its internal validation where that nested the whole
        procedure (family choice included), else fusion.json's BBC-CV over every family."""
        sel = json.loads(self.layout.selection.read_text()) if self.layout.selection.is_file() else {}
        out = {rec["model"]: rec for rec in (sel.get("selection_corrected") or {}).values() if rec.get("model")}
        nested = (validation or {}).get("selection_corrected") if (validation or {}).get("validation") == "nested_cv" else None
        fused = nested if nested and nested.get("auc") is not None else self._fusion_summary().get("selection_corrected")
        if fused:
            out["DL_combined"] = fused
        return out

    def _fusion_summary(self) -> dict:
        path = self.layout.fusion / "fusion.json"
        return json.loads(path.read_text()) if self.cfg.fusion.enabled and path.is_file() else {}

    def _clinical_options(self) -> ClinicalOptions:
        """The study's clinical statistics: candidate predictors as fusion considered them; the nomogram of
        DL_combined plus the fusion's clinical covariates (when none are set, the cohort's clinical columns); the
        outcome's words; the evaluate section's thresholds and NRI cut points (unset: from the training prevalence)."""
        lasso = self._fusion_summary().get("lasso") or {}
        covs = self.cfg.fusion.clinical or clinical_columns(read_manifest(self.layout.cohort))
        ev = self.cfg.evaluate
        return ClinicalOptions(candidate_predictors=lasso.get("n_features_in"), nomogram_covariates=tuple(covs),
                               outcome=self.cfg.outcome, cuts=tuple(ev.nri_cuts) if ev.nri_cuts else None,
                               thresholds=tuple(ev.thresholds) if ev.thresholds else None)

    def _fusion_validation(self) -> dict | None:
        """Internal validation of DL_combined by a method valid for the fitted procedure (``fusion.validation``):
        Harrell's bootstrap for a single ``lr`` family, repeated grouped nested CV of the whole procedure (family
        choice included) otherwise, its outer fits in as many processes as torch has threads (``--threads``); bounded by
        a fit budget, a line per fold; ``fusion.bootstrap: 0`` turns it off."""
        family = self._fusion_summary().get("chosen_family")
        if not self.cfg.fusion.bootstrap or not family:
            return None
        feats, kw, cfg = self._fusion_args()
        iv = internal_validation(load_inputs(feats, **kw), cfg, family, seed=self.cfg.seed,
                                 model=self.layout.fusion / "model.joblib", n_jobs=torch.get_num_threads(),
                                 say=lambda line: self.console.print(line, highlight=False))
        if iv.get("skipped"):
            self.console.print(f"  [yellow]no internal validation[/yellow]: {iv['skipped']}", highlight=False)
        return iv

    def _table1(self) -> None:
        """Table 1 of the cases analysed (prepared); the cases that failed preparation listed apart, with why."""
        cohort = read_manifest(self.layout.cohort)
        cols = list(clinical_columns(cohort))
        if not cols:
            return
        analysed, excluded = analysed_and_excluded(cohort, read_index(self.run)["case_id"])
        t = table1(analysed, columns=cols, class_names=self.cfg.outcome.class_names, seed=self.cfg.seed)
        write_csv(self.layout.evaluation / "table1.csv", t)
        fails = self.layout.prepared / "failures.csv"
        why = pd.read_csv(fails, dtype=str) if fails.is_file() and fails.stat().st_size else pd.DataFrame()
        why = dict(zip(why["case_id"], why["problem"])) if {"case_id", "problem"} <= set(why.columns) else {}
        index = read_index(self.run)
        write_json(self.layout.evaluation / "table1_tests.json", {
            **t.attrs, "n_analysed": len(analysed), "roi_sources": roi_source_counts(index[index["case_id"].isin(analysed["case_id"].astype(str))]),
            "excluded": [{"case_id": str(c), "split": str(sp), "reason": why.get(str(c), "not prepared")}
                         for c, sp in zip(excluded["case_id"], excluded.get("split", [""] * len(excluded)))]})

    def _explain(self) -> dict:
        e = self.cfg.explain
        truth = Path(self.cfg.cohort).parent / "truth.csv"  # the synthetic cohort records where the signal lives
        best = self._best()
        for name in best.values():
            explain(self.run, name, self.layout.explain(name), per_class=e.per_class, method=e.method,
                    truth=truth if truth.is_file() else None, sanity=True, seed=self.cfg.seed, device=self.cfg.device,
                    layer=e.layer, target=e.target)
        if {"image", "video"} <= set(best):
            figure5_from_folders(self.layout.explain(best["image"]), self.layout.explain(best["video"]),
                                 self.layout.explain_dir / "figure5", outcome=self.cfg.outcome)
        return {}

    def _report(self) -> dict:
        build_report(self.run, title=self.cfg.title)
        return {}


def run_study(config: str | Path | StudyConfig, force: list[str] | None = None, console: Console | None = None,
              progress: bool = True, overwrite_files: bool = False) -> Path:
    cfg = config if isinstance(config, StudyConfig) else load_config(config)
    return Study(cfg, console=console, progress=progress, overwrite_files=overwrite_files).run_all(force)
