"""`ceusfusion demo`: the synthetic cohort, then the study on it."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from .cohort import validate
from .errors import CeusError


def run_demo(out: Path, console: Console, n: int = 396, seed: int = 0) -> Path:
    """Generate (or reuse) the synthetic cohort under OUT/data and validate it."""
    from .synth import SynthConfig, generate

    out = Path(out)
    data = out / "data"
    cohort = data / "cohort.csv"
    t0 = time.perf_counter()
    if cohort.is_file():
        console.print(f"reusing the synthetic cohort in {data}")
    else:
        console.print(f"generating a synthetic cohort of {n} patients in {data} ...")
        generate(data, SynthConfig(n=n, seed=seed), workers=2)
    df, problems = validate(cohort)
    if problems:
        raise CeusError(f"{cohort}: the synthetic cohort failed validation: {problems[0].line()}")
    n_train = int((df["split"] == "train").sum())
    console.print(f"cohort: {cohort} — {len(df)} patients, {n_train} train / {len(df) - n_train} test, "
                  f"{int(df['label'].astype(int).sum())} positive; validated in {time.perf_counter() - t0:.0f} s")
    return cohort
