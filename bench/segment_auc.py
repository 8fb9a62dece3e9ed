"""Benchmark: DDTI DL_image AUC with predicted masks against manual masks, same folds (issue 26 item 5).

    python bench/segment_auc.py --masks DIR [--arms manual,box,auto] [--work /tmp/segment_auc] [--threads 1]

``DIR`` is ``bench/segment.py --out DIR``: each image's out-of-fold mask from the segmenter's fold model that
never trained on it, box-prompted from the jittered box (``DIR/box/cases.csv``) and automatic
(``DIR/auto/cases.csv``). Each arm runs ``bench/real_ddti.py`` (DL_image: resnet18, random init, 64 px,
15 epochs, last epoch kept, 5-fold CV grouped by patient; ROI = the mask's box + 10 %) on its cases file
(resumable: a finished arm is read back); the manual arm on DDTI's own masks. The classifier's folds come
from labels and patients alone (``models.ensemble.make_folds``), checked here to be the same in every arm.
Printed: each arm's out-of-fold AUC (DeLong 95 % CI), the paired DeLong test of each predicted arm against
the manual one (difference, its 95 % CI, p), the same with patients as clusters (Obuchowski), whether
|difference| <= 0.02 (the goal) and whether its whole 95 % CI is (equivalence at this sample size).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GOAL = 0.02
MODEL = "DL_image_random"


def arm_cases(arm: str, masks: Path | None) -> Path:
    if arm == "manual":
        return C.DATA / "ddti" / "cases.csv"
    if masks is None:
        raise SystemExit(f"arm {arm!r} needs --masks DIR (bench/segment.py --out DIR)")
    return masks / arm / "cases.csv"


def run_arm(arm: str, a) -> pd.DataFrame:
    """bench/real_ddti.py on the arm's cases; its DL_image out-of-fold predictions (log in WORK/<arm>.log)."""
    import real_ddti

    work = a.work / arm
    argv = ["--cases", str(arm_cases(arm, a.masks)), "--work", str(work), "--threads", str(a.threads),
            "--select", "last", "--seed", str(a.seed)]
    log = a.work / f"{arm}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{arm}: bench/real_ddti.py {' '.join(argv)}  (log {log})", flush=True)
    with open(log, "a") as fh, contextlib.redirect_stdout(fh):
        files = real_ddti.main(argv)
    pred = pd.read_csv(files[MODEL], dtype={"case_id": str})
    return pred[pred["set"] == "train"].set_index("case_id").sort_index()


def compare(preds: dict[str, pd.DataFrame], patients: pd.Series) -> list[dict]:
    """Paired DeLong (and patient-clustered) tests of every predicted-mask arm against the manual arm."""
    from ceusfusion.stats import auc_ci, clustered_auc_test, delong_test

    ref = preds["manual"]
    rows = [{"arm": "manual", **auc_row(auc_ci(ref["y"], ref["prob"]))}]
    for arm, p in preds.items():
        if arm == "manual":
            continue
        if not (p.index.equals(ref.index) and np.array_equal(p["y"], ref["y"])):
            raise SystemExit(f"arm {arm}: not the manual arm's cases and labels; cannot pair")
        if not np.array_equal(p["fold"], ref["fold"]):
            raise SystemExit(f"arm {arm}: folds differ from the manual arm's; not a same-fold comparison")
        t = delong_test(ref["y"], p["prob"], ref["prob"])
        tc = clustered_auc_test(ref["y"], p["prob"], ref["prob"], patients.loc[ref.index].to_numpy())
        rows.append({"arm": arm, **auc_row(auc_ci(p["y"], p["prob"])), "diff_vs_manual": t.diff,
                     "diff_ci": list(t.diff_ci), "p": t.p, "p_clustered": tc.p, "diff_ci_clustered": list(tc.diff_ci),
                     "within_goal": bool(abs(t.diff) <= GOAL),
                     "ci_within_goal": bool(-GOAL <= t.diff_ci[0] and t.diff_ci[1] <= GOAL)})
    return rows


def auc_row(r) -> dict:
    return {"auc": r.auc, "auc_ci": list(r.ci)}


def show(rows: list[dict], n: int, n_pos: int) -> None:
    print(f"\nDDTI DL_image (resnet18, random init, 64 px, 15 epochs, last epoch), out-of-fold, n = {n} "
          f"({n_pos} positive), same folds in every arm")
    print("| masks | AUC (95% DeLong CI) | diff vs manual (95% CI) | p (paired DeLong) | p (patients as clusters) "
          f"| abs diff <= {GOAL} | CI inside +-{GOAL} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        lo, hi = r["auc_ci"]
        if r["arm"] == "manual":
            print(f"| manual | {r['auc']:.3f} ({lo:.3f}-{hi:.3f}) | | | | | |")
            continue
        dlo, dhi = r["diff_ci"]
        print(f"| {r['arm']} | {r['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {r['diff_vs_manual']:+.3f} ({dlo:+.3f} to "
              f"{dhi:+.3f}) | {r['p']:.3f} | {r['p_clustered']:.3f} | {'yes' if r['within_goal'] else 'no'} | "
              f"{'yes' if r['ci_within_goal'] else 'no'} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=Path, default=None, help="bench/segment.py --out DIR (its box/ and auto/)")
    ap.add_argument("--arms", default="manual,box,auto")
    ap.add_argument("--work", type=Path, default=Path("/tmp/segment_auc"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    C.limit_threads(a.threads)
    arms = a.arms.split(",")
    preds = {arm: run_arm(arm, a) for arm in arms}
    if "manual" not in preds or len(preds) < 2:
        return print("arms run: " + ", ".join(arms) + " (the comparison needs manual and a predicted arm)")
    src = pd.read_csv(C.DATA / "ddti" / "cases.csv", dtype=str).set_index("case_id")
    rows = compare(preds, src["patient"])
    ref = preds["manual"]
    show(rows, len(ref), int(ref["y"].sum()))
    from ceusfusion.core.fsutil import write_json

    write_json(a.work / "segment_auc.json", json.loads(json.dumps({"rows": rows, "goal": GOAL, "argv": argv or
                                                                    sys.argv[1:]}, default=str)))


if __name__ == "__main__":
    main()
