"""The synthetic cohort: files a hospital reader opens, Table-1-like covariates,
a label carried by both static and dynamic signals, determinism."""

from __future__ import annotations

import filecmp

import av
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.cohort import resolve, validate
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import iter_frames
from ceusfusion.synthetic.synth import SynthConfig, draw_cohort_table, gamma_variate, generate, split_counts, write_mask

TINY = dict(n=24, seed=3, size=48, fps=2, duration=10)


@pytest.fixture(scope="module")
def tiny(module_tmp_factory):
    out = module_tmp_factory.mktemp("synth") / "cohort"
    path = generate(out, SynthConfig(**TINY), workers=2)
    return path, pd.read_csv(path), pd.read_csv(out / "truth.csv")


@pytest.fixture(scope="module")
def big_table():
    return draw_cohort_table(SynthConfig(n=4000, seed=11))


# --------------------------------------------------------------------------- files


def test_files_open_with_simpleitk_and_pyav(tiny):
    path, df, truth = tiny
    assert list(df.columns[:9]) == ["case_id", "label", "split", "group", "center", "image", "image_mask", "video", "video_mask"]
    for col in ("age", "sex", "size_mm", "location", "margin", "extrathyroidal_extension", "echogenic_foci", "ceus_peak_intensity"):
        assert col in df.columns and df[col].notna().all()
    for r in df.head(6).itertuples():
        img = np.asarray(Image.open(resolve(path, r.image)))
        assert img.dtype == np.uint8 and img.shape == (64, 64)
        for col, shape in (("image_mask", (1, 64, 64)), ("video_mask", (1, 48, 48))):
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(resolve(path, getattr(r, col)))))
            assert arr.shape == shape and arr.dtype == np.uint8 and set(np.unique(arr)) == {0, 1}
        with av.open(str(resolve(path, r.video))) as c:
            frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
            assert c.streams.video[0].codec_context.name == "mjpeg"
        assert len(frames) == 20 and frames[0].shape == (48, 48)
        assert (path.parent / truth.loc[truth.case_id == r.case_id, "image_signal"].item()).is_file()


def test_read_mask_returns_exactly_the_drawn_mask(tmp_path):
    rng = np.random.default_rng(0)
    drawn = rng.random((37, 53)) < 0.3  # not square: a transposed read would fail
    write_mask(tmp_path / "m.nii.gz", drawn)
    assert np.array_equal(read_mask(tmp_path / "m.nii.gz"), drawn)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nii.gz")))
    assert raw.shape == (1, 37, 53) and raw.dtype == np.uint8


def test_masks_align_with_the_nodule(tiny):
    path, df, truth = tiny
    darker = 0
    for r, t in zip(df.itertuples(), truth.itertuples()):
        img = np.asarray(Image.open(resolve(path, r.image))).astype(float)
        m = read_mask(resolve(path, r.image_mask))
        ring = ndimage.binary_dilation(m, iterations=3) & ~m
        darker += img[m].mean() < img[ring].mean()
        rows, cols = np.nonzero(m)
        assert abs(cols.mean() - t.image_cx) < 1e-6 and abs(rows.mean() - t.image_cy) < 1e-6
        signal = read_mask(path.parent / t.image_signal)
        assert signal[m].all() and signal.sum() > m.sum()  # nodule plus a margin band
    assert darker >= 0.9 * len(df)  # hypoechoic nodule (a bright macrocalcification may win in a tiny one)


def test_video_nodule_follows_its_time_intensity_curve(tiny):
    path, df, truth = tiny
    hypo = truth[truth.peak_ratio < 0.8]
    assert len(hypo) >= 3
    ratios = []
    for t in hypo.itertuples():
        r = df.set_index("case_id").loc[t.case_id]
        m = read_mask(resolve(path, r.video_mask))
        ring = ndimage.binary_dilation(m, iterations=4) & ~ndimage.binary_dilation(m, iterations=1)
        frames = np.stack([f for _, f in iter_frames(resolve(path, r.video))]).astype(float)
        inside, outside = frames[:, m].mean(1), frames[:, ring].mean(1)
        assert outside[0] < 0.25 * outside.max()  # before arrival the frame is dark
        ratios.append(inside.mean() / outside.mean())  # a few pixels at 48 px: speckle is loud
    assert np.median(ratios) < 0.9  # hypo-enhancing nodules


def test_gamma_variate_shape():
    t = np.linspace(0, 30, 301)
    c = gamma_variate(t, arrival=5.0, ttp=12.0, alpha=1.5, peak=0.8)
    assert np.all(c[t <= 5.0] == 0)
    assert t[np.argmax(c)] == pytest.approx(12.0, abs=0.1) and c.max() == pytest.approx(0.8, abs=1e-3)
    assert c[-1] < 0.3 * c.max()  # wash-out


def test_validate_reports_no_problem(tiny):
    path, df, _ = tiny
    table, problems = validate(path)
    assert problems == [] and len(table) == 24


# --------------------------------------------------------------------------- the table


def test_split_counts_match_the_reference_study():
    c = split_counts(396)
    assert c == {"train": (225, 55), "test": (89, 27)}
    cohort, _ = draw_cohort_table(SynthConfig(n=396, seed=0))
    counts = cohort.groupby(["split", "label"]).size()
    assert counts[("train", 1)] == 55 and counts[("train", 0)] == 225
    assert counts[("test", 1)] == 27 and counts[("test", 0)] == 89
    assert set(cohort.center) == {"center1", "center2"} and cohort.case_id.is_unique


def test_other_sizes_keep_the_proportions(tiny):
    _, df, _ = tiny
    c = split_counts(24)
    assert c == {"train": (14, 3), "test": (5, 2)}
    assert (df.split == "test").sum() == 7 and df.label.sum() == 5
    for n in (4, 10, 1000):
        (trn, trp), (ten, tep) = split_counts(n)["train"], split_counts(n)["test"]
        assert trn + trp + ten + tep == n and min(trn, trp, ten, tep) >= 1


def test_covariates_resemble_table1(big_table):
    cohort, _ = big_table
    neg, pos = cohort[cohort.label == 0], cohort[cohort.label == 1]
    assert neg.size_mm.mean() == pytest.approx(10.77, abs=0.4) and neg.size_mm.std() == pytest.approx(6.30, abs=0.5)
    assert pos.size_mm.mean() == pytest.approx(15.69, abs=0.8) and pos.size_mm.std() == pytest.approx(8.55, abs=0.9)
    assert neg.age.mean() == pytest.approx(42.84, abs=0.8) and pos.age.mean() == pytest.approx(40.13, abs=1.5)
    assert (neg.sex == "male").mean() == pytest.approx(0.218, abs=0.03) and (pos.sex == "male").mean() == pytest.approx(0.382, abs=0.06)
    assert (neg.margin == "ill-defined").mean() == pytest.approx(0.356, abs=0.03)
    assert (pos.margin == "ill-defined").mean() == pytest.approx(0.927, abs=0.03)
    assert (neg.extrathyroidal_extension == "yes").mean() < 0.02
    assert (pos.extrathyroidal_extension == "yes").mean() == pytest.approx(0.60, abs=0.05)
    assert (neg.echogenic_foci == "microcalcification").mean() == pytest.approx(0.613, abs=0.03)
    assert (pos.echogenic_foci == "microcalcification").mean() == pytest.approx(0.782, abs=0.05)
    assert (neg.ceus_peak_intensity == "hypo").mean() == pytest.approx(0.698, abs=0.04)
    assert (pos.ceus_peak_intensity == "hypo").mean() == pytest.approx(0.91, abs=0.05)


def test_static_and_dynamic_signals_exist(big_table):
    _, truth = big_table
    y = truth.label.to_numpy()

    def auc(cols):
        X = truth[cols].to_numpy()
        return roc_auc_score(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])

    a_static, a_dynamic = auc(["static_latent"]), auc(["dynamic_latent"])
    a_both = auc(["static_latent", "dynamic_latent"])
    assert 0.6 < a_static < 0.8 and 0.65 < a_dynamic < 0.85
    assert a_static < a_dynamic  # the video carries more than the still
    assert a_both > max(a_static, a_dynamic) + 0.03 and a_both < 0.9  # fusion helps, nothing near-perfect
    # the rendered parameters follow the latents
    assert np.corrcoef(truth.static_latent, truth.margin_irregularity)[0, 1] > 0.9
    assert np.corrcoef(truth.dynamic_latent, np.log(truth.peak_ratio))[0, 1] < -0.9


# --------------------------------------------------------------------------- determinism and safety


def test_same_seed_same_cohort_regardless_of_workers(tmp_path):
    cfg = SynthConfig(n=5, seed=7, size=40, fps=2, duration=4)
    a = generate(tmp_path / "a", cfg, workers=1)
    b = generate(tmp_path / "b", cfg, workers=2)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "truth.csv").read_bytes() == (tmp_path / "b" / "truth.csv").read_bytes()
    df = pd.read_csv(a)
    for r in df.itertuples():
        assert np.array_equal(np.asarray(Image.open(resolve(a, r.image))), np.asarray(Image.open(resolve(b, r.image))))
        fa = np.stack([f for _, f in iter_frames(resolve(a, r.video))])
        fb = np.stack([f for _, f in iter_frames(resolve(b, r.video))])
        assert np.array_equal(fa, fb)
        assert filecmp.cmp(resolve(a, r.video_mask), resolve(b, r.video_mask), shallow=False)
    c = generate(tmp_path / "c", SynthConfig(n=5, seed=8, size=40, fps=2, duration=4), workers=1)
    assert c.read_bytes() != a.read_bytes()


def test_refuses_to_overwrite_a_cohort(tmp_path):
    cfg = SynthConfig(n=4, seed=1, size=32, fps=1, duration=3)
    generate(tmp_path, cfg, workers=1)
    with pytest.raises(CeusError, match="already holds a cohort"):
        generate(tmp_path, cfg, workers=1)
    assert generate(tmp_path, cfg, workers=1, overwrite=True).is_file()
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporary file


def test_bad_config_is_one_clear_error(tmp_path):
    with pytest.raises(CeusError, match="--n must be at least 4"):
        generate(tmp_path, SynthConfig(n=2))
    with pytest.raises(CeusError, match="--fps"):
        draw_cohort_table(SynthConfig(fps=0))


def test_cli_synth(tmp_path, capsys):
    from cli_run import exit_code as run

    args = ["synth", "--out", str(tmp_path), "--n", "4", "--size", "32", "--fps", "1", "--duration", "3", "--workers", "1"]
    assert run(args) == 0 and (tmp_path / "cohort.csv").is_file()
    assert run(args) == 2 and "already holds a cohort" in capsys.readouterr().err
    assert run(args + ["--overwrite"]) == 0


def test_experiment_controls_keep_the_default_cohort_and_untie_size():
    """signal / size_tied change only what they say: the default draw is untouched, untied sizes
    no longer differ by label, and a larger signal separates the latents more."""
    base_c, base_t = draw_cohort_table(SynthConfig(n=800, seed=3))
    c, t = draw_cohort_table(SynthConfig(n=800, seed=3, size_tied=False, signal=2.5))
    neg = base_c.label == 0
    pd.testing.assert_series_equal(c.loc[neg, "size_mm"], base_c.loc[neg, "size_mm"])  # negatives drawn as before
    assert base_c.loc[~neg, "size_mm"].mean() > base_c.loc[neg, "size_mm"].mean() + 2  # tied: positives larger
    assert abs(c.loc[~neg, "size_mm"].mean() - c.loc[neg, "size_mm"].mean()) < 1.5  # untied
    gap = lambda tt: tt.loc[tt.label == 1, "dynamic_latent"].mean() - tt.loc[tt.label == 0, "dynamic_latent"].mean()
    assert gap(t) == pytest.approx(2.5 * gap(base_t), rel=0.15)
    with pytest.raises(CeusError, match="--signal"):
        SynthConfig(signal=-1).check()


def test_motion_writes_the_truth_per_frame(tmp_path):
    """synth --motion (issue 26): the scene moves; the mask is drawn on the frame at video_box_time, the true box of
    every frame is in signal/<case>_video_path.csv, and --mask-per-frame writes those masks. Without either the
    cohort is the default one (no box time column, one mask for every frame)."""
    from ceusfusion.ingest.roi import bbox
    from ceusfusion.io.mask import read_mask

    cfg = SynthConfig(n=4, seed=2, size=48, fps=2.0, duration=8.0, motion=6.0, mask_per_frame=True)
    generate(tmp_path / "m", cfg, workers=1)
    cohort = pd.read_csv(tmp_path / "m" / "cohort.csv", dtype=str)
    for r in cohort.itertuples():
        path = pd.read_csv(tmp_path / "m" / "signal" / f"{r.case_id}_video_path.csv")
        masks = read_mask(tmp_path / "m" / r.video_mask)
        assert masks.shape == (16, 48, 48) and len(path) == 16
        for k, m in enumerate(masks):
            y0, x0, y1, x1 = bbox(m)
            assert (path.x[k], path.y[k], path.w[k], path.h[k]) == (x0, y0, x1 - x0, y1 - y0)
        assert 0 <= float(r.video_box_time) <= 7.5
        moved = np.hypot(path.x - path.x[0], path.y - path.y[0]).max()
        assert moved >= 3, moved  # the smooth path of about 6 px moves the nodule
    default, _ = draw_cohort_table(SynthConfig(n=4, seed=2, size=48, fps=2.0, duration=8.0))
    assert "video_box_time" not in default.columns
