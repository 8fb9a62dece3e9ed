import pytest

"""DDP: 2 gloo processes on CPU (launched by torchrun) match one process with the same global batch.

BatchNorm statistics cannot be synchronised on CPU (SyncBatchNorm is GPU-only),
so the comparison uses ``freeze_bn``; gradients are all-reduced, so the only
difference left is float summation order (tolerance 1e-5 on probabilities).
"""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
from fake_run import make_fake_run

from ceusfusion.models.train import TrainConfig, train

pytestmark = pytest.mark.slow


def test_two_gloo_processes_match_single_process(tmp_path):
    run = make_fake_run(tmp_path, n_train=16, n_test=4, size=20, frames=2, group_size=1, with_image=False)
    opts = dict(modality="video", arch="resnet18", weights="none", epochs=2, folds=2, batch_size=4, crop=16,
                lr=1e-3, seed=1, freeze_bn=True, device="cpu")
    torch.set_num_threads(1)
    train(run, TrainConfig(**opts, name="single"), progress=False)
    args = ["train", "--run", str(run), "--modality", "video", "--arch", "resnet18", "--weights", "none",
            "--epochs", "2", "--folds", "2", "--batch-size", "4", "--crop", "16", "--lr", "1e-3", "--seed", "1",
            "--freeze-bn", "--device", "cpu", "--threads", "1", "--no-progress", "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ceusfusion.cli", "--", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a = pd.read_csv(run / "predictions" / "single.csv")
    b = pd.read_csv(run / "predictions" / "ddp.csv")
    assert a[["case_id", "set", "fold", "y"]].equals(b[["case_id", "set", "fold", "y"]])
    np.testing.assert_allclose(a["prob"], b["prob"], rtol=0, atol=1e-5)
    assert a["prob"].std() > 0  # not a degenerate constant model
