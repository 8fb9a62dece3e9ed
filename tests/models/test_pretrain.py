"""Self-supervised pretraining: loss falls, weights load in every input mode, labels and the
test split are never used, seeds reproduce, resume continues exactly, probes run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ceusfusion.core.errors import CeusError
from ceusfusion.core.runtime import checkpoint_exists
from ceusfusion.models import pretrain as P
from ceusfusion.models.backbones import build_model
from ceusfusion.models.pretrain import frames as pretrain_frames
from ceusfusion.models.transforms import IMAGENET_MEAN, IMAGENET_STD

torch.set_num_threads(1)

SIZE = 32


def write_video(path: Path, seed: int, n: int = 10, fps: float = 4.0, side: int = 48) -> Path:
    """A tiny MP4 whose identity is a stripe pattern (period and angle per video) drifting
    slowly, plus frame noise: what two frames of one video share, and other videos lack. Every seed
    used here has its own period: two videos of one period whose angles differ by about pi show the
    same stripes, and provenance (rightly) takes one for a copy of the other."""
    import av

    rng = np.random.default_rng(seed)
    period, angle = 4.0 + 0.45 * (seed % 13), 0.45 * seed
    yy, xx = np.mgrid[0:side, 0:side]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=int(fps))
        s.width = s.height = side
        s.pix_fmt = "yuv420p"
        for t in range(n):
            phase = 2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle) + 0.5 * t) / period
            img = 128 + 80 * np.sin(phase) + rng.normal(0, 10, (side, side))
            img = np.clip(img, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(img[..., None], 3, -1), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_cohort(root: Path, n_train: int = 8, n_test: int = 2, label_garbage: bool = False) -> Path:
    vdir = root / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        write_video(vdir / f"c{i}.mp4", seed=i)
        label = "not-a-label" if label_garbage else str(i % 2)
        rows.append({"case_id": f"c{i}", "video": f"videos/c{i}.mp4", "label": label, "split": split,
                     "group": f"g{i // 2}" if split == "train" else f"t{i}"})
    path = root / "cohort.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def cfg(**kw) -> P.PretrainConfig:
    base = dict(arch="resnet18", size=SIZE, epochs=2, batch_size=16, frames_per_video=6, max_gap_s=1.0, seed=3,
                device="cpu", lr=1e-3)
    base.update(kw)
    return P.PretrainConfig(**base)


@pytest.fixture(scope="module")
def cohort(module_tmp_factory) -> Path:
    return make_cohort(module_tmp_factory.mktemp("pre"))


@pytest.fixture(scope="module")
def pretrained(cohort, module_tmp_factory) -> tuple[Path, dict]:
    out = module_tmp_factory.mktemp("w") / "r18.safetensors"
    vids, src = P.collect_videos(cohort)
    side = P.pretrain(vids, out, cfg(), sources=src)
    return out, side


def test_only_training_videos_and_no_label_column_are_read(cohort, tmp_path, monkeypatch):
    # a label column full of garbage would break any code that parsed it
    garbage = make_cohort(tmp_path, label_garbage=True)
    vids = P.manifest_videos(garbage)
    assert [v for v, _ in vids] == [f"c{i}" for i in range(8)]  # test cases c8, c9 are absent
    seen_cols = []
    real = pd.read_csv

    def spy(*a, **k):
        df = real(*a, **k)
        seen_cols.extend(df.columns)
        return df

    monkeypatch.setattr(pd, "read_csv", spy)
    P.manifest_videos(garbage)
    assert "label" not in seen_cols and "group" not in seen_cols
    with pytest.raises(CeusError, match="test split"):
        P.PretrainConfig(splits=("train", "test")).check()


def test_pretrain_ignores_garbage_labels_and_never_decodes_test_videos(tmp_path, monkeypatch):
    coh = make_cohort(tmp_path, n_train=4, n_test=2, label_garbage=True)
    opened = []
    real = P.extract_frames

    def spy(path, *a, **k):
        opened.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(pretrain_frames, "extract_frames", spy)
    vids, src = P.collect_videos(coh)
    side = P.pretrain(vids, tmp_path / "w.safetensors", cfg(epochs=1, frames_per_video=3))
    assert sorted(opened) == [f"c{i}.mp4" for i in range(4)]
    assert side["n_videos"] == 4 and side["labels_read"] is False


def test_loss_falls_and_sidecar(pretrained, cohort, tmp_path):
    out, side = pretrained
    assert side["n_videos"] == 8 and side["n_frames"] == 8 * 6
    assert json.loads(P.sidecar_path(out).read_text())["method"] == "simclr"
    assert not P.ckpt_dir(out).exists()
    # a few more epochs on the tiny cohort: the contrastive loss goes down
    vids, _ = P.collect_videos(cohort)
    s2 = P.pretrain(vids, tmp_path / "long.safetensors", cfg(epochs=5, frames_per_video=4, batch_size=8,
                                                             warmup_epochs=0.0, min_crop=0.8))
    losses = [h["loss"] for h in s2["loss_history"]]
    assert np.mean(losses[-2:]) < losses[0] - 0.2, losses


@pytest.mark.parametrize("mode,frames,fc", [("single", 1, 1), ("stack", 5, 1), ("temporal", 3, 1), ("stack", 2, 3)])
def test_weights_load_into_every_input_mode(pretrained, mode, frames, fc):
    out, _ = pretrained
    from safetensors.torch import load_file

    sd = load_file(str(out))
    assert "conv1.weight" in sd and sd["conv1.weight"].shape[1] == 3 and not any(k.startswith("fc.") for k in sd)
    torch.manual_seed(123)
    model, used = build_model("resnet18", mode, frames, fc, weights=str(out))
    assert used == f"file:{out}"
    torch.manual_seed(123)
    rand, _ = build_model("resnet18", mode, frames, fc, weights="none")
    w = model.encoder.layer1[0].conv1.weight
    assert torch.equal(w, sd["layer1.0.conv1.weight"])
    assert not torch.allclose(w, rand.encoder.layer1[0].conv1.weight)
    c1 = model.encoder.conv1.weight
    assert c1.shape[1] == (3 if mode in ("single", "temporal") else frames * fc)
    if mode == "stack":  # inflated from the pretrained RGB kernel
        assert torch.allclose(c1[:, :1], sd["conv1.weight"].mean(1, keepdim=True) * 3 / (frames * fc), atol=1e-6)


def test_same_seed_same_weights_other_seed_differs(pretrained, cohort, tmp_path):
    from safetensors.torch import load_file

    out, _ = pretrained
    vids, _ = P.collect_videos(cohort)
    P.pretrain(vids, tmp_path / "again.safetensors", cfg())
    a, b = load_file(str(out)), load_file(str(tmp_path / "again.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    P.pretrain(vids, tmp_path / "other.safetensors", cfg(seed=4, epochs=1))
    c = load_file(str(tmp_path / "other.safetensors"))
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_moco_resume_matches_uninterrupted_run(cohort, tmp_path):
    from safetensors.torch import load_file

    vids, _ = P.collect_videos(cohort)
    c = cfg(method="moco", batch_size=8, queue=32, frames_per_video=2)
    full = P.pretrain(vids, tmp_path / "full.safetensors", c)
    assert P.pretrain(vids, tmp_path / "part.safetensors", c, max_epochs_this_call=1) is None
    assert checkpoint_exists(P.checkpoint_path(tmp_path / "part.safetensors"))
    with pytest.raises(CeusError, match="settings differ"):
        P.pretrain(vids, tmp_path / "part.safetensors", cfg(method="moco", batch_size=8, queue=32,
                                                               frames_per_video=2, lr=0.5), resume=True)
    part = P.pretrain(vids, tmp_path / "part.safetensors", c, resume=True)
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "part.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in full["loss_history"]] == [h["loss"] for h in part["loss_history"]]
    with pytest.raises(CeusError, match="exists"):
        P.pretrain(vids, tmp_path / "full.safetensors", c)


def test_partners_are_same_video_within_the_gap():
    bank = P.FrameBank(torch.zeros(7, 4, 4, dtype=torch.uint8), np.array([0, 0.5, 1.0, 3.0, 0, 0.2, 9.0]),
                       np.array([0, 0, 0, 0, 1, 1, 2]), ["a", "b", "c"])
    lo, hi = P.partner_windows(bank, 0.6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = P.draw_partners(lo, hi, gen)
        assert (bank.video[p] == bank.video).all()
        assert (np.abs(bank.times[p] - bank.times) <= 0.6 + 1e-9).all()
        assert p[3] == 3 and p[6] == 6  # alone in its window
        assert (p[[0, 1, 2, 4, 5]] != [0, 1, 2, 4, 5]).all()


def test_augmentation_is_seeded_and_ultrasound_shaped():
    x = torch.randint(0, 256, (4, SIZE, SIZE), dtype=torch.uint8)
    aug = P.UltrasoundAugment(SIZE, torch.device("cpu"))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, SIZE, SIZE) and torch.equal(a, b)
    grey = a * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(grey[:, 0], grey[:, 2], atol=1e-5)  # no hue jitter: the 3 channels stay grey
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))


def test_probe_reads_training_labels_only(pretrained, cohort):
    out, _ = pretrained
    res = P.probe(cohort, out, "resnet18", SIZE, 6, seed=0, device="cpu", out_json=out.with_suffix(".probe.json"))
    assert res["n_videos"] == 8  # the 2 test videos are not used
    for k in ("pretrained", "random_init"):
        assert 0 <= res[k]["linear"]["oof_auc"] <= 1 and 0 <= res[k]["knn"]["oof_auc"] <= 1
    assert json.loads(out.with_suffix(".probe.json").read_text())["arch"] == "resnet18"


def test_unlabeled_folder_and_cli(tmp_path, cohort, capsys):
    from ceusfusion.cli import main

    extra = tmp_path / "extra" / "sub"
    extra.mkdir(parents=True)
    write_video(extra / "u1.mp4", seed=50)
    write_video(extra / "u2.MOV".lower(), seed=51)
    (extra / "notes.txt").write_text("x")
    vids = P.folder_videos(tmp_path / "extra")
    assert [v for v, _ in vids] == ["extra/sub/u1.mp4", "extra/sub/u2.mov"]
    out = tmp_path / "cli.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["pretrain", str(cohort), "--unlabeled", str(tmp_path / "extra"), "--arch", "resnet18", "--out", str(out),
              "--size", str(SIZE), "--epochs", "1", "--batch-size", "16", "--frames-per-video", "3",
              "--device", "cpu", "--no-progress"])
    assert e.value.code == 0, capsys.readouterr()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["n_videos"] == 10 and side["sources"]["unlabeled"][0]["videos"] == 2
    with pytest.raises(SystemExit) as e:
        main(["pretrain", str(cohort), "--out", str(tmp_path / "bad.safetensors"), "--arch", "resnet99"])
    assert e.value.code == 2 and "unknown architecture" in capsys.readouterr().err
