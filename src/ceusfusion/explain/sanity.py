"""Checks that the maps mean something (Adebayo et al. 2018; numbers for the report).

:func:`energy_share` (how much of a map lies in the region that holds the signal),
:func:`rank_correlation` (how alike two maps are) and :func:`randomise_model` /
:func:`cascade_prefixes` (the model-randomisation test: maps of a model with
re-initialised weights should look unlike the trained model's). The check over a
set of explained cases is ``explain.cases.add_randomisation_check``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from ceusfusion.core.errors import CeusError


def energy_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the (non-negative) map's total inside ``region``; a uniform map gives the region's area share.

    The region is resized (nearest) to the map when their sizes differ. An all-zero map (no
    evidence for the class anywhere, common for a randomised model) localises nothing and
    counts as uniform: the area share.
    """
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0, None)
    region = np.asarray(region, dtype=bool)
    if region.shape != cam.shape:
        t = torch.from_numpy(region.astype(np.float32))[None, None]
        region = F.interpolate(t, size=cam.shape, mode="nearest")[0, 0].numpy() > 0.5
    total = cam.sum()
    return float(cam[region].sum() / total) if total > 0 else float(region.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over pixels (the measure of Adebayo et al.).

    A constant map carries no ranking; its correlation with anything is taken as 0.
    """
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomise_model(model: nn.Module, seed: int = 0, prefixes: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` with the parameters of every module (or of those under ``prefixes``) re-initialised.

    Re-initialisation uses each layer's own ``reset_parameters`` (BatchNorm: running
    statistics too), seeded. Cascading randomisation (Adebayo et al.) is a sequence
    of calls with growing ``prefixes``, from the head down (see :func:`cascade_prefixes`).
    """
    torch.manual_seed(seed)
    new = copy.deepcopy(model)
    n = 0
    for name, m in new.named_modules():
        if prefixes is not None and not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
            m.reset_parameters()
            n += 1
    if n == 0:
        raise CeusError(f"nothing to randomise under {prefixes}")
    return new.eval()


def cascade_prefixes(model: nn.Module) -> list[list[str]]:
    """Cumulative module-name lists for cascading randomisation: head first, then encoder blocks top-down."""
    heads = [n for n, _ in model.named_children() if n != "encoder"]
    enc = model.get_submodule("encoder")
    blocks: list[str] = []
    for n, m in enc.named_children():
        if n == "features":  # DenseNet / EfficientNet / ConvNeXt keep their blocks one level down
            blocks += [f"encoder.features.{c}" for c, _ in m.named_children()]
        else:
            blocks.append(f"encoder.{n}")
    blocks = [b for b in blocks if any(True for _ in model.get_submodule(b).parameters())]
    steps, cur = [], list(heads)
    steps.append(list(cur))
    for b in reversed(blocks):
        cur.append(b)
        steps.append(list(cur))
    return steps


RANK_LIMIT = 0.5  # a mean rank correlation with the randomised model's maps at or above this: the maps barely change
NO_REGION = ("not measured: no signal region is known for this cohort (only the synthetic cohort records one)")


def localisation_verdict(summary: dict) -> tuple[bool | None, str]:
    """Does the map put more energy in the signal region than a uniform map would, and than the randomised
    model's maps? (ok, sentence) from an explain.json summary; ``ok`` is None where no region is known."""
    energy, area = summary.get("mean_cam_energy_in_region"), summary.get("mean_region_area_share")
    if energy is None or area is None:
        return None, NO_REGION
    rnd = (summary.get("randomisation_check") or {}).get("mean_energy_in_region_randomised")
    caveat = f" (the region covers {area:.0%} of the input, so this check can tell little)" if area >= 0.5 else ""
    if energy <= area:
        return False, (f"fails: the map puts less energy in the signal region ({energy:.2f}) than a uniform map would "
                       f"(the region's area share, {area:.2f})" + caveat)
    if rnd is not None and energy <= rnd:
        return False, (f"fails: the map puts {energy:.2f} of its energy in the signal region, more than a uniform map "
                       f"({area:.2f}) but no more than the randomised model's maps ({rnd:.2f})" + caveat)
    than_rnd = "" if rnd is None else f" and than the randomised model's maps ({rnd:.2f})"
    return True, (f"passes: the map puts {energy:.2f} of its energy in the signal region, more than a uniform map "
                  f"would ({area:.2f}){than_rnd}" + caveat)


def randomisation_verdict(summary: dict) -> tuple[bool | None, str]:
    """Do the maps change when the weights are randomised (Adebayo et al.)? (ok, sentence); None: not run."""
    rho = (summary.get("randomisation_check") or {}).get("mean_rank_correlation")
    if rho is None:
        return None, "not run (explain --sanity)"
    if rho >= RANK_LIMIT:
        return False, (f"fails: the maps hardly change when the model's weights are randomised (mean rank correlation "
                       f"{rho:.2f}, at or above {RANK_LIMIT}), so they may show the image rather than what the model learnt")
    return True, (f"passes: the maps change when the model's weights are randomised (mean rank correlation {rho:.2f}, "
                  f"below {RANK_LIMIT})")
