// ceusfusion annotate: the page's script. Everything comes from, and goes to, the JSON API
// (/api/cases, /api/case/I, POST /api/case/I, /api/case/I/proposal/M), so anything it does can be scripted.
"use strict";

const MODALITIES = ["image", "video"];
let cases = [];
let current = -1;
let info = null;
let boxes = { image: null, video: null };
let videoTime = null;
let lastTouched = null;
let segmenter = null;  // the overview's segmenter (annotate --segmenter), null without one
let proposals = { image: null, video: null };
const proposalSeq = { image: 0, video: 0 };
let frameTimer = null;
const SVG = "http://www.w3.org/2000/svg";

function $(sel, root) { return (root || document).querySelector(sel); }

function setState(state) { document.body.dataset.state = state; }

function showError(msg) {
  const e = $("#error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  let out = null;
  try { out = await res.json(); } catch (_) { out = null; }
  if (!res.ok || out === null) throw new Error(out && out.error ? out.error : `the server answered ${res.status}`);
  return out;
}

// ------------------------------------------------------------------ the case list

function renderList(done, total) {
  const ol = $("#cases");
  ol.textContent = "";
  cases.forEach((c, i) => {
    const li = document.createElement("li");
    li.textContent = c.case_id;
    li.dataset.index = String(i);
    li.classList.toggle("done", c.answer !== null);
    li.classList.toggle("current", i === current);
    li.addEventListener("click", () => openCase(i));
    ol.appendChild(li);
  });
  $("#progress").textContent = `${done} of ${total} cases answered`;
  $("#bar-done").style.width = total ? `${(100 * done) / total}%` : "0";
}

function counts() { return [cases.filter((c) => c.answer !== null).length, cases.length]; }

// ------------------------------------------------------------------ one case

function boxText(b) { return b ? b.join(",") : "no box"; }

function nearestFrame(times, t) {
  let best = 0;
  times.forEach((x, k) => { if (Math.abs(x - t) < Math.abs(times[best] - t)) best = k; });
  return best;
}

async function openCase(i) {
  if (i < 0 || i >= cases.length) return;
  current = i;
  setState("loading");
  showError("");
  renderList(...counts());
  $("#case-title").textContent = `${cases[i].case_id} (${i + 1} of ${cases.length})`;
  try {
    info = await api(`/api/case/${i}`);
  } catch (err) {
    showError(err.message);
    setState("error");
    return;
  }
  if (i !== current) return;  // the user moved on meanwhile
  const a = info.answer || {};
  boxes = { image: a.image_box || null, video: a.video_box || null };
  videoTime = a.video_box_time === undefined ? null : a.video_box_time;
  proposals = { image: null, video: null };
  for (const m of MODALITIES) showPanel(m);
  document.body.dataset.case = String(i);
  setState("ready");
  for (const m of MODALITIES) refreshProposal(m);
}

function showPanel(m) {
  const panel = $(`#panel-${m}`);
  const pic = info[m];
  panel.hidden = pic === null;
  if (pic === null) return;
  const problem = $(".problem", panel);
  problem.hidden = !pic.error;
  problem.textContent = pic.error || "";
  $(".stage", panel).hidden = !!pic.error;
  if (pic.error) return;
  const img = $("img", panel);
  if (m === "image") {
    img.src = `/api/case/${info.index}/image`;
  } else {
    const slider = $("#frame");
    slider.max = String(pic.times.length - 1);
    slider.value = String(videoTime === null ? 0 : nearestFrame(pic.times, videoTime));
    showFrame();
  }
  img.onload = () => { drawRect(m); drawProposal(m); };
  drawRect(m);
}

function showFrame() {
  const k = Number($("#frame").value);
  $("#panel-video img").src = `/api/case/${info.index}/frame/${k}`;
  $("#frame-time").textContent = `frame ${k + 1} of ${info.video.times.length}, ${info.video.times[k].toFixed(2)} s`;
  if (segmenter && !boxes.video) {  // the automatic proposal follows the frame shown
    clearTimeout(frameTimer);
    frameTimer = setTimeout(() => refreshProposal("video"), 200);
  }
}

// ------------------------------------------------------------------ the segmenter's proposal

function proposalPath(m) {
  const q = new URLSearchParams();
  if (boxes[m]) q.set("box", boxes[m].join(","));
  if (m === "video") q.set("t", String(proposalTime()));
  return `/api/case/${info.index}/proposal/${m}?${q}`;
}

function proposalTime() {
  return boxes.video && videoTime !== null ? videoTime : info.video.times[Number($("#frame").value)];
}

async function refreshProposal(m) {
  if (!segmenter || !info || !info[m] || info[m].error) return;
  const seq = ++proposalSeq[m];
  const i = info.index;
  const t = m === "video" ? proposalTime() : null;
  proposals[m] = null;
  $(`#stage-${m}`).dataset.proposal = "loading";
  drawProposal(m);
  let p;
  try {
    p = await api(proposalPath(m));
    p.sentTime = t;
  } catch (err) {
    p = { error: err.message };
  }
  if (seq !== proposalSeq[m] || !info || info.index !== i) return;  // a newer box, frame or case meanwhile
  proposals[m] = p;
  $(`#stage-${m}`).dataset.proposal = p.error ? "error" : (p.box ? "ready" : "empty");
  $(`#stage-${m}`).dataset.mode = p.mode || "";
  drawProposal(m);
}

function drawProposal(m) {
  const svg = $(`#stage-${m} svg`);
  const val = $(`#prop-${m}`);
  const p = proposals[m];
  svg.textContent = "";
  val.hidden = !segmenter;
  if (!p) { svg.setAttribute("hidden", ""); val.textContent = segmenter ? "segmenter: working..." : ""; return; }
  if (p.error || !p.box) {
    svg.setAttribute("hidden", "");
    val.textContent = `segmenter: ${p.error || p.note}`;
    return;
  }
  svg.removeAttribute("hidden");
  svg.setAttribute("viewBox", `0 0 ${p.width} ${p.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const c of p.contour) {
    const poly = document.createElementNS(SVG, "polygon");
    poly.setAttribute("points", c.map((q) => q.join(",")).join(" "));
    svg.appendChild(poly);
  }
  if (p.mode === "auto") {  // the suggested box: what `a` writes to the boxes file
    const r = document.createElementNS(SVG, "rect");
    [["x", 0], ["y", 1], ["width", 2], ["height", 3]].forEach(([k, j]) => r.setAttribute(k, String(p.box[j])));
    svg.appendChild(r);
  }
  const at = m === "video" ? ` at ${Number(p.time).toFixed(2)} s` : "";
  val.textContent = `segmenter (${p.mode_words}${at}): suggested box ${boxText(p.box)}, folds agree ${p.agreement.toFixed(2)}; a accepts`;
}

function drawRect(m) {
  const stage = $(`#stage-${m}`);
  const img = $("img", stage);
  const rect = $(".rect", stage);
  const b = boxes[m];
  const pic = info && info[m];
  $(`#val-${m}`).textContent = m === "video" && b ? `${boxText(b)} drawn at ${Number(videoTime).toFixed(2)} s` : boxText(b);
  if (!b || !pic || pic.error || !img.clientWidth) { rect.hidden = true; return; }
  const s = img.clientWidth / pic.width;
  rect.hidden = false;
  rect.style.left = `${b[0] * s}px`;
  rect.style.top = `${b[1] * s}px`;
  rect.style.width = `${b[2] * s}px`;
  rect.style.height = `${b[3] * s}px`;
}

// ------------------------------------------------------------------ drawing and moving a box

function sourcePoint(m, ev) {
  const img = $(`#stage-${m} img`);
  const r = img.getBoundingClientRect();
  const pic = info[m];
  const x = Math.min(Math.max((ev.clientX - r.left) * (pic.width / r.width), 0), pic.width);
  const y = Math.min(Math.max((ev.clientY - r.top) * (pic.height / r.height), 0), pic.height);
  return [x, y];
}

function clampBox(m, x, y, w, h) {
  const pic = info[m];
  w = Math.max(1, Math.min(Math.round(w), pic.width));
  h = Math.max(1, Math.min(Math.round(h), pic.height));
  x = Math.min(Math.max(Math.round(x), 0), pic.width - w);
  y = Math.min(Math.max(Math.round(y), 0), pic.height - h);
  return [x, y, w, h];
}

function startDrag(m, ev) {
  if (!info || !info[m] || info[m].error || ev.button !== 0) return;
  ev.preventDefault();
  const stage = $(`#stage-${m}`);
  stage.setPointerCapture(ev.pointerId);
  const [x0, y0] = sourcePoint(m, ev);
  const b = boxes[m];
  const moving = b && x0 >= b[0] && x0 <= b[0] + b[2] && y0 >= b[1] && y0 <= b[1] + b[3];
  const start = b ? b.slice() : null;
  const move = (e) => {
    const [x, y] = sourcePoint(m, e);
    const next = moving ? clampBox(m, start[0] + x - x0, start[1] + y - y0, start[2], start[3])
      : clampBox(m, Math.min(x, x0), Math.min(y, y0), Math.abs(x - x0), Math.abs(y - y0));
    if (moving || (next[2] >= 2 && next[3] >= 2)) setBox(m, next);
  };
  const end = (e) => {
    move(e);
    stage.removeEventListener("pointermove", move);
    stage.removeEventListener("pointerup", end);
    refreshProposal(m);  // redo: box-prompted from the new box
  };
  stage.addEventListener("pointermove", move);
  stage.addEventListener("pointerup", end);
}

function setBox(m, b) {
  boxes[m] = b;
  lastTouched = m;
  if (m === "video") videoTime = b ? info.video.times[Number($("#frame").value)] : null;
  drawRect(m);
  $("#saved").textContent = "not saved yet: Enter accepts";
}

// ------------------------------------------------------------------ answers and navigation

function clearBox(m) {
  setBox(m, null);
  refreshProposal(m);
}

async function acceptProposal() {
  // each picture without a box of the user's takes the proposal's box (a user's box prompted the proposal)
  if (!segmenter || current < 0 || document.body.dataset.state === "saving") return;
  if (MODALITIES.some((m) => info && info[m] && !info[m].error && !proposals[m])) return;  // one still on its way
  for (const m of MODALITIES) {
    const p = proposals[m];
    if (!boxes[m] && p && p.box) {
      boxes[m] = p.box.slice();
      if (m === "video") videoTime = p.sentTime;
    }
  }
  await accept();
}

async function accept() {
  if (current < 0 || document.body.dataset.state === "saving") return;
  const i = current;
  setState("saving");
  try {
    const res = await api(`/api/case/${i}`, {
      image_box: boxes.image, video_box: boxes.video, video_box_time: boxes.video ? videoTime : null });
    cases[i].answer = res.answer;
    $("#saved").textContent = `${cases[i].case_id}: saved (${res.done} of ${res.total})`;
    renderList(res.done, res.total);
    setState("saved");
    if (i + 1 < cases.length) await openCase(i + 1); else setState("ready");
  } catch (err) {
    showError(err.message);
    setState("error");
  }
}

function stepFrame(d) {
  const s = $("#frame");
  if (!info || !info.video || info.video.error) return;
  s.value = String(Math.min(Math.max(Number(s.value) + d, 0), Number(s.max)));
  showFrame();
}

function onKey(ev) {
  const onSlider = ev.target && ev.target.id === "frame";
  if (ev.key === "Enter") { ev.preventDefault(); accept(); }
  else if (ev.key === "n" || (ev.key === "ArrowRight" && !onSlider)) openCase(current + 1);
  else if (ev.key === "p" || (ev.key === "ArrowLeft" && !onSlider)) openCase(current - 1);
  else if (ev.key === ".") stepFrame(1);
  else if (ev.key === ",") stepFrame(-1);
  else if (ev.key === "a") acceptProposal();
  else if ((ev.key === "Delete" || ev.key === "Backspace") && lastTouched) clearBox(lastTouched);
}

async function start() {
  setState("loading");
  for (const m of MODALITIES) {
    $(`#stage-${m}`).addEventListener("pointerdown", (ev) => startDrag(m, ev));
    $(`.clear[data-modality="${m}"]`).addEventListener("click", () => clearBox(m));
  }
  $("#frame").addEventListener("input", showFrame);
  $("#prev").addEventListener("click", () => openCase(current - 1));
  $("#next").addEventListener("click", () => openCase(current + 1));
  $("#accept").addEventListener("click", accept);
  $("#accept-proposal").addEventListener("click", acceptProposal);
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => MODALITIES.forEach(drawRect));
  try {
    const ov = await api("/api/cases");
    cases = ov.cases;
    segmenter = ov.segmenter;
    $("#accept-proposal").hidden = !segmenter;
    $("#segmenter-keys").hidden = !segmenter;
    renderList(ov.done, ov.total);
    await openCase(ov.resume);
  } catch (err) {
    showError(err.message);
    setState("error");
  }
}

document.addEventListener("DOMContentLoaded", start);
