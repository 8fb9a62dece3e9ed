"""Cross-validated training of DL_image / DL_video models, with checkpoints, resume and DDP.

Model selection happens on stratified, patient-grouped K-fold CV inside the training split
(``models.ensemble``); the test split is scored once, after all folds, through
``ensemble.over_folds``: by default by one more model refitted on every training case
(``test_scoring: refit``), trained like a fold: the same number of optimiser steps on the same LR
schedule in steps (:func:`refit_plan`), so test scores are on the out-of-fold scores' scale. (The refit
sees k/(k-1) times a fold's cases per epoch: the same epoch count would be 1.5x a fold's steps at k = 3.
In the 4-epoch demo one model's logit spread still varies up to 2x between training runs, so a single
run's test/out-of-fold spread ratio is noisy either way: BENCHMARKS.md, issue 23.)

Honest by default: each fold keeps its last epoch (``select: last``), so out-of-fold scores were not
chosen on the cases they score (``select: best`` is an explicit, optimistic opt-in), and the loss is
unweighted (``class_weight: none``), so probabilities are on the cohort's prevalence. With
``class_weight: balanced`` the positive class is weighted by n0/n1 and the kept model's output bias
is shifted by -log(n0/n1), the exact prior correction of a weighted logistic loss, so its
probabilities are on the cohort's prevalence too. Everything random comes from the seed, so on CPU an interrupted run resumed
with ``resume=True`` ends with the same predictions as an uninterrupted one.

Files (docs/contracts.md): RUN/models/<name>/{config.json, folds.csv, summary.json,
fold<k>/{model.safetensors, history.csv, oof.csv, result.json}} and RUN/predictions/<name>.csv.
While a fold trains, fold<k>/checkpoint/ holds the latest epoch as one unit (``core.runtime``).

DDP: launched by ``torchrun`` (WORLD_SIZE > 1), NCCL on GPU, gloo on CPU. Each process takes an
equal slice of the same global batch (same seed, same permutation, same augmentation draws), and
the loss is scaled so that the averaged gradient equals the single-process one. On GPU BatchNorm is
synchronised; on CPU (no SyncBatchNorm there) BatchNorm statistics are per process, so a single
process is matched to float rounding only with ``freeze_bn`` or a BN-free backbone (convnext_tiny).
Launch: ``torchrun --nproc-per-node N -m ceusfusion.cli -- train --run RUN ...`` (the ``--`` keeps
torchrun from reading ``--run`` as its own option).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from pydantic import ConfigDict, Field, field_validator, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import update_bn

from ceusfusion.core.config import StageConfig
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_csv, write_json
from ceusfusion.core.runlayout import RunLayout, check_name
from ceusfusion.core.runtime import (
    autocast,
    checkpoint_exists,
    deterministic,
    dist_info,
    load_checkpoint,
    optimizer_state,
    optimizer_tensors,
    remove_checkpoint,
    resolve_device,
    restore_rng,
    rng_tensors,
    save_checkpoint,
    save_tensors,
)
from ceusfusion.models.backbones import (
    CeusNet,
    InputScaleWarning,
    backbone_parameters,
    build_model,
    check_arch,
    fetch_backbone_weights,
    input_scale_warning,
    input_stats,
    model_channels,
)
from ceusfusion.models.data import CachedSet, load_cached
from ceusfusion.models.ensemble import REFIT, UNSEEN, make_folds, over_folds
from ceusfusion.models.pretrain.provenance import check_pretrain_weights
from ceusfusion.models.probe import fit_probe
from ceusfusion.models.registry import CONFIG_FILE, LEGACY_DEFAULTS, MODEL_FILE, load_fold_model
from ceusfusion.models.transforms import BatchTransform, augment_params, normalisation

log = logging.getLogger(__name__)

# what _score_test does, recorded in summary.json so the report's safeguard reads a fact, not a file's existence
TEST_SCORING = {"refit": "once, after all folds: one model refitted on all training cases",
                "fold-mean": "once, after all folds: mean of the fold models"}
# the predictions file's ``scoring`` label of each row, by select (training rows) and test_scoring (test rows)
SCORING_LABELS = {"last": "out-of-fold", "best": "out-of-fold, epoch chosen on the same fold (optimistic)",
                  "refit": "refit on all training cases", "fold-mean": "mean of the fold models"}
# settings that change where a model runs, not what it computes: a resume may change them
RUNTIME_KEYS = ("device",)
# recorded since a later version, with no value that stands for its absence: an older model is not compared on it
UNRECORDED_BEFORE = ("prepare_fingerprint",)


class TrainSettings(StageConfig):
    """The hyperparameters shared by every model of a study (the study YAML's ``train`` section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    weights: str = "imagenet"
    require_weights: bool = False
    # use self-supervised weights whose pretraining saw this cohort's test videos (the report says so)
    allow_pretrain_overlap: bool = False
    epochs: int = Field(30, ge=1)
    folds: int = Field(5, ge=2)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    patience: int = Field(8, ge=1)
    clip_grad: float = 1.0
    dropout: float = Field(0.0, ge=0, lt=1)
    freeze_bn: bool = False  # BatchNorm kept in eval mode (small batches; exact CPU-DDP equivalence)
    # before each validation, recompute BatchNorm statistics exactly over the fold's training cases
    # (small cohorts take few optimiser steps, and momentum-averaged statistics lag the weights)
    precise_bn: bool = True
    # "last": keep the final epoch (out-of-fold predictions not chosen on the cases they score);
    # "best": keep the epoch with the best validation AUC (optimistic: chosen on the fold it scores)
    select: Literal["best", "last"] = "last"
    # how test cases (and new patients) are scored: "refit" one model on all training cases for the
    # fixed epoch count (same scale as out-of-fold scores), or "fold-mean" the mean of the fold models
    test_scoring: Literal["refit", "fold-mean"] = "refit"
    # "none": unweighted loss; "balanced": positives weighted n0/n1, output bias corrected by -log(n0/n1)
    class_weight: Literal["none", "balanced"] = "none"
    size: int | None = Field(None, ge=8)  # resize the cached arrays to this side first (None: as cached)
    crop: int = Field(224, ge=1)
    # "full": fine-tune the whole backbone; "last": only its deepest stage; "frozen": the pretrained
    # network as a fixed feature extractor, its head an L2 logistic regression fitted at once with C from
    # grouped inner CV (models.probe; a temporal model's attention and head train by SGD instead)
    finetune: Literal["full", "last", "frozen"] = "full"
    backbone_lr: float = Field(1.0, gt=0, le=1)  # the backbone's learning rate as a fraction of lr


class TrainConfig(TrainSettings):
    """Everything that defines one trained model (saved as its config.json)."""

    modality: Literal["image", "video"] = "video"
    arch: str = "resnet18"
    input_mode: Literal["single", "stack", "temporal", "summary"] | None = None  # default: single / stack
    seed: int = 0
    device: str = "auto"
    name: str | None = None

    _known_arch = field_validator("arch")(check_arch)

    @model_validator(mode="after")
    def _resolve(self) -> "TrainConfig":
        mode = self.input_mode or ("single" if self.modality == "image" else "stack")
        if self.modality == "image" and mode != "single":
            raise ValueError(f"input mode {mode!r} needs keyframes; use --modality video")
        if self.modality == "video" and mode == "single":
            raise ValueError("input mode 'single' is for --modality image; use stack, temporal or summary for video")
        name = self.name or default_name(self.modality, self.arch, mode)
        check_name(name)
        # set without re-validating (validate_assignment would recurse into this validator)
        self.__dict__.update(input_mode=mode, name=name)
        return self


def default_name(modality: str, arch: str, input_mode: str) -> str:
    """DL_<modality>_<arch>[_temporal|_summary]: the model's folder and predictions file name."""
    return f"DL_{modality}_{arch}" + (f"_{input_mode}" if input_mode in ("temporal", "summary") else "")


def settings_differ(old: dict, new: dict) -> list[str]:
    """THE resume rule: a saved model continues (or is kept) only when every setting that defines it is
    unchanged; only :data:`RUNTIME_KEYS` may differ. Returns the keys that differ."""
    defaults = {**TrainConfig().model_dump(), **LEGACY_DEFAULTS}
    unknown = [k for k in UNRECORDED_BEFORE if k not in old]  # trained before it was recorded: not comparable
    return [k for k in new if k not in RUNTIME_KEYS and k not in unknown and old.get(k, defaults.get(k)) != new[k]]


# ----------------------------------------------------------------------------- helpers


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1009 + fold + 1


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class WarmupCosine(LRScheduler):
    """torch LR scheduler of :func:`lr_at`, one step per optimiser step; its state (the step count)
    travels in the checkpoint, so a resumed fold continues the same schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int):
        self.total, self.warmup = total, warmup
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [lr_at(self.last_epoch, self.total, self.warmup, base) for base in self.base_lrs]


def batch_starts(n: int, batch_size: int, world: int = 1) -> list[int]:
    """Where each batch of an epoch over ``n`` cases starts; a last batch too small for BatchNorm
    (< 2 samples per process) is dropped."""
    return [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2 * world]


@dataclass(frozen=True)
class StepPlan:
    """How far one model trains, in optimiser steps: its LR schedule (warm-up for ``warmup`` steps, then
    cosine to 0 at ``total``), and ``stop``, the steps it takes (a last epoch stops mid-way when ``stop``
    is not a multiple of ``per_epoch``: its first batches, in the epoch's seeded order, so a resumed
    run takes the same ones)."""

    per_epoch: int
    total: int
    warmup: int
    stop: int
    epochs: int  # epochs begun (the last may be partial)

    def record(self) -> dict:
        return {"steps_per_epoch": self.per_epoch, "schedule_total": self.total, "warmup": self.warmup,
                "stop": self.stop, "epochs": self.epochs}


# how the refitted model's training is matched to a fold's, by select (summary.json's refit_matched)
REFIT_MATCH = {
    "last": "the mean fold's optimiser steps (epochs x the folds' mean steps per epoch) on the mean fold's "
            "warm-up + cosine LR schedule in steps; the last epoch stops mid-way when needed",
    "best": "the median over folds of the kept epoch's step count, on the mean fold's warm-up + cosine LR "
            "schedule in steps; the last epoch stops mid-way when needed",
    "frozen": "not applicable: the frozen backbone's logistic head is fitted at once (no optimiser steps)",
}


def fold_plan(cfg: "TrainConfig", n: int, world: int = 1) -> StepPlan:
    """A fold's steps: ``epochs`` full epochs over its ``n`` training cases."""
    per = len(batch_starts(n, cfg.batch_size, world))
    return StepPlan(per, cfg.epochs * per, int(round(cfg.warmup_epochs * per)), cfg.epochs * per, cfg.epochs)


def refit_plan(cfg: "TrainConfig", fold_sizes: list[int], n: int, results: list[dict], world: int = 1) -> StepPlan:
    """The refitted model's steps, matched to a fold's (:data:`REFIT_MATCH`): the LR schedule of the
    mean fold (total = epochs x the folds' mean steps per epoch, warm-up likewise), stopping at that
    total under ``last``, or under ``best`` at the median over folds of the kept epoch's step count.
    The refit's ``n`` cases make longer epochs, so it runs fewer (the last one partial)."""
    per_fold = [len(batch_starts(m, cfg.batch_size, world)) for m in fold_sizes]
    mean = float(np.mean(per_fold))
    total = max(1, int(round(cfg.epochs * mean)))
    stop = total
    if cfg.select == "best":
        stop = int(round(float(np.median([r["best_epoch"] * s for r, s in zip(results, per_fold)]))))
    stop = min(total, max(1, stop))
    per = len(batch_starts(n, cfg.batch_size, world))
    return StepPlan(per, total, int(round(cfg.warmup_epochs * mean)), stop,
                    math.ceil(stop / per) if per else refit_epochs(cfg, results))


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _chunks(idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Near-equal chunks, none of size 1 (train-mode BatchNorm needs two values per channel)."""
    return np.array_split(np.asarray(idx), max(1, math.ceil(len(idx) / batch_size)))


@torch.no_grad()
def predict_probs(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform, batch_size: int = 64,
                  amp: bool = False, offset: float = 0.0) -> np.ndarray:
    """Eval-mode probabilities of the cached cases ``idx``; ``offset`` is added to the logit first."""
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        x = tf(data.x[torch.as_tensor(idx[s:s + batch_size])])
        with autocast(tf.device, amp):
            out.append(torch.sigmoid(model(x).float() + offset).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform, batch_size: int = 64,
                   amp: bool = False) -> None:
    """Precise BatchNorm (torch's ``swa_utils.update_bn``): running statistics = the cumulative mean and
    variance over ``idx`` under the current weights. With a few dozen training cases an epoch is a handful
    of optimiser steps, and momentum-averaged statistics lag the weights: eval-mode logits shift (a
    planted-signal test went from every logit near +12 to -7 for negatives and +5..+17 for positives)
    and Grad-CAM then explains the shift rather than the signal. Deterministic: un-augmented inputs,
    fixed order."""
    if len(idx) < 2:
        return
    was = model.training
    with autocast(tf.device, amp):
        update_bn((tf(data.x[torch.as_tensor(c)]) for c in _chunks(idx, batch_size)), model)
    model.train(was)


def train_batches(data: CachedSet, tr: np.ndarray, gen: torch.Generator, tf: BatchTransform, starts: list[int],
                  bsz: int, crop: int, world: int = 1, rank: int = 0):
    """One epoch of (x, y, global batch size): a seeded permutation of the training cases, each global
    batch augmented with draws from ``gen``, then this process's slice of it (DDP)."""
    perm = torch.as_tensor(tr)[torch.randperm(len(tr), generator=gen)]
    for s in starts:
        bidx = perm[s:s + bsz]
        params = augment_params(len(bidx), data.size, crop, gen)
        mine = torch.tensor_split(torch.arange(len(bidx)), world)[rank]
        x = tf(data.x[bidx[mine]], {a: v[mine] for a, v in params.items()})
        y = torch.as_tensor(data.labels[bidx[mine].numpy()], dtype=torch.float32).to(tf.device, non_blocking=True)
        yield x, y, len(bidx)


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, lossf: nn.Module, batches, sched, clip: float,
                world: int = 1) -> float:
    """Step the optimiser (and its LR schedule) over ``batches``; returns the mean training loss."""
    tot, seen = None, 0
    for x, y, global_n in batches:
        with autocast(x.device):
            logits = net(x)
        raw = lossf(logits.float(), y)
        # DDP averages gradients over processes: scale so the result is the global-batch mean
        loss = raw * (world / global_n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
        tot = raw.detach() if tot is None else tot + raw.detach()
        seen += len(y)
    return float(tot) / seen if seen else float("nan")


class _Interrupted(Exception):
    pass


@dataclass
class _Ctx:
    """What every fold of one training call shares."""

    cfg: TrainConfig
    run: Path
    out: Path
    data: CachedSet
    device: torch.device
    world: int
    rank: int
    pretrained_requested: bool
    budget: list  # [epochs left this call or None]
    weights: tuple = (None, "none")  # (state dict, source) fetched once for all folds
    progress: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def barrier(self):
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    def transform(self) -> BatchTransform:
        d = self.data
        return BatchTransform(self.cfg.input_mode, d.frames, d.frame_channels, self.cfg.crop, d.size,
                              self.pretrained_requested, self.device, channels_last=self.cuda,
                              stats=input_normalisation(self.cfg, d))


# ----------------------------------------------------------------------------- one fold


@dataclass
class _Fold:
    """The moving parts of one fold's training."""

    k: int
    dir: Path
    model: nn.Module
    net: nn.Module  # the model, wrapped for DDP when there are several processes
    opt: torch.optim.Optimizer
    sched: WarmupCosine
    gen: torch.Generator
    starts: list
    plan: StepPlan
    lossf: nn.Module
    state: dict
    offset: float = 0.0  # added to the output logit of the kept model (prior correction)
    frozen: list = field(default_factory=list)  # backbone modules kept in eval mode (finetune last/frozen)


def pos_weight_of(labels: np.ndarray, class_weight: str) -> float:
    """The positive-class loss weight: n0/n1 under ``balanced``, else 1."""
    if class_weight != "balanced":
        return 1.0
    return float((labels == 0).sum()) / max(1.0, float((labels == 1).sum()))


def corrected_state(state: dict, offset: float) -> dict:
    """The model's state dict with ``offset`` added to its output bias (``head.bias``)."""
    if offset == 0.0:
        return state
    if "head.bias" not in state:
        raise CeusError("class_weight 'balanced' needs a model whose output layer is 'head' with a bias")
    return {**state, "head.bias": state["head.bias"] + offset}


def _build_fold(ctx: _Ctx, k: int | str, tr: np.ndarray, plan: StepPlan) -> _Fold:
    """Model, optimiser, LR schedule (``plan``) and loss of fold ``k`` (or the :data:`REFIT` model), at epoch 0."""
    cfg, dev = ctx.cfg, ctx.device
    # Every fold starts from the same weights (pretrained, or random from the run's seed), so the
    # fold models' penultimate features stay comparable: out-of-fold features for fusion need that.
    torch.manual_seed(cfg.seed)
    model, used = build_model(cfg.arch, cfg.input_mode, ctx.data.frames, ctx.data.frame_channels,
                              ctx.weights, cfg.require_weights, cfg.dropout)
    seed_k = cfg.folds if k == REFIT else k
    torch.manual_seed(fold_seed(cfg.seed, seed_k))
    model = model.to(dev)
    if ctx.cuda:
        model = model.to(memory_format=torch.channels_last)
    opt, frozen = optimiser(model, cfg)
    starts = batch_starts(len(tr), cfg.batch_size, ctx.world)
    sched = WarmupCosine(opt, plan.total, plan.warmup)
    w = pos_weight_of(ctx.data.labels[tr], cfg.class_weight)
    pos_weight = torch.tensor(w, dtype=torch.float32, device=dev)
    state = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "bad": 0, "history": [],
             "best_val_prob": None, "weights_used": used, "plan": plan.record()}
    net = model
    if ctx.world > 1:
        if ctx.cuda:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if ctx.cuda else None)
    return _Fold(k, RunLayout(ctx.run).fold(cfg.name, k), model, net, opt, sched,
                 torch.Generator().manual_seed(fold_seed(cfg.seed, seed_k) + 7), starts, plan,
                 nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum"), state, offset=-math.log(w),
                 frozen=frozen)


def optimiser(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, list]:
    """AdamW over what ``cfg.finetune`` trains: the head (and attention) at ``lr``, the backbone's trained
    part at ``lr * backbone_lr`` (group 1); returns it with the frozen backbone modules."""
    trained, frozen = backbone_parameters(model, cfg.arch, cfg.finetune)
    in_encoder = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in in_encoder], "lr": cfg.lr}]
    if trained:
        groups.append({"params": trained, "lr": cfg.lr * cfg.backbone_lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay), frozen


def _save_epoch(ctx: _Ctx, f: _Fold, improved: bool) -> None:
    """The kept model (when it improved) and the resumable checkpoint, as one unit."""
    msd = dict(f.model.state_dict())
    if improved:
        save_tensors(f.dir / MODEL_FILE, corrected_state(msd, f.offset),
                     {"epoch": str(f.state["epoch"]), "arch": ctx.cfg.arch, "logit_offset": repr(f.offset)})
    ot, ometa = optimizer_tensors(f.opt)
    tensors = {**{f"model.{k}": v for k, v in msd.items()}, **ot, **rng_tensors(f.gen, ctx.device)}
    save_checkpoint(f.dir / "checkpoint", tensors, {**f.state, "optim": ometa, "scheduler": f.sched.state_dict()})
    write_csv(f.dir / "history.csv", pd.DataFrame(f.state["history"]))


def _resume_fold(ctx: _Ctx, f: _Fold) -> None:
    """Continue fold ``f`` from its checkpoint: weights, optimiser, LR schedule and every random state.
    A checkpoint of another step plan (a refit begun by a version that trained it for the folds' epoch
    count) is not continued: the model starts again."""
    tensors, state = load_checkpoint(f.dir / "checkpoint")
    saved = state.get("plan", None if f.k == REFIT else f.state["plan"])
    if saved != f.state["plan"]:
        if ctx.main:
            log.warning("%s: checkpoint of another step plan (%s, now %s); starting it again", f.dir, saved, f.state["plan"])
        return
    f.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    f.opt.load_state_dict(optimizer_state(tensors, state.pop("optim")))
    f.sched.load_state_dict(state.pop("scheduler"))
    restore_rng(tensors, f.gen, ctx.device)
    f.state = state
    if ctx.main:
        log.info("fold %d: resumed after epoch %d", f.k, state["epoch"])


def _validate(ctx: _Ctx, f: _Fold, tr: np.ndarray, va: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Eval-mode probabilities of the validation fold (after precise BatchNorm), as the kept model will give
    them (prior-corrected): (probs, AUC, loss). The refitted model has no validation cases: (empty, nan, nan)."""
    tf_eval = ctx.transform()
    # precise BatchNorm recomputes every BN layer, a frozen backbone's too: only when all of it trains
    if ctx.cfg.precise_bn and not ctx.cfg.freeze_bn and ctx.cfg.finetune == "full":
        recalibrate_bn(f.model, ctx.data, tr, tf_eval, amp=True)
    if not len(va):
        return np.zeros(0), float("nan"), float("nan")
    vp = predict_probs(f.model, ctx.data, va, tf_eval, amp=True, offset=f.offset)
    yv = ctx.data.labels[va]
    vloss = float(nn.functional.binary_cross_entropy(torch.as_tensor(vp).clamp(1e-7, 1 - 1e-7),
                                                     torch.as_tensor(yv, dtype=torch.float64)))
    return vp, safe_auc(yv, vp), vloss


def _run_epoch(ctx: _Ctx, f: _Fold, tr: np.ndarray, va: np.ndarray) -> float:
    """Train one epoch, validate, keep the checkpoint the selection rule asks for; returns the val AUC."""
    cfg, st = ctx.cfg, f.state
    t0 = time.perf_counter()
    f.net.train()
    if cfg.freeze_bn:
        for m in f.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    for m in f.frozen:  # a frozen backbone keeps its pretrained BatchNorm statistics
        m.eval()
    # the plan's last epoch may stop mid-way: its first batches, in this epoch's seeded order
    starts = f.starts[:max(0, f.plan.stop - st["step"])]
    batches = train_batches(ctx.data, tr, f.gen, ctx.transform(), starts, cfg.batch_size, cfg.crop, ctx.world, ctx.rank)
    train_loss = train_epoch(f.net, f.opt, f.lossf, batches, f.sched, cfg.clip_grad, ctx.world)
    st["step"] += len(starts)
    vp, auc, vloss = _validate(ctx, f, tr, va)
    score = auc if not math.isnan(auc) else -vloss
    st["epoch"] += 1
    st["history"].append({"epoch": st["epoch"], "lr": _lr_used(f),
                          "train_loss": train_loss, "val_loss": vloss, "val_auc": auc,
                          "seconds": round(time.perf_counter() - t0, 3)})
    improved = cfg.select == "last" or not len(va) or score > st["best"]
    if improved:
        st.update(best=score, best_epoch=st["epoch"], bad=0, best_val_prob=vp.tolist())
    else:
        st["bad"] += 1
    if ctx.main:
        _save_epoch(ctx, f, improved)
    ctx.barrier()
    return auc


def _run_probe(ctx: _Ctx, f: _Fold, tr: np.ndarray, va: np.ndarray, epochs: int) -> float:
    """``finetune: frozen``: the head is fitted at once as a logistic regression on the frozen features
    (``models.probe``), counted as all ``epochs`` done; validated and kept like a trained epoch."""
    t0, st = time.perf_counter(), f.state
    weight, bias, c = fit_probe(f.model, ctx.data, tr, ctx.transform(), ctx.cfg.class_weight)
    with torch.no_grad():
        f.model.head.weight.copy_(weight.to(f.model.head.weight.device))
        f.model.head.bias.copy_(bias.to(f.model.head.bias.device))
    vp, auc, vloss = _validate(ctx, f, tr, va)
    st["epoch"] = epochs
    st["history"].append({"epoch": epochs, "lr": float("nan"), "train_loss": float("nan"), "val_loss": vloss,
                          "val_auc": auc, "seconds": round(time.perf_counter() - t0, 3), "probe_C": c})
    st.update(best=auc if not math.isnan(auc) else -vloss, best_epoch=epochs, bad=0, best_val_prob=vp.tolist())
    if ctx.main:
        _save_epoch(ctx, f, True)
    ctx.barrier()
    return auc


def _lr_used(f: _Fold) -> float:
    """The learning rate of the epoch's last optimiser step (what the history has always recorded)."""
    return lr_at(max(0, f.sched.last_epoch - 1), f.sched.total, f.sched.warmup, f.sched.base_lrs[0])


def _finish_fold(ctx: _Ctx, f: _Fold, va: np.ndarray) -> dict:
    """result.json and oof.csv (the fold's out-of-fold probabilities); the checkpoint is no longer needed."""
    st = f.state
    res = {"fold": f.k, "auc": st["best"] if len(va) and st["best"] > -math.inf and st["best"] >= 0 else float("nan"),
           "best_epoch": st["best_epoch"], "epochs_run": st["epoch"], "weights_used": st["weights_used"],
           "steps": st["step"], "step_plan": f.plan.record()}
    if ctx.main:
        write_json(f.dir / "result.json", res)
        write_csv(f.dir / "oof.csv", pd.DataFrame({"case_id": [ctx.data.case_ids[i] for i in va], "fold": f.k,
                                                   "y": ctx.data.labels[va], "prob": st["best_val_prob"]}))
        remove_checkpoint(f.dir / "checkpoint")
    ctx.barrier()
    return res


def _train_fold(ctx: _Ctx, k: int | str, tr: np.ndarray, va: np.ndarray, resume: bool,
                plan: StepPlan | None = None) -> dict:
    """Train fold ``k`` (or the refitted model) by ``plan`` (default: a fold's, :func:`fold_plan`), or
    read its result."""
    fdir = RunLayout(ctx.run).fold(ctx.cfg.name, k)
    if (fdir / "oof.csv").is_file():
        return json.loads((fdir / "result.json").read_text())
    cfg = ctx.cfg
    f = _build_fold(ctx, k, tr, plan or fold_plan(cfg, len(tr), ctx.world))
    if resume and checkpoint_exists(fdir / "checkpoint"):
        _resume_fold(ctx, f)
    probe = cfg.finetune == "frozen" and isinstance(f.model, CeusNet)  # a temporal model's attention still trains
    epochs = refit_epochs(cfg, []) if probe else f.plan.epochs  # a probe has no steps: fitted at once
    task = None
    if ctx.progress is not None:
        label = "refit on all training cases" if k == REFIT else f"fold {k}"
        task = ctx.progress.add_task(f"{cfg.name} {label}", total=epochs, completed=f.state["epoch"], auc="")
    while f.state["epoch"] < epochs and f.state["bad"] < cfg.patience:
        if ctx.budget[0] is not None and ctx.budget[0] <= 0:
            raise _Interrupted()
        auc = _run_probe(ctx, f, tr, va, epochs) if probe else _run_epoch(ctx, f, tr, va)
        if task is not None:
            ctx.progress.update(task, completed=f.state["epoch"],
                                auc="" if math.isnan(auc) else f"val AUC {auc:.3f} (best {f.state['best']:.3f})")
        if ctx.budget[0] is not None:
            ctx.budget[0] -= 1
    res = _finish_fold(ctx, f, va)
    if task is not None:
        ctx.progress.update(task, completed=epochs)
    return res


# ----------------------------------------------------------------------------- all folds


def _check_existing(out: Path, cfg_json: dict, resume: bool, overwrite: bool) -> None:
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    if overwrite:
        if out.is_symlink():
            raise CeusError(f"{out}: is a symbolic link; refusing to replace it (remove it yourself)")
        shutil.rmtree(out)
        return
    if not resume:
        raise CeusError(f"{out} already holds a model; pass --resume to continue it or --overwrite to start again")
    old = json.loads(path.read_text())
    diff = settings_differ(old, cfg_json)
    if diff:
        raise CeusError(f"{path}: cannot resume, the settings differ ({', '.join(f'{d}: {old.get(d)!r} -> {cfg_json[d]!r}' for d in diff)})")


def input_normalisation(cfg: TrainConfig, data: CachedSet) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of the model input: the statistics the architecture's pretrained weights
    expect (ImageNet's for torchvision, the ``pretrained_cfg``'s for timm), identity without weights."""
    pretrained = str(cfg.weights).lower() != "none"
    return normalisation(cfg.input_mode, data.frames, data.frame_channels, pretrained, rgb=input_stats(cfg.arch))


def model_record(cfg: TrainConfig, data: CachedSet) -> dict:
    """config.json: the settings plus what the data fixed (frames, channels, image size, normalisation)."""
    pretrained = str(cfg.weights).lower() != "none"
    mean, std = input_normalisation(cfg, data)
    return {**cfg.model_dump(), "frames": data.frames, "frame_channels": data.frame_channels,
            "channels": model_channels(cfg.input_mode, data.frames, data.frame_channels),
            "image_size": data.size, "pretrained": pretrained, "normalisation": {"mean": mean, "std": std},
            "prepare_fingerprint": data.prepare_fingerprint}


def train(run, cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_epochs_this_call: int | None = None) -> dict | None:
    """Train all folds, then write predictions and summary. Returns the summary, or None when
    ``max_epochs_this_call`` stopped it early (continue with ``resume=True``)."""
    world, rank, local_rank = dist_info()
    own_pg = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo")
        own_pg = True
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        with deterministic(device):
            return _train(Path(run), cfg.model_copy(), resume, overwrite, progress, max_epochs_this_call,
                          world, rank, device)
    finally:
        if own_pg:
            dist.destroy_process_group()


def check_crop(cfg: TrainSettings, side: int) -> None:
    """Refuse a crop larger than the arrays it is cut from (once silently cut down to their side: a model
    asked at 224 px trained and was recorded at 96)."""
    if cfg.crop <= side:
        return
    if cfg.size:
        raise CeusError(f"--crop {cfg.crop} is larger than the arrays resized by --size {side}: train with --size "
                        f"{cfg.crop} or more, or --crop {side} or less")
    raise CeusError(f"--crop {cfg.crop} is larger than the prepared {side} px arrays: prepare with --size {cfg.crop} "
                    f"or more, or train with --crop {side} or less")


def _setup(run: Path, cfg: TrainConfig, resume: bool, overwrite: bool, world: int, rank: int,
           device: torch.device) -> tuple[CachedSet, Path, np.ndarray, np.ndarray]:
    """Load the cache, check an existing model, make (or check) the folds; returns (data, out, train, fold)."""
    data = load_cached(run, cfg.modality, cfg.size)
    check_crop(cfg, data.size)
    if device.type == "cuda" and data.x.numel() < (4 << 30):
        data.x = data.x.to(device)
    if cfg.batch_size % world:
        raise CeusError(f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes")
    out = RunLayout(run).model(cfg.name)
    cfg_json = model_record(cfg, data)
    if rank == 0:
        _check_existing(out, cfg_json, resume, overwrite)
    if world > 1 and dist.is_initialized():
        dist.barrier()
    train_idx = np.flatnonzero(data.split == "train")
    if len(train_idx) == 0:
        raise CeusError(f"no training cases with a {cfg.modality} in {RunLayout(run).prepared_index}")
    fold = make_folds(data, train_idx, cfg.folds, cfg.seed)
    folds = pd.DataFrame({"case_id": [data.case_ids[i] for i in train_idx], "fold": fold})
    folds_path = RunLayout(run).model_folds(cfg.name)
    if resume and folds_path.is_file():
        old = pd.read_csv(folds_path, dtype={"case_id": str})
        if not old.sort_values("case_id").reset_index(drop=True).equals(folds.sort_values("case_id").reset_index(drop=True)):
            raise CeusError(f"{folds_path}: the folds differ from those of this cohort; cannot resume")
    if rank == 0:
        write_json(out / CONFIG_FILE, cfg_json)
        write_csv(folds_path, folds)
    return data, out, train_idx, fold


def _progress_bar(ctx: _Ctx, progress: bool):
    if not (progress and ctx.main):
        return contextlib.nullcontext()
    ctx.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[auc]}"), TimeElapsedColumn(), TimeRemainingColumn())
    return ctx.progress


def _score_test(ctx: _Ctx, test_idx: np.ndarray) -> np.ndarray:
    """The test set, scored once after all folds, the ensemble way (``ensemble.over_folds``)."""
    tf = ctx.transform()
    tf.channels_last = False

    def fold_probs(k: int | str, pos: np.ndarray) -> np.ndarray:
        model, _ = load_fold_model(ctx.run, ctx.cfg.name, k, ctx.device)
        return predict_probs(model, ctx.data, test_idx[pos], tf, amp=True)

    return over_folds(np.full(len(test_idx), UNSEEN), ctx.cfg.folds, fold_probs, ctx.cfg.test_scoring)


def pretrain_facts(run: Path, cfg: TrainConfig) -> dict | None:
    """Refuse weights pretrained on the run's test cases (unless allowed); what the report says about them
    (``provenance.overlap_facts``: ``record`` present/absent, ``test_overlap_check``, ``test_overlap``).
    A run without RUN/cohort.csv (a cache made by hand) has no test videos to compare with: unchecked."""
    cohort = RunLayout(run).cohort
    if str(cfg.weights).lower() in ("none", "imagenet"):
        return None
    if not cohort.is_file():
        facts = check_pretrain_weights(cfg.weights, None, cfg.allow_pretrain_overlap)
        return {**facts, "note": f"no {cohort} to check the pretraining against"}
    return check_pretrain_weights(cfg.weights, cohort, cfg.allow_pretrain_overlap)


def refit_epochs(cfg: TrainConfig, results: list[dict]) -> int:
    """Epochs of a refitted model without optimiser steps (a frozen probe; a refit too small for one
    batch): the fixed count under ``last`` (or without results); the median kept epoch under ``best``."""
    if cfg.select == "last" or not results:
        return cfg.epochs
    return max(1, int(round(float(np.median([r["best_epoch"] for r in results])))))


def _train_folds(ctx: _Ctx, train_idx: np.ndarray, fold: np.ndarray, resume: bool) -> tuple[list[dict], dict | None]:
    """Every fold, then (``refit``) the model on all training cases: (fold results, refit result or None)."""
    cfg = ctx.cfg
    results = [_train_fold(ctx, k, train_idx[fold != k], train_idx[fold == k], resume) for k in range(cfg.folds)]
    if cfg.test_scoring != "refit":
        return results, None
    sizes = [int((fold != k).sum()) for k in range(cfg.folds)]
    plan = refit_plan(cfg, sizes, len(train_idx), results, ctx.world)
    full = _train_fold(ctx, REFIT, train_idx, train_idx[:0], resume, plan)
    return results, full


def _train(run, cfg, resume, overwrite, progress, max_epochs_this_call, world, rank, device):
    t_start = time.perf_counter()
    # the weights are checked and read before anything is written: a refused --weights leaves no trace
    provenance = pretrain_facts(run, cfg)
    models = list(range(cfg.folds)) + ([REFIT] if cfg.test_scoring == "refit" else [])
    done = not overwrite and all((RunLayout(run).fold(cfg.name, k) / "oof.csv").is_file() for k in models)
    resolved = None if done else fetch_backbone_weights(cfg.arch, cfg.weights, cfg.require_weights)
    weights = (None, "none") if resolved is None else resolved.pair()
    data, out, train_idx, fold = _setup(run, cfg, resume, overwrite, world, rank, device)
    scale = input_scale_warning(cfg.arch, cfg.crop, weights[1])
    if scale and rank == 0:
        warnings.warn(scale, InputScaleWarning, stacklevel=3)
    pretrained = str(cfg.weights).lower() != "none"
    ctx = _Ctx(cfg, run, out, data, device, world, rank, pretrained, [max_epochs_this_call], weights)
    with _progress_bar(ctx, progress):
        try:
            results, full = _train_folds(ctx, train_idx, fold, resume)
        except _Interrupted:
            return None
    test_idx = np.flatnonzero(data.split == "test")
    test_prob = _score_test(ctx, test_idx) if len(test_idx) else np.zeros(0)
    oof = pd.concat([pd.read_csv(out / f"fold{k}" / "oof.csv", dtype={"case_id": str}) for k in range(cfg.folds)])
    train_label, test_label = SCORING_LABELS[cfg.select], SCORING_LABELS[cfg.test_scoring]
    pred = pd.concat([
        pd.DataFrame({"case_id": oof["case_id"], "set": "train", "fold": oof["fold"], "y": oof["y"], "prob": oof["prob"],
                      "scoring": train_label}),
        pd.DataFrame({"case_id": [data.case_ids[i] for i in test_idx], "set": "test", "fold": -1,
                      "y": data.labels[test_idx], "prob": test_prob, "scoring": test_label}),
    ], ignore_index=True)
    summary = _summary(cfg, results, oof, len(train_idx), len(test_idx), world, time.perf_counter() - t_start)
    summary.update(refit_facts(cfg, results, full))
    summary["pretrain_provenance"] = provenance
    summary["weights_source"] = weights_source(RunLayout(run).model_summary(cfg.name), resolved)
    summary["rank"] = rank
    if rank == 0:
        write_csv(RunLayout(run).predictions(cfg.name), pred)
        write_json(RunLayout(run).model_summary(cfg.name), summary)
    return summary


def refit_facts(cfg: TrainConfig, results: list[dict], full: dict | None) -> dict:
    """summary.json's record of how the refitted model was trained against the folds: optimiser steps
    of each fold and of the refit, the refit's step plan, and how it was matched (:data:`REFIT_MATCH`).
    A refit kept from a version that did not record steps has ``refit_steps`` None."""
    out = {"fold_steps": [r.get("steps") for r in results], "refit_epochs": None, "refit_steps": None,
           "refit_step_plan": None, "refit_matched": None}
    if full is None:
        return out
    probe = cfg.finetune == "frozen" and full.get("steps") == 0
    return {**out, "refit_epochs": full["epochs_run"], "refit_steps": full.get("steps"),
            "refit_step_plan": full.get("step_plan"),
            "refit_matched": REFIT_MATCH["frozen" if probe else cfg.select] if "steps" in full else
            "unknown: refitted by a version that did not match its steps to a fold's"}


def weights_source(summary_path: Path, resolved) -> dict:
    """Where the starting weights came from (``models.resolver``); a model kept from an earlier call
    keeps the record its summary.json already has."""
    if resolved is not None:
        return resolved.record
    return json.loads(summary_path.read_text()).get("weights_source", {}) if summary_path.is_file() else {}


def _summary(cfg: TrainConfig, results: list[dict], oof: pd.DataFrame, n_train: int, n_test: int, world: int,
             seconds: float) -> dict:
    aucs = [r["auc"] for r in results]
    return {"name": cfg.name, "modality": cfg.modality, "arch": cfg.arch, "input_mode": cfg.input_mode,
            "weights_used": results[0]["weights_used"], "folds": cfg.folds,
            "fold_auc": aucs, "cv_auc_mean": float(np.nanmean(aucs)), "cv_auc_std": float(np.nanstd(aucs)),
            "oof_auc": safe_auc(oof["y"].to_numpy(), oof["prob"].to_numpy()),
            "best_epochs": [r["best_epoch"] for r in results], "select": cfg.select,
            # what a reader must know about the out-of-fold numbers: chosen on the cases they score or not
            "oof_label": SCORING_LABELS[cfg.select],
            "test_scoring": TEST_SCORING[cfg.test_scoring], "test_scoring_mode": cfg.test_scoring,
            "class_weight": cfg.class_weight, "n_train": int(n_train),
            "n_test": int(n_test), "seconds": round(seconds, 1), "world_size": world}
