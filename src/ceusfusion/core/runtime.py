"""Where and how tensors are computed: device, mixed precision, determinism, DDP ranks, checkpoints.

One owner for each: every stage that runs a network (train, pretrain, features, explain, predict)
resolves its device, autocast and determinism here, and every checkpoint is written and read here.

Checkpoints are safetensors (never pickle, so a hostile file cannot run code) plus a JSON record.
A resumable checkpoint is ONE unit: a folder written under a temporary name and renamed into
place, so a kill leaves either the previous epoch's folder or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path

DEVICES = ("auto", "cpu", "cuda")


def dist_info() -> tuple[int, int, int]:
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
        raise CeusError(f"unknown device {name!r}; choose {', '.join(DEVICES)}")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool = True):
    """The one mixed-precision policy: bfloat16 autocast on CUDA GPUs that support it (no loss scaling
    needed); float32 on CPU and on GPUs without bfloat16 (fp16 would need a GradScaler and can
    underflow the small losses of fine-tuning)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(device: torch.device):
    """Deterministic algorithms on CPU (same command, same numbers), cuDNN autotuning on GPU; the
    caller's settings are restored on exit."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


@contextlib.contextmanager
def threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: leave as is), restoring the previous count."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- tensors on disk


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """One safetensors file, written atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a clear error for anything else."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types
        raise CeusError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors named ``optim.<param>.<key>``, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{key}"] = v
            else:
                meta["state"].setdefault(str(pid), {})[key] = v
    return tensors, meta


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`optimizer_tensors`: a state dict for ``Optimizer.load_state_dict``."""
    state: dict[int, dict] = {int(p): dict(v) for p, v in meta["state"].items()}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_tensors(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """Every random state a resumed run needs to continue draw for draw."""
    out = {"rng.torch": torch.get_rng_state(), "rng.gen": gen.get_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(tensors: dict[str, torch.Tensor], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


CHECKPOINT_TENSORS = "tensors.safetensors"
CHECKPOINT_STATE = "state.json"


def save_checkpoint(folder: str | Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Write a resumable checkpoint as one unit: a temporary folder renamed onto ``folder``.

    At every instant one complete unit exists: ``folder``, or (between the two renames) the previous
    one as ``.<folder>.old``, which :func:`load_checkpoint` falls back to. ``.old`` is removed only
    when ``folder`` holds a complete unit, so a kill never leaves nothing to resume from.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # left by a kill mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / CHECKPOINT_TENSORS))
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(state))
        old = folder.with_name(f".{folder.name}.old")
        if (folder / CHECKPOINT_STATE).is_file():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        elif folder.exists():  # not a complete unit (never written by this function): the previous stays in .old
            shutil.rmtree(folder)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / CHECKPOINT_STATE).is_file() or (folder.with_name(f".{folder.name}.old") / CHECKPOINT_STATE).is_file()


def load_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a checkpoint folder; falls back to the previous unit when a kill fell between
    the two renames of :func:`save_checkpoint`."""
    folder = Path(folder)
    if not (folder / CHECKPOINT_STATE).is_file():
        folder = folder.with_name(f".{folder.name}.old")
    try:
        state = json.loads((folder / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError) as exc:
        raise CeusError(f"checkpoint {folder}: unreadable ({exc}); remove it to start again") from None
    tensors, _ = load_tensors(folder / CHECKPOINT_TENSORS)
    return tensors, state


def remove_checkpoint(folder: str | Path) -> None:
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(f".{folder.name}.old"), ignore_errors=True)
