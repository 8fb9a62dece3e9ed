"""``ceusfusion serve`` on a real (tiny synthetic) bundle: the API against ``predict --json`` with real files (good,
bad, oversized, concurrent, a drawn box, DICOM identifiers), the model card (and an old bundle without one), and
the page in a real headless Chromium driven by Playwright."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from cli_run import exit_code
from ingest_fixtures import PATIENT_ID, PATIENT_NAME, write_dicom
from PIL import Image

from ceusfusion.deploy.export import CARD, MANIFEST, SIDECAR
from ceusfusion.deploy.predict import predict
from ceusfusion.serve import create_app, running_server

pytestmark = pytest.mark.slow
FIELDS = ("image", "image_mask", "video", "video_mask")


@pytest.fixture(scope="module")
def made(tiny_study):
    """(run, bundle, two test patients' files): one tiny study, exported once for the whole module."""
    return tiny_study


@pytest.fixture(scope="module")
def server(made, module_tmp_factory):
    """(base URL, the folder every request's temp folder is made in)."""
    tmp_root = module_tmp_factory.mktemp("requests")
    with running_server(create_app(made[1], tmp_root=tmp_root)) as url:
        yield url, tmp_root


def post(url: str, fields: dict, chunked: bool = False) -> tuple[int, dict]:
    """A multipart POST like a browser's FormData: (status, JSON answer)."""
    b = uuid.uuid4().hex
    raw = b""
    for name, value in fields.items():
        if isinstance(value, Path):
            head, data = f'name="{name}"; filename="{value.name}"', value.read_bytes()
        elif isinstance(value, tuple):
            head, data = f'name="{name}"; filename="{value[0]}"', value[1]
        else:
            head, data = f'name="{name}"', value.encode()
        raw += f"--{b}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + data + b"\r\n"
    raw += f"--{b}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={b}"}
    if chunked:  # no Content-Length: the limit must hold while the body streams
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("POST", u.path, body=iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)]),
                     headers=headers, encode_chunked=True)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=raw, headers=headers), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def predict_json(patient: dict, capsys) -> dict:
    """What `ceusfusion predict --json` prints for the same files (run in-process)."""
    capsys.readouterr()
    argv = ["predict", "--bundle", str(patient["bundle"]), "--json"]
    for k in FIELDS:
        if k in patient:
            argv += [f"--{k.replace('_', '-')}", str(patient[k])]
    assert exit_code(argv) == 0
    return json.loads(capsys.readouterr().out)


def assert_same_models(api: dict, cli: dict) -> None:
    assert api["models"].keys() == cli["models"].keys()
    for name, m in cli["models"].items():
        a = api["models"][name]
        assert a["available"] == m["available"], name
        if m["available"]:
            assert a["prob"] == m["prob"] and a["threshold"] == m["threshold"] and a["class"] == m["class"], name


def test_api_predict_returns_what_predict_json_returns(made, server, capsys):
    url, tmp_root = server
    _, bundle, patients = made
    status, res = post(url + "/api/predict", patients[0])
    assert status == 200, res
    cli = predict_json({"bundle": bundle, **patients[0]}, capsys)
    assert_same_models(res, cli)
    assert {"DL_image_resnet18", "DL_video_resnet18", "DL_combined"} <= set(res["models"])
    # the server loaded the bundle whole at start; "pinned" says whether an id was given (serve --expect-sha256)
    assert res["bundle_sha256"] == cli["bundle_sha256"] and res["bundle_pinned"] is False and "bundle" not in res
    for name in ("DL_image_resnet18", "DL_video_resnet18"):
        assert res["models"][name]["gradcam"].startswith("data:image/png;base64,")
    video = res["inputs"]["video"]
    assert video == cli["inputs"]["video"] and len(video["times"]) == 5
    assert len(video["tic"]["times"]) == len(video["tic"]["lesion"]) > 5 and video["perfusion"]["peak_intensity"] > 0
    assert list(tmp_root.iterdir()) == []  # the request's folder went with the answer


def test_bad_inputs_get_one_line_and_leave_nothing(made, server, tmp_path):
    url, tmp_root = server
    p = made[2][0]
    cases = [
        ({"image": ("still.png", b"not a png at all")}, 400, "image (the uploaded B-mode still): cannot decode image"),
        ({"video": ("clip.avi", b"RIFF" + b"\0" * 300)}, 400, "video (the uploaded CEUS video)"),
        ({"image": ("still.exe", b"MZ")}, 400, "image: not a file type it reads; the B-mode still must be one of"),
        ({"image_mask": p["image_mask"]}, 400, "image_mask given without the image"),
        ({"box": "[1, 2, 3, 4]"}, 400, "give the B-mode still"),
        ({"image": p["image"], "image_mask": p["image_mask"], "box": '{"image": [1, 1, 9, 9]}'}, 400, "not both"),
        ({"image": p["image"], "box": '{"image": [1, 1]}'}, 400, "box.image: expected [x, y, w, h]"),
        ({"image": p["image"], "image_mask": p["video_mask"]}, 400, "image_mask (the uploaded still mask)"),
        ({"patient_name": "x"}, 400, "unknown form field 'patient_name'"),
    ]
    for fields, status, text in cases:
        got, res = post(url + "/api/predict", fields)
        assert (got, set(res)) == (status, {"error"}), (fields.keys(), res)
        msg = res["error"]
        assert text in msg and "\n" not in msg and "Traceback" not in msg and str(tmp_root) not in msg, msg
    req = urllib.request.Request(url + "/api/predict", data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 415 and "multipart/form-data" in json.loads(e.value.read())["error"]
    assert list(tmp_root.iterdir()) == []


def test_oversized_uploads_are_refused_declared_or_streamed(made, tmp_path):
    tmp_root = tmp_path / "requests"
    tmp_root.mkdir()
    p = made[2][0]
    limit_mb = 0.01
    assert p["video"].stat().st_size > limit_mb * 1e6 > p["image"].stat().st_size + p["image_mask"].stat().st_size + 1000
    with running_server(create_app(made[1], max_upload_mb=limit_mb, tmp_root=tmp_root)) as url:
        for chunked in (False, True):
            status, res = post(url + "/api/predict", {"video": p["video"]}, chunked=chunked)
            assert status == 413 and "upload too large" in res["error"] and "--max-upload-mb" in res["error"]
        status, res = post(url + "/api/predict", {"image": p["image"], "image_mask": p["image_mask"]})
        assert status == 200, res  # under the limit: served
    assert list(tmp_root.iterdir()) == []


def test_concurrent_requests_do_not_mix(made, server, capsys):
    url, tmp_root = server
    _, bundle, patients = made
    want = [predict_json({"bundle": bundle, **p}, capsys) for p in patients]
    assert want[0]["models"]["DL_image_resnet18"]["prob"] != want[1]["models"]["DL_image_resnet18"]["prob"]
    order = [0, 1, 0, 1]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(url + "/api/predict", patients[i]), order))
    for i, (status, res) in zip(order, answers):
        assert status == 200, res
        assert_same_models(res, want[i])
        assert res["inputs"]["video"]["tic"] == want[i]["inputs"]["video"]["tic"]
    assert list(tmp_root.iterdir()) == []


def test_a_drawn_box_is_the_roi(made, server, tmp_path):
    """A box instead of a mask: the ROI is that box, and the probability is predict's with the same box as a mask."""
    url, _ = server
    p = made[2][0]
    h, w = np.asarray(Image.open(p["image"])).shape[:2]
    box = [w // 4, h // 3, w // 3, h // 4]
    status, res = post(url + "/api/predict", {"image": p["image"], "box": json.dumps({"image": box})})
    assert status == 200, res
    assert res["inputs"]["image"]["bbox"] == [box[1], box[0], box[1] + box[3], box[0] + box[2]]
    mask = np.zeros((h, w), np.uint8)
    mask[box[1]:box[1] + box[3], box[0]:box[0] + box[2]] = 1
    Image.fromarray(mask * 255).save(tmp_path / "box.png")
    ref = predict(made[1], p["image"], tmp_path / "box.png", cams=False)
    assert res["models"]["DL_image_resnet18"]["prob"] == ref["models"]["DL_image_resnet18"]["prob"]
    assert res["models"]["DL_video_resnet18"]["available"] is False


def test_dicom_identifiers_are_never_echoed(made, server, tmp_path):
    url, _ = server
    still = np.asarray(Image.open(made[2][0]["image"]).convert("L"))
    dcm = write_dicom(tmp_path / "s.dcm", still[None])
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(dcm.read_bytes()[:-500])  # pixel data cut short
    secrets = [PATIENT_ID, "Janet", "Quixotic", "ACC55443322", "19610203"]
    for fields in ({"image": dcm}, {"image": broken}, {"image": dcm, "image_mask": made[2][0]["video_mask"]}):
        status, res = post(url + "/api/predict", fields)
        text = json.dumps(res)
        assert not [s for s in secrets if s in text], text[:300]
    status, res = post(url + "/api/predict", {"image": dcm})
    assert status == 200 and res["models"]["DL_image_resnet18"]["available"]
    status, prev = post(url + "/api/preview", {"image": dcm})
    assert status == 200 and (prev["width"], prev["height"]) == (still.shape[1], still.shape[0])
    assert PATIENT_NAME not in json.dumps(prev)


def test_preview_is_a_frame_in_the_files_own_pixels(made, server):
    url, _ = server
    status, res = post(url + "/api/preview", {"video": made[2][0]["video"]})
    assert status == 200, res
    assert res["kind"] == "video" and res["width"] == res["height"] == 48 and res["time"] > 0
    status, res = post(url + "/api/preview", {"image": made[2][0]["image"], "video": made[2][0]["video"]})
    assert status == 400 and "one file" in res["error"]


def test_model_card_says_what_the_model_was_trained_on(made, server):
    run, bundle, _ = made
    url, _ = server
    with urllib.request.urlopen(url + "/api/model", timeout=30) as r:
        card = json.loads(r.read())
    cohort = pd.read_csv(run / "cohort.csv")
    train = cohort[cohort["split"] == "train"]
    assert card["card_recorded"] and "research model" in card["intended_use"].lower()
    assert card["cohort"]["train"]["n"] == len(train) and card["cohort"]["train"]["n_pos"] == int(train["label"].sum())
    assert card["cohort"]["train"]["centres"] == train["center"].value_counts().to_dict()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())["sets"]["test"]["models"]
    by_name = {m["name"]: m for m in card["models"]}
    assert set(by_name) == {"DL_image_resnet18", "DL_video_resnet18", "DL_combined"}
    for name, m in by_name.items():
        assert m["test"]["auc"] == pytest.approx(metrics[name]["auc"]) and m["test"]["auc_ci"] == pytest.approx(metrics[name]["auc_ci"])
        assert m["test"]["sensitivity"] == pytest.approx(metrics[name]["sensitivity"])
        oof = m["train_oof"]
        assert len(oof["prob"]) == len(train) and sum(oof["y"]) == int(train["label"].sum())
    with urllib.request.urlopen(url + "/", timeout=30) as r:
        page = r.read().decode()
        csp = r.headers["content-security-policy"]
    assert "not a medical device" in page and "0.0.0.0" not in page and "default-src 'none'" in csp
    assert "http://" not in page.replace(url, "") and "https://" not in page  # nothing loaded from elsewhere


def test_an_older_bundle_without_a_card_still_serves(made, tmp_path, capsys):
    bundle = shutil.copytree(made[1], tmp_path / "old")
    meta = json.loads((bundle / MANIFEST).read_text())
    meta.pop("card")
    meta["files"].pop(CARD)
    (bundle / CARD).unlink()
    (bundle / MANIFEST).write_text(json.dumps(meta, indent=2))
    (bundle / SIDECAR).write_text(f"{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()}  {MANIFEST}\n")
    with running_server(create_app(bundle)) as url:
        with urllib.request.urlopen(url + "/api/model", timeout=30) as r:
            card = json.loads(r.read())
        with urllib.request.urlopen(url + "/", timeout=30) as r:
            page = r.read().decode()
        status, res = post(url + "/api/predict", {"image": made[2][0]["image"], "image_mask": made[2][0]["image_mask"]})
    assert not card["card_recorded"] and card["cohort"] is None and all(m["test"] is None for m in card["models"])
    assert "not recorded" in page and "research model" in page.lower()
    assert status == 200 and res["models"]["DL_image_resnet18"]["available"]


def test_the_page_in_headless_chromium(made, server, chromium, tmp_path, capsys):
    """Pick the files on the page, wait for the result, compare with predict --json, screenshot; then a bad file."""
    url, tmp_root = server
    _, bundle, patients = made
    want = predict_json({"bundle": bundle, **patients[0]}, capsys)
    open_page, errors = chromium
    page = open_page(url + "/")
    page.wait_for_selector("body[data-card=loaded]")
    for k in FIELDS:
        page.set_input_files(f"#{k}", str(patients[0][k]))
    page.click("#predict")
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    shown = {row.get_attribute("data-model"): row.query_selector("td.prob") for row in page.query_selector_all("#probs tbody tr")}
    assert shown.keys() == want["models"].keys()
    for name, m in want["models"].items():
        assert float(shown[name].get_attribute("data-prob")) == m["prob"]
        assert shown[name].inner_text() == f"{m['prob']:.3f}"
    assert page.locator("#cams img").count() == 2 and page.locator("#tic polyline.lesion").count() == 1
    assert page.locator("#strips svg circle").count() > 0
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert np.asarray(Image.open(shot).convert("L"), float).std() > 5
    page.set_input_files("#image_mask", [])
    page.set_input_files("#image", str(patients[0]["video_mask"]))  # a mask where the still goes
    page.wait_for_selector("#error:not([hidden])")  # its preview (for drawing a box) already says so
    page.click("#predict")
    page.wait_for_selector("body[data-state=error]", timeout=60_000)
    msg = page.inner_text("#error")
    assert "image" in msg and "Traceback" not in msg and "\n" not in msg.strip()
    assert not errors, errors
    assert list(tmp_root.iterdir()) == []
