"""The `ceusfusion` command line: one thin Typer command per stage.

Commands parse options and call a library function; they hold no logic of
their own. Problems with the user's input surface as one line
(``error: ...``) with exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import CeusError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multimodal ultrasound deep learning: B-mode + CEUS, fusion, statistics, reports.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool):
    if value:
        typer.echo(f"ceusfusion {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit.")):
    """ceusfusion: predict occult lymph node metastasis from B-mode and CEUS ultrasound."""


# ----------------------------------------------------------------------------- cohort


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the problems as JSON."),
    no_files: bool = typer.Option(False, "--no-files", help="Check the table only, do not open files."),
):
    """Check every row and file of a cohort manifest; print ALL problems; exit 1 if any."""
    from .cohort import problems_frame, validate as run_validate

    df, problems = run_validate(cohort, check_files=not no_files)
    if as_json:
        typer.echo(json.dumps({"manifest": str(cohort), "n_rows": None if df is None else len(df), "problems": problems_frame(problems).to_dict(orient="records")}, indent=2, default=str))
    elif problems:
        table = Table(title=f"{len(problems)} problem(s) in {cohort}")
        for col in ("row", "case", "column", "problem"):
            table.add_column(col, overflow="fold")
        for p in problems:
            table.add_row("" if p.row is None else str(p.row), p.case_id or "", p.column or "", p.problem)
        console.print(table)
    else:
        console.print(f"[green]OK[/green] {cohort}: {len(df)} cases, no problems found")
    raise typer.Exit(1 if problems else 0)


@app.command()
def split(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV."),
    test_fraction: float = typer.Option(0.3, help="Share of cases put in the test split."),
    seed: int = typer.Option(0, help="Random seed."),
    by_center: Optional[str] = typer.Option(None, "--by-center", help="Put this centre in test (external validation)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output CSV (default: <cohort>.split.csv beside it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
):
    """Write a copy of the manifest with a stratified, patient-grouped train/test split."""
    from .cohort import make_split, read_manifest
    from .fsutil import write_csv

    out = out or cohort.with_name(cohort.stem + ".split.csv")
    if out.exists() and not force:
        raise CeusError(f"{out} exists; pass --force to overwrite it or --out to choose another name")
    df = make_split(read_manifest(cohort), test_fraction=test_fraction, seed=seed, by_center=by_center)
    write_csv(out, df)
    n_test = int((df["split"] == "test").sum())
    console.print(f"wrote {out}: {len(df) - n_test} train / {n_test} test")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder for the synthetic cohort."),
    n: int = typer.Option(396, help="Number of patients."),
    seed: int = typer.Option(0, help="Random seed."),
    size: int = typer.Option(192, help="Video frame size in pixels."),
    fps: float = typer.Option(6.0, help="Video frame rate."),
    duration: Optional[float] = typer.Option(None, help="Fixed video duration in seconds (default: 20-60 s per patient)."),
    workers: int = typer.Option(2, help="Worker processes."),
):
    """Write a synthetic cohort that looks, file by file, like a hospital export."""
    from .synth import SynthConfig, generate

    cfg = SynthConfig(n=n, seed=seed, size=size, fps=fps, duration=duration)
    path = generate(out, cfg, workers=workers)
    console.print(f"wrote {path}")


# ----------------------------------------------------------------------------- ingestion (issue 3)

# ----------------------------------------------------------------------------- training (issue 4)

# ----------------------------------------------------------------------------- statistics (issue 5)

# ----------------------------------------------------------------------------- fusion (issue 6)

# ----------------------------------------------------------------------------- explain (issue 7)

# ----------------------------------------------------------------------------- study, demo (issue 8)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory.")):
    """Synthetic cohort → validate; says what it made (grows into the full study)."""
    from .demo import run_demo

    run_demo(out, console)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry: run the Typer app, turning CeusError into one line."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except CeusError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
