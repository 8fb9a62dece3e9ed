"""Explaining cases of a trained DL_image / DL_video model: the ``explain`` command.

The maps themselves are :mod:`ceusfusion.explain.cam`'s; this module decides which
cases, which fold models, which class, and averages over the fold models.

Which fold models: the fold plan of ``models.ensemble.FoldPlan``: test cases are
explained by the model that scored them (the one refitted on all training cases, or,
under ``test_scoring: fold-mean``, every fold model with maps and probabilities
averaged); training cases by the one fold model that held them out (their
out-of-fold prediction). ``fold=K`` (or ``"full"``) forces one model.

Per-class selection (``per_class=K``): for each label the K cases with the most
confident prediction *for their own label* (highest probability for label 1,
lowest for label 0); ties broken by case id. These are the clearest examples of
what the model does when it is right (or, when even these are wrong, say so: the
JSON has the probability).

Sanity check (``sanity=True``, :func:`add_randomisation_check`): the same cases
explained by randomised copies of the fold models (see :mod:`ceusfusion.explain.sanity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ceusfusion.core.config import StageConfig
from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import claim
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.core.runtime import resolve_device
from ceusfusion.explain.cam import METHODS, TARGETS, cam_type, display_frames, frame_contributions, layer_name, model_cams
from ceusfusion.explain.regions import region_to_input, signal_regions
from ceusfusion.explain.results import CaseExplanation, write_explanations
from ceusfusion.explain.sanity import energy_share, randomise_model, rank_correlation
from ceusfusion.models.data import CachedSet, load_cached
from ceusfusion.models.ensemble import REFIT, FoldPlan, model_number
from ceusfusion.models.registry import ModelRecord, load_fold_model, read_config, transform_for
from ceusfusion.models.transforms import SUMMARY_CHANNELS, BatchTransform


class ExplainSettings(StageConfig):
    """How a study explains its selected models (the study YAML's ``explain`` section; see :func:`explain`)."""

    per_class: int = Field(2, ge=1)
    method: Literal[METHODS] = "gradcam"
    target: Literal[tuple(TARGETS)] = "predicted"  # class each map explains
    layer: str | None = None  # default: the deepest block with a map of at least 7x7


def select_per_class(case_ids: list[str], labels: np.ndarray, probs: np.ndarray, k: int) -> list[str]:
    """The K cases of each label most confidently predicted as their own label (label 0 first)."""
    if k < 1:
        raise CeusError("--per-class must be at least 1")
    chosen = []
    for lab in (0, 1):
        own = [(1 - p if lab == 0 else p, c) for c, y, p in zip(case_ids, labels, probs) if int(y) == lab]
        own.sort(key=lambda t: (-t[0], t[1]))
        chosen += [c for _, c in own[:k]]
    return chosen


def fold_plan(run, name: str, cfg: ModelRecord, case_ids: list[str], splits, fold: int | None) -> dict[str, list[int]]:
    """case_id -> the fold models that explain it: ``FoldPlan``'s, or ``[fold]`` for every case."""
    if fold is not None:
        if fold != REFIT and not 0 <= fold < cfg.folds:
            raise CeusError(f"--fold {fold}: {name} has folds 0..{cfg.folds - 1}")
        return {c: [fold] for c in case_ids}
    plan = FoldPlan.read(run, name, cfg.folds, cfg.test_scoring)
    return {c: plan.folds_for(c, s) for c, s in zip(case_ids, splits)}


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


@dataclass
class _Job:
    """What explaining cases of one model needs: its config, cached inputs, fold plan, fold models, transform."""

    cfg: ModelRecord
    data: CachedSet
    pos: dict[str, int]   # case_id -> row of ``data``
    plan: dict[str, list[int]]
    nets: dict[int, nn.Module]
    tf: BatchTransform
    batch_size: int

    def inputs(self, ids: list[str]) -> torch.Tensor:
        return self.tf(self.data.x[[self.pos[c] for c in ids]])

    def batches(self, sel: list):
        for s in range(0, len(sel), self.batch_size):
            yield sel[s:s + self.batch_size]


def _case_ids(run, cfg: ModelRecord, data: CachedSet, pos: dict[str, int], case_ids: list[str] | None, split: str) -> list[str]:
    """The given case ids (each must be in the cache), else every case of ``split``."""
    if case_ids:
        missing = [c for c in case_ids if c not in pos]
        if missing:
            raise CeusError(f"case(s) {', '.join(missing)} have no prepared {cfg.modality} in {RunLayout(run).prepared_index}")
        return list(dict.fromkeys(case_ids))
    ids = [c for c in data.case_ids if data.split[pos[c]] == split]
    if not ids:
        raise CeusError(f"no {split} cases with a {cfg.modality} in {RunLayout(run).prepared_index}")
    return ids


def _prepare(run, name: str, cfg: ModelRecord, case_ids, split: str, fold: int | None, models, device: torch.device,
             batch_size: int) -> tuple[_Job, list[str]]:
    """Load the cache, choose the cases and their fold models, load those models: (job, case ids)."""
    data = load_cached(run, cfg.modality, cfg.image_size)
    cfg.check_prepared(data.prepare_fingerprint, RunLayout(run).prepared)
    pos = {c: i for i, c in enumerate(data.case_ids)}
    ids = _case_ids(run, cfg, data, pos, case_ids, split)
    plan = fold_plan(run, name, cfg, ids, [data.split[pos[c]] for c in ids], fold)
    needed = sorted({k for v in plan.values() for k in v}, key=lambda m: model_number(m, cfg.folds))
    nets = {k: (models[k] if models and k in models else load_fold_model(run, name, k, device)[0]) for k in needed}
    for m in nets.values():
        m.to(device).eval()
    return _Job(cfg, data, pos, plan, nets, transform_for(cfg, device), batch_size), ids


def _probabilities(job: _Job, ids: list[str]) -> np.ndarray:
    """Each case's probability, averaged over its fold models (as the predictions file has it)."""
    probs = np.zeros(len(ids))
    for k, net in job.nets.items():
        use = [i for i, c in enumerate(ids) if k in job.plan[c]]
        with torch.no_grad():
            for b in job.batches(use):
                x = job.inputs([ids[i] for i in b])
                probs[b] += torch.sigmoid(net(x).float()).cpu().numpy() / np.array([len(job.plan[ids[i]]) for i in b])
    return probs


def _accumulate(job: _Job, ids: list[str], method: str, layer: str | None, classes: dict[str, int]) -> dict[str, dict]:
    """Maps, probabilities, contributions and attention per case, averaged over its fold models."""
    mode, frames = job.cfg.input_mode, job.cfg.frames
    acc: dict[str, dict] = {c: {"prob": 0.0, "cam": 0.0, "contrib": 0.0, "att": 0.0} for c in ids}
    for k, net in job.nets.items():
        use = [c for c in ids if k in job.plan[c]]
        for b in job.batches(use):
            x = job.inputs(b)
            cams = model_cams(net, job.cfg, x, method, layer, [classes[c] for c in b])
            with torch.no_grad():
                prob = torch.sigmoid(net(x).float()).cpu().numpy()
                att = net.attention.cpu().numpy() if mode == "temporal" else None
            contrib = frame_contributions(net, x, x.shape[1] if mode == "summary" else frames) if mode != "single" else None
            for j, c in enumerate(b):
                n = len(job.plan[c])
                a = acc[c]
                a["prob"] += prob[j] / n
                a["cam"] = a["cam"] + cams[j] / n
                if contrib is not None:
                    a["contrib"] = a["contrib"] + contrib[j] / n
                if att is not None:
                    a["att"] = a["att"] + att[j] / n
    return acc


def _results(job: _Job, ids: list[str], acc: dict[str, dict], classes: dict[str, int],
             regions: dict[str, np.ndarray] | None) -> list[CaseExplanation]:
    cfg, data = job.cfg, job.data
    mode = cfg.input_mode
    disp = display_frames(job.inputs(ids), job.tf, mode, cfg.frames, cfg.frame_channels)
    extra = {"panels": list(SUMMARY_CHANNELS)} if mode == "summary" else {}
    out = []
    for j, c in enumerate(ids):
        a, i = acc[c], job.pos[c]
        reg = region_to_input(regions[c], cfg) if regions is not None and c in regions else None
        out.append(CaseExplanation(
            case_id=c, label=int(data.labels[i]), prob=float(a["prob"]), set=str(data.split[i]), folds=job.plan[c],
            image=disp[j], cam=np.asarray(a["cam"], dtype=np.float32),
            contribution=None if mode == "single" else np.asarray(a["contrib"]),
            attention=np.asarray(a["att"]) if mode == "temporal" else None, region=reg,
            extra={"cam_class": int(classes[c]), **extra}))
    return out


def explain_cases(run, name: str, case_ids: list[str] | None = None, per_class: int | None = None,
                  split: str = "test", method: str = "gradcam", fold: int | None = None,
                  regions: dict[str, np.ndarray] | None = None, device: str | torch.device = "auto",
                  batch_size: int = 8, models: dict[int, nn.Module] | None = None, layer: str | None = None,
                  target: str = "predicted", classes: dict[str, int] | None = None) -> list[CaseExplanation]:
    """Explain cases of a trained model (see the module docstring for folds, selection and target).

    ``regions``: case_id -> mask in prepared-cache space (signal / nodule region).
    ``models``: fold -> model to use instead of the checkpoints (e.g. a randomised copy).
    ``classes``: case_id -> class to explain, overriding ``target`` (the randomisation check
    explains the trained model's classes).
    """
    cam_type(method)
    if target not in TARGETS:
        raise CeusError(f"unknown --target {target!r}; choose {' or '.join(TARGETS)}")
    cfg = read_config(run, name)
    if split not in ("test", "train"):
        raise CeusError(f"--set must be test or train, not {split!r}")
    job, ids = _prepare(run, name, cfg, case_ids, split, fold, models, _device(device), batch_size)
    # probabilities first, where needed: the confident examples, and the class each case is explained for
    select = per_class is not None and not case_ids
    probs = np.zeros(len(ids))
    if select or (classes is None and target == "predicted"):
        probs = _probabilities(job, ids)
    if classes is None:
        classes = {c: int(p >= 0.5) if target == "predicted" else 1 for c, p in zip(ids, probs)}
    if select:
        ids = select_per_class(ids, job.data.labels[[job.pos[c] for c in ids]], probs, per_class)
    acc = _accumulate(job, ids, method, layer, classes)
    return _results(job, ids, acc, classes, regions)


def add_randomisation_check(run, name: str, results: list[CaseExplanation], method: str = "gradcam",
                            seed: int = 0, device: str | torch.device = "auto", layer: str | None = None) -> dict:
    """Maps of the same cases from fully randomised copies of the fold models (Adebayo et al.).

    Adds ``randomised_rank_correlation`` (and ``randomised_energy_in_region``) to each
    case's numbers and returns the summary (means over cases).
    """
    if not results:
        return {}
    device = _device(device)
    k_folds = read_config(run, name).folds
    folds = sorted({k for r in results for k in r.folds}, key=lambda m: model_number(m, k_folds))
    rnd = {k: randomise_model(load_fold_model(run, name, k, device)[0], seed + model_number(k, k_folds)) for k in folds}
    by_fold: dict[tuple, list[str]] = {}
    for r in results:
        by_fold.setdefault(tuple(r.folds), []).append(r.case_id)
    rand = {}
    for fl, ids in by_fold.items():
        sub = explain_cases(run, name, ids, method=method, fold=fl[0] if len(fl) == 1 else None, device=device,
                            models=rnd, layer=layer, classes={r.case_id: r.extra.get("cam_class", 1) for r in results})
        rand.update({e.case_id: e for e in sub})
    rc, er = [], []
    for r in results:
        z = rand[r.case_id]
        r.extra["randomised_rank_correlation"] = float(np.mean([rank_correlation(a, b) for a, b in zip(r.cam, z.cam)]))
        rc.append(r.extra["randomised_rank_correlation"])
        if r.region is not None:
            r.extra["randomised_energy_in_region"] = float(np.nanmean([energy_share(m, r.region) for m in z.cam]))
            er.append(r.extra["randomised_energy_in_region"])
    summary = {"method": "full re-initialisation of the fold models", "seed": seed,
               "mean_rank_correlation": float(np.mean(rc))}
    if er:
        summary["mean_energy_in_region_randomised"] = float(np.nanmean(er))
    return summary


def _meta(name: str, cfg: ModelRecord, method: str, target: str, layer: str | None, fold: int | None,
          case_ids, per_class: int | None, split: str) -> dict:
    return {"name": name, "arch": cfg.arch, "modality": cfg.modality, "input_mode": cfg.input_mode,
            "method": method, "target": TARGETS[target],
            "layer": layer_name(cfg, layer),
            "folds": "fixed" if fold is not None else (
                "test: the model refitted on all training cases" if cfg.test_scoring == "refit"
                else "test: mean over fold models") + "; train: the held-out fold model",
            "selection": ("given case ids" if case_ids else
                          f"per class the {per_class} most confident for their own label" if per_class else f"all {split} cases")}


def explain(run, name: str, out=None, case_ids: list[str] | None = None, per_class: int | None = None,
            split: str = "test", method: str = "gradcam", fold: int | None = None, truth=None,
            sanity: bool = False, seed: int = 0, device: str = "auto", layer: str | None = None,
            target: str = "predicted", force: bool = False) -> Path:
    """The ``explain`` command: maps, PNG per case and explain.json under ``out`` (default RUN/explain/NAME), a
    folder ceusfusion made (or an empty one; any with ``force``), never inside the model or cache it reads."""
    run = Path(run)
    layout = RunLayout(run)
    cfg = read_config(run, name)
    out = Path(out) if out is not None else layout.explain(name)
    claim(out.parent, folders=[out], force=force, inputs=[layout.model(name), layout.prepared])
    torch.manual_seed(seed)
    regions = None
    if truth is not None:
        ids_all = load_cached(run, cfg.modality, cfg.image_size).case_ids
        regions = signal_regions(run, truth, cfg.modality, ids_all)
    dev = resolve_device(device)
    res = explain_cases(run, name, case_ids, per_class, split, method, fold, regions, dev, layer=layer, target=target)
    meta = _meta(name, cfg, method, target, layer, fold, case_ids, per_class, split)
    if sanity:
        meta["randomisation_check"] = add_randomisation_check(run, name, res, method, seed, dev, layer)
    return write_explanations(res, out, meta)
