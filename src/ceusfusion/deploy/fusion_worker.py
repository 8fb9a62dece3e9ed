"""A second process that loads a bundle's fusion model while ``ceusfusion predict`` imports torch.

One patient from the command line pays every import once: torch and torchvision (~2.5 s of a laptop core)
for the networks, scikit-learn and skops (~1.2 s) for the fused model. Neither needs the other until the
last step, so the command starts this worker before it imports torch and the two import side by side on
two cores; the prediction waits for the slower one only.

The worker reads only ``fusion/model.skops`` (no symlink, inside the bundle), checks its sha256 against
the manifest, audits and loads it as :func:`deploy.fusion_model.read_fusion_model` does (never
unpickled), and says which bytes it loaded. The command still verifies the whole bundle (its pin, every
file) and uses the worker only when the bytes it loaded are the ones the verified manifest lists. Then
one request on stdin, one answer on stdout, as JSON lines: the feature row (column names, float64 values:
JSON writes a float's shortest round-trip form, so the row arrives bit for bit) and the probabilities
``predict_proba`` gives, so the answer equals the in-process one exactly. ``serve`` and ``predict
--cohort`` live long enough to load the model in process.

This module imports only the standard library (and core.errors) at the top: the command imports it before torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ceusfusion.core.errors import CeusError
from ceusfusion.deploy.bundle_paths import inside_bundle

FUSION_FILE = ("fusion", "model.skops")  # deploy.fusion_model.FUSION_MODEL, the only file the worker reads


class FusionWorker:
    """The parent's handle: started before torch, asked once, closed by the command."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.loaded_sha256: str | None = None

    @classmethod
    def start(cls, bundle: str | Path) -> FusionWorker | None:
        """A worker for a bundle with a fusion model that reads only the deep models, else None (the command then
        loads nothing extra, or the fused model in process)."""
        try:
            comb = json.loads((Path(bundle) / "bundle.json").read_bytes())["combined"]
            if comb["model"] != "/".join(FUSION_FILE) or comb.get("clinical") or comb.get("perfusion") or comb.get("radiomics"):
                return None  # a row of numbers is all the worker takes: covariates and radiomics are scored in process
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no fusion model, or a manifest the command's verification will name
        env = dict(os.environ, OMP_NUM_THREADS="1")  # one row: a thread pool would only compete with torch's imports
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(bundle)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        return cls(proc)

    def ready(self, expected_sha256: str) -> None:
        """Wait for the model; refuse it unless its bytes are the ones the verified manifest lists."""
        if self.loaded_sha256 is None:
            answer = self._read()
            self.loaded_sha256 = answer["sha256"]
        if self.loaded_sha256 != expected_sha256:
            raise CeusError("the fusion model changed while predict verified the bundle; refusing it")

    def predict_proba(self, X):
        """``pipe.predict_proba(X)`` for one row, computed by the worker (X's columns in any order)."""
        import numpy as np  # here: the command imports numpy anyway by now; this module stays light before torch

        request = {"columns": [str(c) for c in X.columns], "row": [float(v) for v in X.iloc[0].tolist()]}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return np.asarray([self._read()["prob"]], dtype=np.float64)

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = (self.proc.stderr.read().strip().splitlines() or ["no answer"])[-1]
            raise CeusError(f"the fusion model's process ended: {tail}")
        answer = json.loads(line)
        if "error" in answer:
            raise CeusError(answer["error"])
        return answer

    def close(self) -> None:
        """End the worker (it stops at the end of its input); killed if it does not."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


def _load(bundle: Path):
    """(model, sha256 of its bytes): the listed file, its hash checked, audited and loaded without pickle."""
    # here: the worker's own imports, the second or more this process exists to take off the command's path
    from ceusfusion.deploy.fusion_model import read_fusion_model

    meta = json.loads((bundle / "bundle.json").read_bytes())
    path = inside_bundle(bundle, "/".join(FUSION_FILE), bundle / "bundle.json")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["files"]["/".join(FUSION_FILE)]:
        raise CeusError(f"{path}: changed since export (sha256 mismatch); refusing to load it")
    return read_fusion_model(path, data), digest


def _answer(model, request: dict) -> dict:
    """The probabilities of one row, its columns put in the order the pipeline was fitted on."""
    import pandas as pd  # here: the worker's process only

    X = pd.DataFrame([request["row"]], columns=request["columns"])
    cols = getattr(model, "feature_names_in_", None)
    if cols is not None:
        X = X.reindex(columns=list(cols))
    return {"prob": [float(v) for v in model.predict_proba(X)[0]]}


def main(argv: list[str]) -> int:
    """The worker: load, say so (or why not), then answer each request line until stdin closes."""
    try:
        model, digest = _load(Path(argv[0]))
    except (CeusError, OSError, ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}), flush=True)
        return 1
    print(json.dumps({"sha256": digest}), flush=True)
    for line in sys.stdin:
        try:
            print(json.dumps(_answer(model, json.loads(line))), flush=True)
        except Exception as exc:  # a row the pipeline refuses: its message, one line, to the command
            print(json.dumps({"error": f"the fused model refused the row: {type(exc).__name__}: "
                                       f"{(str(exc).splitlines() or [''])[0]}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
