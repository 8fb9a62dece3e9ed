"""Reading backbone weights: torchvision's ImageNet files (torch hub cache) and state-dict files, weights-only.

Which source is used, and the warning when none has the weights, is ``models.resolver``'s job;
this module only reads and applies. Files are read
without unpickling arbitrary objects (safetensors, or ``torch.load`` with
``weights_only=True``), so a hostile checkpoint cannot run code; an ImageNet
file in the torch hub cache must also match the hash torchvision publishes.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file

log = logging.getLogger(__name__)


class WeightsUnavailableWarning(UserWarning):
    """ImageNet weights were requested but could not be obtained; random init is used."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise CeusError(f"weights file {path} not found")
    if path.suffix == ".safetensors":

        try:
            sd = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CeusError(f"weights file {path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CeusError(f"weights file {path}: refused, it holds objects other than tensors ({first}); "
                            "only plain state dicts are loaded (safetensors recommended)") from None
        except Exception as exc:
            raise CeusError(f"weights file {path}: cannot be read as a torch state dict ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CeusError(f"weights file {path}: expected a mapping of parameter names to tensors")
    return {_current_key(k.removeprefix("module.")): v for k, v in sd.items()}


# torchvision's DenseNet ImageNet files predate its module names (``norm.1`` for ``norm1``); torchvision
# renames them with this pattern when it loads them itself
_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _current_key(key: str) -> str:
    m = _DENSENET_OLD_KEY.match(key)
    return m.group(1) + m.group(2) if m else key


def apply_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> int:
    """Copy matching tensors into ``model``; a classification head of another size is skipped.

    Returns how many tensors were loaded; raises if nothing matched (wrong architecture).
    """
    own = model.state_dict()
    use = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not use:
        raise CeusError(f"weights {source}: no parameter matches this architecture (wrong file or --arch?)")
    skipped = [k for k in own if k not in use and not k.endswith("num_batches_tracked")]
    if len(skipped) > 0.1 * len(own):
        raise CeusError(f"weights {source}: {len(skipped)} of {len(own)} tensors do not match this architecture "
                        f"(e.g. {skipped[0]})")
    model.load_state_dict(use, strict=False)
    if skipped:
        log.info("weights %s: %d tensors left at random init (%s ...)", source, len(skipped), skipped[0])
    return len(use)


def imagenet_file(arch: str) -> tuple[str, Path, str | None]:
    """(download URL, path in the torch hub cache, published sha256 prefix or None) of ``arch``'s
    ImageNet weights: torchvision names each file ``<name>-<first hex digits of its sha256>.pth``."""
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    name = Path(urlparse(url).path).name
    found = torch.hub.HASH_REGEX.search(name)
    return url, Path(torch.hub.get_dir()) / "checkpoints" / name, (found.group(1) if found and found.group(1) else None)


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict, read weights-only and checked against the published hash.

    Not ``torchvision ... get_state_dict``: it unpickles the cached file without ``weights_only`` and
    checks the hash only when it downloads, so a file planted in the cache would run code. A file that
    is present but fails either check is a :class:`CeusError` (a tampered or damaged cache must not be
    replaced silently by random init); a missing file that cannot be downloaded raises ``OSError``.
    """
    url, path, prefix = imagenet_file(arch)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
    if prefix is not None and not sha256_file(path).startswith(prefix):
        raise CeusError(f"ImageNet weights {path}: sha256 does not start with the published {prefix}; the file is "
                        "damaged or was replaced, and is not loaded (delete it, or put the file from "
                        f"{url} there)")
    return load_state_dict_file(path)
