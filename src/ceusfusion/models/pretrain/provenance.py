"""Pretraining provenance: which videos the weights saw (path, content hash, source), and which of a
cohort's cases those videos are.

Why: weights pretrained on a cohort's test videos have seen the very patients they are later scored
on, so the test AUC is no longer that of unseen patients. :func:`plan_videos` leaves a given cohort's
test-split videos out by default, also when a copy sits under an ``--unlabeled`` folder (matched by
resolved path or by content hash); :func:`provenance_record` writes what was really pretrained on
into the sidecar; :func:`pretrain_overlap` and :func:`check_pretrain_weights` compare that record
with the cohort of a later ``train`` or ``study``.

A manifest is read with only ``case_id``, ``image``, ``video`` and ``split`` (never labels). A file is
the same as a case's file by resolved path, by content (sha256; a cohort file is hashed only when its
size equals that of the video it is compared with), or, for videos, by what it shows: a perceptual
hash of a few decoded frames (:func:`perceptual_hash`), so a re-encoded copy of a test video, or one
with a byte appended, is still that test case. Only those few frames are decoded (``io.video.frames_at``:
a seek to each of :data:`PHASH_POSITIONS`), once per file and process.

The perceptual hash: at each of five relative positions, three consecutive frames (a copy may start a
frame later), each a 16 x 17 area-mean thumbnail of the grey frame, standardised, whose horizontal
differences give two bits each (above +0.05 SD, below -0.05 SD: a difference hash with a dead zone, so
flat regions such as a black border give no bits). Two videos' distance: at each position the least
Jaccard distance (differing bits / bits set in either) over the 3 x 3 frame pairs, averaged over the
positions; the same video when at most :data:`PHASH_MAX`. On the synthetic cohort (pure-speckle
CEUS, fresh speckle every frame: a hard case) copies re-encoded by x264 (crf 20, 35) or MPEG-4 gave
at most 0.16 (0.26 with half of each frame black), different videos at least 0.50 (0.33).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.io.filetypes import VIDEO_SUFFIXES, kind_of
from ceusfusion.io.video import frames_at
from ceusfusion.models.pretrain.frames import folder_videos, manifest_videos, read_columns

# 2: each video's perceptual hash ("phash"); version 1 records (path, bytes, sha256) are still read
RECORD_VERSION = 2
PHASH_POSITIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # relative positions of the hashed frames
PHASH_RUN = 3  # consecutive frames hashed at each position
PHASH_SIDE = 16  # thumbnail rows (columns: one more)
PHASH_DEAD_ZONE = 0.05  # in SDs of the thumbnail: smaller differences give no bit
PHASH_MAX = 0.28  # the largest distance of two videos that are the same (module docstring)
PHASH_METHOD = "dhash2-16x17-run3@0.1,0.3,0.5,0.7,0.9"  # recorded: hashes of another method are not compared
CASE_FILE_COLUMNS = ("image", "video")  # a case's files a pretraining video can be a copy of
READ_COLUMNS = ("case_id", "split") + CASE_FILE_COLUMNS  # the only manifest columns read here
NO_RECORD = "no provenance record"
POLICIES = ("exclude", "include", "caller-list")  # what happened to a cohort's test-split videos
SHOWN_IDS = 10  # case ids named in a one-line message


def sidecar_path(out: str | Path) -> Path:
    """The JSON sidecar beside a weights file (``W.safetensors`` -> ``W.json``)."""
    return Path(out).with_suffix(".json")


# ----------------------------------------------------------------------------- files and their content


@functools.lru_cache(maxsize=65536)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def content_hash(path: str | Path) -> str | None:
    """sha256 of a file, memoised on (path, size, mtime) so a cohort is hashed once per process; None if unreadable."""
    try:
        st = os.stat(path)
        return _sha256_of(str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return None


def thumbnail(gray: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-mean ``rows`` x ``cols`` thumbnail of a grey frame (float64)."""
    a = np.asarray(gray, np.float64)
    if a.ndim == 3:
        a = a.mean(axis=2)
    a = np.repeat(np.repeat(a, -(-rows // a.shape[0]), 0), -(-cols // a.shape[1]), 1)  # a frame smaller than it
    r = np.linspace(0, a.shape[0], rows + 1).astype(int)
    c = np.linspace(0, a.shape[1], cols + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(a, r[:-1], axis=0), c[:-1], axis=1)
    return sums / np.outer(np.diff(r), np.diff(c))


def frame_bits(gray: np.ndarray) -> np.ndarray:
    """A frame's difference hash with a dead zone: packed bits (uint8, 64 bytes)."""
    t = thumbnail(gray, PHASH_SIDE, PHASH_SIDE + 1)
    t = (t - t.mean()) / max(float(t.std()), 1.0)
    d = np.diff(t, axis=1)
    return np.packbits(np.concatenate([(d > PHASH_DEAD_ZONE).ravel(), (d < -PHASH_DEAD_ZONE).ravel()]))


@functools.lru_cache(maxsize=65536)
def _phash_of(path: str, size: int, mtime_ns: int) -> dict | None:
    if kind_of(Path(path), VIDEO_SUFFIXES) is None:
        return None
    try:
        runs = frames_at(path, PHASH_POSITIONS, PHASH_RUN)
    except Exception:  # an unreadable video has no perceptual hash; it is still matched by path and bytes
        return None
    return {"method": PHASH_METHOD, "frames": [[frame_bits(f).tobytes().hex() for f in run] for run in runs]}


def perceptual_hash(path: str | Path) -> dict | None:
    """A video's perceptual hash (module docstring), memoised on (path, size, mtime) like
    :func:`content_hash`; None for a file that is not a readable video."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _phash_of(str(path), st.st_size, st.st_mtime_ns)


def phash_array(phash) -> np.ndarray | None:
    """A recorded hash as ((positions, run, 64) uint8 packed bits, (positions, run) bool: the frame
    exists), or None when it is not one of :data:`PHASH_METHOD`'s."""
    if not isinstance(phash, dict) or phash.get("method") != PHASH_METHOD:
        return None
    frames = phash.get("frames")
    if not isinstance(frames, list) or len(frames) != len(PHASH_POSITIONS):
        return None
    out = np.zeros((len(PHASH_POSITIONS), PHASH_RUN, 64), np.uint8)
    seen = np.zeros(out.shape[:2], bool)
    try:
        for i, run in enumerate(frames):
            for j, h in enumerate(run[:PHASH_RUN]):
                out[i, j] = np.frombuffer(bytes.fromhex(h), np.uint8)
                seen[i, j] = True
    except (TypeError, ValueError):
        return None
    return out, seen


def phash_distances(query, table) -> np.ndarray:
    """Distance of one hash (:func:`phash_array`) to each of a table of them (stacked): per position the
    least Jaccard distance over frame pairs, averaged over positions with bits; 1 where none has any."""
    (q, qs), (t, ts) = query, table
    x = np.bitwise_count(t[:, :, :, None, :] ^ q[None, :, None, :, :]).sum(-1).astype(float)
    u = np.bitwise_count(t[:, :, :, None, :] | q[None, :, None, :, :]).sum(-1).astype(float)
    ok = ts[:, :, :, None] & qs[None, :, None, :] & (u > 0)
    d = np.where(ok, x / np.maximum(u, 1), np.inf).min(axis=(2, 3))  # (n, positions)
    has = np.isfinite(d)
    return np.where(has.any(1), np.where(has, d, 0).sum(1) / np.maximum(has.sum(1), 1), 1.0)


def resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def file_size(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


@dataclass(frozen=True)
class CaseFile:
    """One image or video file of a cohort case."""

    case_id: str
    split: str  # "train" or "test"
    path: str   # resolved
    size: int | None
    column: str = "video"  # the manifest column it is in


@dataclass
class CohortFiles:
    """A cohort's image and video files: what a pretraining video is matched against."""

    manifest: str
    files: list[CaseFile]
    by_path: dict = field(init=False, repr=False)  # (split, path) -> case_id
    by_size: dict = field(init=False, repr=False)  # (split, size) -> [CaseFile]: only these can share content

    phashes: dict = field(init=False, repr=False)  # split -> (case ids, hash table), built when first needed

    def __post_init__(self) -> None:
        self.by_path, self.by_size, self.phashes = {}, {}, {}
        for f in self.files:
            self.by_path.setdefault((f.split, f.path), f.case_id)
            self.by_size.setdefault((f.split, f.size), []).append(f)

    def match(self, path: str, sha: str | None, size: int | None, split: str, phash=None) -> dict | None:
        """The case of ``split`` whose image or video this file is, and how it was matched: ``{"case_id",
        "how": "path" | "sha256" | "perceptual", "distance"}`` (same resolved path, same bytes, or a
        video showing the same frames: :data:`PHASH_MAX`), or None."""
        if (split, path) in self.by_path:
            return {"case_id": self.by_path[(split, path)], "how": "path", "distance": 0.0}
        if sha is not None:
            same = self.by_size.get((split, size), []) if size is not None else \
                [f for f in self.files if f.split == split]
            cid = next((f.case_id for f in same if content_hash(f.path) == sha), None)
            if cid is not None:
                return {"case_id": cid, "how": "sha256", "distance": 0.0}
        query = phash_array(phash)
        if query is None:
            return None
        ids, table = self.phash_table(split)
        if not ids:
            return None
        d = phash_distances(query, table)
        i = int(np.argmin(d))
        return {"case_id": ids[i], "how": "perceptual", "distance": round(float(d[i]), 4)} if d[i] <= PHASH_MAX else None

    def case_of(self, path: str, sha: str | None, size: int | None, split: str, phash=None) -> str | None:
        """The case of ``split`` whose image or video this file is (:meth:`match`)."""
        m = self.match(path, sha, size, split, phash)
        return None if m is None else m["case_id"]

    def phash_table(self, split: str) -> tuple[list[str], tuple]:
        """The perceptual hashes of ``split``'s videos (decoded once per file and process)."""
        if split not in self.phashes:
            rows = [(f.case_id, a) for f in self.files if f.split == split and f.column == "video"
                    and (a := phash_array(perceptual_hash(f.path))) is not None]
            table = (np.stack([a[0] for _, a in rows]), np.stack([a[1] for _, a in rows])) if rows else ()
            self.phashes[split] = ([c for c, _ in rows], table)
        return self.phashes[split]

    def cases(self, split: str) -> list[str]:
        return sorted({f.case_id for f in self.files if f.split == split})


def cohort_files(cohort: str | Path | pd.DataFrame, base: str | Path | None = None) -> CohortFiles:
    """Every image and video file of ``cohort`` (a manifest CSV, or a table whose relative paths are
    relative to ``base``, by default the working folder). Without a split column every case is training."""
    if isinstance(cohort, pd.DataFrame):
        df, name, root = cohort, "the cohort table", Path(base) if base is not None else Path.cwd()
    else:
        df, name, root = read_columns(Path(cohort), READ_COLUMNS), str(cohort), Path(cohort).parent
    if "case_id" not in df.columns:
        raise CeusError(f"{name}: column 'case_id' is missing")
    splits = df["split"] if "split" in df.columns else pd.Series("train", index=df.index)
    files = []
    for col in CASE_FILE_COLUMNS:
        if col not in df.columns:
            continue
        for cid, split, rel in zip(df["case_id"], splits, df[col]):
            if not isinstance(rel, str) or not rel.strip():
                continue
            p = Path(rel.strip())
            p = p if p.is_absolute() else root / p
            files.append(CaseFile(str(cid).strip(), str(split).strip() if isinstance(split, str) else "",
                                  resolved(p), file_size(p), col))
    return CohortFiles(name, files)


# ----------------------------------------------------------------------------- which videos (pretraining side)


@dataclass
class VideoPlan:
    """The videos a pretraining run uses, each described (path, bytes, sha256, source), and the
    cohort test-split videos left out. Iterates as (video id, path) pairs, like a plain video list."""

    videos: list[tuple[str, Path]]
    entries: list[dict]  # one per video, same order
    sources: dict
    cohort: CohortFiles | None
    excluded: list[dict] = field(default_factory=list)
    policy: str = "exclude"

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def notes(self) -> list[str]:
        """One line per test-split matter worth telling the user before pretraining."""
        out = []
        if self.excluded:
            ids = sorted({e["test_case_id"] for e in self.excluded})
            out.append(f"left out {len(self.excluded)} test-split video(s) of the cohort (case ids {shown(ids)}); "
                       "--include-test-videos keeps them")
        kept = sorted({e["test_case_id"] for e in self.entries if "test_case_id" in e})
        if kept:
            out.append(f"pretraining on {len(kept)} test-split case(s) of the cohort (case ids {shown(kept)}): "
                       "the sidecar records test_split_used: true")
        return out


def shown(ids) -> str:
    """Case ids for a one-line message: the first few, then how many more."""
    ids = list(ids)
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return ", ".join(ids[:SHOWN_IDS]) + more


def describe_video(vid: str, path: Path, origin: dict, files: CohortFiles | None) -> dict:
    """A video's entry in the record: id, resolved path, bytes, sha256, perceptual hash, where it came
    from, and the test case it is a file of (``test_case_id``, matched by ``test_match``) when it is one."""
    rp, size, sha = resolved(path), file_size(path), content_hash(path)
    entry = {"id": vid, "path": rp, "bytes": size, "sha256": sha, "phash": perceptual_hash(path), **origin}
    if files is not None:
        test = files.match(rp, sha, size, "test", entry["phash"])
        if test is not None:
            entry["test_case_id"] = test["case_id"]
            entry["test_match"] = {"how": test["how"], "distance": test["distance"]}
    return entry


def _unique(entries: list[dict]) -> list[dict]:
    """The first of videos that share a resolved path or a content hash; ids made unique."""
    seen, ids, out = set(), set(), []
    for e in entries:
        keys = {("path", e["path"])} | ({("sha256", e["sha256"])} if e["sha256"] else set())
        if keys & seen:
            continue
        seen |= keys
        vid, k = e["id"], 2
        while vid in ids:
            vid, k = f"{e['id']}#{k}", k + 1
        ids.add(vid)
        out.append({**e, "id": vid})
    return out


def plan_videos(cohort: str | Path | None, unlabeled: list | None = None, splits: tuple = ("train",),
                include_test_videos: bool = False) -> VideoPlan:
    """The cohort's ``splits`` videos plus every video under the ``unlabeled`` folders, deduplicated by
    path and content; a video that is a test-split case's image or video is left out unless
    ``include_test_videos``."""
    files = cohort_files(cohort) if cohort is not None else None
    raw, sources = [], {}
    if cohort is not None:
        vs = manifest_videos(cohort, splits)
        raw += [(vid, p, {"source": "cohort", "case_id": vid}) for vid, p in vs]
        sources["cohort"] = {"manifest": str(cohort), "splits": list(splits), "videos": len(vs)}
    for d in unlabeled or []:
        vs = folder_videos(d)
        raw += [(vid, p, {"source": "unlabeled", "folder": str(d)}) for vid, p in vs]
        sources.setdefault("unlabeled", []).append({"folder": str(d), "videos": len(vs)})
    entries = _unique([describe_video(vid, p, origin, files) for vid, p, origin in raw])
    keep = [e for e in entries if include_test_videos or "test_case_id" not in e]
    excluded = [e for e in entries if not include_test_videos and "test_case_id" in e]
    if cohort is not None:
        sources["cohort"]["test_videos_excluded"] = len(excluded)
    return VideoPlan([(e["id"], Path(e["path"])) for e in keep], keep, sources, files, excluded,
                     "include" if include_test_videos else "exclude")


def collect_videos(cohort: str | Path | None, unlabeled: list | None = None, splits: tuple = ("train",),
                   include_test_videos: bool = False) -> tuple[VideoPlan, dict]:
    """(:func:`plan_videos`, its sources): the plan iterates as (video id, path) pairs."""
    plan = plan_videos(cohort, unlabeled, splits, include_test_videos)
    return plan, plan.sources


def _origin(path: Path, files: CohortFiles | None, folders: list[Path]) -> dict:
    """Where a caller-listed video comes from: a case of the cohort (any split), an unlabeled folder, or unknown."""
    rp = resolved(path)
    for split in ("train", "test") if files is not None else ():
        cid = files.case_of(rp, content_hash(path), file_size(path), split, perceptual_hash(path))
        if cid is not None:
            return {"source": "cohort", "case_id": cid}
    for d in folders:
        if Path(rp).is_relative_to(resolved(d)):
            return {"source": "unlabeled", "folder": str(d)}
    return {"source": "given"}


def given_plan(videos: list[tuple[str, Path]], sources: dict | None = None) -> VideoPlan:
    """The plan of a video list the caller built: nothing is left out, but every video is described
    and matched against the cohort named in ``sources`` (when any), so the record still tells the truth."""
    sources = dict(sources or {})
    cohort = sources.get("cohort") if isinstance(sources.get("cohort"), dict) else {}
    files = cohort_files(cohort["manifest"]) if cohort.get("manifest") else None
    folders = [Path(u["folder"]) for u in sources.get("unlabeled") or [] if isinstance(u, dict) and u.get("folder")]
    entries = [describe_video(vid, p, _origin(p, files, folders), files) for vid, p in videos]
    return VideoPlan(list(videos), entries, sources, files, [], "caller-list")


def provenance_record(plan: VideoPlan, used: list[str], weights_sha256: str) -> dict:
    """The sidecar's provenance keys: every video pretrained on, the test-split videos left out, and
    ``test_split_used`` computed from them (None: no cohort was given, so no test split was known)."""
    ids = set(used)
    videos = [e for e in plan.entries if e["id"] in ids]
    test_ids = sorted({e["test_case_id"] for e in videos if "test_case_id" in e})
    cohort = None if plan.cohort is None else {"manifest": plan.cohort.manifest,
                                               "test_cases": len(plan.cohort.cases("test"))}
    return {"test_split_used": None if plan.cohort is None else bool(test_ids), "test_case_ids_used": test_ids,
            "provenance": {"version": RECORD_VERSION, "weights_sha256": weights_sha256, "cohort": cohort,
                           "test_video_policy": plan.policy,
                           "excluded_test_videos": {"count": len(plan.excluded),
                                                    "case_ids": sorted({e["test_case_id"] for e in plan.excluded}),
                                                    "videos": plan.excluded},
                           "videos": videos}}


# ----------------------------------------------------------------------------- reading a record (train/study side)


def _load_sidecar(side: Path) -> dict | None:
    if not side.is_file():
        return None
    try:
        rec = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CeusError(f"{side}: the pretraining sidecar is not JSON ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise CeusError(f"{side}: the pretraining sidecar cannot be read ({exc.strerror or exc})") from None
    if not isinstance(rec, dict):
        raise CeusError(f"{side}: the pretraining sidecar is not a JSON object (got {type(rec).__name__})")
    return rec


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _video_problem(i: int, v) -> str | None:
    if not isinstance(v, dict):
        return f"videos[{i}] is not an object"
    if not isinstance(v.get("path"), str):
        return f"videos[{i}].path is not a string"
    if v.get("sha256") is not None and not isinstance(v["sha256"], str):
        return f"videos[{i}].sha256 is not a string"
    if v.get("bytes") is not None and not _is_int(v["bytes"]):
        return f"videos[{i}].bytes is not an integer"
    if v.get("phash") is not None and not isinstance(v["phash"], dict):
        return f"videos[{i}].phash is not an object"
    return None


def _record_problem(side: dict) -> str | None:
    """What is wrong with the shape of a sidecar's provenance keys, or None."""
    if side.get("test_split_used") not in (True, False, None):
        return "test_split_used is not true, false or null"
    rec = side["provenance"]
    if not isinstance(rec, dict):
        return "provenance is not an object"
    if not _is_int(rec.get("version")):
        return "provenance.version is not an integer"
    if rec["version"] > RECORD_VERSION:
        return f"provenance.version {rec['version']} is newer than this ceusfusion reads ({RECORD_VERSION})"
    if not isinstance(rec.get("weights_sha256"), str):
        return "provenance.weights_sha256 is not a string"
    if not isinstance(rec.get("videos"), list):
        return "provenance.videos is not a list"
    return next((p for i, v in enumerate(rec["videos"]) if (p := _video_problem(i, v))), None)


def read_provenance(weights: str | Path) -> dict | None:
    """The provenance record of ``weights`` (from its sidecar); None when there is no sidecar or it
    predates provenance records. A sidecar that is not JSON, or a record of the wrong shape, raises."""
    side = sidecar_path(weights)
    data = _load_sidecar(side)
    if data is None or "provenance" not in data:
        return None
    problem = _record_problem(data)
    if problem:
        raise CeusError(f"{side}: not a pretraining provenance record ({problem})")
    return data["provenance"]


@dataclass(frozen=True)
class Overlap:
    """What a weights file's provenance record says about one cohort."""

    weights: str
    weights_sha256: str
    record: bool                   # the weights have a provenance record
    test_cases: tuple[str, ...]    # test-split cases whose image or video was pretrained on
    test_videos: int               # pretraining videos that are such files
    train_cases: tuple[str, ...]   # training-split cases likewise
    n_videos: int                  # videos in the record
    note: str | None = None
    version: int | None = None     # the record's version
    perceptual: int = 0            # videos of the record with a perceptual hash this version compares
    matches: tuple = ()            # per test-split match: {"video", "case_id", "how", "distance"}

    @property
    def transductive_train_frames(self) -> bool:
        """Pretraining saw the cohort's training videos, unlabeled: the CV folds' validation frames too."""
        return bool(self.train_cases)


def pretrain_overlap(weights: str | Path, cohort: str | Path | pd.DataFrame | None,
                     base: str | Path | None = None) -> Overlap:
    """Which of ``cohort``'s cases (by path, bytes, or perceptual hash of their video or image) the
    weights were pretrained on, from the weights' record; ``base``: for a table with relative paths.
    ``cohort`` None: the record alone (nothing to compare it with)."""
    w = Path(weights)
    if not w.is_file():
        raise CeusError(f"weights file {w} not found")
    sha = sha256_file(w)
    rec = read_provenance(w)
    if rec is None:
        return Overlap(str(w), sha, False, (), 0, (), 0,
                       f"{NO_RECORD}: {sidecar_path(w).name} beside the weights does not list the videos they saw")
    if rec["weights_sha256"] != sha:
        raise CeusError(f"{sidecar_path(w)}: its provenance record is of other weights than {w} (sha256 differs); "
                        "put the matching sidecar beside the weights")
    n_phash = sum(phash_array(v.get("phash")) is not None for v in rec["videos"])
    if cohort is None:
        return Overlap(str(w), sha, True, (), 0, (), len(rec["videos"]), "no cohort to compare the record with",
                       rec["version"], n_phash)
    files = cohort_files(cohort, base)
    matches, train = [], set()
    for v in rec["videos"]:
        t = files.match(v["path"], v.get("sha256"), v.get("bytes"), "test", v.get("phash"))
        if t is not None:
            matches.append({"video": v["path"], **t})
        r = files.case_of(v["path"], v.get("sha256"), v.get("bytes"), "train", v.get("phash"))
        if r is not None:
            train.add(r)
    return Overlap(str(w), sha, True, tuple(sorted({m["case_id"] for m in matches})), len(matches),
                   tuple(sorted(train)), len(rec["videos"]), version=rec["version"], perceptual=n_phash,
                   matches=tuple(matches))


def check_pretrain_weights(weights: str | Path | None, cohort: str | Path | pd.DataFrame | None,
                           allow_test_overlap: bool = False, base: str | Path | None = None) -> dict | None:
    """Refuse weights pretrained on this cohort's test cases unless allowed; the facts (summary.json's
    ``pretrain_provenance``, :func:`overlap_facts`) otherwise. None for ``"imagenet"``/``"none"``/None
    (no file to check); ``cohort`` None: the record's facts, the overlap unchecked."""
    if weights is None or str(weights).lower() in ("none", "imagenet"):
        return None
    ov = pretrain_overlap(weights, cohort, base)
    if ov.test_cases and not allow_test_overlap:
        raise CeusError(f"weights {ov.weights} were pretrained on {ov.test_videos} test-split video(s) of this cohort "
                        f"(case ids {shown(ov.test_cases)}); pass --allow-pretrain-overlap to use them anyway, "
                        "and the report will say so")
    return overlap_facts(ov, allow_test_overlap, cohort is not None)


# how far a record allowed the test overlap to be checked (the facts' test_overlap_check)
OVERLAP_CHECKS = {"decoded content": "every pretraining video compared by path, bytes and perceptual hash of decoded frames",
                  "bytes only": "compared by path and bytes only: the record (version 1) has no perceptual hashes, "
                                "so a re-encoded copy of a test video would not be seen",
                  "no": "not checked: no provenance record, or no cohort to compare with"}


def overlap_facts(ov: Overlap, allowed: bool, compared: bool) -> dict:
    """What the report's safeguard reads: ``record`` present/absent (``record_version``), ``matched_by``
    (the ways a pretraining video could match a case), ``test_overlap_check`` (:data:`OVERLAP_CHECKS`:
    "no" means unknown), ``test_overlap`` (case ids) and ``test_overlap_matches`` (each video, case, how
    matched and the perceptual distance)."""
    check = "no" if not (ov.record and compared) else \
        "decoded content" if ov.perceptual == ov.n_videos else "bytes only"
    return {"weights": ov.weights, "sha256": ov.weights_sha256, "record": "present" if ov.record else "absent",
            "record_version": ov.version, "note": ov.note, "n_videos": ov.n_videos,
            "matched_by": (["path", "sha256"] + (["perceptual"] if ov.perceptual else [])) if ov.record else [],
            "perceptual_videos": ov.perceptual, "test_overlap_check": check,
            "test_overlap": list(ov.test_cases), "test_overlap_videos": ov.test_videos,
            "test_overlap_matches": [dict(m) for m in ov.matches], "allowed": bool(allowed),
            "transductive_train_frames": ov.transductive_train_frames, "train_cases_seen": len(ov.train_cases)}
