"""``segment train``: fold models learned from the training split's masks, cross-validated by patient.

nnU-Net-like defaults sized for a CPU: Dice + cross-entropy, spatial and intensity augmentation, AdamW
with a polynomial LR decay, bfloat16 autocast on a GPU (``core.runtime``). Each step mixes the two
ways the model is used: the square around the mask's box, moved at random as a hurried user draws
it (box-prompted), and the whole frame without a prompt (automatic). The K fold models are both the
cross-validation (each scores its held-out patients, in both modes) and the ensemble ``predict``
uses, so no test-split mask and no held-out picture ever trains the model that scores it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from segmentation_models_pytorch.losses import DiceLoss
from sklearn.model_selection import StratifiedGroupKFold

from ceusfusion.core.config import StageConfig
from ceusfusion.core.errors import CaseError, CeusError
from ceusfusion.core.fsutil import claim, savefig, sha256_file, write_csv, write_json
from ceusfusion.figures.segment import cv_figure
from ceusfusion.core.runtime import autocast, deterministic, resolve_device
from ceusfusion.ingest.cohort import load_cohort
from ceusfusion.models.resolver import resolve_weights
from ceusfusion.segment.boxes import context_region, jitter_box, whole_region
from ceusfusion.segment.data import Sample, load_picture, mask_box, training_rows
from ceusfusion.segment.infer import Segmenter, normalise, segment_auto, segment_box
from ceusfusion.segment.metrics import scores, summarise
from ceusfusion.segment.record import RECORD_NAME, SegmenterRecord, write_record
from ceusfusion.segment.net import DECODER, build_net, grey_stats, save_net, start_weights
from ceusfusion.segment.sampling import augment_intensity, inputs, random_view, sample


class SegmentSettings(StageConfig):
    """What defines a trained segmenter (recorded in segmenter.json)."""

    encoder: str = "tf_efficientnet_lite0"
    weights: str = "imagenet"
    size: int = Field(128, ge=32, le=1024)
    epochs: int = Field(12, ge=1)
    folds: int = Field(5, ge=2, le=20)
    batch: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    context: float = Field(0.25, ge=0, le=2)
    jitter: float = Field(0.1, ge=0, le=0.45)
    p_box: float = Field(0.5, ge=0, le=1)
    seed: int = 0
    device: str = "auto"

    @field_validator("size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"--size must be a multiple of 32 (the U-Net halves it five times), got {v}")
        return v


def assign_folds(samples: list[Sample], k: int, seed: int) -> np.ndarray:
    """Fold per picture: grouped by patient, stratified by the nodule's size tertile (TN-SCUI's balance)."""
    groups = np.array([s.group for s in samples])
    if len(set(groups)) < k:
        raise CeusError(f"only {len(set(groups))} patient(s) with a training mask: too few for {k} folds (--folds)")
    area = np.array([s.mask.mean() for s in samples])
    strata = np.searchsorted(np.quantile(area, [1 / 3, 2 / 3]), area) if len(area) >= 3 * k else np.zeros(len(area), int)
    fold = np.full(len(samples), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, va) in enumerate(cv.split(np.zeros(len(samples)), strata, groups)):
        fold[va] = f
    return fold


def make_batch(batch: list[Sample], rng: np.random.Generator, gen: torch.Generator,
               st: SegmentSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented (B, 2, S, S) inputs and (B, 1, S, S) targets: a box-prompted view with probability p_box,
    else the whole frame."""
    xs, ys = [], []
    for s in batch:
        if rng.random() < st.p_box:
            box = jitter_box(mask_box(s), rng, st.jitter, s.frame.shape)
            view = random_view(context_region(box, st.context), rng)
        else:
            box, view = None, random_view(whole_region(s.frame.shape), rng, shift=0.05)
        x, g = inputs(s.frame, view, box, st.size)
        xs.append(x)
        ys.append((sample(s.mask.astype(np.float32), g) > 0.5).float()[None])
    x = torch.stack(xs)
    x = torch.cat([augment_intensity(x[:, :1], gen), x[:, 1:]], dim=1)
    return x, torch.stack(ys)


def fit_fold(samples: list[Sample], st: SegmentSettings, weights, device: torch.device, seed: int,
             log=None) -> tuple[torch.nn.Module, list[dict]]:
    """One fold model: Dice + BCE, AdamW, polynomial LR decay over every step; the history per epoch."""
    torch.manual_seed(seed)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    net = build_net(st.encoder)
    start_weights(net, st.encoder, weights)
    net.to(device).train()
    mean, std = grey_stats(st.encoder)
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr, weight_decay=1e-4)
    steps = max(1, len(samples) // st.batch)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=st.epochs * steps, power=0.9)
    dice_loss = DiceLoss("binary", from_logits=True)
    history = []
    for epoch in range(st.epochs):
        order, total, t0 = rng.permutation(len(samples)), 0.0, time.time()
        for b in range(steps):
            x, y = make_batch([samples[i] for i in order[b * st.batch:(b + 1) * st.batch]], rng, gen, st)
            x, y = normalise(x, mean, std).to(device), y.to(device)
            with autocast(device):
                logits = net(x).float()
            loss = dice_loss(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": total / steps, "seconds": round(time.time() - t0, 2)})
        if log:
            log(f"epoch {epoch + 1}/{st.epochs}: loss {total / steps:.4f}")
    return net.eval(), history


def jittered_boxes(held: list[Sample], st: SegmentSettings, fold: int) -> list:
    """The held-out pictures' boxes as a hurried user draws them: the mask's box, every side moved at random by
    up to ``jitter`` of its size (seeded per fold, so a baseline can be scored on the same boxes)."""
    rng = np.random.default_rng([st.seed, 7919, fold])
    return [jitter_box(mask_box(s), rng, st.jitter, s.frame.shape) for s in held]


def score_held_out(seg: Segmenter, held: list[Sample], boxes: list, fold: int, keep: dict | None = None) -> list[dict]:
    """Per held-out picture and mode: Dice, IoU, HD95 of the fold model's mask against the manual one
    (box-prompted with ``boxes``; automatic from the whole frame). ``keep`` (a dict) also receives each
    out-of-fold mask under (case_id, modality, mode), for a caller that writes them."""
    rows = []
    for s, box in zip(held, boxes):
        for mode, res in (("box", segment_box(seg, s.frame, box)), ("auto", segment_auto(seg, s.frame))):
            rows.append({"case_id": s.case_id, "modality": s.modality, "fold": fold, "mode": mode,
                         **scores(res.mask, s.mask)})
            if keep is not None:
                keep[(s.case_id, s.modality, mode)] = res.mask
    return rows


def load_samples(rows: list[tuple[dict, str]], cohort: Path, on_failure=None) -> tuple[list[Sample], list[dict]]:
    """Every training picture that reads; a failing one is one line, the others go on."""
    samples, failures = [], []
    for row, modality in rows:
        try:
            samples.append(load_picture(row, modality, cohort, with_mask=True))
        except CaseError as exc:
            failures.append({"case_id": exc.case_id, "file": exc.file or "", "problem": exc.problem})
            if on_failure:
                on_failure(exc.case_id, exc.file, exc.problem)
    return samples, failures


@dataclass
class Plan:
    """What one training run works on: its pictures, their folds, the test split, the weights, the device."""

    cohort: Path
    samples: list[Sample]
    fold: np.ndarray
    test_cases: list[str]
    failures: list[dict]
    weights: object
    device: torch.device


def plan(cohort: Path, st: SegmentSettings, on_failure=None) -> Plan:
    """Read the cohort, keep the training split's masks, assign folds, resolve the weights once."""
    df = load_cohort(cohort)
    rows = training_rows(df)
    test = sorted(df.loc[df["split"].astype(str).str.strip() == "test", "case_id"].astype(str))
    samples, failures = load_samples(rows, cohort, on_failure)
    if not samples:
        raise CeusError(f"{cohort}: no training-split case with a readable mask to learn from")
    leaked = sorted({s.case_id for s in samples} & set(test))
    if leaked:  # cannot happen through training_rows; a guard for the promise the record makes
        raise CeusError(f"test-split case(s) {', '.join(leaked)} would train the segmenter")
    fold = assign_folds(samples, st.folds, st.seed)
    weights = resolve_weights(st.encoder, st.weights)
    return Plan(cohort, samples, fold, test, failures, weights, resolve_device(st.device))


def cross_validate(p: Plan, st: SegmentSettings, save, log=None) -> tuple[pd.DataFrame, list[dict]]:
    """Train the K fold models (``save(k, net)`` stores each) and score their held-out pictures."""
    rows, history = [], []
    mean, std = grey_stats(st.encoder)
    with deterministic(p.device):
        for k in range(st.folds):
            train = [s for s, f in zip(p.samples, p.fold) if f != k]
            held = [s for s, f in zip(p.samples, p.fold) if f == k]
            fold_log = (lambda msg, k=k: log(f"fold {k + 1}/{st.folds} {msg}")) if log else None
            net, hist = fit_fold(train, st, p.weights, p.device, st.seed * 1000 + k, fold_log)
            save(k, net)
            history += [{"fold": k, **h} for h in hist]
            seg = Segmenter([net], st.size, st.context, mean, std, p.device)
            rows += score_held_out(seg, held, jittered_boxes(held, st, k), k)
    return pd.DataFrame(rows), history


# ----------------------------------------------------------------------------- the model folder

METRICS_NAME = "cv_metrics.json"
PER_CASE_NAME = "cv_per_case.csv"
FIGURE_NAME = "cv_dice.png"
HISTORY_NAME = "history.csv"
FAILURES_NAME = "failures.csv"


def fold_file(k: int) -> str:
    return f"fold{k}.safetensors"


def cv_summary(per_case: pd.DataFrame) -> dict:
    """{mode: {"folds": [per-fold summary], "pooled": summary over every held-out picture}}."""
    out = {}
    for mode, d in per_case.groupby("mode", sort=False):
        folds = [{"fold": int(k), **summarise(g)} for k, g in d.groupby("fold")]
        out[str(mode)] = {"folds": folds, "pooled": summarise(d)}
    return out


@dataclass
class TrainSummary:
    folder: Path
    n_pictures: int
    n_failed: int
    cv: dict


def segment_train(cohort: str | Path, out: str | Path, st: SegmentSettings = SegmentSettings(), force: bool = False,
                  on_failure=None, log=None) -> TrainSummary:
    """Train and cross-validate the segmenter on the training split's masks; write the model folder ``out``."""
    cohort, out = Path(cohort), Path(out)
    files = [out / n for n in (RECORD_NAME, METRICS_NAME, PER_CASE_NAME, FIGURE_NAME, HISTORY_NAME, FAILURES_NAME)]
    claim(out, files=files + [out / fold_file(k) for k in range(st.folds)], force=force, inputs=[cohort])
    p = plan(cohort, st, on_failure)
    per_case, history = cross_validate(p, st, lambda k, net: save_net(out / fold_file(k), net), log)
    cv = cv_summary(per_case)
    write_json(out / METRICS_NAME, {"version": 1, "jitter": st.jitter, "modes": cv,
                                    "note": "held-out pictures of each fold; box = the mask's box, every side "
                                            f"moved at random by up to {st.jitter:.0%}; auto = the whole frame"})
    write_csv(out / PER_CASE_NAME, per_case)
    write_csv(out / HISTORY_NAME, pd.DataFrame(history))
    write_csv(out / FAILURES_NAME, pd.DataFrame(p.failures, columns=["case_id", "file", "problem"]))
    savefig(cv_figure(per_case), out / FIGURE_NAME, dpi=120)
    write_record(out, make_record(p, st, cv))
    return TrainSummary(out, len(p.samples), len(p.failures), cv)


def make_record(p: Plan, st: SegmentSettings, cv: dict) -> SegmenterRecord:
    mean, std = grey_stats(st.encoder)
    return SegmenterRecord(
        encoder=st.encoder, decoder=list(DECODER), size=st.size, context=st.context, mean=mean, std=std,
        fold_files=[fold_file(k) for k in range(st.folds)], settings=st.model_dump(), weights=p.weights.record,
        cohort=str(p.cohort.resolve()), cohort_sha256=sha256_file(p.cohort),
        trained_on=sorted({s.case_id for s in p.samples}),
        pictures=[{"case_id": s.case_id, "modality": s.modality, "fold": int(f), "group": s.group}
                  for s, f in zip(p.samples, p.fold)],
        test_cases=p.test_cases, cv={m: v["pooled"] for m, v in cv.items()}, failures=p.failures,
        cv_folds={m: v["folds"] for m, v in cv.items()})
