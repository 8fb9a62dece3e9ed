"""A path a bundle lists, refused unless it stays inside the bundle. No torch here: ``deploy.fusion_worker``
reads the fusion model through it in a process that must not import torch (``deploy.export`` does)."""

from __future__ import annotations

from pathlib import Path

from ceusfusion.core.errors import CeusError


def inside_bundle(bundle: Path, rel, path: Path) -> Path:
    """bundle/rel for a plain relative path that stays in the bundle: no '/', '..', '\\', no symlink on the way."""
    parts = rel.split("/") if isinstance(rel, str) else []
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise CeusError(f"{path}: path {rel!r} is not a plain path inside the bundle; refusing the bundle")
    p = bundle
    for part in parts:
        p = p / part
        if p.is_symlink():
            raise CeusError(f"{p}: a symlink in the bundle; refusing the bundle")
    if not p.resolve().is_relative_to(bundle.resolve()):
        raise CeusError(f"{path}: path {rel!r} leaves the bundle; refusing the bundle")
    return p
