"""A pytest plugin that records the value behind every passing numeric assertion, for BENCHMARKS.md's "Test
margins (issue 25)": run the tests under two settings and compare each value with its threshold.

    PYTHONPATH=src:bench OMP_NUM_THREADS=1 MARGINS_THREADS=1 MARGINS_LOG=/tmp/m1.jsonl \\
        python -m pytest -p margins_plugin -p no:cacheprovider -o enable_assertion_pass_hook=true tests/...
    # another CPU's kernels on this one (torch, oneDNN, OpenBLAS): add
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell

Remove the tests' __pycache__ first: assertions are rewritten with the hook only when compiled. The test modules'
own ``torch.set_num_threads(1)`` is overridden by MARGINS_THREADS; each explain() output is copied to
MARGINS_LOG's folder (explain_<stem>.json) for the per-case Grad-CAM numbers.
"""

import json
import os
import re
import shutil
from pathlib import Path

import torch

import ceusfusion.explain.cases as cases

THREADS = int(os.environ.get("MARGINS_THREADS", "1"))
LOG = Path(os.environ.get("MARGINS_LOG", "margins.jsonl"))
NUMERIC = re.compile(r"[<>]|abs\(|approx|mean\(")
torch.set_num_threads(THREADS)
torch.set_num_threads = lambda n: None  # the measured setting wins over the test modules' own
_explain = cases.explain


def _explain_and_keep(*args, **kwargs):
    out = _explain(*args, **kwargs)
    shutil.copy(out, LOG.parent / f"explain_{LOG.stem}.json")
    return out


cases.explain = _explain_and_keep


def pytest_assertion_pass(item, lineno, orig, expl):
    if NUMERIC.search(orig):
        with LOG.open("a") as f:
            f.write(json.dumps({"test": item.nodeid, "line": lineno, "threads": torch.get_num_threads(),
                                "assertion": orig, "values": expl[:600]}) + "\n")
