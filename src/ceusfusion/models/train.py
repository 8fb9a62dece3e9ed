"""Cross-validated training of DL_image / DL_video models, with checkpoints, resume and DDP.

Model selection happens on stratified, patient-grouped K-fold CV inside the
training split; the test split is scored once, after all folds, as the mean
of the fold models. Everything random comes from the seed, so on CPU an
interrupted run resumed with ``resume=True`` ends with the same predictions as
an uninterrupted one.

Files (contracts.md): RUN/models/<name>/{config.json, folds.csv, summary.json,
fold<k>/{model.safetensors, history.csv, oof.csv}} and RUN/predictions/<name>.csv.
While a fold trains, fold<k>/{last.safetensors, optim.safetensors, state.json}
hold the latest epoch (removed when the fold is done).

DDP: launched by ``torchrun`` (WORLD_SIZE > 1), NCCL on GPU, gloo on CPU. Each
process takes an equal slice of the same global batch (same seed, same
permutation, same augmentation draws), and the loss is scaled so that the
averaged gradient equals the single-process one. On GPU BatchNorm is
synchronised; on CPU (no SyncBatchNorm there) BatchNorm statistics are per
process, so a single process is matched to float rounding only with
``freeze_bn`` or a BN-free backbone (convnext_tiny). Launch:
``torchrun --nproc-per-node N -m ceusfusion.cli -- train --run RUN ...`` (the
``--`` keeps torchrun from reading ``--run`` as its own option).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from ceusfusion.models.data import BatchTransform, CachedSet, augment_params, load_cached, normalisation
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path, write_csv, write_json
from ceusfusion.models.backbones import ARCHS, build_model, model_channels
from ceusfusion.models.weights import fetch_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a trained model (saved as config.json)."""

    modality: str = "video"
    arch: str = "resnet18"
    input_mode: str | None = None  # default: single for image, stack for video
    weights: str = "imagenet"
    require_weights: bool = False
    epochs: int = 30
    folds: int = 5
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    patience: int = 8
    clip_grad: float = 1.0
    dropout: float = 0.0
    freeze_bn: bool = False  # BatchNorm kept in eval mode (small batches; exact CPU-DDP equivalence)
    # before each validation, recompute BatchNorm statistics exactly over the fold's training cases
    # (small cohorts take few optimiser steps, and momentum-averaged statistics lag the weights)
    precise_bn: bool = True
    # "best": keep the epoch with the best validation AUC (its out-of-fold AUC is optimistic: chosen on the
    # fold it scores); "last": keep the final epoch (unbiased out-of-fold predictions, as for a baseline)
    select: str = "best"
    size: int | None = None  # resize the cached arrays to this side first (None: as cached)
    crop: int = 224
    seed: int = 0
    device: str = "auto"
    name: str | None = None

    def resolved(self) -> "TrainConfig":
        c = TrainConfig(**asdict(self))
        if c.modality not in ("image", "video"):
            raise CeusError(f"unknown modality {c.modality!r}; choose image or video")
        if c.arch not in ARCHS:
            raise CeusError(f"unknown architecture {c.arch!r}; choose one of {', '.join(ARCHS)}")
        c.input_mode = c.input_mode or ("single" if c.modality == "image" else "stack")
        if c.select not in ("best", "last"):
            raise CeusError(f"unknown checkpoint selection {c.select!r}; choose best or last")
        if c.modality == "image" and c.input_mode != "single":
            raise CeusError(f"input mode {c.input_mode!r} needs keyframes; use --modality video")
        if c.modality == "video" and c.input_mode == "single":
            raise CeusError("input mode 'single' is for --modality image; use stack, temporal or summary for video")
        if c.name is None:
            c.name = f"DL_{c.modality}_{c.arch}" + (f"_{c.input_mode}" if c.input_mode in ("temporal", "summary") else "")
        for k in ("epochs", "folds", "batch_size", "crop"):
            if getattr(c, k) < (2 if k == "folds" else 1):
                raise CeusError(f"--{k.replace('_', '-')} must be at least {2 if k == 'folds' else 1}")
        return c


# ----------------------------------------------------------------------------- helpers


def _dist() -> tuple[int, int, int]:
    """(world size, rank, local rank) from the torchrun environment."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto / cpu / cuda → a torch device (this process's GPU under torchrun); clear error if unavailable."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise CeusError("--device cuda asked for, but no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise CeusError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device("cpu")


def fold_seed(seed: int, fold: int) -> int:
    return seed * 1009 + fold + 1


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def make_folds(data: CachedSet, train_idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per training case: stratified by label, grouped by patient group."""
    from sklearn.model_selection import StratifiedGroupKFold

    y, g = data.labels[train_idx], data.groups[train_idx]
    for cls in (0, 1):
        n = len(set(g[y == cls]))
        if n < k:
            raise CeusError(f"only {n} training group(s) with label {cls}: too few for {k} folds (use --folds {max(2, n)})")
    fold = np.full(len(train_idx), -1)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, va) in enumerate(cv.split(np.zeros(len(y)), y, g)):
        fold[va] = f
    return fold


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as exc:
        raise CeusError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _optim_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{key}"] = v
            else:
                meta["state"].setdefault(str(pid), {})[key] = v
    return tensors, meta


def _optim_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(p): dict(v) for p, v in meta["state"].items()}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- model I/O for later stages


def model_dir(run, name: str) -> Path:
    return Path(run) / "models" / name


def read_config(run, name: str) -> dict:
    path = model_dir(run, name) / "config.json"
    if not path.is_file():
        raise CeusError(f"{path} not found (train the model first)")
    return json.loads(path.read_text())


def build_from_config(cfg: dict) -> nn.Module:
    """An untrained model with the architecture of a config.json (no weight download)."""
    model, _ = build_model(cfg["arch"], cfg["input_mode"], cfg["frames"], cfg["frame_channels"],
                           weights="none", dropout=cfg.get("dropout", 0.0))
    return model


def load_fold_model(run, name: str, fold: int, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The best checkpoint of one fold, in eval mode, with its config (safetensors only)."""
    cfg = read_config(run, name)
    path = model_dir(run, name) / f"fold{fold}" / "model.safetensors"
    if not path.is_file():
        raise CeusError(f"{path} not found (fold {fold} of {name} has not finished training)")
    model = build_from_config(cfg)
    tensors, _ = load_tensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CeusError(f"checkpoint {path} does not fit {cfg['arch']} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), cfg


def transform_for(cfg: dict, device: str | torch.device = "cpu") -> BatchTransform:
    """The evaluation transform a trained model expects (centre crop, its normalisation)."""
    return BatchTransform(cfg["input_mode"], cfg["frames"], cfg["frame_channels"], cfg["crop"], cfg["image_size"],
                          cfg["pretrained"], device)


@torch.no_grad()
def predict_probs(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform, batch_size: int = 64,
                  amp: bool = False) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        x = tf(data.x[torch.as_tensor(idx[s:s + batch_size])])
        with _autocast(tf.device, amp):
            out.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: CachedSet, idx: np.ndarray, tf: BatchTransform, batch_size: int = 64,
                   amp: bool = False) -> None:
    """Precise BatchNorm: set the running statistics to the mean and variance of ``idx`` under the
    current weights. With a few dozen training cases an epoch is a handful of optimiser steps, and
    momentum-averaged statistics lag the weights: eval-mode logits shift (a planted-signal test went
    from every logit near +12 to -7 for negatives and +5..+17 for positives) and Grad-CAM then
    explains the shift rather than the signal. Deterministic: un-augmented inputs, fixed order."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(idx) < 2:
        return
    was = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    try:
        # near-equal chunks, none of size 1 (train-mode BatchNorm needs two values per channel)
        for chunk in np.array_split(np.asarray(idx), max(1, math.ceil(len(idx) / batch_size))):
            with _autocast(tf.device, amp):
                model(tf(data.x[torch.as_tensor(chunk)]))
    finally:
        for m, mo in zip(bns, momenta):
            m.momentum = mo
        model.train(was)


def _autocast(device: torch.device, amp: bool):
    """bfloat16 autocast on CUDA (no loss scaling needed); fp32 on CPU and on GPUs without bf16."""
    if amp and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- training


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


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, lossf: nn.Module, batches, lr_fn, step: int,
                clip: float, world: int = 1) -> tuple[int, float]:
    """Step the optimiser over ``batches``; returns (next step, mean training loss)."""
    tot, seen = None, 0
    for x, y, global_n in batches:
        for g in opt.param_groups:
            g["lr"] = lr_fn(step)
        with _autocast(x.device, True):
            logits = net(x)
        raw = lossf(logits.float(), y)
        # DDP averages gradients over processes: scale so the result is the global-batch mean
        loss = raw * (world / global_n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        step += 1
        tot = raw.detach() if tot is None else tot + raw.detach()
        seen += len(y)
    return step, (float(tot) / seen if seen else float("nan"))


class _Interrupted(Exception):
    pass


@dataclass
class _Ctx:
    cfg: TrainConfig
    run: Path
    out: Path
    data: CachedSet
    device: torch.device
    world: int
    rank: int
    local_rank: int
    pretrained_requested: bool
    budget: list  # [epochs left this call or None]
    weights: tuple = (None, "none")  # (state dict, source) fetched once for all folds
    progress: object = None
    weights_used: str = "none"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1 and dist.is_initialized():
            dist.barrier()


def _train_fold(ctx: _Ctx, k: int, tr: np.ndarray, va: np.ndarray, resume: bool) -> dict:
    cfg, dev = ctx.cfg, ctx.device
    fdir = ctx.out / f"fold{k}"
    done = fdir / "oof.csv"
    if done.is_file():
        res = json.loads((fdir / "result.json").read_text())
        return res
    # Every fold starts from the same weights (pretrained, or random from the run's seed), so the
    # fold models' penultimate features stay comparable: out-of-fold features for fusion need that.
    torch.manual_seed(cfg.seed)
    model, used = build_model(cfg.arch, cfg.input_mode, ctx.data.frames, ctx.data.frame_channels,
                              ctx.weights, cfg.require_weights, cfg.dropout)
    torch.manual_seed(fold_seed(cfg.seed, k))
    ctx.weights_used = used
    cuda = dev.type == "cuda"
    model = model.to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(fold_seed(cfg.seed, k) + 7)
    n, bsz = len(tr), cfg.batch_size
    # a last batch too small for BatchNorm (< 2 samples per process) is dropped
    starts = [s for s in range(0, n, bsz) if min(bsz, n - s) >= 2 * ctx.world]
    total, warm = cfg.epochs * len(starts), int(round(cfg.warmup_epochs * len(starts)))
    y_tr = ctx.data.labels[tr]
    pos_weight = torch.tensor(float((y_tr == 0).sum()) / max(1.0, float((y_tr == 1).sum())), dtype=torch.float32, device=dev)
    state = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "bad": 0, "history": [],
             "best_val_prob": None, "weights_used": used}

    last = fdir / "last.safetensors"
    if resume and (fdir / "state.json").is_file():
        state = json.loads((fdir / "state.json").read_text())
        mt, mmeta = load_tensors(last)
        ot, ometa = load_tensors(fdir / "optim.safetensors")
        if mmeta.get("epoch") != str(state["epoch"]) or ometa.get("epoch") != str(state["epoch"]):
            raise CeusError(f"checkpoint in {fdir} is inconsistent (interrupted while saving); remove {fdir} to restart this fold")
        model.load_state_dict(mt)
        opt.load_state_dict(_optim_join(ot, state["optim"]))
        torch.set_rng_state(ot["rng.torch"])
        gen.set_state(ot["rng.gen"])
        if cuda and "rng.cuda" in ot:
            torch.cuda.set_rng_state(ot["rng.cuda"], dev)
        if ctx.main:
            log.info("fold %d: resumed after epoch %d", k, state["epoch"])

    net = model
    if ctx.world > 1:
        if cuda:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if cuda else None)
    tf_train = BatchTransform(cfg.input_mode, ctx.data.frames, ctx.data.frame_channels, cfg.crop, ctx.data.size,
                              ctx.pretrained_requested, dev, channels_last=cuda)
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
    task = None
    if ctx.progress is not None:
        task = ctx.progress.add_task(f"{cfg.name} fold {k}", total=cfg.epochs, completed=state["epoch"], auc="")

    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        if ctx.budget[0] is not None and ctx.budget[0] <= 0:
            raise _Interrupted()
        t0 = time.perf_counter()
        net.train()
        if cfg.freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        batches = train_batches(ctx.data, tr, gen, tf_train, starts, bsz, cfg.crop, ctx.world, ctx.rank)
        state["step"], train_loss = train_epoch(net, opt, lossf, batches, lambda i: lr_at(i, total, warm, cfg.lr),
                                                state["step"], cfg.clip_grad, ctx.world)
        tf_eval = BatchTransform(cfg.input_mode, ctx.data.frames, ctx.data.frame_channels, cfg.crop, ctx.data.size,
                                 ctx.pretrained_requested, dev, channels_last=cuda)
        if cfg.precise_bn and not cfg.freeze_bn:
            recalibrate_bn(model, ctx.data, tr, tf_eval, amp=True)
        vp = predict_probs(model, ctx.data, va, tf_eval, amp=True)
        yv = ctx.data.labels[va]
        auc = safe_auc(yv, vp)
        vloss = float(nn.functional.binary_cross_entropy(torch.as_tensor(vp).clamp(1e-7, 1 - 1e-7),
                                                         torch.as_tensor(yv, dtype=torch.float64)))
        score = auc if not math.isnan(auc) else -vloss
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"], "lr": opt.param_groups[0]["lr"],
                                 "train_loss": train_loss, "val_loss": vloss, "val_auc": auc,
                                 "seconds": round(time.perf_counter() - t0, 3)})
        improved = score > state["best"] or cfg.select == "last"
        if improved:
            state.update(best=score, best_epoch=state["epoch"], bad=0, best_val_prob=vp.tolist())
        else:
            state["bad"] += 1
        if ctx.main:
            msd = {k2: v for k2, v in model.state_dict().items()}
            if improved:
                _save_tensors(fdir / "model.safetensors", msd, {"epoch": str(state["epoch"]), "arch": cfg.arch})
            ot, ometa = _optim_split(opt)
            ot["rng.torch"] = torch.get_rng_state()
            ot["rng.gen"] = gen.get_state()
            if cuda:
                ot["rng.cuda"] = torch.cuda.get_rng_state(dev)
            meta = {"epoch": str(state["epoch"])}
            _save_tensors(last, msd, meta)
            _save_tensors(fdir / "optim.safetensors", ot, meta)
            write_json(fdir / "state.json", {**state, "optim": ometa})
            write_csv(fdir / "history.csv", pd.DataFrame(state["history"]))
        ctx.barrier()
        if task is not None:
            ctx.progress.update(task, completed=state["epoch"], auc=f"val AUC {auc:.3f} (best {state['best']:.3f})")
        if ctx.budget[0] is not None:
            ctx.budget[0] -= 1

    res = {"fold": k, "auc": state["best"] if state["best"] > -math.inf and state["best"] >= 0 else float("nan"),
           "best_epoch": state["best_epoch"], "epochs_run": state["epoch"], "weights_used": state["weights_used"]}
    if ctx.main:
        write_json(fdir / "result.json", res)
        write_csv(done, pd.DataFrame({"case_id": [ctx.data.case_ids[i] for i in va], "fold": k,
                                      "y": ctx.data.labels[va], "prob": state["best_val_prob"]}))
        for f in (last, fdir / "optim.safetensors", fdir / "state.json"):
            f.unlink(missing_ok=True)
    ctx.barrier()
    if task is not None:
        ctx.progress.update(task, completed=cfg.epochs)
    return res


def _check_existing(out: Path, cfg_json: dict, resume: bool, overwrite: bool) -> None:
    path = out / "config.json"
    if not path.is_file():
        return
    if overwrite:
        shutil.rmtree(out)
        return
    if not resume:
        raise CeusError(f"{out} already holds a model; pass --resume to continue it or --overwrite to start again")
    old = json.loads(path.read_text())
    ignore = {"device", "epochs", "patience", "weights_used"}
    diff = [k for k in cfg_json if k not in ignore and old.get(k, asdict(TrainConfig()).get(k)) != cfg_json[k]]
    if diff:
        raise CeusError(f"{path}: cannot resume, the settings differ ({', '.join(f'{d}: {old.get(d)!r} -> {cfg_json[d]!r}' for d in diff)})")


def train(run, cfg: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
          max_epochs_this_call: int | None = None) -> dict | None:
    """Train all folds, then write predictions and summary. Returns the summary, or None when
    ``max_epochs_this_call`` stopped it early (continue with ``resume=True``)."""
    run = Path(run)
    cfg = cfg.resolved()
    world, rank, local_rank = _dist()
    own_pg = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo")
        own_pg = True
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return _train(run, cfg, resume, overwrite, progress, max_epochs_this_call, world, rank, local_rank, device)
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        if own_pg:
            dist.destroy_process_group()


def _train(run, cfg, resume, overwrite, progress, max_epochs_this_call, world, rank, local_rank, device):
    t_start = time.perf_counter()
    data = load_cached(run, cfg.modality, cfg.size)
    if cfg.crop > data.size:
        cfg.crop = data.size
    if device.type == "cuda" and data.x.numel() < (4 << 30):
        data.x = data.x.to(device)
    if cfg.batch_size % world:
        raise CeusError(f"--batch-size {cfg.batch_size} must be a multiple of the {world} processes")
    out = model_dir(run, cfg.name)
    pretrained = str(cfg.weights).lower() != "none"
    cfg_json = {**asdict(cfg), "frames": data.frames, "frame_channels": data.frame_channels,
                "channels": model_channels(cfg.input_mode, data.frames, data.frame_channels),
                "image_size": data.size, "pretrained": pretrained,
                "normalisation": dict(zip(("mean", "std"), normalisation(cfg.input_mode, data.frames,
                                                                         data.frame_channels, pretrained)))}
    if rank == 0:
        _check_existing(out, cfg_json, resume, overwrite)
    if world > 1 and dist.is_initialized():
        dist.barrier()

    train_idx = np.flatnonzero(data.split == "train")
    test_idx = np.flatnonzero(data.split == "test")
    if len(train_idx) == 0:
        raise CeusError(f"no training cases with a {cfg.modality} in {run}/prepared/index.csv")
    folds_path = out / "folds.csv"
    fold = make_folds(data, train_idx, cfg.folds, cfg.seed)
    if resume and folds_path.is_file():
        old = pd.read_csv(folds_path, dtype={"case_id": str})
        mine = pd.DataFrame({"case_id": [data.case_ids[i] for i in train_idx], "fold": fold})
        if not old.sort_values("case_id").reset_index(drop=True).equals(mine.sort_values("case_id").reset_index(drop=True)):
            raise CeusError(f"{folds_path}: the folds differ from those of this cohort; cannot resume")
    if rank == 0:
        write_json(out / "config.json", cfg_json)
        write_csv(folds_path, pd.DataFrame({"case_id": [data.case_ids[i] for i in train_idx], "fold": fold}))

    ctx = _Ctx(cfg, run, out, data, device, world, rank, local_rank, pretrained, [max_epochs_this_call])
    if any(not (out / f"fold{k}" / "oof.csv").is_file() for k in range(cfg.folds)):
        ctx.weights = fetch_weights(cfg.arch, cfg.weights, cfg.require_weights)
    results = []
    bar = contextlib.nullcontext()
    if progress and rank == 0:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = ctx.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[auc]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with bar:
        try:
            for k in range(cfg.folds):
                results.append(_train_fold(ctx, k, train_idx[fold != k], train_idx[fold == k], resume))
        except _Interrupted:
            return None

    # test set: scored once, after all folds, as the mean of the fold models
    test_prob = np.zeros(len(test_idx))
    if len(test_idx):
        tf = BatchTransform(cfg.input_mode, data.frames, data.frame_channels, cfg.crop, data.size, pretrained, device)
        for k in range(cfg.folds):
            model, _ = load_fold_model(run, cfg.name, k, device)
            test_prob += predict_probs(model, data, test_idx, tf, amp=True) / cfg.folds
    oof = pd.concat([pd.read_csv(out / f"fold{k}" / "oof.csv", dtype={"case_id": str}) for k in range(cfg.folds)])
    pred = pd.concat([
        pd.DataFrame({"case_id": oof["case_id"], "set": "train", "fold": oof["fold"], "y": oof["y"], "prob": oof["prob"]}),
        pd.DataFrame({"case_id": [data.case_ids[i] for i in test_idx], "set": "test", "fold": -1,
                      "y": data.labels[test_idx], "prob": test_prob}),
    ], ignore_index=True)
    aucs = [r["auc"] for r in results]
    summary = {"name": cfg.name, "modality": cfg.modality, "arch": cfg.arch, "input_mode": cfg.input_mode,
               "weights_used": results[0]["weights_used"], "folds": cfg.folds,
               "fold_auc": aucs, "cv_auc_mean": float(np.nanmean(aucs)), "cv_auc_std": float(np.nanstd(aucs)),
               "oof_auc": safe_auc(oof["y"].to_numpy(), oof["prob"].to_numpy()),
               "best_epochs": [r["best_epoch"] for r in results], "n_train": int(len(train_idx)),
               "n_test": int(len(test_idx)), "seconds": round(time.perf_counter() - t_start, 1), "world_size": world}
    summary["rank"] = rank
    if rank == 0:
        write_csv(run / "predictions" / f"{cfg.name}.csv", pred)
        write_json(out / "summary.json", summary)
    return summary


def rank_models(run, modality: str | None = None) -> pd.DataFrame:
    """Trained models of a run ranked by mean CV AUC (training split only; the test set is never used)."""
    rows = []
    for s in sorted((Path(run) / "models").glob("*/summary.json")):
        d = json.loads(s.read_text())
        if "cv_auc_mean" not in d or (modality and d.get("modality") != modality):
            continue
        rows.append({k: d.get(k) for k in ("name", "modality", "arch", "input_mode", "weights_used", "folds",
                                           "cv_auc_mean", "cv_auc_std", "oof_auc")})
    cols = ["name", "modality", "arch", "input_mode", "weights_used", "folds", "cv_auc_mean", "cv_auc_std", "oof_auc"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["cv_auc_mean", "name"], ascending=[False, True], na_position="last").reset_index(drop=True)
