"""Export's part for radiomics: the settings the features were computed with, the features the models read,
and the Rad / DLR / DLR + clinical models of the study's ``compare`` stage, as skops files.

``predict`` must compute a new patient's radiomics exactly as the ``radiomics`` stage computed the
training cases', so the bundle carries ``radiomics/settings.json``: the ``RadiomicsConfig`` recorded with
the features (``RUN/features/radiomics.parquet``'s metadata), MIRP's version, and the feature columns the
fitted models read (those the ICC filter kept and every case had). Each comparison model is the fitted
fusion pipeline of ``RUN/radiomics/fusion/<name>/``, written through the same allowlisted skops writer as
DL_combined (never a pickle), with what it reads: which bundled deep models (features or scores), the
radiomics columns, the clinical covariates. bundle.json lists each file with its sha256 like every other.
This module imports no torch and no radiomics library: predict imports the radiomics code only for a
bundle that has radiomics (``deploy.fused``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import write_json
from ceusfusion.core.runlayout import RunLayout
from ceusfusion.deploy.fusion_model import write_fusion_model
from ceusfusion.fusion.features import feature_names, is_score_name, read_features
from ceusfusion.radiomics.settings import NAME as RADIOMICS_NAME

SETTINGS_FILE = "radiomics/settings.json"
MODELS_DIR = "radiomics/models"
SAFE = re.compile(r"[^A-Za-z0-9_.-]")  # "DLR+clinical" -> DLR_clinical.skops


def fusion_reads(fusion_json: dict) -> dict:
    """What a fitted fusion pipeline reads (its fusion.json ``inputs``): the deep models, scores or features,
    whether radiomics, the clinical covariates, whether perfusion."""
    names = [str(i.get("meta", {}).get("name", "")) for i in fusion_json.get("inputs", []) if i.get("kind") == "features"]
    deep = [n for n in names if n != RADIOMICS_NAME]
    cols = fusion_json.get("columns", {})
    return {"deep": [n.removesuffix("_score") if is_score_name(n) else n for n in deep],
            "inputs": "scores" if any(is_score_name(n) for n in deep) else "features",
            "radiomics": RADIOMICS_NAME in names,
            "clinical": [str(c).removeprefix("clin__") for c in [*cols.get("numeric", []), *cols.get("categorical", [])]
                         if str(c).startswith("clin__")],
            "perfusion": any(i.get("kind") == "perfusion" for i in fusion_json.get("inputs", []))}


def write_settings(layout: RunLayout, tmp: Path) -> None:
    """radiomics/settings.json: the settings, library and feature columns of RUN/features/radiomics.parquet."""
    df, meta = read_features(layout.features(RADIOMICS_NAME))
    rec = meta.get("radiomics")
    if not isinstance(rec, dict) or "settings" not in rec:
        raise CeusError(f"{layout.features(RADIOMICS_NAME)}: no radiomics settings recorded; run `ceusfusion radiomics` again")
    write_json(tmp / SETTINGS_FILE, {"settings": rec["settings"], "discretisation": rec.get("discretisation"),
                                     "library": rec.get("library"), "features": feature_names(df)})


def _comparison_entry(layout: RunLayout, tmp: Path, name: str, bundled: list[str], threshold) -> dict:
    """One comparison model: its pipeline as skops (read back through the bundle's reader first), what it reads."""
    # here: only export reads the run's pickle (the run's own output, written by `compare` for this user)
    import joblib

    folder = layout.radiomics / "fusion" / name
    reads = fusion_reads(json.loads((folder / "fusion.json").read_text()))
    missing = [d for d in reads["deep"] if d not in bundled]
    if missing:
        raise CeusError(f"{folder / 'fusion.json'}: {name} reads {', '.join(missing)}, which is not a selected model; "
                        "run the study's compare stage again")
    rel = f"{MODELS_DIR}/{SAFE.sub('_', name)}.skops"
    (tmp / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    write_fusion_model(joblib.load(folder / "model.joblib"), tmp / rel)
    return {"name": name, "model": rel, "format": "skops", "threshold": threshold(name), "deep": reads["deep"],
            "inputs": reads["inputs"], "clinical": reads["clinical"], "radiomics": reads["radiomics"]}


def export_radiomics(layout: RunLayout, tmp: Path, bundled: list[str], threshold, layers: dict,
                     combined_reads_radiomics: bool) -> dict | None:
    """bundle.json's ``radiomics`` block (settings file, feature layers, comparison models), its files written into
    ``tmp``; None when the run has no radiomics a bundled model reads. ``threshold(name)``: the locked threshold;
    ``layers()``: the deep models' feature layers (built only when there is radiomics)."""
    comparison = layout.radiomics / "comparison.json"
    names = list(json.loads(comparison.read_text()).get("models", {})) if comparison.is_file() else []
    names = [n for n in names if (layout.radiomics / "fusion" / n / "model.joblib").is_file()]
    if not names and not combined_reads_radiomics:
        return None
    write_settings(layout, tmp)
    models = [_comparison_entry(layout, tmp, n, bundled, threshold) for n in names]
    return {"settings": SETTINGS_FILE, "feature_layers": layers(), "models": models}


def radiomics_files(path: Path, block: dict | None) -> list[str]:
    """The files a verified manifest's ``radiomics`` block makes predict read (each must be listed); a model in
    another format than skops is refused."""
    if block is None:
        return []
    for m in block["models"]:
        if m["format"] != "skops":
            raise CeusError(f"{path}: radiomics model {m['name']!r} has format {m['format']!r}: only skops is loaded "
                            "(never a pickle)")
    return [block["settings"], *(m["model"] for m in block["models"])]


ABOUT = {"Rad": "radiomics features alone", "DLR": "deep features and radiomics features",
         "DLR+clinical": "deep features, radiomics features and clinical covariates (the nomogram's inputs)"}


def radiomics_card(layout: RunLayout, tmp: Path, block: dict | None) -> dict | None:
    """The model card's radiomics section: the settings a new patient's features are computed with, how many
    features the models read (shape features only from a drawn mask), and what each comparison model reads."""
    if block is None:
        return None
    rec = json.loads((tmp / block["settings"]).read_text())
    comparison = layout.radiomics / "comparison.json"
    kept = json.loads(comparison.read_text()).get("models", {}) if comparison.is_file() else {}
    return {"settings": rec["settings"], "discretisation": rec.get("discretisation"), "library": rec.get("library"),
            "n_features": len(rec["features"]), "shape_features": any("shape2d_" in f for f in rec["features"]),
            "models": {m["name"]: {"what": ABOUT.get(m["name"], "a fused model with radiomics inputs"),
                                   "deep": m["deep"], "deep_inputs": m["inputs"], "clinical": m["clinical"],
                                   "families_kept": (kept.get(m["name"]) or {}).get("families_kept")}
                       for m in block["models"]}}
