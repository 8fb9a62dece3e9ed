"""Issue 16, "bad input that still crashes a whole command": each hostile file (made here, no real malware)
is one line naming the case, the file and the problem, never a traceback, and the other cases go through.
Also: the host and user name stay out of manifest.json and report.html unless asked for."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cli_run import exit_code
from ingest_fixtures import (
    ramp_video,
    write_avi,
    write_dicom,
    write_nifti_bomb,
    write_png,
    write_png_bomb,
    write_sitk_mask,
    write_video,
    zero_avi_rate,
)

from ceusfusion.core.errors import CeusError
from ceusfusion.ingest.cohort import validate
from ceusfusion.ingest.prepare import PrepareParams, prepare, prepare_image, prepare_video
from ceusfusion.io import mask as mask_module
from ceusfusion.io.image import read_image
from ceusfusion.io.mask import read_mask
from ceusfusion.io.video import probe_video

H, W = 24, 32


def _still(path):
    img = np.full((H, W), 60, np.uint8)
    img[6:18, 8:22] = 200
    return write_png(path, img)


def _mask(path, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[6:18, 8:22] = True
    return write_sitk_mask(path, m)


def _cohort(d, n=4, **column_files):
    """n cases with a good still each; ``column_files`` {"video": {1: "v1.avi"}, ...} adds files per case."""
    rows = []
    for i in range(n):
        _still(d / f"img{i}.png")
        row = {"case_id": f"c{i}", "label": i % 2, "image": f"img{i}.png"}
        for col, per_case in column_files.items():
            row[col] = per_case.get(i, "")
        rows.append(row)
    pd.DataFrame(rows).to_csv(d / "cohort.csv", index=False)
    return d / "cohort.csv"


def _validate_lines(manifest):
    _, problems = validate(manifest)
    return [p.line() for p in problems]


def _prepare(manifest, tmp_path, **kw):
    seen = []
    params = PrepareParams(size=16, frames=3, period=1.0, **kw)
    res = prepare(manifest, tmp_path / "run", params, progress=False, on_failure=lambda c, f, p: seen.append((c, f, p)))
    return res, seen


def _no_traceback(capfd):
    out = capfd.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "LinAlgError" not in text and "DLASCL" not in text, text
    return text


# --------------------------------------------------------------------------- decompression bombs


def test_png_bomb_is_one_problem_and_validate_still_checks_every_other_file(tmp_path, capfd):
    """Issue 16: a PNG whose header says 30000×30000 ended validate with PIL's DecompressionBombError."""
    manifest = _cohort(tmp_path)
    write_png_bomb(tmp_path / "img1.png")
    (tmp_path / "img2.png").unlink()
    lines = _validate_lines(manifest)
    assert any("case c1, column image: img1.png: image header declares 900.0 MP, over the limit of 50 MP" in line
               for line in lines), lines
    assert any("case c2, column image: img2.png: file not found" in line for line in lines), lines
    assert len(lines) == 2, lines
    assert exit_code(["validate", str(manifest)]) == 1
    _no_traceback(capfd)


def test_png_below_pillows_own_limit_is_refused_before_decoding(tmp_path):
    """Pillow only warns from 89 MP and refuses from 179 MP; ours is lower and refuses before any decoding."""
    write_png_bomb(tmp_path / "big.png", 9500, 9500)
    with pytest.raises(CeusError, match=r"big.png: image is 9500x9500 px \(90.2 MP\), over the limit"):
        read_image(tmp_path / "big.png")


def test_png_bomb_in_prepare_and_predict_is_one_line(tmp_path, capfd):
    """prepare: one failed case, the others prepared; predict reads its patient through the same functions."""
    from ceusfusion.deploy.predict import prepare_patient

    manifest = _cohort(tmp_path)
    write_png_bomb(tmp_path / "img3.png")
    res, seen = _prepare(manifest, tmp_path)
    assert res.n_ok == 3 and [(c, f) for c, f, _ in seen] == [("c3", "img3.png")]
    assert "img3.png: image header declares 900.0 MP" in seen[0][2]
    meta = {"prepare": PrepareParams(size=16).model_dump()}
    with pytest.raises(CeusError, match="img3.png: image header declares 900.0 MP"):
        prepare_patient(meta, image=tmp_path / "img3.png")
    with pytest.raises(CeusError, match="bomb.png: mask header declares 900.0 MP"):
        read_mask(write_png_bomb(tmp_path / "bomb.png"))
    _no_traceback(capfd)


def test_mask_header_over_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    """Issue 16: a 389 KB .nii.gz took 1.1 GB of memory: the header's size is checked before any voxel is read."""
    monkeypatch.setattr(mask_module, "decode_volume", lambda *a: pytest.fail("decoded before the size check"))
    path = write_nifti_bomb(tmp_path / "bomb.nii.gz", 20000, 20000, 8)
    assert path.stat().st_size < 2000
    with pytest.raises(CeusError, match=r"bomb.nii.gz: mask header declares 20000x20000 px x 8 slices .* over the limit"):
        read_mask(path)


def test_mask_size_is_checked_against_the_image_before_decoding(tmp_path, monkeypatch):
    """A mask of another size (or with more slices than one still) is refused from its header alone."""
    _still(tmp_path / "img.png")
    _mask(tmp_path / "small.nii.gz", 20, W)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, H, W), np.uint8)), str(tmp_path / "two.nii.gz"))
    monkeypatch.setattr(mask_module, "decode_volume", lambda *a: pytest.fail("decoded before the size check"))
    p = PrepareParams(size=16)
    with pytest.raises(CeusError, match="small.nii.gz: mask is 32x20 px but the image is 32x24 px"):
        prepare_image(tmp_path / "img.png", tmp_path / "small.nii.gz", p)
    with pytest.raises(CeusError, match="two.nii.gz: mask has 2 slices, expected one"):
        prepare_image(tmp_path / "img.png", tmp_path / "two.nii.gz", p)
    with pytest.raises(CeusError, match="bomb.nii.gz: mask header declares"):
        prepare_image(tmp_path / "img.png", write_nifti_bomb(tmp_path / "bomb.nii.gz"), p)


def test_validate_reports_a_mask_bomb_and_a_wrong_size_mask_per_case(tmp_path, capfd):
    manifest = _cohort(tmp_path, image_mask={0: "m0.nii.gz", 1: "bomb.nii.gz", 2: "small.nii.gz"})
    _mask(tmp_path / "m0.nii.gz")
    write_nifti_bomb(tmp_path / "bomb.nii.gz")
    _mask(tmp_path / "small.nii.gz", 20, W)
    lines = _validate_lines(manifest)
    assert any("case c1, column image_mask: bomb.nii.gz: mask header declares" in line for line in lines), lines
    assert any("case c2, column image_mask: small.nii.gz: mask is 32x20 px but the image is 32x24 px" in line for line in lines), lines
    assert len(lines) == 2, lines
    _no_traceback(capfd)


# --------------------------------------------------------------------------- paths: links and folders


def test_symlink_loop_is_one_failed_case_not_an_aborted_prepare(tmp_path, capfd):
    """Issue 16: a symlink loop aborted prepare for the whole cohort (RuntimeError in Path.resolve)."""
    manifest = _cohort(tmp_path)
    (tmp_path / "img1.png").unlink()
    os.symlink("img1.png", tmp_path / "img1.png")  # points at itself
    res, seen = _prepare(manifest, tmp_path)
    assert res.n_ok == 3 and len(seen) == 1
    case, file, problem = seen[0]
    assert (case, file) == ("c1", "img1.png") and "img1.png: symbolic link loop" in problem
    assert any("case c1, column image: img1.png: symbolic link loop" in line for line in _validate_lines(manifest))
    cohort = pd.read_csv(tmp_path / "run" / "cohort.csv")
    assert cohort["image"].iloc[1].endswith("img1.png")
    with pytest.raises(CeusError, match="symbolic link loop"):
        probe_video(tmp_path / "img1.png")
    _no_traceback(capfd)


def test_a_folder_given_as_a_file_is_called_a_folder(tmp_path):
    """Issue 16: a directory was reported as "file not found"."""
    (tmp_path / "scans").mkdir()
    for read in (read_image, read_mask, probe_video):
        with pytest.raises(CeusError, match="scans: is a folder, not a file"):
            read(tmp_path / "scans")
    manifest = _cohort(tmp_path)
    df = pd.read_csv(manifest)
    df.loc[0, "image"] = "scans"
    df.to_csv(manifest, index=False)
    assert any("case c0, column image: scans: is a folder, not a file" in line for line in _validate_lines(manifest))


def test_broken_link_and_missing_file_say_so(tmp_path):
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    with pytest.raises(CeusError, match="dangling.png: broken symbolic link"):
        read_image(tmp_path / "dangling.png")
    with pytest.raises(CeusError, match="absent.png: file not found"):
        read_image(tmp_path / "absent.png")


# --------------------------------------------------------------------------- frame timing


def test_avi_without_a_frame_rate_fails_with_the_reason(tmp_path, capfd):
    """Issue 16: an AVI with 0 fps gave 1.56 s for a 10 s video, silently (FFmpeg guesses 25 fps)."""
    write_avi(tmp_path / "v0.avi")
    zero_avi_rate(write_avi(tmp_path / "v1.avi"))
    with pytest.raises(CeusError, match="v1.avi: .*frame rate.*timing unusable"):
        probe_video(tmp_path / "v1.avi")
    assert probe_video(tmp_path / "v0.avi").duration_s == pytest.approx(10.0)
    manifest = _cohort(tmp_path, n=2, video={0: "v0.avi", 1: "v1.avi"})
    assert any("case c1, column video: v1.avi:" in line and "timing unusable" in line for line in _validate_lines(manifest))
    res, seen = _prepare(manifest, tmp_path)
    assert res.n_ok == 1 and [(c, f) for c, f, _ in seen] == [("c1", "v1.avi")] and "timing unusable" in seen[0][2]
    _no_traceback(capfd)


def _dicom_cohort(tmp_path, **dicom_kw):
    frames = ramp_video(n=12, size=W)[:, :H]
    write_dicom(tmp_path / "good.dcm", frames, frame_time_ms=250.0)
    write_dicom(tmp_path / "bad.dcm", frames, **dicom_kw)
    _mask(tmp_path / "vm.nii.gz")
    return _cohort(tmp_path, n=2, video={0: "good.dcm", 1: "bad.dcm"}, video_mask={0: "vm.nii.gz", 1: "vm.nii.gz"})


@pytest.mark.parametrize("dicom_kw, reason", [
    ({"frame_time_ms": -250.0}, "FrameTime is -250"),
    ({"frame_time_vector": [0.0] * 12}, "FrameTimeVector"),
    ({"frame_time_vector": [0.0, 100.0, -300.0] + [100.0] * 9}, "FrameTimeVector"),
])
def test_dicom_with_unusable_frame_timing_fails_with_the_reason(tmp_path, capfd, dicom_kw, reason):
    """Issue 16: FrameTime -250 gave negative times and was predicted; an all-zero FrameTimeVector ended in
    "unexpected LinAlgError: SVD did not converge" with LAPACK noise."""
    manifest = _dicom_cohort(tmp_path, **dicom_kw)
    res, seen = _prepare(manifest, tmp_path)
    assert res.n_ok == 1 and [(c, f) for c, f, _ in seen] == [("c1", "bad.dcm;vm.nii.gz")], seen
    assert "bad.dcm: " in seen[0][2] and reason in seen[0][2] and "timing unusable" in seen[0][2], seen
    assert any("case c1, column video: bad.dcm:" in line and reason in line for line in _validate_lines(manifest))
    with pytest.raises(CeusError, match=reason):
        prepare_video(tmp_path / "bad.dcm", tmp_path / "vm.nii.gz", PrepareParams(size=16, frames=3, period=1.0))
    _no_traceback(capfd)


def test_one_frame_video_names_the_file(tmp_path):
    """Issue 16: "video too short: 1 decodable frame(s)" did not say which file (predict prints it alone)."""
    write_video(tmp_path / "one.avi", ramp_video(n=1, size=W)[:, :H])
    with pytest.raises(CeusError, match=r"one.avi: video too short: 1 decodable frame"):
        prepare_video(tmp_path / "one.avi", None, PrepareParams(size=16, frames=3))


def test_video_mask_with_more_slices_than_the_video_has_frames_is_refused_before_decoding(tmp_path, monkeypatch):
    write_video(tmp_path / "v.avi", ramp_video(n=10, size=W)[:, :H])
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((400, H, W), np.uint8)), str(tmp_path / "vm.nii.gz"))
    _mask(tmp_path / "wide.nii.gz", H, W + 8)
    monkeypatch.setattr(mask_module, "decode_volume", lambda *a: pytest.fail("decoded before the size check"))
    p = PrepareParams(size=16, frames=3, period=0.2)
    with pytest.raises(CeusError, match="vm.nii.gz: mask has 400 slices but the video has 10 frames"):
        prepare_video(tmp_path / "v.avi", tmp_path / "vm.nii.gz", p)
    with pytest.raises(CeusError, match="wide.nii.gz: mask is 40x24 px but the video is 32x24 px"):
        prepare_video(tmp_path / "v.avi", tmp_path / "wide.nii.gz", p)


# --------------------------------------------------------------------------- the manifest table


def _manifest_lines(tmp_path, text):
    (tmp_path / "m.csv").write_text(text)
    _still(tmp_path / "a.png")
    return _validate_lines(tmp_path / "m.csv")


def test_duplicate_column_names_are_refused_not_renamed(tmp_path):
    """Issue 16: `label` twice became `label` and `label.1`, and label.1 was fused as a clinical covariate."""
    lines = _manifest_lines(tmp_path, "case_id,label,image,label\nc0,0,a.png,1\nc1,1,a.png,0\n")
    assert any("column 'label' appears 2 times" in line for line in lines), lines
    lines = _manifest_lines(tmp_path, "case_id,label,image, age,age \nc0,0,a.png,50,51\n")
    assert any("column 'age' appears 2 times" in line for line in lines), lines


def test_header_only_manifest_is_not_ok(tmp_path, capfd):
    """Issue 16: a manifest with a header and no row validated as "OK, 0 cases"."""
    lines = _manifest_lines(tmp_path, "case_id,label,image\n")
    assert any("no case" in line for line in lines), lines
    assert exit_code(["validate", str(tmp_path / "m.csv")]) == 1
    assert "OK" not in _no_traceback(capfd)


def test_semicolon_separated_manifest_says_the_delimiter_looks_wrong(tmp_path):
    """Issue 16: a ;-separated file was reported only as "required column is missing"."""
    lines = _manifest_lines(tmp_path, "case_id;label;image\nc0;0;a.png\nc1;1;a.png\n")
    assert len(lines) == 1 and "';'" in lines[0] and "delimiter" in lines[0], lines
    lines = _manifest_lines(tmp_path, "case_id\tlabel\timage\nc0\t0\ta.png\n")
    assert len(lines) == 1 and "tab" in lines[0] and "delimiter" in lines[0], lines


# --------------------------------------------------------------------------- host and user name


def test_environment_leaves_out_the_host_and_user_unless_asked(monkeypatch):
    """Issue 16: manifest.json and report.html recorded the host and user name; researchers share reports."""
    from ceusfusion.study import environment

    monkeypatch.delenv("CEUSFUSION_RECORD_HOST", raising=False)
    env = environment()
    assert "host" not in env and "user" not in env and env["torch"]
    monkeypatch.setenv("CEUSFUSION_RECORD_HOST", "1")
    assert {"host", "user"} <= set(environment())


def test_report_environment_never_shows_host_or_user(tmp_path):
    """Even a manifest.json written before (or with CEUSFUSION_RECORD_HOST) keeps them out of the report."""
    from ceusfusion.report.html import environment_section

    env = {"ceusfusion": "0", "python": "3", "host": "ward7-pc-secret", "user": "dr_jdoe_secret"}
    (tmp_path / "manifest.json").write_text(json.dumps({"environment": env}))
    html = environment_section(tmp_path)
    assert "python" in html and "secret" not in html and "host" not in html and "user" not in html
