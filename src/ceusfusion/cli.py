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
from rich.text import Text

from ceusfusion import __version__
from ceusfusion.core.errors import CeusError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multimodal ultrasound deep learning: B-mode + CEUS, fusion, statistics, reports.")
console = Console()
err_console = Console(stderr=True)


def _version(value: bool):
    if value:
        typer.echo(f"ceusfusion {__version__}")
        raise typer.Exit()


OUTCOME_HELP = ("YAML/JSON with the outcome's words (name, short, negative, positive, intervention, treated, avoided, missed), "
                "or a study YAML (its outcome section); default: neutral words.")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit.")):
    """ceusfusion: multimodal ultrasound (B-mode and CEUS) prediction models for clinical research."""


# ----------------------------------------------------------------------------- cohort


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the columns' roles, the warnings and the problems as JSON."),
    no_files: bool = typer.Option(False, "--no-files", help="Check the table only, do not open files."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="A boxes file (case_id,image_box,video_box,video_box_time) merged into the manifest: its boxes replace the manifest's."),
):
    """Check every row and file of a cohort manifest; print how each column is read, the warnings and ALL problems;
    exit 1 if any problem (warnings alone exit 0)."""
    from dataclasses import asdict

    from ceusfusion.ingest.cohort import column_roles, groups_of, manifest_warnings, problems_frame
    from ceusfusion.ingest.cohort import validate as run_validate

    df, problems = run_validate(cohort, check_files=not no_files, boxes=boxes)
    roles = [] if df is None else column_roles(df)
    warnings = [] if df is None else manifest_warnings(df)
    if as_json:
        typer.echo(json.dumps({"manifest": str(cohort), "n_rows": None if df is None else len(df),
                               "columns": [asdict(r) for r in roles], "warnings": warnings,
                               "problems": problems_frame(problems).to_dict(orient="records")}, indent=2, default=str))
        raise typer.Exit(1 if problems else 0)
    if roles:
        table = Table(title=f"How the columns of {cohort.name} are read")
        for col in ("column", "role", "how it is read / why it is ignored"):
            table.add_column(col, overflow="fold")
        for r in roles:
            table.add_row(r.column, r.role, r.detail)
        console.print(table)
        if "case_id" in df.columns:
            n_groups = groups_of(df).nunique()
            console.print(f"patients: {n_groups} patient group(s) for {len(df)} cases (column 'group')" if "group" in df.columns
                          else f"patients: no 'group' column: each of the {len(df)} cases is its own patient", highlight=False)
    for w in warnings:
        console.print(f"[yellow]warning[/yellow]: {w}", highlight=False, soft_wrap=True)
    if problems:
        table = Table(title=f"{len(problems)} problem(s) in {cohort}")
        for col in ("row", "case", "column", "problem"):
            table.add_column(col, overflow="fold")
        for p in problems:
            table.add_row("" if p.row is None else str(p.row), p.case_id or "", p.column or "", p.problem)
        console.print(table)
    else:
        more = f" ({len(warnings)} warning(s) above)" if warnings else ""
        console.print(f"[green]OK[/green] {cohort}: {len(df)} cases, no problems found{more}")
    raise typer.Exit(1 if problems else 0)


@app.command()
def split(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV."),
    test_fraction: float = typer.Option(0.3, help="Share of cases put in the test split."),
    seed: int = typer.Option(0, help="Random seed."),
    by_center: Optional[str] = typer.Option(None, "--by-center", help="Put this centre in test (external validation), the other centres in training (so at least two)."),
    no_center: Optional[str] = typer.Option(None, "--no-center", help="With --by-center: where cases without a centre go, train or test (default: an error listing them)."),
    group: Optional[str] = typer.Option(None, "--group", help="The column that names the patient (e.g. patient): its cases stay on one side; written as the 'group' column."),
    no_group: bool = typer.Option(False, "--no-group", help="Each row is its own patient (needed when no 'group' column is given and a column looks like a patient key)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output CSV (default: <cohort>.split.csv beside it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out even when ceusfusion did not write it (never the input)."),
):
    """Write a copy of the manifest with a stratified, patient-grouped train/test split.

    The patient is the 'group' column. Without one, a column that looks like a patient key (several rows share a
    value: patient, subject, mrn, ...) must be named with --group COLUMN, or --no-group said."""
    from ceusfusion.core.fsutil import claim, write_csv
    from ceusfusion.ingest.cohort import groups_of, make_split, read_manifest

    out = out or cohort.with_name(cohort.stem + ".split.csv")
    claim(out.parent, files=[out], force=force, inputs=[cohort])
    df = make_split(read_manifest(cohort), test_fraction=test_fraction, seed=seed, by_center=by_center, no_center=no_center,
                    group=group, no_group=no_group)
    write_csv(out, df)
    test = df["split"] == "test"
    g = groups_of(df)
    console.print(f"wrote {out}: {int((~test).sum())} train / {int(test.sum())} test cases "
                  f"({g[~test].nunique()} / {g[test].nunique()} patients, none on both sides)", highlight=False, soft_wrap=True)
    console.print(df.attrs.get("grouping", ""), highlight=False, soft_wrap=True)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder for the synthetic cohort."),
    n: int = typer.Option(396, help="Number of patients."),
    seed: int = typer.Option(0, help="Random seed."),
    size: int = typer.Option(192, help="Video frame size in pixels."),
    fps: float = typer.Option(4.0, help="Video frame rate."),
    duration: Optional[float] = typer.Option(None, help="Fixed video duration in seconds (default: 20-60 s per patient)."),
    still_size: Optional[int] = typer.Option(None, "--still-size", help="B-mode still size in pixels (default: 4/3 of --size)."),
    workers: int = typer.Option(2, help="Worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cohort already in --out."),
    signal: float = typer.Option(1.0, "--signal", help="Scale of both label effects (1: reference-like; larger: easier)."),
    size_tied: bool = typer.Option(True, "--size-tied/--size-untied", help="Nodule size depends on the label (untied: the image evidence is only local)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that holds files synth did not write (same names are replaced)."),
    motion: float = typer.Option(0.0, "--motion", help="Move the video's scene along a smooth path of about this many pixels (the truth per frame in signal/<case>_video_path.csv; the mask drawn at video_box_time)."),
    mask_per_frame: bool = typer.Option(False, "--mask-per-frame", help="Write the video mask as the true mask of every frame."),
):
    """Write a synthetic cohort that looks, file by file, like a hospital export."""
    from ceusfusion.synthetic.synth import SynthConfig, generate

    cfg = SynthConfig(n=n, seed=seed, size=size, fps=fps, duration=duration, still_size=still_size,
                      signal=signal, size_tied=size_tied, motion=motion, mask_per_frame=mask_per_frame)
    path = generate(out, cfg, workers=workers, overwrite=overwrite, force=force)
    console.print(f"wrote {path}")


# ----------------------------------------------------------------------------- ingestion (issue 3)


@app.command()
def prepare(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV."),
    out: Path = typer.Option(..., "--out", help="Run directory (writes RUN/cohort.csv and RUN/prepared/)."),
    size: int = typer.Option(256, help="Side S of the square ROI arrays."),
    frames: int = typer.Option(5, help="Keyframes per video."),
    period: float = typer.Option(2.0, help="Seconds between sampled frames."),
    policy: str = typer.Option("study", help="Keyframe policy: study, uniform or peak."),
    margin: float = typer.Option(0.1, help="Margin around the mask's box, as a share of its larger side."),
    box: Optional[str] = typer.Option(None, "--box", help="Fixed box X,Y,W,H (pixels of the frame) cut out of cases without a mask (default: the whole frame)."),
    old_crop: Optional[str] = typer.Option(None, "--crop", hidden=True, help="Deprecated name of --box (train's --crop is a crop side)."),
    color: str = typer.Option("auto", help="Video colour: auto, gray or rgb."),
    workers: int = typer.Option(1, help="Worker processes."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first failing case (exit 2)."),
    tic_plots: bool = typer.Option(False, "--tic-plots", help="Write a time-intensity curve plot per case with a video mask."),
    force: bool = typer.Option(False, "--force", help="Write RUN/cohort.csv and RUN/prepared/ even over files ceusfusion did not write (never over the input)."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="A boxes file (case_id,image_box,video_box,video_box_time) merged into the manifest: its boxes replace the manifest's."),
    track: str = typer.Option("off", "--track", help="Follow the video's ROI through the clip: off, on, or auto (only where the motion found reaches --track-px)."),
    track_px: float = typer.Option(3.0, "--track-px", help="With --track auto: the motion (pixels) from which the tracked ROI is used."),
):
    """Keyframes, ROI crops, perfusion parameters and contact sheets into RUN/prepared/; exit 1 if some case failed."""
    from ceusfusion.ingest.prepare import PrepareParams
    from ceusfusion.ingest.prepare import prepare as run_prepare
    from ceusfusion.segment.link import record_link

    if old_crop is not None:
        if box is not None:
            raise CeusError("give --box X,Y,W,H only (--crop is its deprecated name)")
        err_console.print("[yellow]warning[/yellow] prepare --crop is deprecated: it is --box X,Y,W,H "
                          "(train's --crop is the crop side)", highlight=False, soft_wrap=True)
        box = old_crop
    fixed = None
    if box:
        try:
            fixed = tuple(int(v) for v in box.split(","))
        except ValueError:
            raise CeusError(f"--box must be X,Y,W,H integers, got {box!r}") from None
    params = PrepareParams(size=size, frames=frames, period=period, policy=policy, margin=margin, crop=fixed, color=color,
                           tic_plots=tic_plots, track=track, track_px=track_px)

    def show(case_id, file, problem):
        where = f" ({file})" if file else ""
        err_console.print(f"[red]failed[/red] case {case_id}{where}: {problem}", highlight=False, soft_wrap=True)

    res = run_prepare(cohort, out, params, workers=workers, strict=strict, progress=sys.stderr.isatty(), on_failure=show,
                      force=force, boxes=boxes)
    _show_link(record_link(out))
    console.print(f"prepared {res.n_ok}/{res.n_cases} cases ({res.n_skipped} unchanged, skipped) in {res.run / 'prepared'}; {len(res.failures)} failed")
    raise typer.Exit(1 if len(res.failures) else 0)


def _show_link(link) -> None:
    """Which segmenter made the run's predicted masks (segment.link), or why it could not be followed."""
    for f in link.segmenters if link else []:
        if f.problem:
            err_console.print(f"[yellow]warning[/yellow] {len(f.pictures)} predicted mask(s): {f.problem}", highlight=False, soft_wrap=True)
        else:
            console.print(f"{len(f.pictures)} predicted mask(s) from the segmenter {f.model} (trained on {len(f.trained_on)} "
                          f"cases of {f.n_patients()} patients)", highlight=False, soft_wrap=True)

# ----------------------------------------------------------------------------- training (issue 4)


@app.command()
def train(
    run: Path = typer.Option(..., "--run", help="Run directory (with prepared/)."),
    modality: Optional[str] = typer.Option(None, "--modality", help="image or video."),
    arch: str = typer.Option("resnet18", "--arch", help="densenet121|169|201, resnet18|34, efficientnet_b0, convnext_tiny (torchvision), tf_efficientnet_lite0|1|2 (ImageNet weights from packages), or any timm model name."),
    input_mode: Optional[str] = typer.Option(None, "--input", help="single (image); stack, temporal or summary (video: per-pixel mean, std, dynamic image)."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet, none, or a state-dict file."),
    require_weights: bool = typer.Option(False, "--require-weights", help="Fail instead of falling back to random init."),
    epochs: int = typer.Option(30, "--epochs"),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds inside the training split."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch size (split over DDP processes)."),
    lr: float = typer.Option(3e-4, "--lr"),
    patience: int = typer.Option(8, "--patience", help="Early stopping: epochs without a better fold-validation AUC."),
    select: str = typer.Option("last", "--select", help="Checkpoint kept per fold: last (the fixed epoch count; honest out-of-fold predictions) or best (fold-validation AUC; optimistic: chosen on the cases it scores)."),
    test_scoring: str = typer.Option("refit", "--test-scoring", help="Test cases and new patients scored by: refit (one model on all training cases, the out-of-fold scale) or fold-mean (mean of the fold models; a shrunken scale)."),
    class_weight: str = typer.Option("none", "--class-weight", help="none (unweighted loss) or balanced (positives weighted n0/n1, output prior-corrected by -log(n0/n1))."),
    allow_pretrain_overlap: bool = typer.Option(False, "--allow-pretrain-overlap", help="Use --weights whose self-supervised pretraining saw this cohort's test videos (the report says so)."),
    size: Optional[int] = typer.Option(None, "--size", help="Resize cached arrays to this side first."),
    crop: int = typer.Option(224, "--crop", help="Random (train) / centre (eval) crop side."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default DL_<modality>_<arch>[_temporal|_summary])."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing model of this name."),
    freeze_bn: bool = typer.Option(False, "--freeze-bn", help="Keep BatchNorm statistics fixed (small batches)."),
    precise_bn: bool = typer.Option(True, "--precise-bn/--no-precise-bn", help="Recompute BatchNorm statistics over the fold's training cases before each validation."),
    finetune: str = typer.Option("full", "--finetune", help="full (the whole backbone), last (its deepest stage only) or frozen (the pretrained network as a fixed feature extractor; only the head learns)."),
    backbone_lr: float = typer.Option(1.0, "--backbone-lr", help="The backbone's learning rate as a fraction of --lr (e.g. 0.1)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    summary: bool = typer.Option(False, "--summary", help="Only rank the trained models by mean CV AUC."),
):
    """Cross-validated training of a DL_image / DL_video model; writes models/<name>/ and predictions/<name>.csv.

    Several GPUs: torchrun --nproc-per-node N -m ceusfusion.cli -- train --run RUN ...
    """
    from ceusfusion.models.select import rank_models
    from ceusfusion.models.train import TrainConfig
    from ceusfusion.models.train import train as run_train

    if summary:
        console.print(ranking_table(rank_models(run, modality), run))
        return
    if modality is None:
        raise CeusError("--modality image|video is required (or pass --summary)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = TrainConfig(modality=modality, arch=arch, input_mode=input_mode, weights=weights, require_weights=require_weights,
                      epochs=epochs, folds=folds, batch_size=batch_size, lr=lr, patience=patience, size=size, crop=crop,
                      seed=seed, device=device, name=name, freeze_bn=freeze_bn, precise_bn=precise_bn, select=select,
                      test_scoring=test_scoring, class_weight=class_weight, allow_pretrain_overlap=allow_pretrain_overlap,
                      finetune=finetune, backbone_lr=backbone_lr)
    res = run_train(run, cfg, resume=resume, overwrite=overwrite, progress=not no_progress)
    if res is not None and res.get("rank", 0) == 0:
        console.print(f"{res['name']}: mean CV AUC {res['cv_auc_mean']:.3f} ± {res['cv_auc_std']:.3f} "
                      f"over {res['folds']} folds (weights: {res['weights_used']})")


def ranking_table(df, run: Path) -> Table:
    """`train --summary`: four columns that fit 80 characters; each model's settings on a line under its name."""
    from ceusfusion.models.select import settings_text  # here: the command imports its stage only when run

    def num(v, fmt: str = ".3f") -> str:
        return "-" if v is None or v != v else format(v, fmt)

    table = Table(title=f"models in {run} ranked by mean CV AUC (training split only)", title_justify="left",
                  show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("model (settings)", overflow="fold", ratio=1)
    table.add_column("CV AUC\nmean ± SD", justify="right", no_wrap=True)
    table.add_column("out-of-\nfold AUC", justify="right", no_wrap=True)
    for i, r in enumerate(df.to_dict("records"), start=1):
        table.add_row(str(i), Text.assemble(f"{r['name']}\n", (settings_text(r), "dim")), f"{num(r['cv_auc_mean'])} ± {num(r['cv_auc_std'])}",
                      num(r["oof_auc"]))
    return table


@app.command("select")
def select_cmd(
    run: Path = typer.Option(..., "--run", help="Run directory with trained models."),
    modality: Optional[List[str]] = typer.Option(None, "--modality", help="Modalities to select for (default: every trained one)."),
    models: Optional[List[str]] = typer.Option(None, "--models", help="Only these model names are candidates (repeatable)."),
):
    """The best model per modality by mean CV AUC (training split only): writes RUN/selection.json for features, fuse, explain, export."""
    from ceusfusion.models.select import select

    rec = select(run, list(modality) if modality else None, names=set(models) if models else None)
    for m, name in rec["best"].items():
        console.print(f"{m}: {name}  (of {len(rec['candidates'][m])} candidate(s); {rec['rule']})")
    console.print(f"wrote {Path(run) / 'selection.json'}")


@app.command()
def pretrain(
    cohort: Optional[Path] = typer.Argument(None, help="Cohort manifest CSV: the videos of its training split (labels are not read)."),
    unlabeled: Optional[List[Path]] = typer.Option(None, "--unlabeled", help="Folder of unlabeled videos (recursive; repeat the option)."),
    arch: str = typer.Option("resnet18", "--arch", help="Backbone (as for train)."),
    out: Path = typer.Option(..., "--out", help="Weights file WEIGHTS.safetensors (+ WEIGHTS.json sidecar)."),
    size: int = typer.Option(64, "--size", help="Frame side in pixels."),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    method: str = typer.Option("simclr", "--method", help="simclr (NT-Xent) or moco (momentum encoder + queue, small batches)."),
    frames_per_video: int = typer.Option(32, "--frames-per-video", help="Frames kept per video, evenly spread in time."),
    max_gap_s: float = typer.Option(1.0, "--max-gap-s", help="Positive pairs: two frames of a video at most this far apart."),
    lr: float = typer.Option(1e-3, "--lr"),
    temperature: float = typer.Option(0.2, "--temperature"),
    min_crop: float = typer.Option(0.3, "--min-crop", help="Smallest random crop, as a share of the frame area."),
    queue: int = typer.Option(4096, "--queue", help="MoCo queue length."),
    init: str = typer.Option("none", "--init", help="Starting weights: none, imagenet or a state-dict file."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (mixed precision on CUDA)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run (WEIGHTS.ckpt/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing weights file."),
    probe: bool = typer.Option(False, "--probe", help="Afterwards: linear and k-NN probes with grouped CV on the training labels."),
    include_test_videos: bool = typer.Option(False, "--include-test-videos", help="Keep the cohort's test-split videos found under --unlabeled (left out by default, matched by path or content); the sidecar then records test_split_used: true and their case ids."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No per-epoch lines."),
):
    """Self-supervised contrastive pretraining on unlabeled video frames; weights load with train --weights."""
    from ceusfusion.models.pretrain import PretrainConfig, plan_videos, probe_path
    from ceusfusion.models.pretrain import pretrain as run_pretrain

    if cohort is None and not unlabeled:
        raise CeusError("give a cohort manifest and/or --unlabeled folders of videos")
    if probe and cohort is None:
        raise CeusError("--probe needs a cohort manifest with labels")
    if include_test_videos and cohort is None:
        raise CeusError("--include-test-videos needs a cohort manifest (without one no test split is known)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = PretrainConfig(arch=arch, size=size, epochs=epochs, batch_size=batch_size, method=method,
                         frames_per_video=frames_per_video, max_gap_s=max_gap_s, lr=lr, temperature=temperature,
                         min_crop=min_crop, queue=queue, init=init, seed=seed, device=device).check()
    plan = plan_videos(cohort, unlabeled, include_test_videos=include_test_videos)
    for note in plan.notes():
        err_console.print(f"[yellow]note[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print(f"pretraining {arch} ({method}) on {len(plan)} videos")

    def show(rec):
        if not no_progress:
            console.print(f"epoch {rec['epoch']}/{epochs}: loss {rec['loss']:.4f} ({rec['seconds']:.1f} s, {rec['frames']} frames)")

    side = run_pretrain(plan, out, cfg, resume=resume, overwrite=overwrite, on_epoch=show,
                        probe_cohort=cohort if probe else None)
    if side is None:
        return
    console.print(f"wrote {out} ({side['n_videos']} videos, {side['n_frames']} frames, "
                  f"test_split_used: {side.get('test_split_used')}) and {out.with_suffix('.json')}")
    for sk in side["videos_skipped"]:
        err_console.print(f"[yellow]skipped[/yellow] video {sk['video']}: {sk['problem']}", highlight=False, soft_wrap=True)
    if "probe" in side:
        pr = side["probe"]
        for name in ("pretrained", "random_init"):
            console.print(f"probe {name}: linear AUC {pr[name]['linear']['oof_auc']:.3f}, "
                          f"k-NN AUC {pr[name]['knn']['oof_auc']:.3f} ({pr['n_videos']} training videos, "
                          f"{pr[name]['folds']}-fold grouped CV)")
        console.print(f"wrote {probe_path(out)}")

# ----------------------------------------------------------------------------- statistics (issue 5)


def _floats(text: str, option: str) -> tuple[float, ...]:
    """'0.1,0.2' -> (0.1, 0.2); a one-line error otherwise."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CeusError(f"{option}: expected comma-separated numbers, got {text!r}") from None


@app.command()
def evaluate(
    predictions: List[Path] = typer.Argument(..., help="Predictions CSVs (case_id,set,fold,y,prob; model = file stem) or one wide CSV (y, [set], one column per model)."),
    out: Path = typer.Option(..., "--out", help="Output folder (metrics.json, table2.csv, comparisons.csv, dca.csv, figures/)."),
    conf_level: float = typer.Option(0.95, "--conf-level", help="Confidence level of every interval."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Stratified bootstrap replicates for the metric CIs (0: Wilson intervals)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    no_figures: bool = typer.Option(False, "--no-figures", help="Skip the ROC, calibration and DCA figures."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort manifest (case_id, center, covariates): per-centre AUC, subgroups, nomogram covariates."),
    subgroup: List[str] = typer.Option([], "--subgroup", help="Cohort column to report AUC by (repeatable; the centre is always reported)."),
    nri_cuts: str = typer.Option("", "--nri-cuts", help="Risk cut-points of the categorical NRI (comma-separated; default: the training prevalence's odds x 1/2, 1, 2)."),
    thresholds: str = typer.Option("", "--thresholds", help="Threshold probabilities of the interventions-avoided table (comma-separated; default: the training prevalence's odds x 1/2 to 2, e.g. 0.11-0.33 at 0.2)."),
    candidate_predictors: Optional[int] = typer.Option(None, "--candidate-predictors", help="Candidate predictor parameters of the model (sample-size check; fusion.json lasso.n_features_in)."),
    anticipated_r2: Optional[float] = typer.Option(None, "--anticipated-r2", help="Anticipated Cox-Snell R2 (default: from the reference model's training predictions)."),
    reference_model: Optional[str] = typer.Option(None, "--reference-model", help="Model of the sample-size check and the nomogram (default DL_combined, else the last)."),
    nomogram_score: List[str] = typer.Option([], "--nomogram-score", help="Model whose logit enters the nomogram (repeatable; default the reference model)."),
    nomogram_covariate: List[str] = typer.Option([], "--nomogram-covariate", help="Cohort column entering the nomogram (repeatable)."),
    no_nomogram: bool = typer.Option(False, "--no-nomogram", help="Skip the nomogram."),
    outcome: Optional[Path] = typer.Option(None, "--outcome", help=OUTCOME_HELP),
    force: bool = typer.Option(False, "--force", help="Write into --out over files ceusfusion did not write (never over an input)."),
):
    """AUC with DeLong CI, Youden thresholds carried from train to test, calibration, DCA, DeLong tests; NRI/IDI,
    net interventions avoided, per-centre/subgroup AUC, sample-size adequacy, nomogram."""
    from ceusfusion.evaluate.clinical import ClinicalOptions
    from ceusfusion.evaluate.evaluate import claim_outputs
    from ceusfusion.evaluate.evaluate import evaluate as run_evaluate

    claim_outputs(out, inputs=[*predictions, *(p for p in (cohort, outcome) if p)], force=force, figures=not no_figures)
    ci = "bootstrap" if bootstrap > 0 else "wilson"
    opts = ClinicalOptions(cuts=_floats(nri_cuts, "--nri-cuts") or None, thresholds=_floats(thresholds, "--thresholds") or None,
                           outcome=_outcome(outcome), subgroups=tuple(subgroup), candidate_predictors=candidate_predictors, anticipated_r2=anticipated_r2,
                           reference_model=reference_model, nomogram_scores=tuple(nomogram_score) or None,
                           nomogram_covariates=tuple(nomogram_covariate), nomogram=not no_nomogram)
    m = run_evaluate(predictions, out, conf_level=conf_level, ci=ci, n_boot=bootstrap or 2000, seed=seed, figures=not no_figures,
                     clinical=opts, cohort=cohort)
    table = Table(title=f"evaluation written to {out}")
    for col in ("set", "model", "AUC (95% CI)", "threshold", "sens", "spec"):
        table.add_column(col)
    for s, block in m["sets"].items():
        for name, r in block["models"].items():
            table.add_row(s, name, _auc_text(r), _threshold_text(r), _num(r.get("sensitivity")), _num(r.get("specificity")))
    console.print(table)
    ss = m.get("sample_size") or {}
    console.print(f"sample size: {ss.get('sentence') or ss.get('note')}", highlight=False, soft_wrap=True)
    th = m.get("clinical_thresholds") or {}
    if th:
        console.print(f"clinical thresholds {th['thresholds']} ({th['thresholds_source']}); NRI cut points {th['nri_cuts']} "
                      f"({th['nri_cuts_source']})", highlight=False, soft_wrap=True)


def _outcome(path: Optional[Path]):
    """The --outcome file's words, or the neutral ones."""
    from ceusfusion.core.outcome import Outcome, read_outcome

    return read_outcome(path) if path else Outcome()


def _num(v, fmt: str = ".3f") -> str:
    return "NA" if v is None else format(v, fmt)


def _auc_text(r: dict) -> str:
    """AUC (CI) of a metrics.json model block, or why it is undefined (a set with one class)."""
    if r.get("auc") is None:
        return "undefined" + (f" ({r['undefined']})" if r.get("undefined") else "")
    lo, hi = r.get("auc_ci") or (None, None)
    return f"{r['auc']:.3f} ({_num(lo)}-{_num(hi)})" if lo is not None else f"{r['auc']:.3f} (n/a)"


def _threshold_text(r: dict) -> str:
    t = r.get("threshold")
    shown = t if isinstance(t, str) else _num(t, ".4g")
    return f"{shown} ({r.get('threshold_source')})"


@app.command()
def table1(
    cohort: Path = typer.Argument(..., help="Cohort CSV with label, split and clinical columns."),
    out: Path = typer.Option(..., "--out", help="Output CSV."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated clinical columns (default: every non-schema column)."),
    seed: int = typer.Option(0, help="Seed of the Monte Carlo Fisher test (only for tables too large to enumerate)."),
    force: bool = typer.Option(False, "--force", help="Replace --out (and its .tests.json) even when table1 did not write them (never the input)."),
    outcome: Optional[Path] = typer.Option(None, "--outcome", help=OUTCOME_HELP),
):
    """Baseline characteristics per class within each set, with the right test per variable.

    Beside the CSV, <out>.tests.json records the test used per variable and set and the missing counts.
    """
    from ceusfusion.core.fsutil import claim, write_csv, write_json
    from ceusfusion.ingest.cohort import read_manifest
    from ceusfusion.stats.table1 import table1 as make_table1

    cols = [c.strip() for c in columns.split(",")] if columns else None
    tests = out.with_suffix(".tests.json")
    t = make_table1(read_manifest(cohort), columns=cols, seed=seed, class_names=_outcome(outcome).class_names)
    claim(out.parent, files=[out, tests], force=force, inputs=[cohort])
    write_csv(out, t)
    write_json(tests, dict(t.attrs))
    console.print(f"wrote {out}: {len(t)} rows; tests per variable in {out.with_suffix('.tests.json').name}")

# ----------------------------------------------------------------------------- fusion (issue 6)


@app.command("features")
def features_cmd(
    model: Path = typer.Option(..., "--model", help="Trained model folder RUN/models/NAME."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output parquet (default RUN/features/NAME.parquet)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Graph node to pool (default: the penultimate vector feeding the head)."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace --out even when ceusfusion did not write it (never an input)."),
):
    """Deep features for fusion: out-of-fold for training cases; test cases by the model refitted on all
    training cases (test_scoring: refit, the default), or the mean of the fold models (fold-mean)."""
    from ceusfusion.fusion.extract import features as run_features

    path, meta = run_features(model, out, layer=layer, batch_size=batch_size, device=device, force=force)
    console.print(f"wrote {path}: {meta['n_train']} train (out-of-fold) + {meta['n_test']} test cases, "
                  f"{meta['feature_dim']} features from {meta['layer']} ({meta['extractor']})")


@app.command("radiomics")
def radiomics_cmd(
    run: Path = typer.Option(..., "--run", help="Prepared run directory (RUN/cohort.csv, RUN/prepared/)."),
    discretisation: str = typer.Option("fixed_bin_number", help="fixed_bin_number, fixed_bin_size or none."),
    bins: int = typer.Option(32, help="Bins of fixed_bin_number."),
    bin_width: float = typer.Option(8.0, help="Grey levels per bin of fixed_bin_size."),
    intensity_range: Optional[str] = typer.Option(None, help="Re-segmentation range LOW,HIGH (pixels outside leave the ROI)."),
    spacing_mm: Optional[float] = typer.Option(None, help="Pixel side in mm where DICOM does not give it (default: pixel units)."),
    keyframes: bool = typer.Option(True, "--keyframes/--no-keyframes", help="Also the CEUS keyframes' ROIs."),
    icc_threshold: float = typer.Option(0.75, help="Robustness filter: drop features with a lower ICC."),
    icc_cases: int = typer.Option(40, help="Training cases perturbed for the ICC (0: no filter)."),
    seed: int = typer.Option(0, help="Seed of the ICC cases' draw and the ROI shifts."),
    workers: int = typer.Option(1, help="Worker processes."),
    force: bool = typer.Option(False, "--force", help="Write RUN/radiomics/ even over files ceusfusion did not write."),
):
    """IBSI radiomics of each case's ROI (still and CEUS keyframes) into RUN/features/radiomics.parquet; exit 1 if some case failed."""
    from ceusfusion.radiomics.settings import RadiomicsConfig
    from ceusfusion.radiomics.stage import radiomics as run_radiomics

    rng = _floats(intensity_range, "--intensity-range") if intensity_range else None
    cfg = RadiomicsConfig(discretisation=discretisation, bins=bins, bin_width=bin_width, intensity_range=rng,
                          spacing_mm=spacing_mm, keyframes=keyframes, icc_threshold=icc_threshold, icc_cases=icc_cases, seed=seed)
    rec = run_radiomics(run, cfg, workers=workers, force=force,
                        on_failure=lambda line: err_console.print(f"[red]failed[/red] {line}", highlight=False, soft_wrap=True))
    console.print(f"radiomics of {rec['n_cases']} cases ({rec['n_failed']} failed): {rec['n_features_kept']} of "
                  f"{rec['n_features_extracted']} features kept ({rec['n_dropped_icc']} below ICC {rec['icc_threshold']}, "
                  f"{rec['n_incomplete']} not in every case); {rec['seconds_per_roi']:.2f} s per ROI")
    raise typer.Exit(1 if rec["n_failed"] else 0)


@app.command()
def fuse(
    files: Optional[List[Path]] = typer.Argument(None, help="Features parquet files (same as --features)."),
    features: Optional[List[Path]] = typer.Option(None, "--features", help="Features parquet file(s): --features A.parquet B.parquet, or repeat the option."),
    out: Path = typer.Option(..., "--out", help="Output folder (predictions/, figures/, CSVs, fusion.json)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort manifest: clinical covariates and patient groups."),
    clinical: Optional[List[str]] = typer.Option(None, "--clinical", help="Clinical column(s) of the cohort, comma-separated or repeated: --clinical age,size_mm,margin."),
    perfusion: Optional[Path] = typer.Option(None, "--perfusion", help="CEUS perfusion parameters CSV (case_id + numeric columns)."),
    classifiers: str = typer.Option("lr,svm,knn,rf,et,xgb,lgbm,mlp", "--classifiers", help="Classifier families to compare."),
    folds: int = typer.Option(5, "--folds", help="Outer CV folds on the training set."),
    inner_folds: int = typer.Option(5, "--inner-folds", help="Inner CV folds (LASSO penalty, hyperparameters)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for every split and model."),
    one_se: bool = typer.Option(False, "--one-se", help="Use the 1-SE rule for the LASSO penalty (sparser)."),
    n_cs: int = typer.Option(20, "--n-cs", help="Number of LASSO penalties on the CV grid."),
    fallback_k: int = typer.Option(10, "--fallback-k", help="Features kept if LASSO keeps none."),
    fast: bool = typer.Option(False, "--fast", help="Tiny grids and few trees (smoke tests)."),
    drop_missing: bool = typer.Option(False, "--drop-missing", help="Keep only cases present in every features file."),
    name: str = typer.Option("DL_combined", "--name", help="Model name: predictions/<name>.csv."),
    force: bool = typer.Option(False, "--force", help="Write into --out over files ceusfusion did not write (never over an input)."),
):
    """DL_combined: scaler → LASSO → best classifier family by CV AUC; the test set is scored once."""
    from ceusfusion.fusion.families import parse_families
    from ceusfusion.fusion.pipeline import FusionConfig, claim_outputs
    from ceusfusion.fusion.pipeline import fuse as run_fuse

    paths = list(features or []) + list(files or [])
    clin = [c.strip() for item in (clinical or []) for c in item.split(",") if c.strip()]
    cfg = FusionConfig(classifiers=parse_families(classifiers), folds=folds, inner_folds=inner_folds, seed=seed,
                       one_se=one_se, n_cs=n_cs, fallback_k=fallback_k, fast=fast, name=name)
    claim_outputs(out, cfg.name, inputs=[*paths, *(p for p in (cohort, perfusion) if p)], force=force)
    res = run_fuse(paths, out, cohort=cohort, clinical=clin, perfusion=perfusion, drop_missing=drop_missing, cfg=cfg)
    s = res.summary
    console.print(f"chosen {s['chosen_classifier']} (mean CV AUC {s['cv_auc_mean']:.3f}); "
                  f"LASSO kept {s['lasso']['n_selected']} of {s['lasso']['n_features_in']} features at C={s['lasso']['C']:.3g}")
    if s["lasso"]["fallback"]:
        console.print(f"[yellow]note:[/yellow] {s['lasso']['fallback_note']}")
    console.print(f"wrote {Path(out) / 'predictions' / (name + '.csv')} and {out}/fusion.json")

# ----------------------------------------------------------------------------- explain (issue 7)


@app.command()
def explain(
    model: Path = typer.Option(..., "--model", help="A trained model folder: RUN/models/NAME."),
    cases: Optional[List[str]] = typer.Option(None, "--cases", help="Case ids to explain (repeat the option)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Per label, the K cases most confidently predicted as their own label."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/explain/NAME)."),
    method: str = typer.Option("gradcam", "--method", help="gradcam, gradcam++ or scorecam."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Use one fold model (default: test cases by the refitted model, or all fold models averaged under test_scoring: fold-mean; training cases by their held-out fold's model)."),
    split: str = typer.Option("test", "--set", help="Which cases when no --cases: test or train."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Hook another module (e.g. encoder.layer3) for finer maps."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Synthetic cohort's truth.csv: report CAM energy inside its signal regions."),
    sanity: bool = typer.Option(False, "--sanity", help="Also compare with maps of randomised models (Adebayo et al.)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    target: str = typer.Option("predicted", "--target", help="Class each map explains: predicted (the model's call per case) or positive (always label 1)."),
    force: bool = typer.Option(False, "--force", help="Write into --out even when it holds files ceusfusion did not write (never an input)."),
):
    """Grad-CAM overlays per case, per-frame contributions / attention, and explain.json."""
    from ceusfusion.explain.cases import explain as run_explain

    if cases and per_class is not None:
        raise CeusError("give either --cases or --per-class, not both")
    if model.parent.name != "models":
        raise CeusError(f"--model {model}: expected a folder RUN/models/NAME")
    path = run_explain(model.parent.parent, model.name, out, cases or None, per_class, split, method, fold, truth,
                       sanity, seed, device, layer, target, force)
    console.print(f"wrote {path} and one PNG per case in {path.parent}")


@app.command("explain-figure")
def explain_figure(
    image: Path = typer.Option(..., "--image", help="explain output folder of a DL_image model."),
    video: Path = typer.Option(..., "--video", help="explain output folder of a DL_video model."),
    out: Path = typer.Option(..., "--out", help="Figure path; .png and .svg are written."),
    outcome: Optional[Path] = typer.Option(None, "--outcome", help=OUTCOME_HELP),
    force: bool = typer.Option(False, "--force", help="Replace the .png/.svg even when ceusfusion did not write them (never an input)."),
):
    """The reference study's Figure 5 layout: negative and positive cases, five-frame and single-frame rows."""
    from ceusfusion.core.fsutil import claim
    from ceusfusion.explain.results import figure5_from_folders

    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".svg") else out  # as figures.explain.figure5 names them
    inputs = [f for d in (image, video) for f in (d / "explain.json", *sorted((d / "arrays").glob("*.npz")))]
    claim(out.parent, files=[stem.with_name(stem.name + s) for s in (".png", ".svg")], force=force,
          inputs=inputs + ([outcome] if outcome else []))
    png, svg = figure5_from_folders(image, video, out, outcome=_outcome(outcome))
    console.print(f"wrote {png} and {svg}")

# ----------------------------------------------------------------------------- study, demo (issue 8)


@app.command()
def study(
    config: Path = typer.Argument(..., help="Study YAML (example: examples/study.yaml)."),
    force: Optional[List[str]] = typer.Option(None, "--force", help="Redo this stage and those after it (repeatable)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    overwrite_files: bool = typer.Option(False, "--overwrite-files", help="Write over files in the output folder that ceusfusion did not create."),
):
    """Run the whole study: validate, prepare, train, select, features, fuse, evaluate, explain, report."""
    from ceusfusion.study import run_study

    report = run_study(config, force=force, console=console, progress=not no_progress and sys.stderr.isatty(),
                       overwrite_files=overwrite_files)
    console.print(f"report: {report}")


@app.command()
def report(
    run: Path = typer.Option(..., "--run", help="A run directory, built by `study` or stage by stage."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title (default: the study's, else a generic one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report file (default: RUN/report.html)."),
    force: bool = typer.Option(False, "--force", help="Replace --out even when ceusfusion did not write it."),
):
    """Rebuild the self-contained HTML report from what the run's stages wrote; the safeguards are computed
    from the run's records as they are now."""
    from ceusfusion.report.html import write_report
    from ceusfusion.safeguards import safeguards

    path = write_report(run, out, title, force=force, safeguards=safeguards(run) if run.is_dir() else None)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command()
def export(
    run: Path = typer.Argument(..., help="A finished run directory."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle."),
):
    """Bundle the selected models, preprocessing parameters and locked thresholds for new patients."""
    from ceusfusion.deploy.export import bundle_id
    from ceusfusion.deploy.export import export as run_export

    bundle = run_export(run, out, overwrite=overwrite)
    digest = bundle_id(bundle)
    console.print(f"wrote bundle {bundle}\nbundle id (sha256 of bundle.json): {digest}\n"
                  f"send the id apart from the bundle; predict refuses any other with --expect-sha256 {digest}",
                  highlight=False, soft_wrap=True)


@app.command()
def predict(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle from `ceusfusion export`."),
    image: Optional[Path] = typer.Option(None, "--image", help="B-mode still."),
    image_mask: Optional[Path] = typer.Option(None, "--image-mask", help="Nodule mask of the still."),
    video: Optional[Path] = typer.Option(None, "--video", help="CEUS video."),
    video_mask: Optional[Path] = typer.Option(None, "--video-mask", help="Nodule mask of the video."),
    clinical: list[str] = typer.Option([], "--clinical", help="A clinical covariate NAME=VALUE, for a fused model that "
                                       "reads covariates (DLR+clinical, say); repeat for each. With --cohort: the manifest's columns."),
    cohort: Optional[Path] = typer.Option(
        None, "--cohort", help="A cohort manifest (case_id, [label], image/video and masks): score every case, write "
        "predictions files for `evaluate` into --out (external validation)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for prediction.json and Grad-CAM overlays; with --cohort, "
                                       "for predictions/<model>.csv, failures.csv and summary.json."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch (one patient is a batch of one)."),
    expect_sha256: Optional[str] = typer.Option(
        None, "--expect-sha256", help="The bundle id `export` printed (sha256 of bundle.json): refuse any other bundle."),
    development_rows: bool = typer.Option(
        True, "--development-rows/--no-development-rows", help="With --cohort: add the bundle's development out-of-fold "
        "rows (set 'train', from its model card), so that evaluate applies the locked thresholds to the cohort."),
    force: bool = typer.Option(False, "--force", help="Write into --out over files ceusfusion did not write (never over an input)."),
):
    """Predict for one new patient: probability per model, class at the locked threshold, Grad-CAM overlays.
    With --cohort, every case of a manifest in one process (set 'external'), one line per failed case; exit 0
    when at least one case was scored."""
    if cohort is not None:
        if image or video or image_mask or video_mask or clinical:
            raise CeusError("--cohort scores the manifest's files and columns: give no --image/--video/masks/--clinical with it")
        if out is None:
            raise CeusError("--cohort needs --out (the folder for the predictions files)")
        return _predict_cohort(bundle, cohort, out, threads, expect_sha256, development_rows, force, as_json)
    if image is None and video is None:
        raise CeusError("give --image and/or --video (or --cohort CSV for a whole cohort)")
    if out is not None:
        _claim_prediction(bundle, out, force, [p for p in (image, image_mask, video, video_mask) if p])
    # the fused model loads in a second process while this one imports torch (deploy.fusion_worker)
    from ceusfusion.deploy.fusion_worker import FusionWorker

    worker = FusionWorker.start(bundle) if image is not None and video is not None else None
    try:
        from ceusfusion.deploy.predict import predict as run_predict  # here: torch, after the worker started

        res = run_predict(bundle, image, image_mask, video, video_mask, out=out, threads=threads,
                          expect_sha256=expect_sha256, fusion_worker=worker, clinical=_covariates(clinical))
    finally:
        if worker is not None:
            worker.close()
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    what = res["outcome"]["name"] if res["outcome"].get("given") else "the outcome"
    table = Table(title=f"prediction of {what} ({res['seconds']:.2f} s)")
    for col in ("model", "probability", "threshold (train)", "class"):
        table.add_column(col)
    for name, m in res["models"].items():
        if m.get("available"):
            table.add_row(name, f"{m['prob']:.3f}", f"{m['threshold']:.3f}", m["class_label"])
        else:
            table.add_row(name, "n/a", "", m.get("reason", ""))
    console.print(table)
    for w in res.get("warnings", []):
        err_console.print(f"[yellow]warning[/yellow] {w}", highlight=False, soft_wrap=True)
    pin = "pinned" if res["bundle_pinned"] else "not pinned: pass --expect-sha256 with the id export printed"
    console.print(f"bundle id {res['bundle_sha256']} ({pin})", highlight=False, soft_wrap=True)


def _covariates(pairs: list[str]) -> dict[str, str]:
    """``--clinical NAME=VALUE`` options as {name: value}; a malformed or repeated one is one line."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise CeusError(f"--clinical {pair!r}: give NAME=VALUE (age=63, say)")
        if name.strip() in out:
            raise CeusError(f"--clinical {name.strip()} given twice")
        out[name.strip()] = value.strip()
    return out


def _claim_prediction(bundle: Path, out: Path, force: bool, inputs: list) -> None:
    """predict --out writes prediction.json and a Grad-CAM overlay per bundled model: never over a user's file of
    that name (unless --force) nor over an input."""
    from ceusfusion.core.fsutil import claim  # here: the command imports its stage only when run

    try:
        meta = json.loads((Path(bundle) / "bundle.json").read_text())
        names = [m["name"] for m in meta["models"].values()] + ([meta["combined"]["name"]] if meta.get("combined") else [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        names = []  # predict refuses such a bundle itself, with its own line
    files = [out / "prediction.json"] + [out / f"gradcam_{n}.png" for n in names if isinstance(n, str)]
    claim(out, files=files, force=force, inputs=inputs)


def _predict_cohort(bundle: Path, cohort: Path, out: Path, threads: int, expect_sha256: Optional[str],
                    development_rows: bool, force: bool, as_json: bool) -> None:
    """`predict --cohort`: every case through the bundle; failures one line each on stderr, as they happen."""
    from ceusfusion.deploy.batch import predict_cohort

    def failed(case_id: str, file: str, problem: str) -> None:
        err_console.print(f"case {case_id}: {file or '-'}: {problem}", highlight=False, soft_wrap=True, markup=False)

    res = predict_cohort(bundle, cohort, out, threads=threads, expect_sha256=expect_sha256, force=force,
                         development_rows=development_rows, on_failure=failed)
    if as_json:
        typer.echo(json.dumps(res.summary, indent=2))
        return
    s = res.summary
    table = Table(title=f"{res.n_scored} of {res.n_cases} cases scored ({s['seconds']:.1f} s), set 'external'")
    for col in ("model", "cases", "ROI (what the model saw)"):
        table.add_column(col)
    for f in res.files:
        m = s["models"][f.stem]
        table.add_row(f.stem, str(m["n"]), ", ".join(f"{k}: {v}" for k, v in m["roi"].items()))
    console.print(table)
    console.print(f"predictions: {out / 'predictions'} (one file per model)", highlight=False, soft_wrap=True)
    if len(res.failures):
        console.print(f"{len(res.failures)} case(s) failed: {out / 'failures.csv'}", highlight=False, soft_wrap=True)
    whole = max((m["roi"].get("whole frame", 0) for m in s["models"].values()), default=0)
    if whole:
        err_console.print(f"[yellow]note[/yellow] {whole} case(s) had no mask and were scored on the whole frame (column roi): "
                          f"models trained on mask crops see them unlike any training case", highlight=False, soft_wrap=True)
    console.print(f"thresholds: {s['thresholds']}", highlight=False, soft_wrap=True)
    if not res.labelled:
        console.print("no label on every scored case: evaluate needs the manifest's label column", highlight=False, soft_wrap=True)
    else:
        console.print(f"external validation report: ceusfusion evaluate {out / 'predictions'}/*.csv --out DIR",
                      highlight=False, soft_wrap=True)
    pin = "pinned" if s["bundle_pinned"] else "not pinned: pass --expect-sha256 with the id export printed"
    console.print(f"bundle id {s['bundle_sha256']} ({pin})", highlight=False, soft_wrap=True)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
    full: bool = typer.Option(False, "--full", help="The reference protocol (5 architectures, 224 px, 5 folds): for a GPU."),
    n: int = typer.Option(396, "--n", help="Synthetic patients."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (1: bit-reproducible numbers across machines with different core counts)."),
):
    """Synthetic cohort → full study → report, with CPU-friendly settings; prints Table 2 and where the report is."""
    from ceusfusion.core.runtime import threads as torch_threads
    from ceusfusion.demo import run_demo

    with torch_threads(threads):
        run_demo(out, console, n=n, seed=seed, full=full, progress=sys.stderr.isatty())


# ----------------------------------------------------------------------------- weights (issue 17)

weights_app = typer.Typer(no_args_is_help=True, help="ImageNet weights on this machine: list, verify a file, import it for offline use.")
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
                 arch: Optional[List[str]] = typer.Option(None, "--arch", help="Only these architectures (any timm name too).")):
    """Per architecture, where its ImageNet weights would come from here (in the order they are tried)."""
    from ceusfusion.models.weight_sources import list_sources

    rows = list_sources(arch or None)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="ImageNet weights on this machine")
    for col in ("arch", "source", "available", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["arch"], r["source"], "yes" if r["available"] else "no", r.get("note", ""))
    console.print(table)


@weights_app.command("verify")
def weights_verify(file: Path = typer.Argument(..., help="A state-dict file (.safetensors or .pth)."),
                   arch: str = typer.Option(..., "--arch", help="The architecture it should fit.")):
    """Load a weight file weights-only and check every tensor against the architecture."""
    from ceusfusion.models.weight_sources import verify_file

    rec = verify_file(file, arch)
    console.print(f"{rec['file']}: {rec['tensors']} tensors fit {rec['arch']} (sha256 {rec['sha256']})", highlight=False)


@weights_app.command("import")
def weights_import(file: Path = typer.Argument(..., help="torchvision's published ImageNet file for --arch."),
                   arch: str = typer.Option(..., "--arch", help="The architecture.")):
    """Put a verified ImageNet file into the torch hub cache under the name torchvision expects (offline use)."""
    from ceusfusion.models.weight_sources import import_file

    dest = import_file(file, arch)
    console.print(f"{file} -> {dest} (train --arch {arch} --weights imagenet will use it offline)", highlight=False)


# ----------------------------------------------------------------------------- segmentation (issue 26)

segment_app = typer.Typer(no_args_is_help=True, help="Nodule masks learned from the cohort's own masks: train, then predict the missing ones.")
app.add_typer(segment_app, name="segment")


def _show_failure(case_id, file, problem):
    where = f" ({file})" if file else ""
    err_console.print(f"[red]failed[/red] case {case_id}{where}: {problem}", highlight=False, soft_wrap=True)


@segment_app.command("train")
def segment_train_cmd(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV with a split; its training-split masks are learned from."),
    out: Path = typer.Option(..., "--out", help="Model folder (fold models, segmenter.json, cross-validated metrics)."),
    encoder: str = typer.Option("tf_efficientnet_lite0", help="timm encoder of the U-Net."),
    weights: str = typer.Option("imagenet", help="Encoder start: imagenet (through the weight resolver), none, or a file."),
    size: int = typer.Option(128, help="Side of the network's input (a multiple of 32)."),
    epochs: int = typer.Option(12, help="Epochs per fold."),
    folds: int = typer.Option(5, help="Patient-grouped folds (each fold model is also one member of predict's ensemble)."),
    batch: int = typer.Option(16, help="Batch size."),
    seed: int = typer.Option(0, help="Fixes every random choice."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: torch's)."),
    force: bool = typer.Option(False, "--force", help="Write over files in --out that ceusfusion did not write (never over the input)."),
):
    """Train the segmenter with patient-grouped cross-validation; print its Dice, IoU and HD95."""
    from ceusfusion.core.runtime import threads as torch_threads
    from ceusfusion.segment.train import SegmentSettings, segment_train

    st = SegmentSettings(encoder=encoder, weights=weights, size=size, epochs=epochs, folds=folds, batch=batch, seed=seed, device=device)
    with torch_threads(threads):
        log = (lambda msg: err_console.print(msg, highlight=False)) if sys.stderr.isatty() else None
        res = segment_train(cohort, out, st, force=force, on_failure=_show_failure, log=log)
    for mode, v in res.cv.items():
        p = v["pooled"]
        console.print(f"{mode:>4}: Dice {p['dice']:.3f}  IoU {p['iou']:.3f}  HD95 {p['hd95_median']:.1f} px (median) "
                      f"over {p['n']} held-out pictures", highlight=False)
    console.print(f"trained on {res.n_pictures} pictures ({res.n_failed} failed) -> {res.folder}", highlight=False)
    raise typer.Exit(1 if res.n_failed else 0)


@segment_app.command("predict")
def segment_predict_cmd(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV (never written)."),
    model: Path = typer.Option(..., "--model", help="Model folder from `segment train`."),
    out: Path = typer.Option(..., "--out", help="Output folder: cohort.csv with the masks filled, masks/, segments.csv, sheets/."),
    review_below: float = typer.Option(0.9, help="Flag a case for review when the folds' agreement (Dice) is below this."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: torch's)."),
    precision: str = typer.Option("float32", help="float32, or bfloat16: faster on CPUs with bfloat16 units (AVX512-BF16, AMX), slightly different masks (BENCHMARKS.md)."),
    force: bool = typer.Option(False, "--force", help="Write over files in --out that ceusfusion did not write (never over an input)."),
    boxes: Optional[Path] = typer.Option(None, "--boxes", help="A boxes file (`ceusfusion annotate`'s BOXES.csv) merged into the manifest first: its boxes prompt the segmenter."),
):
    """Predict the masks the manifest lacks (box-prompted where a case has a box, automatic otherwise)."""
    from ceusfusion.core.runtime import threads as torch_threads
    from ceusfusion.segment.predict import segment_predict

    with torch_threads(threads):
        res = segment_predict(cohort, model, out, device=device, review_below=review_below, force=force,
                              on_failure=_show_failure, boxes=boxes, precision=precision)
    counts = ", ".join(f"{k} {v}" for k, v in res.counts.items())
    console.print(f"ROI sources: {counts}; {res.n_review} to review; {len(res.failures)} failed -> {res.out / 'cohort.csv'}", highlight=False)
    raise typer.Exit(1 if len(res.failures) else 0)


@app.command()
def serve(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle from `ceusfusion export`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this computer only; anything else warns)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_upload_mb: float = typer.Option(512, "--max-upload-mb", help="Largest upload (all files of one request) in MB."),
    expect_sha256: Optional[str] = typer.Option(None, "--expect-sha256", help="The bundle id export printed (sha256 of bundle.json): refuse to start on any other bundle."),
    header_timeout: float = typer.Option(10, "--header-timeout", help="Seconds a client may take to send a request's headers."),
    body_timeout: float = typer.Option(60, "--body-timeout", help="Seconds a client may take to send a request's files."),
):
    """A local web page for one patient: drop the files, see each model's probability, Grad-CAM, the TIC, the model card."""
    from ceusfusion.serve.protocol import Limits
    from ceusfusion.serve.server import serve as run_serve

    try:
        limits = Limits(header_timeout, body_timeout)
    except ValueError as exc:
        raise CeusError(f"--header-timeout/--body-timeout: {exc}") from None
    run_serve(bundle, host=host, port=port, max_upload_mb=max_upload_mb, expect_sha256=expect_sha256, limits=limits,
              warn=lambda msg: err_console.print(msg, highlight=False, soft_wrap=True))


@app.command()
def annotate(
    cohort: Path = typer.Argument(..., help="Cohort manifest CSV (only read, never written)."),
    out: Path = typer.Option(..., "--out", help="BOXES.csv: case_id,image_box,video_box,video_box_time; resumed if it exists."),
    port: int = typer.Option(8000, "--port", help="TCP port on 127.0.0.1 (this computer only)."),
    force: bool = typer.Option(False, "--force", help="Take over an --out file ceusfusion did not write (its rows are read, then rewritten)."),
    segmenter: Optional[Path] = typer.Option(None, "--segmenter", help="A `segment train` folder: draw its proposed mask for each picture, to accept (key a) or redo with a box."),
):
    """A local page to draw each case's boxes on the still and the clip; every answer is saved to --out at once."""
    from ceusfusion.serve.annotate import annotate as run_annotate

    run_annotate(cohort, out, port=port, force=force, segmenter=segmenter,
                 warn=lambda msg: err_console.print(msg, highlight=False, soft_wrap=True))


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
    except typer.Abort:
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (unknown option, bad value) carry their own message
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
