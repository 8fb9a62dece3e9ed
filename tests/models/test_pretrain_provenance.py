"""Pretraining provenance: the sidecar lists every video pretrained on (path, sha256, source), a cohort's
test-split videos are left out by default (also under --unlabeled, matched by path or content), and
train/study can refuse weights that saw their test cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.models import pretrain as P

torch.set_num_threads(1)

FAST = ["--arch", "resnet18", "--size", "16", "--epochs", "1", "--batch-size", "8", "--frames-per-video", "2",
        "--device", "cpu", "--no-progress"]


def write_video(path: Path, seed: int, n: int = 4, side: int = 32) -> Path:
    """A tiny MP4 of noise: its bytes (and so its sha256) differ per seed."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=4)
        s.width = s.height = side
        s.pix_fmt = "yuv420p"
        for _ in range(n):
            img = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_cohort(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """c0..c2 train, c3, c4 test; videos in root/videos."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_test):
        write_video(root / "videos" / f"c{i}.mp4", seed=i)
        rows.append({"case_id": f"c{i}", "video": f"videos/c{i}.mp4", "label": str(i % 2),
                     "split": "train" if i < n_train else "test"})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return root / "cohort.csv"


def cli(args: list[str], capsys) -> tuple[int, str]:
    from ceusfusion.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def world(module_tmp_factory):
    """A cohort, and an --unlabeled folder holding a renamed copy of test video c3, a link to test video c4
    and one video of its own."""
    root = module_tmp_factory.mktemp("prov")
    cohort = make_cohort(root)
    extra = root / "extra"
    extra.mkdir()
    shutil.copyfile(root / "videos" / "c3.mp4", extra / "renamed_copy.mp4")  # same content, other path
    (extra / "link.mp4").symlink_to(root / "videos" / "c4.mp4")  # same resolved path
    write_video(extra / "u1.mp4", seed=50)
    return root, cohort, extra


class Runs:
    """Weights pretrained by the CLI on cohort + --unlabeled, each run once when first asked for:
    ``runs["default"]``, and ``runs["included"]`` (with --include-test-videos)."""

    OPTIONS: ClassVar[dict[str, list[str]]] = {"default": [], "included": ["--include-test-videos"]}

    def __init__(self, world, out: Path):
        self.world, self.out, self.done = world, out, {}

    def __getitem__(self, name: str) -> Path:
        from ceusfusion.cli import main

        if name not in self.done:
            _, cohort, extra = self.world
            weights = self.out / f"{name}.safetensors"
            with pytest.raises(SystemExit) as e:
                main(["pretrain", str(cohort), "--unlabeled", str(extra), "--out", str(weights), *FAST,
                      *self.OPTIONS[name]])
            assert e.value.code == 0
            self.done[name] = weights
        return self.done[name]


@pytest.fixture(scope="module")
def runs(world, module_tmp_factory) -> Runs:
    return Runs(world, module_tmp_factory.mktemp("w"))


def sidecar(weights: Path) -> dict:
    return json.loads(P.sidecar_path(weights).read_text())


# ----------------------------------------------------------------------------- the pretraining side


def test_test_videos_under_unlabeled_are_left_out_and_every_used_video_is_recorded(runs, world):
    _, _, extra = world
    side = sidecar(runs["default"])
    assert side["n_videos"] == 4  # c0, c1, c2 and u1: the copy of c3 and the link to c4 are left out
    assert side["test_split_used"] is False and side["test_case_ids_used"] == []
    prov = side["provenance"]
    assert prov["test_video_policy"] == "exclude"
    assert prov["excluded_test_videos"]["count"] == 2 and prov["excluded_test_videos"]["case_ids"] == ["c3", "c4"]
    used = {Path(v["path"]).name: v for v in prov["videos"]}
    assert set(used) == {"c0.mp4", "c1.mp4", "c2.mp4", "u1.mp4"}
    for v in prov["videos"]:
        assert v["sha256"] == sha256_file(v["path"]) and v["bytes"] == Path(v["path"]).stat().st_size
    assert used["c0.mp4"]["source"] == "cohort" and used["c0.mp4"]["case_id"] == "c0"
    assert used["u1.mp4"]["source"] == "unlabeled" and used["u1.mp4"]["folder"] == str(extra)
    assert prov["weights_sha256"] == sha256_file(runs["default"])
    assert prov["cohort"]["test_cases"] == 2


def test_include_test_videos_keeps_them_and_the_record_says_so(runs):
    side = sidecar(runs["included"])
    assert side["test_split_used"] is True and side["test_case_ids_used"] == ["c3", "c4"]
    assert side["n_videos"] == 6 and side["provenance"]["test_video_policy"] == "include"
    tests = [v for v in side["provenance"]["videos"] if "test_case_id" in v]
    assert sorted(v["test_case_id"] for v in tests) == ["c3", "c4"]
    assert side["provenance"]["excluded_test_videos"]["count"] == 0


def test_include_test_videos_needs_a_cohort(world, tmp_path, capsys):
    _, _, extra = world
    code, err = cli(["pretrain", "--unlabeled", str(extra), "--out", str(tmp_path / "w.safetensors"), *FAST,
                     "--include-test-videos"], capsys)
    assert code == 2 and "needs a cohort" in err


def test_plain_video_list_with_a_test_video_is_recorded_as_used(world, tmp_path):
    """A caller-built list is not filtered, but the record is computed, not a constant."""
    root, cohort, _ = world
    vids = [("c0", root / "videos" / "c0.mp4"), ("c3", root / "videos" / "c3.mp4")]
    cfg = P.PretrainConfig(arch="resnet18", size=16, epochs=1, batch_size=8, frames_per_video=2, device="cpu")
    side = P.pretrain(vids, tmp_path / "w.safetensors", cfg, sources={"cohort": {"manifest": str(cohort)}})
    assert side["test_split_used"] is True and side["test_case_ids_used"] == ["c3"]
    assert side["provenance"]["test_video_policy"] == "caller-list"
    assert {v["source"] for v in side["provenance"]["videos"]} == {"cohort"}
    side = P.pretrain(vids, tmp_path / "nocohort.safetensors", cfg)
    assert side["test_split_used"] is None  # no cohort given: no test split known, said so


def test_plan_dedupes_by_content_and_keeps_ids_unique(world, tmp_path):
    root, cohort, _ = world
    for parent in ("a", "b"):  # two folders of the same name: ids would collide
        (tmp_path / parent / "same").mkdir(parents=True)
    write_video(tmp_path / "a" / "same" / "v.mp4", seed=60)
    write_video(tmp_path / "b" / "same" / "v.mp4", seed=61)
    shutil.copyfile(root / "videos" / "c1.mp4", tmp_path / "a" / "same" / "copy_of_train.mp4")
    plan = P.plan_videos(cohort, [tmp_path / "a" / "same", tmp_path / "b" / "same"])
    ids = [vid for vid, _ in plan]
    assert len(ids) == len(set(ids)) == 5  # c0..c2 + two v.mp4; the copy of c1 is c1
    assert "same/copy_of_train.mp4" not in ids and "same/v.mp4#2" in ids
    files = P.cohort_files(cohort)
    assert files.case_of(str((root / "videos" / "c4.mp4").resolve()), None, None, "test") == "c4"  # by path alone


def test_importing_pretrain_does_not_import_models_train():
    """models.train imports .provenance at load time: the pretrain package must not need models.train then."""
    code = "import sys, ceusfusion.models.pretrain.provenance; assert 'ceusfusion.models.train' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


# ----------------------------------------------------------------------------- the train/study side


def test_check_refuses_weights_pretrained_on_test_cases_unless_allowed(runs, world):
    _, cohort, _ = world
    with pytest.raises(CeusError) as e:
        P.check_pretrain_weights(runs["included"], cohort)
    msg = str(e.value)
    assert "\n" not in msg and str(runs["included"]) in msg and "2 test-split video(s)" in msg
    assert "case ids c3, c4" in msg and "--allow-pretrain-overlap" in msg
    fact = P.check_pretrain_weights(runs["included"], cohort, allow_test_overlap=True)
    matches = fact.pop("test_overlap_matches")
    assert fact == {"weights": str(runs["included"]), "sha256": sha256_file(runs["included"]), "record": "present",
                    "record_version": P.provenance.RECORD_VERSION, "note": None, "n_videos": 6,
                    "matched_by": ["path", "sha256", "perceptual"], "perceptual_videos": 6,
                    "test_overlap_check": "decoded content", "test_overlap": ["c3", "c4"], "test_overlap_videos": 2,
                    "allowed": True, "transductive_train_frames": True, "train_cases_seen": 3}
    assert sorted((m["case_id"], m["how"]) for m in matches) == [("c3", "sha256"), ("c4", "path")]  # a copy, a link


def test_check_passes_clean_weights_and_sees_training_frames(runs, world, tmp_path):
    root, cohort, _ = world
    fact = P.check_pretrain_weights(runs["default"], cohort)
    assert fact["test_overlap"] == [] and fact["record"] == "present" and fact["transductive_train_frames"] is True
    # the same cohort as a table with absolute paths (RUN/cohort.csv), and another cohort it never saw
    df = pd.read_csv(cohort, dtype=str)
    df["video"] = [str((root / v).resolve()) for v in df["video"]]
    assert P.pretrain_overlap(runs["default"], df).train_cases == ("c0", "c1", "c2")
    other = make_cohort(tmp_path / "other", n_train=1, n_test=1)
    for i in range(2):
        write_video(tmp_path / "other" / "videos" / f"c{i}.mp4", seed=100 + i)
    ov = P.pretrain_overlap(runs["default"], other)
    assert ov.test_cases == () and not ov.transductive_train_frames


def test_overlap_by_a_test_case_image(tmp_path):
    """A pretraining file that is a test case's image (e.g. a DICOM cine) counts as overlap too."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "t.dcm").write_bytes(b"image of test case t")
    (tmp_path / "img" / "r.dcm").write_bytes(b"image of train case r")
    pd.DataFrame([{"case_id": "r", "image": "img/r.dcm", "split": "train"},
                  {"case_id": "t", "image": "img/t.dcm", "split": "test"}]).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "u").mkdir()
    shutil.copyfile(tmp_path / "img" / "t.dcm", tmp_path / "u" / "x.dcm")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    plan = P.given_plan([("x", tmp_path / "u" / "x.dcm")])
    P.sidecar_path(weights).write_text(json.dumps(P.provenance_record(plan, ["x"], sha256_file(weights))))
    ov = P.pretrain_overlap(weights, tmp_path / "c.csv")
    assert ov.test_cases == ("t",) and ov.test_videos == 1 and not ov.transductive_train_frames


def test_weights_without_a_record_are_allowed_and_said_so(tmp_path):
    pd.DataFrame([{"case_id": "a", "video": "a.mp4", "split": "test"}]).to_csv(tmp_path / "c.csv", index=False)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"some torchvision weights")
    fact = P.check_pretrain_weights(weights, tmp_path / "c.csv")
    assert fact["record"] == "absent" and fact["note"].startswith(P.NO_RECORD) and fact["test_overlap"] == []
    P.sidecar_path(weights).write_text(json.dumps({"arch": "resnet18", "test_split_used": False}))  # older sidecar
    assert P.check_pretrain_weights(weights, tmp_path / "c.csv")["record"] == "absent"
    assert P.check_pretrain_weights("imagenet", tmp_path / "c.csv") is None
    assert P.check_pretrain_weights(None, tmp_path / "c.csv") is None
    with pytest.raises(CeusError, match="not found"):
        P.check_pretrain_weights(tmp_path / "missing.safetensors", tmp_path / "c.csv")


def _record(weights: Path, **change) -> dict:
    prov = {"version": 1, "weights_sha256": sha256_file(weights), "videos": [{"id": "v", "path": "/x.mp4",
                                                                            "bytes": 3, "sha256": "ab"}]}
    prov.update(change)
    return {"test_split_used": False, "provenance": prov}


@pytest.mark.parametrize("content,problem", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "not a JSON object"),
    ("\xff\xfe", "is not JSON"),
    ({"test_split_used": "no", "provenance": {}}, "test_split_used is not true"),
    ({"provenance": []}, "provenance is not an object"),
    ("version=\"1\"", "provenance.version is not an integer"),
    ("version=99", "newer than this ceusfusion reads"),
    ("videos={}", "provenance.videos is not a list"),
    ("videos=[3]", "videos[0] is not an object"),
    ("videos=[{\"path\": 5}]", "videos[0].path is not a string"),
    ("videos=[{\"path\": \"/a\", \"sha256\": 1}]", "videos[0].sha256 is not a string"),
    ("videos=[{\"path\": \"/a\", \"bytes\": true}]", "videos[0].bytes is not an integer"),
    ("weights_sha256=\"0000\"", "of other weights"),
])
def test_hostile_sidecars_give_one_line_errors_naming_the_file(tmp_path, content, problem):
    pd.DataFrame([{"case_id": "a", "video": "a.mp4", "split": "test"}]).to_csv(tmp_path / "c.csv", index=False)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    side = P.sidecar_path(weights)
    if isinstance(content, dict):
        side.write_text(json.dumps(content))
    elif "=" in content and not content.startswith("{"):
        key, value = content.split("=", 1)
        side.write_text(json.dumps(_record(weights, **{key: json.loads(value)})))
    else:
        side.write_bytes(content.encode("latin-1"))
    with pytest.raises(CeusError) as e:
        P.check_pretrain_weights(weights, tmp_path / "c.csv", allow_test_overlap=True)
    assert str(side) in str(e.value) and problem in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the training side


def test_train_refuses_weights_that_saw_its_test_videos_unless_allowed(runs, world, tmp_path):
    """`train --weights W` on a run whose RUN/cohort.csv has test videos W was pretrained on."""
    from fake_run import make_fake_run

    from ceusfusion.models.train import TrainConfig, train

    root, cohort, _ = world
    run = make_fake_run(tmp_path / "run", n_train=12, n_test=2, size=20, frames=2, group_size=1, with_video=False)
    df = pd.read_csv(cohort, dtype=str)
    df["video"] = [str((root / v).resolve()) for v in df["video"]]
    df.to_csv(run / "cohort.csv", index=False)
    cfg = dict(modality="image", arch="resnet18", weights=str(runs["included"]), epochs=1, folds=2, batch_size=4,
               crop=16, name="m")
    with pytest.raises(CeusError, match="--allow-pretrain-overlap"):
        train(run, TrainConfig(**cfg), progress=False)
    assert not (run / "models" / "m").exists()  # a refused --weights leaves nothing behind
    summary = train(run, TrainConfig(**cfg, allow_pretrain_overlap=True), progress=False)
    fact = summary["pretrain_provenance"]
    assert fact["test_overlap"] == ["c3", "c4"] and fact["allowed"] is True
    assert json.loads((run / "models" / "m" / "summary.json").read_text())["pretrain_provenance"] == fact


# ----------------------------------------------------------------------------- copies that are not byte-identical


def write_smooth_video(path: Path, seed: int, codec: str = "mpeg4", n: int = 12, side: int = 64,
                       options: dict | None = None) -> Path:
    """A video with image structure (a drifting smooth random field plus speckle), like ultrasound more than noise."""
    import av

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (side // 8 + 2, side // 8 + 2))
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=8)
        s.width = s.height = side
        s.pix_fmt = "yuv420p"
        s.options = options or {}
        for k in range(n):
            field = np.kron(coarse, np.ones((8, 8)))[k % 8:k % 8 + side, :side]
            img = np.clip(field + rng.normal(0, 12, (side, side)), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(np.repeat(img[..., None], 3, 2), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def reencode(src: Path, dst: Path, codec: str, options: dict) -> Path:
    """The frames of ``src`` written again with another codec / quality (a re-encoded copy)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        si = i.streams.video[0]
        s = o.add_stream(codec, rate=si.average_rate)
        s.width, s.height, s.pix_fmt, s.options = si.codec_context.width, si.codec_context.height, "yuv420p", options
        for frame in i.decode(si):
            for p in s.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    return dst


@pytest.fixture(scope="module")
def copies(module_tmp_factory):
    """Cohort s0, s1 (train), s2, s3 (test) of structured videos; under extra/: test video s2 re-encoded
    (H.264 in Matroska), test video s3 with one byte appended, and a video of its own."""
    root = module_tmp_factory.mktemp("copies")
    (root / "videos").mkdir()
    rows = [{"case_id": f"s{i}", "video": str(write_smooth_video(root / "videos" / f"s{i}.mp4", 10 + i)),
             "split": "train" if i < 2 else "test"} for i in range(4)]
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    extra = root / "extra"
    extra.mkdir()
    reencode(root / "videos" / "s2.mp4", extra / "reencoded.mkv", "libx264", {"crf": "30"})
    (extra / "appended.mp4").write_bytes((root / "videos" / "s3.mp4").read_bytes() + b"\0")
    write_smooth_video(extra / "other.mp4", 99)
    return root, root / "cohort.csv", extra


def record_of(weights: Path, videos: list[Path], version: int | None = None) -> Path:
    """The weights' sidecar listing ``videos`` as pretrained on (``version``: make it an older record)."""
    weights.write_bytes(b"weights " + weights.name.encode())
    rec = P.provenance_record(P.given_plan([(v.name, v) for v in videos]), [v.name for v in videos],
                              sha256_file(weights))
    if version == 1:
        rec["provenance"]["version"] = 1
        for v in rec["provenance"]["videos"]:
            v.pop("phash")
    P.sidecar_path(weights).write_text(json.dumps(rec))
    return weights


def test_a_reencoded_or_appended_copy_of_a_test_video_is_left_out_of_pretraining(copies):
    root, cohort, extra = copies
    assert sha256_file(extra / "appended.mp4") != sha256_file(root / "videos" / "s3.mp4")
    plan = P.plan_videos(cohort, [extra])
    left_out = {Path(e["path"]).name: e for e in plan.excluded}
    assert set(left_out) == {"reencoded.mkv", "appended.mp4"}
    assert left_out["reencoded.mkv"]["test_case_id"] == "s2" and left_out["appended.mp4"]["test_case_id"] == "s3"
    assert {e["test_match"]["how"] for e in left_out.values()} == {"perceptual"}
    kept = {Path(p).name for _, p in plan}
    assert kept == {"s0.mp4", "s1.mp4", "other.mp4"}  # a video of its own is not a test case
    assert all(len(e["phash"]["frames"]) == len(P.provenance.PHASH_POSITIONS) for e in plan.entries)


def test_weights_pretrained_on_such_copies_are_refused_and_the_facts_say_how(copies, tmp_path):
    root, cohort, extra = copies
    weights = record_of(tmp_path / "w.safetensors", [extra / "reencoded.mkv", extra / "appended.mp4", extra / "other.mp4"])
    with pytest.raises(CeusError, match=r"2 test-split video\(s\).*s2, s3"):
        P.check_pretrain_weights(weights, cohort)
    fact = P.check_pretrain_weights(weights, cohort, allow_test_overlap=True)
    assert fact["test_overlap"] == ["s2", "s3"] and fact["record"] == "present" and fact["record_version"] == 2
    assert fact["matched_by"] == ["path", "sha256", "perceptual"] and fact["test_overlap_check"] == "decoded content"
    how = {Path(m["video"]).name: (m["case_id"], m["how"]) for m in fact["test_overlap_matches"]}
    assert how == {"reencoded.mkv": ("s2", "perceptual"), "appended.mp4": ("s3", "perceptual")}
    assert all(m["distance"] <= P.provenance.PHASH_MAX for m in fact["test_overlap_matches"])
    assert fact["train_cases_seen"] == 0  # the video of its own is no training case either


def test_a_different_video_is_not_a_test_case(copies, tmp_path):
    root, cohort, extra = copies
    weights = record_of(tmp_path / "w.safetensors", [extra / "other.mp4", root / "videos" / "s0.mp4"])
    fact = P.check_pretrain_weights(weights, cohort)
    assert fact["test_overlap"] == [] and fact["test_overlap_check"] == "decoded content"
    assert fact["train_cases_seen"] == 1  # s0 by path


def test_older_records_are_read_and_say_what_they_could_not_check(copies, tmp_path):
    root, cohort, extra = copies
    weights = record_of(tmp_path / "w.safetensors", [extra / "reencoded.mkv"], version=1)
    fact = P.check_pretrain_weights(weights, cohort)
    assert fact["record_version"] == 1 and fact["matched_by"] == ["path", "sha256"]
    assert fact["test_overlap_check"] == "bytes only" and fact["test_overlap"] == []
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(b"self-supervised weights without their sidecar")
    fact = P.check_pretrain_weights(bare, cohort)
    assert fact["record"] == "absent" and fact["test_overlap_check"] == "no" and fact["matched_by"] == []
    fact = P.check_pretrain_weights(weights, None)  # a run without RUN/cohort.csv: nothing to compare with
    assert fact["record"] == "present" and fact["test_overlap_check"] == "no"
