"""Shared plumbing of the real-data benchmarks (bench/real_pocus.py, bench/real_ddti.py).

Why here and not in the package: these helpers only turn the shared benchmark folders
(``../shared/data/<set>/cases.csv``) into a cohort manifest and drive the existing stages
(prepare → train → features → fuse → evaluate) with benchmark defaults; the tool itself
needs none of it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def limit_threads(n: int) -> None:
    """Cap every thread pool (torch, BLAS) before the heavy imports do work: the machine is shared."""
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = str(n)
    import torch

    torch.set_num_threads(n)


def manifest(cases: Path, test_cases: Path | None, columns: dict[str, str], group: str) -> pd.DataFrame:
    """Cohort manifest from benchmark ``cases.csv`` files: file columns made absolute (they are
    relative to the folder holding that csv), ``group`` copied from ``group``, split=train for
    ``cases`` and split=test for ``test_cases`` (scored once, after CV)."""
    from ceusfusion.core.errors import CeusError

    parts = []
    for path, split in ((cases, "train"), (test_cases, "test")):
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise CeusError(f"{path}: cases file not found")
        src = pd.read_csv(path, dtype=str)
        need = ["case_id", "label", group, *columns.values()]
        miss = [c for c in need if c not in src.columns]
        if miss:
            raise CeusError(f"{path}: missing column(s) {', '.join(miss)}")
        df = pd.DataFrame({"case_id": src["case_id"], "label": src["label"], "group": src[group], "split": split})
        for dst, col in columns.items():
            df[dst] = [str((path.parent / v).resolve()) for v in src[col]]
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    dup = df["case_id"][df["case_id"].duplicated()]
    if len(dup):
        raise CeusError(f"case_id {dup.iloc[0]!r} appears in both --cases and --test-cases (or twice)")
    shared = set(df.loc[df["split"] == "train", "group"]) & set(df.loc[df["split"] == "test", "group"])
    if shared:
        raise CeusError(f"group {sorted(shared)[0]!r} is in both --cases and --test-cases (leakage)")
    return df


def prepare_run(df: pd.DataFrame, run: Path, params, workers: int = 1, still_from_video: bool = False) -> dict:
    """Write the manifest and fill RUN/prepared (cached: unchanged cases are skipped). With
    ``still_from_video`` every case's still is its middle keyframe (the DL_image input)."""
    from ceusfusion.core.fsutil import write_csv
    from ceusfusion.core.runlayout import RunLayout
    from ceusfusion.ingest import cache
    from ceusfusion.ingest.prepare import prepare

    run.mkdir(parents=True, exist_ok=True)
    cohort = run / "cohort_in.csv"
    write_csv(cohort, df)
    t0 = time.perf_counter()
    res = prepare(cohort, run, params, workers=workers, progress=False)
    if len(res.failures):
        print(f"  {len(res.failures)} case(s) failed to prepare:\n{res.failures.head().to_string()}", flush=True)
    if still_from_video:
        idx = cache.read_index(run)
        for cid in idx["case_id"]:
            z = cache.load_case(run, cid)
            if "video" in z:
                mid = z["video"][len(z["video"]) // 2]
                if "image" not in z or not np.array_equal(z["image"], mid):
                    z["image"] = mid
                    cache.save_case(run, cid, record=cache.case_record(run, cid), **z)
        idx["has_image"] = idx["has_video"]
        write_csv(RunLayout(run).prepared_index, idx)
    return {"n_ok": res.n_ok, "n_cases": res.n_cases, "seconds": round(time.perf_counter() - t0, 1),
            "cohort": cohort}


def train_model(run: Path, name: str, modality: str, mode: str, a, weights: str = "none", epochs: int | None = None,
                size: int | None = None) -> dict:
    """One grouped K-fold CV model (resumable: a finished model is reused)."""
    from ceusfusion.models.train import TrainConfig, train

    size = size or a.size
    ep = epochs or a.epochs
    t0 = time.perf_counter()
    tc = TrainConfig(modality=modality, arch=a.arch, input_mode=mode, weights=weights, epochs=ep, folds=a.folds,
                     batch_size=a.batch, size=size, crop=size - size // 8, seed=a.seed, device=a.device, name=name,
                     patience=ep, lr=a.lr, select=getattr(a, "select", "best"),
                     finetune=getattr(a, "finetune", "full"), backbone_lr=getattr(a, "backbone_lr", 1.0),
                     # a CV-only benchmark has no test set: the refit model would score nothing
                     test_scoring="refit" if getattr(a, "test_cases", None) else "fold-mean")
    s = train(run, tc, resume=True, progress=False)
    s["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"  {name}: CV AUC {s['cv_auc_mean']:.3f} ± {s['cv_auc_std']:.3f}, OOF AUC {s['oof_auc']:.3f} "
          f"({s['seconds']:.0f} s)", flush=True)
    return s


def finetune_tag(a) -> str:
    """The part of a model name that says how it was fine-tuned (empty for the full default)."""
    tag = "" if a.finetune == "full" else f"_{a.finetune}"
    return tag + ("" if a.backbone_lr == 1.0 else f"_blr{a.backbone_lr:g}")


def fuse_models(run: Path, names: list[str], cohort: Path, families: str, folds: int, seed: int,
                name: str = "DL_combined", level: str = "features") -> Path:
    """Fusion of the given models in grouped CV (LASSO + classifiers); returns the predictions file.
    ``level``: ``features`` (the tool's path: out-of-fold penultimate deep features) or ``scores``
    (each model's out-of-fold logit)."""
    from ceusfusion.fusion.extract import features, score_features
    from ceusfusion.fusion.families import parse_families
    from ceusfusion.fusion.pipeline import FusionConfig, fuse

    paths = []
    for n in names:
        if level == "scores":
            paths.append(score_features(run, n))
            continue
        p = run / "features" / f"{n}.parquet"
        if not p.is_file():
            p, _ = features(run / "models" / n, device="cpu")
        paths.append(p)
    out = run / "fusion" / name
    pred = out / "predictions" / f"{name}.csv"
    if not pred.is_file():
        t0 = time.perf_counter()
        res = fuse(paths, out, cohort=cohort, cfg=FusionConfig(classifiers=parse_families(families), folds=folds,
                                                               seed=seed, name=name), figures=False)
        s = res.summary
        print(f"  {name}: chosen {s['chosen_classifier']} (CV AUC {s['cv_auc_mean']:.3f}), "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return pred


def evaluate_table(pred_files: dict[str, Path], out: Path, pairs: list[tuple[str, str]], title: str) -> str:
    """AUC with DeLong 95% CI per model on the out-of-fold rows (and the test rows when present),
    and paired DeLong tests for ``pairs``; returns the printed markdown."""
    from ceusfusion.evaluate.evaluate import evaluate

    # evaluate names a model by its file stem: copy each file under its display name
    inputs = []
    for label, src in pred_files.items():
        dst = out / "inputs" / f"{label}.csv"
        dst.parent.mkdir(parents=True, exist_ok=True)
        pd.read_csv(src, dtype={"case_id": str})[["case_id", "set", "fold", "y", "prob"]].to_csv(dst, index=False)
        inputs.append(dst)
    m = evaluate(inputs, out, figures=False)
    lines = [f"### {title}", ""]
    for s, block in m["sets"].items():
        what = "out-of-fold (grouped CV)" if s == "train" else "external test set (scored once, after CV)"
        lines += [f"{s} set: {what}, n = {block['n']} ({block['n_pos']} positive)", "",
                  "| model | AUC (95% DeLong CI) | sensitivity | specificity |", "|---|---|---|---|"]
        for name, r in block["models"].items():
            lo, hi = r["auc_ci"]
            lines.append(f"| {name} | {r['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {r['sensitivity']:.3f} | {r['specificity']:.3f} |")
        lines += ["", "| paired DeLong test | AUC a | AUC b | diff (95% CI) | p |", "|---|---|---|---|---|"]
        comp = {(c["a"], c["b"]): c for c in block["comparisons"]}
        for a_, b_ in pairs:
            c = comp.get((a_, b_))
            sign = 1
            if c is None:
                c, sign = comp.get((b_, a_)), -1
            if c is None:
                continue
            d, (lo, hi) = sign * c["diff"], sorted(sign * v for v in c["diff_ci"])
            aa, ab = (c["auc_a"], c["auc_b"]) if sign == 1 else (c["auc_b"], c["auc_a"])
            lines.append(f"| {a_} vs {b_} | {aa:.3f} | {ab:.3f} | {d:+.3f} ({lo:+.3f} to {hi:+.3f}) | {c['p']:.3f} |")
        lines.append("")
    text = "\n".join(lines)
    print(text, flush=True)
    (out / "table.md").write_text(text)
    return text


def save_json(path: Path, obj) -> None:
    from ceusfusion.core.fsutil import write_json

    write_json(path, json.loads(json.dumps(obj, default=str)))
