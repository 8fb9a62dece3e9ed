"""The pretraining loop: setup, resume, one epoch, the per-epoch checkpoint, final weights and sidecar.

* Pairs: two augmented views of two frames of the same video at most
  ``max_gap_s`` apart (intra-video positives); the other videos of the batch
  (and of the MoCo queue) are the negatives (:mod:`.losses`).
* Device, mixed precision and determinism follow :mod:`ceusfusion.core.runtime`
  (bfloat16 autocast on CUDA GPUs that support it, float32 elsewhere); the
  learning rate follows :class:`~ceusfusion.models.train.WarmupCosine`, one
  step per optimiser step.

Output: ``WEIGHTS.safetensors`` holds the encoder's state dict under
torchvision key names, with a 3-channel first convolution and no classifier:
what ``train --weights FILE`` (``models.resolver``) expects; stacked
keyframe models inflate that convolution after loading. ``WEIGHTS.json`` is the
sidecar (config, videos, frames, loss history, and the provenance record of
:mod:`.provenance`: every video pretrained on by path, size, sha256 and source,
the cohort test-split videos left out, ``test_split_used`` as computed). While running, ``WEIGHTS.ckpt/``
holds the frame cache (``frames.npz``) and the last epoch's resumable checkpoint
(``checkpoint/``, written as one unit by :func:`ceusfusion.core.runtime.save_checkpoint`:
tensors ``net.*``, ``key.*`` (MoCo key encoder), ``queue``, ``queue_video``,
``optim.*``, ``rng.*``; JSON state: config, epoch, step, history, queue_ptr,
optimiser and scheduler state), removed on success.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim, sha256_file, write_json
from ceusfusion.core.runtime import (
    autocast,
    checkpoint_exists,
    deterministic,
    load_checkpoint,
    optimizer_state,
    optimizer_tensors,
    resolve_device,
    restore_rng,
    rng_tensors,
    save_checkpoint,
    save_tensors,
)
from ceusfusion.models.backbones import build_encoder
from ceusfusion.models.pretrain.augment import UltrasoundAugment
from ceusfusion.models.pretrain.config import PretrainConfig
from ceusfusion.models.pretrain.frames import FrameBank, build_bank, draw_partners, partner_windows
from ceusfusion.models.pretrain.losses import ContrastiveNet, MoCoState, moco_loss, nt_xent
from ceusfusion.models.pretrain.probes import probe
from ceusfusion.models.pretrain.provenance import VideoPlan, given_plan, provenance_record, sidecar_path
from ceusfusion.models.transforms import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # models.train imports .provenance, so this package must not import models.train when loaded
    from ceusfusion.models.train import WarmupCosine

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"  # the resumable checkpoint's folder inside WEIGHTS.ckpt/
LEGACY_CHECKPOINT = "last.pt"  # pickle written by earlier versions: never read


def ckpt_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def checkpoint_path(out: Path) -> Path:
    """The resumable checkpoint (a folder) of the run writing ``out``."""
    return ckpt_dir(out) / CHECKPOINT


def probe_path(out: Path) -> Path:
    return out.with_suffix(".probe.json")


def claim_outputs(out: Path, videos, overwrite: bool, probe_cohort: str | Path | None = None) -> None:
    """The weights file, its sidecar and probe record: never over a file ceusfusion did not write (unless
    ``overwrite``), never over an input video or the cohort (ever): ``core.fsutil.claim``. The checkpoint folder
    ``WEIGHTS.ckpt/`` is not claimed: ``--resume`` continues one, whose every file is verified as it is read."""
    cohort = getattr(getattr(videos, "cohort", None), "manifest", None)
    inputs = [Path(p) for _, p in videos] + [Path(c) for c in (cohort, probe_cohort) if c]
    claim(out.parent, files=[out, sidecar_path(out), probe_path(out)], force=overwrite, inputs=inputs, flag="--overwrite")


@dataclass
class _Run:
    """Everything one pretraining call works with."""

    cfg: PretrainConfig
    device: torch.device
    bank: FrameBank
    lo: np.ndarray
    hi: np.ndarray
    bsz: int
    starts: list[int]
    gen: torch.Generator
    net: ContrastiveNet
    moco: MoCoState | None
    opt: torch.optim.Optimizer
    sched: WarmupCosine
    frames: torch.Tensor
    video_t: torch.Tensor
    aug: UltrasoundAugment
    used: str
    state: dict


def pretrain(videos: list[tuple[str, Path]] | VideoPlan, out: str | Path, cfg: PretrainConfig, resume: bool = False,
             overwrite: bool = False, on_epoch: Callable[[dict], None] | None = None,
             max_epochs_this_call: int | None = None, sources: dict | None = None,
             probe_cohort: str | Path | None = None) -> dict | None:
    """Contrastive pretraining on the frames of ``videos``; writes ``out`` and its sidecar.

    ``videos``: a :class:`~.provenance.VideoPlan` (:func:`~.provenance.plan_videos`), or a plain list of
    (id, path), described and matched against the cohort named in ``sources`` for the provenance record.
    Returns the sidecar dict, or None when ``max_epochs_this_call`` stopped it
    early (continue with ``resume=True``). ``probe_cohort``: afterwards, run
    :func:`probe` on that cohort's training labels (``<out>.probe.json``).
    """
    cfg.check()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise CeusError(f"--out {out}: the weights file must end in .safetensors")
    ck = ckpt_dir(out)
    if out.exists() and not overwrite:
        if resume and not checkpoint_exists(ck / CHECKPOINT):
            log.info("%s is complete; nothing to resume", out)
            return json.loads(sidecar_path(out).read_text()) if sidecar_path(out).is_file() else None
        raise CeusError(f"{out} exists; pass --overwrite to replace it")
    claim_outputs(out, videos, overwrite, probe_cohort)
    if overwrite and ck.exists() and not resume:
        shutil.rmtree(ck)
    if not len(videos):
        raise CeusError("no video to pretrain on (training split of the cohort and --unlabeled folders are empty)")
    plan = videos if isinstance(videos, VideoPlan) else given_plan(videos, sources)
    device = resolve_device(cfg.device)
    with deterministic(device):
        t_start = time.perf_counter()
        run = _setup(plan.videos, ck, cfg, device)
        if resume:
            _resume(run, ck)
        if not _train(run, ck, on_epoch, max_epochs_this_call):
            return None
        return _finish(run, out, ck, plan, sources or plan.sources, probe_cohort, t_start)


# ----------------------------------------------------------------------------- setup and resume


def _setup(videos: list[tuple[str, Path]], ck: Path, cfg: PretrainConfig, device: torch.device) -> _Run:
    """Frames, partner windows, networks, optimiser and LR schedule of a fresh run (seeded)."""
    # at call time: models.train imports this package's provenance module when it loads
    from ceusfusion.models.train import WarmupCosine

    ck.mkdir(parents=True, exist_ok=True)
    bank = build_bank(videos, cfg.size, cfg.frames_per_video, cache=ck / "frames.npz")
    if len(bank.videos) < 2:
        raise CeusError(f"contrastive pretraining needs at least 2 readable videos, got {len(bank.videos)}")
    lo, hi = partner_windows(bank, cfg.max_gap_s)
    n = len(bank)
    bsz = min(cfg.batch_size, n)
    starts = [s for s in range(0, n, bsz) if min(bsz, n - s) >= 2]

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 17)
    enc, dim, used = build_encoder(cfg.arch, 3, cfg.init)
    net = ContrastiveNet(enc, dim, cfg.proj_dim).to(device)
    cuda = device.type == "cuda"
    if cuda:
        net = net.to(memory_format=torch.channels_last)
    moco = MoCoState(net, min(cfg.queue, max(bsz, n)), cfg.proj_dim, cfg.momentum, device, gen) \
        if cfg.method == "moco" else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = WarmupCosine(opt, cfg.epochs * len(starts), round(cfg.warmup_epochs * len(starts)))
    return _Run(cfg=cfg, device=device, bank=bank, lo=lo, hi=hi, bsz=bsz, starts=starts, gen=gen, net=net,
                moco=moco, opt=opt, sched=sched, frames=bank.frames.to(device) if cuda else bank.frames,
                video_t=torch.as_tensor(bank.video, dtype=torch.long, device=device),
                aug=UltrasoundAugment(cfg.size, device, scale=(cfg.min_crop, 1.0)), used=used,
                state={"epoch": 0, "step": 0, "history": []})


def _resume(run: _Run, ck: Path) -> None:
    """Continue from the last epoch's checkpoint, when there is one: every tensor, the schedule and
    every random state, so that interrupted + resumed = uninterrupted."""
    folder = ck / CHECKPOINT
    if not checkpoint_exists(folder):
        if (ck / LEGACY_CHECKPOINT).is_file():
            log.warning("%s: checkpoint of an earlier version, not read; pretraining starts again",
                        ck / LEGACY_CHECKPOINT)
        return
    tensors, state = load_checkpoint(folder)
    saved = state.get("config") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise CeusError(f"checkpoint {folder}: not a pretraining checkpoint (no settings); remove {ck} to start again")
    now = run.cfg.identity()
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise CeusError(f"{folder}: cannot resume, the settings differ ({', '.join(diff)}); "
                        f"remove {ck} or pass the same options")
    try:
        _restore(run, tensors, state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CeusError(f"checkpoint {folder}: not a pretraining checkpoint of this run ({problem}); "
                        f"remove {ck} to start again") from None
    log.info("resumed after epoch %d", run.state["epoch"])


def _restore(run: _Run, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Load a checkpoint's tensors and JSON state into ``run``; anything missing or misshapen raises."""
    run.net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
    run.opt.load_state_dict(optimizer_state(tensors, state["optim"]))
    total, warmup = run.sched.total, run.sched.warmup
    run.sched.load_state_dict(state["scheduler"])
    # --epochs may change on resume: the schedule spans this call's total, as the step count continues
    run.sched.total, run.sched.warmup = total, warmup
    restore_rng(tensors, run.gen, run.device)
    if run.moco is not None:
        run.moco.load(tensors, state["queue_ptr"])
    epoch, step, history = int(state["epoch"]), int(state["step"]), state["history"]
    if not isinstance(history, list) or len(history) != epoch or run.sched.last_epoch != step:
        raise ValueError(f"inconsistent state (epoch {epoch}, step {step}, {len(history)} epochs of history)")
    run.state = {"epoch": epoch, "step": step, "history": history}


def _save(run: _Run, folder: Path) -> None:
    """The resumable checkpoint of the epoch just finished, as one unit."""
    tensors = {f"net.{k}": v for k, v in run.net.state_dict().items()}
    opt_tensors, opt_meta = optimizer_tensors(run.opt)
    tensors.update(opt_tensors)
    tensors.update(rng_tensors(run.gen, run.device))
    state = {"config": run.cfg.identity(), "epoch": run.state["epoch"], "step": run.state["step"],
             "history": run.state["history"], "optim": opt_meta, "scheduler": run.sched.state_dict()}
    if run.moco is not None:
        tensors.update(run.moco.tensors())
        state["queue_ptr"] = run.moco.ptr
    save_checkpoint(folder, tensors, state)


# ----------------------------------------------------------------------------- training


def _train(run: _Run, ck: Path, on_epoch: Callable[[dict], None] | None, max_epochs: int | None) -> bool:
    """Epochs until ``cfg.epochs`` (True) or until ``max_epochs`` of this call are done (False)."""
    done = 0
    while run.state["epoch"] < run.cfg.epochs:
        if max_epochs is not None and done >= max_epochs:
            return False
        rec = _epoch(run)
        done += 1
        _save(run, ck / CHECKPOINT)
        log.info("epoch %d/%d loss %.4f (%.1f s)", rec["epoch"], run.cfg.epochs, rec["loss"], rec["seconds"])
        if on_epoch:
            on_epoch(rec)
    return True


def _epoch(run: _Run) -> dict:
    """One pass over every frame (random order, a fresh partner for each); returns the history record."""
    t0 = time.perf_counter()
    n = len(run.bank)
    run.net.train()
    perm = torch.randperm(n, generator=run.gen)
    partner = torch.as_tensor(draw_partners(run.lo, run.hi, run.gen))
    tot, count, lr = 0.0, 0, run.opt.param_groups[0]["lr"]
    for s in run.starts:
        a = perm[s:s + run.bsz]
        loss, lr = _step(run, a, partner[a])
        tot += loss * len(a)
        count += len(a)
    run.state["epoch"] += 1
    rec = {"epoch": run.state["epoch"], "loss": tot / max(1, count), "lr": lr,
           "seconds": round(time.perf_counter() - t0, 2), "frames": n}
    run.state["history"].append(rec)
    return rec


def _step(run: _Run, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """One optimiser step on anchors ``a`` and their partners ``b``: (loss, learning rate used)."""
    v = run.video_t[a.to(run.device)]
    x1 = run.aug(run.frames[a.to(run.frames.device)], run.gen)
    x2 = run.aug(run.frames[b.to(run.frames.device)], run.gen)
    if run.device.type == "cuda":
        x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
    loss, keys = _loss(run, x1, x2, v)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    lr = run.opt.param_groups[0]["lr"]
    run.sched.step()
    if run.moco is not None:
        run.moco.enqueue(keys, v)
    run.state["step"] += 1
    return float(loss.detach()), lr


def _loss(run: _Run, x1: torch.Tensor, x2: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The contrastive loss of two views (networks under autocast, losses in float32), and the keys to enqueue."""
    t = run.cfg.temperature
    if run.moco is None:
        with autocast(run.device):
            z = run.net(torch.cat([x1, x2])).float()  # one pass: BatchNorm sees both views
        return nt_xent(z[:len(v)], z[len(v):], v, t), None
    moco = run.moco
    with autocast(run.device):
        q1, q2 = run.net(x1).float(), run.net(x2).float()
        moco.update(run.net)
        k1, k2 = moco.keys(x1, 2).float(), moco.keys(x2, 2).float()
    loss = 0.5 * (moco_loss(q1, k2, v, moco.queue, moco.queue_video, t)
                  + moco_loss(q2, k1, v, moco.queue, moco.queue_video, t))
    return loss, k2


# ----------------------------------------------------------------------------- output


def _finish(run: _Run, out: Path, ck: Path, plan: VideoPlan, sources: dict, probe_cohort: str | Path | None,
            t_start: float) -> dict:
    """The encoder's weights, the sidecar with the provenance of the videos really used (and the probes
    when asked); the checkpoint folder goes."""
    cfg = run.cfg
    save_tensors(out, run.net.encoder.state_dict(), meta={"arch": cfg.arch, "producer": "ceusfusion pretrain",
                                                         "method": cfg.method, "size": str(cfg.size)})
    side = _sidecar(run, out, sources, t_start)
    side.update(provenance_record(plan, run.bank.videos, sha256_file(out)))
    if probe_cohort is not None:  # labels are read here, after pretraining, and only here
        side["probe"] = probe(probe_cohort, out, cfg.arch, cfg.size, cfg.frames_per_video, cfg.seed, cfg.device,
                              cfg.splits, probe_path(out), bank=run.bank)
    write_json(sidecar_path(out), side)
    shutil.rmtree(ck, ignore_errors=True)
    return side


def _sidecar(run: _Run, out: Path, sources: dict, t_start: float) -> dict:
    cfg, bank = run.cfg, run.bank
    return {"weights": str(out), "arch": cfg.arch, "size": cfg.size, "method": cfg.method, "epochs": cfg.epochs,
            "seed": cfg.seed, "config": cfg.as_json(), "init_weights_used": run.used, "device": run.device.type,
            "n_videos": len(bank.videos), "n_frames": len(bank), "steps_per_epoch": len(run.starts),
            "videos_skipped": bank.skipped, "sources": sources, "videos": bank.videos,
            "loss_history": run.state["history"], "seconds_this_call": round(time.perf_counter() - t_start, 1),
            "labels_read": False,
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                              "note": "grey replicated to 3 channels; train --weights FILE uses the same"}}
