"""Issue 24: one patient from the command line pays only for the libraries its bundle needs. A fresh process that
imports ``predict`` and builds a torchvision model (as predict does for a resnet18 bundle) has not imported timm,
matplotlib, skops, scikit-learn or statsmodels (seconds of import each: timm only for timm models; skops and
scikit-learn only to read a fusion model, which the command line does in a second process, deploy.fusion_worker;
statsmodels and scipy.stats only for statistics, which predict never computes; MIRP, ITK and scikit-image only for a
bundle with radiomics, issue 27)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from paths import ROOT

PROBE = """
import json, sys
import ceusfusion.deploy.predict
from ceusfusion.models.registry import ModelRecord, build_from_config
build_from_config(ModelRecord.from_dict({"name": "m", "modality": "video", "arch": "resnet18", "input_mode": "stack",
                                         "frames": 5, "frame_channels": 1, "image_size": 32, "crop": 32, "folds": 2,
                                         "pretrained": False}))
print(json.dumps(sorted(m for m in ("timm", "matplotlib", "skops", "sklearn", "statsmodels", "scipy.stats", "mirp",
                                   "itk", "skimage") if m in sys.modules)))
"""


def test_a_torchvision_bundle_imports_no_timm_matplotlib_skops_sklearn_or_statsmodels():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1"))
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
