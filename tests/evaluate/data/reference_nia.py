"""Reference net interventions avoided from the dcurves package (not a dependency of ceusfusion).

Run: pip install --no-deps --target DIR dcurves==1.1.7, then
    PYTHONPATH=DIR python reference_nia.py > nia_reference.json
``dcurves.dca(data, outcome="y", modelnames=[...], thresholds=[i/100 ...], nper=100)`` on seeded
random data sets (continuous scores, scores on a 0.01 / 0.05 grid so that scores equal
thresholds, imbalanced, tiny, constant, perfectly separated, one positive). dcurves imports
lifelines at module level for survival outcomes; a binary outcome never uses it, so a stub
stands in when lifelines is not installed. Numbers are written with repr (exact doubles), NaN
and infinities as strings, like ../shared/stats-reference.
"""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pandas as pd

sys.modules.setdefault("lifelines", types.ModuleType("lifelines"))
import dcurves  # noqa: E402

THRESHOLDS = [i / 100 for i in range(1, 100)]


def _num(x):
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def case(name: str, y, scores: dict) -> dict:
    df = pd.DataFrame({"y": np.asarray(y, int), **{k: np.asarray(v, float) for k, v in scores.items()}})
    out = {"name": name, "y": df["y"].tolist(), "scores": {k: df[k].tolist() for k in scores}}
    try:
        r = dcurves.dca(data=df, outcome="y", modelnames=list(scores), thresholds=THRESHOLDS, nper=100)
    except Exception as exc:  # the reference records dcurves' own failure
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["models"] = {m: {c: [_num(v) for v in g[c]] for c in ("net_benefit", "net_intervention_avoided")}
                     for m, g in r.groupby("model", sort=False)}
    return out


def main() -> None:
    rng = np.random.default_rng(20240601)
    cases = []
    for n, prev in ((40, 0.3), (116, 0.23), (396, 0.2), (1000, 0.1), (60, 0.5)):
        y = (rng.random(n) < prev).astype(int)
        y[:2] = [0, 1]
        s = 1 / (1 + np.exp(-(np.log(prev / (1 - prev)) + 1.2 * (y - prev) + rng.normal(size=n))))
        cases.append(case(f"random_n{n}", y, {"m": s, "m_grid01": np.round(s, 2), "m_grid05": np.round(s * 20) / 20}))
    y = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 1])
    cases.append(case("tiny", y, {"m": [0.1, 0.2, 0.3, 0.15, 0.5, 0.25, 0.05, 0.3, 0.2, 0.9]}))
    cases.append(case("constant", y, {"m": np.full(10, 0.3)}))
    cases.append(case("separated", y, {"m": np.where(y == 1, 0.8, 0.1), "hard": y.astype(float)}))
    cases.append(case("one_positive", np.r_[1, np.zeros(19, int)], {"m": np.linspace(0.02, 0.6, 20)}))
    cases.append(case("single_class", np.zeros(10, int), {"m": np.linspace(0.1, 0.5, 10)}))
    meta = {"schema_version": 1, "generator": {"script": "reference_nia.py", "python": sys.version.split()[0],
                                               "dcurves": "1.1.7", "pandas": pd.__version__, "numpy": np.__version__},
            "call": "dcurves.dca(data, outcome='y', modelnames=[...], thresholds=[i/100 for i in range(1, 100)], nper=100)",
            "thresholds": THRESHOLDS, "cases": cases}
    json.dump(meta, sys.stdout)


if __name__ == "__main__":
    main()
