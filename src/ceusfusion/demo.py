"""`ceusfusion demo`: the synthetic cohort, then the whole study on it, then the report.

The default settings are sized for a 2-core laptop CPU (two architectures,
small images, a few epochs, 3 folds); ``full=True`` runs the reference
study's protocol (five architectures, 224 px, 5 folds) and wants a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from ceusfusion.config import parse_config
from ceusfusion.core.errors import CeusError
from ceusfusion.models.lite_weights import available_lite_weights
from ceusfusion.study import Study, run_study
from ceusfusion.synthetic.synth import SynthConfig, generate


def demo_archs() -> list[str]:
    """The demo's two architectures: with the ``lite-weights`` extra installed (``make demo`` installs it)
    an ImageNet-pretrained EfficientNet-Lite0 beside a resnet18, so a new user sees real transfer learning
    offline; without it the two study networks (random init unless torchvision's cache has weights)."""
    if "tf_efficientnet_lite0" in available_lite_weights():
        return ["tf_efficientnet_lite0", "resnet18"]
    return ["resnet18", "densenet121"]


# The reference study's outcome in its own words: the synthetic cohort imitates it. A study that names no
# outcome gets neutral words (core.outcome.Outcome), never these.
OLNM = {"name": "occult lymph node metastasis", "short": "OLNM", "negative": "no OLNM", "positive": "OLNM",
        "intervention": "prophylactic central neck dissection", "treated": "dissections",
        "avoided": "dissections avoided", "missed": "metastases missed"}
# The reference study's clinical thresholds, set explicitly (a study that sets none gets a range around its
# training prevalence: here about 0.2, which would give 0.11-0.33): the demo's numbers stay the study's.
REFERENCE_EVALUATE = {"thresholds": [0.1, 0.15, 0.2, 0.25, 0.3], "nri_cuts": [0.1, 0.2, 0.3]}


def demo_config(out: Path, cohort: Path, full: bool = False, quick: bool = False) -> dict:
    """The study config the demo runs (also a template for users: `ceusfusion study --template`)."""
    study = {"cohort": str(cohort), "out": str(out), "outcome": dict(OLNM), "evaluate": dict(REFERENCE_EVALUATE)}
    return {**study, **_settings(full, quick)}


def _settings(full: bool, quick: bool) -> dict:
    """The demo's stage settings: the reference protocol (``full``), seconds (``quick``), or a 2-core laptop's."""
    if full:
        return {"title": "ceusfusion demo (reference protocol)",
                "prepare": {"size": 256}, "train": {"epochs": 30, "folds": 5, "crop": 224}}
    if quick:  # the integration test: seconds, not minutes
        return {"title": "ceusfusion demo (tiny)",
                "prepare": {"size": 40, "workers": 1},
                "train": {"archs": ["resnet18"], "epochs": 1, "folds": 2, "crop": 32, "batch_size": 8, "weights": "none"},
                "fusion": {"classifiers": ["lr", "knn"], "folds": 2, "fast": True},
                "explain": {"per_class": 1}}
    archs = demo_archs()
    # beside the ImageNet Lite0, resnet18 starts from random initialisation on purpose: said so, no download tried
    random_init = {"resnet18": "none"} if "tf_efficientnet_lite0" in archs else {}
    return {"title": "ceusfusion demo (synthetic cohort, CPU settings)",
            "prepare": {"size": 72, "workers": 2},
            "train": {"archs": archs, "weights_by_arch": random_init, "epochs": 4, "folds": 3, "crop": 64, "batch_size": 32,
                      "lr": 1e-3, "patience": 4},
            # without ImageNet weights, late fusion of the out-of-fold logits is the robust choice (BENCHMARKS.md)
            "fusion": {"classifiers": ["lr", "svm", "knn", "rf", "et", "xgb", "lgbm", "mlp"], "folds": 3, "fast": True, "inputs": "scores"},
            "explain": {"per_class": 2}}


def run_demo(out: Path, console: Console, n: int = 396, seed: int = 0, full: bool = False, quick: bool = False,
             synth_size: int | None = None, progress: bool = True) -> Path:
    """Generate (or reuse) the synthetic cohort under OUT/data, run the study in OUT, print Table 2."""
    out = Path(out)
    data = out / "data"
    cohort = data / "cohort.csv"
    t0 = time.perf_counter()
    cfg = parse_config(dict(demo_config(out, cohort, full=full, quick=quick), seed=seed), source="demo")
    Study(cfg, console=console).claim_outputs()  # a folder of the user's is refused before minutes of synthesis
    if cohort.is_file():
        console.print(f"reusing the synthetic cohort in {data}")
    else:
        console.print(f"generating a synthetic cohort of {n} patients in {data} ...")
        kw = {"size": synth_size} if synth_size else {}
        if quick:
            kw.update(size=synth_size or 48, fps=2.0, duration=12.0)
        generate(data, SynthConfig(n=n, seed=seed, **kw), workers=2)
    report = run_study(cfg, console=console, progress=progress)
    table2 = out / "evaluation" / "table2.csv"
    if not table2.is_file():
        raise CeusError(f"the demo finished without {table2}")

    df = pd.read_csv(table2)
    console.print("Table 2 (synthetic cohort): AUC with DeLong 95% CI; thresholds fixed on the training set")
    console.print(df.to_string(index=False), highlight=False, soft_wrap=True)  # plain text: readable in any log
    console.print(f"report: {report.resolve()}\nrun directory: {out.resolve()} (cohort.csv, prepared/, models/, predictions/, "
                  f"features/, fusion/, evaluation/, explain/, manifest.json)\ntotal {time.perf_counter() - t0:.0f} s")
    return report
