"""``ceusfusion annotate`` (issue 26, item 2) on a small synthetic cohort with one broken still: answers land in
BOXES.csv in the boxes contract at once, a restart resumes, the manifest and a user's file are never written,
bad answers and bad files are one line each while the other cases go through, the serve stack's guards hold,
and the page in a real Chromium: draw, save, reload, resume, move the clip's box on another frame."""

from __future__ import annotations

import hashlib
import http.client
import json

import pandas as pd
import pytest
from cli_run import exit_code

from ceusfusion.core.errors import CeusError
from ceusfusion.serve import annotate as annotate_module
from ceusfusion.serve.annotate import create_annotate_app
from ceusfusion.serve.boxes import COLUMNS
from ceusfusion.serve.protocol import Limits
from ceusfusion.serve.server import running_server
from ceusfusion.synthetic.synth import SynthConfig, generate



@pytest.fixture(scope="module")
def cohort(module_tmp_factory):
    """A 6-patient synthetic cohort's manifest, plus a 7th case whose still is not an image."""
    root = module_tmp_factory.mktemp("annotate")
    csv = generate(root / "c", SynthConfig(n=6, seed=3, size=96, fps=4, duration=8), workers=1)
    (csv.parent / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no picture")
    df = pd.read_csv(csv, dtype=str)
    broken = {c: "" for c in df.columns} | {"case_id": "BROKEN", "label": "0", "image": "images/broken.png"}
    path = csv.parent / "annotate_me.csv"
    pd.concat([df, pd.DataFrame([broken])]).to_csv(path, index=False)
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(out) -> pd.DataFrame:
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def call(url: str, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    return r.status, json.loads(data) if r.headers.get("content-type") == "application/json" else {"text": data}


def test_answers_are_written_at_once_in_the_boxes_contract(cohort, tmp_path):
    out, before = tmp_path / "BOXES.csv", digest(cohort)
    with running_server(create_annotate_app(cohort, out, warn=lambda m: None)) as url:
        status, ov = call(url, "GET", "/api/cases")
        assert status == 200 and ov["total"] == 7 and ov["done"] == 0 and ov["resume"] == 0
        status, info = call(url, "GET", "/api/case/1")
        times = info["video"]["times"]
        assert info["image"]["width"] == 128 and info["video"]["width"] == 96 and len(times) == 32
        status, res = call(url, "POST", "/api/case/1", {"image_box": [3, 4, 50, 40], "video_box": [0, 0, 96, 96],
                                                        "video_box_time": times[7] + 0.0004})
        assert status == 200 and (res["done"], res["resume"]) == (1, 0), res
        got = rows(out)
        assert list(got.columns) == list(COLUMNS) and len(got) == 1  # on disk before the next request
        assert got.iloc[0].to_dict() == {"case_id": info["case_id"], "image_box": "3,4,50,40", "video_box": "0,0,96,96",
                                         "video_box_time": f"{times[7]:.3f}"}
        status, res = call(url, "POST", "/api/case/0", {"image_box": None, "video_box": None})
        assert status == 200 and res["resume"] == 2
        status, res = call(url, "POST", "/api/case/1", {"video_box": [10, 10, 5, 5]})  # an answer replaced
        got = rows(out)
        assert list(got["case_id"]) == [ov["cases"][0]["case_id"], info["case_id"]]  # the cohort's order
        assert got.iloc[0][["image_box", "video_box", "video_box_time"]].tolist() == ["", "", ""]
        assert got.iloc[1][["image_box", "video_box", "video_box_time"]].tolist() == ["", "10,10,5,5", "0.000"]
    assert digest(cohort) == before and sorted(p.name for p in tmp_path.iterdir()) == [".ceusfusion-files", "BOXES.csv"]


def test_a_restart_resumes_where_the_user_stopped(cohort, tmp_path):
    out = tmp_path / "BOXES.csv"
    app = create_annotate_app(cohort, out, warn=lambda m: None)
    for i in (0, 1, 3):
        app.state.annotator.answer(i, {"image_box": [1, 1, 9, 9]})
    written = out.read_bytes()
    said = []
    again = create_annotate_app(cohort, out, warn=said.append).state.annotator
    assert again.overview()["resume"] == 2 and again.overview()["done"] == 3 and out.read_bytes() == written
    assert again.overview()["cases"][3]["answer"]["image_box"] == [1, 1, 9, 9] and said == []


def test_the_manifest_and_a_users_file_are_never_written(cohort, tmp_path):
    before = digest(cohort)
    with pytest.raises(CeusError, match="this command's input"):
        create_annotate_app(cohort, cohort)
    mine = tmp_path / "BOXES.csv"
    mine.write_text("case_id,image_box,video_box,video_box_time\nP0002,\"1,2,3,4\",,\nOTHER,\"5,5,5,5\",,\nP0003,1;2,,\n")
    with pytest.raises(CeusError, match="did not write; refusing to overwrite"):
        create_annotate_app(cohort, mine)
    assert digest(cohort) == before and "OTHER" in mine.read_text()
    said = []
    ann = create_annotate_app(cohort, mine, force=True, warn=said.append).state.annotator  # --force: taken over
    assert len(said) == 1 and "line 4, case P0003" in said[0] and "asked again" in said[0]
    assert ann.overview()["resume"] == 0 and ann.overview()["done"] == 1  # P0002's answer read back
    ann.answer(0, {"image_box": [2, 2, 8, 8]})
    got = rows(mine)  # the cohort's order, then the rows of other cases; every row not answered again as it was
    assert list(got["case_id"]) == ["P0001", "P0002", "P0003", "OTHER"]
    assert list(got["image_box"]) == ["2,2,8,8", "1,2,3,4", "1;2", "5,5,5,5"]


def test_bad_answers_and_bad_files_are_one_line_each(cohort, tmp_path):
    out = tmp_path / "BOXES.csv"
    with running_server(create_annotate_app(cohort, out, warn=lambda m: None, limits=Limits(1.0, 1.0))) as url:
        status, info = call(url, "GET", "/api/case/6")
        err = info["image"]["error"]
        assert status == 200 and err.startswith("case BROKEN: image: images/broken.png: ") and "\n" not in err
        assert str(cohort.parent) not in err and info["video"] is None
        cases = [("/api/case/0", {"image_box": [1, 2, 3]}, 400, "case P0001: image_box: '[1, 2, 3]' is not four integers"),
                 ("/api/case/0", {"image_box": "1,2,3,x"}, 400, "is not four integers x,y,w,h"),
                 ("/api/case/0", {"image_box": [-1, 2, 3, 4]}, 400, "x and y must be >= 0"),
                 ("/api/case/0", {"image_box": [0, 0, 0, 4]}, 400, "width and height positive"),
                 ("/api/case/0", {"image_box": [100, 0, 40, 4]}, 400, "lies outside the 128x128 px frame"),
                 ("/api/case/0", {"video_box": [1, 1, 4, 4], "video_box_time": 99}, 400, "beyond the clip"),
                 ("/api/case/0", {"video_box_time": "soon"}, 400, "not a time in seconds"),
                 ("/api/case/0", {"label": 1}, 400, "an answer is a JSON object with"),
                 ("/api/case/6", {"image_box": [1, 1, 4, 4]}, 422, "case BROKEN: image: images/broken.png"),
                 ("/api/case/6", {"video_box": [1, 1, 4, 4]}, 404, "case BROKEN: no video in the manifest"),
                 ("/api/case/7", {}, 404, "no case 7 (the cohort has 7)"),
                 ("/api/case/0", b"{not json", 400, "not JSON"),
                 ("/api/case/0", b"x" * 5000, 413, "at most 4096 bytes")]
        for path, body, want, text in cases:
            status, res = call(url, "POST", path, body)
            assert (status, set(res)) == (want, {"error"}) and text in res["error"] and "\n" not in res["error"], (body, res)
        assert call(url, "POST", "/api/case/0", {}, {"Content-Type": "text/plain"})[0] == 415
        status, res = call(url, "POST", "/api/case/0", {}, {"Origin": "http://evil.example"})
        assert status == 403 and not out.exists()
        assert call(url, "POST", "/api/case/2", {"image_box": [1, 1, 4, 4]})[0] == 200  # the others go through
        status, res = call(url, "GET", "/api/case/0", headers={"Host": "evil.example"})
        assert status == 400
    assert list(rows(out)["case_id"]) == ["P0003"]


def test_annotate_command_refuses_before_listening(cohort, tmp_path, monkeypatch, capsys):
    listened = []
    monkeypatch.setattr(annotate_module, "listen", lambda app, host, port, limits: listened.append((host, port)))
    assert exit_code(["annotate", str(cohort), "--out", str(cohort)]) == 2
    err = capsys.readouterr().err
    assert "this command's input" in err and "Traceback" not in err and listened == []
    assert exit_code(["annotate", str(cohort), "--out", str(tmp_path / "b.csv"), "--port", "8123"]) == 0
    assert listened == [("127.0.0.1", 8123)] and "7 cases, 0 answered" in capsys.readouterr().err


def _drag(page, stage: str, frm: tuple[float, float], to: tuple[float, float]) -> None:
    """Press at ``frm`` and release at ``to``, fractions of the stage's picture."""
    r = page.locator(f"{stage} img").bounding_box()
    page.mouse.move(r["x"] + frm[0] * r["width"], r["y"] + frm[1] * r["height"])
    page.mouse.down()
    page.mouse.move(r["x"] + (frm[0] + to[0]) / 2 * r["width"], r["y"] + (frm[1] + to[1]) / 2 * r["height"], steps=4)
    page.mouse.move(r["x"] + to[0] * r["width"], r["y"] + to[1] * r["height"], steps=4)
    page.mouse.up()


@pytest.mark.slow
def test_the_page_in_chromium_draws_saves_reloads_and_resumes(cohort, chromium, tmp_path):
    out = tmp_path / "BOXES.csv"
    app = create_annotate_app(cohort, out, warn=lambda m: None)
    times = app.state.annotator.info(0)["video"]["times"]
    open_page, errors = chromium
    with running_server(app) as url:
        page = open_page(url + "/", width=1400)
        page.wait_for_selector("body[data-state=ready][data-case='0']")
        assert page.inner_text("#progress") == "0 of 7 cases answered"
        _drag(page, "#stage-image", (0.25, 0.25), (0.75, 0.5))  # a quarter in, to three quarters across, half down
        assert page.inner_text("#val-image") == "32,32,64,32"
        page.fill("#frame", "5")
        _drag(page, "#stage-video", (0.5, 0.5), (0.25, 0.25))  # drawn up and to the left
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-state=ready][data-case='1']")
        assert rows(out).iloc[0].tolist() == ["P0001", "32,32,64,32", "24,24,24,24", f"{times[5]:.3f}"]
        page.reload()  # resumes at the first case without an answer
        page.wait_for_selector("body[data-state=ready][data-case='1']")
        assert page.inner_text("#progress") == "1 of 7 cases answered"
        assert page.locator("#cases li.done").count() == 1
        page.keyboard.press("p")
        page.wait_for_selector("body[data-state=ready][data-case='0']")
        assert page.input_value("#frame") == "5" and page.inner_text("#val-image") == "32,32,64,32"
        page.keyboard.press(".")  # two frames on, then move the clip's box there
        page.keyboard.press(".")
        _drag(page, "#stage-video", (0.375, 0.375), (0.5, 0.375))
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-state=ready][data-case='1']")
        assert rows(out).iloc[0].tolist() == ["P0001", "32,32,64,32", "36,24,24,24", f"{times[7]:.3f}"]
        for _ in range(5):
            page.keyboard.press("n")
        page.wait_for_selector("body[data-state=ready][data-case='6']")
        assert "images/broken.png" in page.inner_text("#panel-image .problem")  # one line; the page goes on
    assert not errors, errors
