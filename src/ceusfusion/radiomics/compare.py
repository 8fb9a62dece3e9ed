"""The comparison a reviewer asks of a deep model: Rad (radiomics alone), DL (the study's deep model), DLR
(deep + radiomics features) and DLR + clinical (the nomogram's inputs), each fitted by the same fusion
procedure (``fusion.pipeline.fuse``: LASSO and the classifiers in grouped nested CV, the test set scored
once). Their predictions go to RUN/predictions/, so ``evaluate`` compares them like any model (paired
DeLong, NRI/IDI, decision curves); RUN/radiomics/comparison.json names the feature families LASSO kept.
"""

from __future__ import annotations

from pathlib import Path

from ceusfusion.core.fsutil import write_bytes, write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.fusion.pipeline import FusionConfig, fuse
from ceusfusion.radiomics.stage import NAME, column_family

RAD, DLR, DLR_CLINICAL = "Rad", "DLR", "DLR+clinical"


def kept_families(selected) -> dict[str, int]:
    """{family: number of LASSO-kept features} of a fusion's selected table (deep features: ``deep``)."""
    out: dict[str, int] = {}
    for feat in selected.loc[selected["selected"], "feature"]:
        src = str(feat).split("__", 1)[0]
        fam = column_family(feat) if src == NAME else "clinical" if src == "clin" else "deep"
        out[fam] = out.get(fam, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def plan(deep: list[Path], rad: Path, clinical: list[str]) -> dict[str, tuple[list[Path], list[str]]]:
    """Each comparison model's (features files, clinical columns); DLR only with deep inputs, DLR + clinical only
    with covariates too."""
    out = {RAD: ([rad], [])}
    if deep:
        out[DLR] = ([*deep, rad], [])
    if deep and clinical:
        out[DLR_CLINICAL] = ([*deep, rad], list(clinical))
    return out


def compare(run: str | Path, deep: list[Path], cfg: FusionConfig, clinical: list[str], dl_name: str | None) -> dict:
    """Fit Rad, DLR and DLR + clinical; copy their predictions to RUN/predictions/; returns the record."""
    layout = RunLayout(run)
    rec: dict = {"dl": dl_name, "models": {}, "deep_inputs": [p.name for p in deep]}
    if not deep:
        rec["skipped"] = {DLR: "no deep model", DLR_CLINICAL: "no deep model"}
    elif not clinical:
        rec["skipped"] = {DLR_CLINICAL: "no clinical covariate in the cohort (or fusion.clinical)"}
    for name, (files, clin) in plan(deep, layout.features(NAME), clinical).items():
        out = layout.radiomics / "fusion" / name
        res = fuse(files, out, cohort=layout.cohort, clinical=clin or None, drop_missing=True,
                   cfg=cfg.model_copy(update={"name": name, "bootstrap": 0}), figures=False)
        write_bytes(layout.predictions(name), (out / "predictions" / f"{name}.csv").read_bytes())
        rec["models"][name] = {"chosen": res.summary.get("chosen_classifier"), "cv_auc": res.summary.get("cv_auc_mean"),
                               "n_features_in": res.summary["lasso"]["n_features_in"],
                               "n_selected": res.summary["lasso"]["n_selected"],
                               "families_kept": kept_families(res.selected), "clinical": clin}
    write_json(layout.radiomics / "comparison.json", rec)
    return rec
