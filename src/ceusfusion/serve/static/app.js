// ceusfusion serve: the page's script. Everything it shows comes from the JSON API
// (/api/model, /api/preview, /api/predict), so anything it does can be scripted.
"use strict";

const FIELDS = ["image", "image_mask", "video", "video_mask"];
const files = {};
const boxes = {};
let card = null;
const SVG = "http://www.w3.org/2000/svg";

function $(sel, root) { return (root || document).querySelector(sel); }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v, d) { return v === null || v === undefined ? "not recorded" : Number(v).toFixed(d === undefined ? 3 : d); }

function showError(msg) {
  const e = $("#error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function api(path, form) {
  const res = await fetch(path, form ? { method: "POST", body: form } : {});
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (!res.ok || body === null) {
    throw new Error(body && body.error ? body.error : `the server answered ${res.status}`);
  }
  return body;
}

// ------------------------------------------------------------------ files and boxes

function setFile(field, file) {
  files[field] = file || null;
  const drop = $(`.drop[data-field="${field}"]`);
  $(".chosen", drop).textContent = file ? `${file.name} (${(file.size / 1e6).toFixed(1)} MB)` : "none";
  drop.classList.toggle("has-file", !!file);
  $("#predict").disabled = !(files.image || files.video);
  const modality = field.replace("_mask", "");
  updateBoxer(modality);
}

const previewFor = {};

async function updateBoxer(modality) {
  const fig = $(`#box-${modality}`);
  delete boxes[modality];
  drawRect(fig, null);
  previewFor[modality] = null;
  if (!files[modality] || files[`${modality}_mask`]) { fig.hidden = true; return; }
  const file = files[modality];
  previewFor[modality] = file;
  const form = new FormData();
  form.append(modality, file);
  try {
    const p = await api("/api/preview", form);
    if (previewFor[modality] !== file) return;  // another file or a mask was chosen meanwhile
    const img = $("img", fig);
    img.src = p.png;
    img.dataset.width = p.width;
    img.dataset.height = p.height;
    $("figcaption", fig).textContent = modality === "video"
      ? `No video mask: drag a box around the nodule on this frame (t = ${fmt(p.time, 1)} s).`
      : "No still mask: drag a box around the nodule.";
    fig.hidden = false;
    showError("");
  } catch (err) {
    if (previewFor[modality] !== file) return;
    fig.hidden = true;
    showError(err.message);
  }
}

function drawRect(fig, box) {
  const rect = $(".rect", fig);
  const img = $("img", fig);
  const val = $(".boxval", fig);
  if (!box) {
    rect.hidden = true;
    val.textContent = `no box drawn (the whole ${fig.dataset.modality === "video" ? "frame" : "still"} is used)`;
    delete fig.dataset.box;
    return;
  }
  const sx = img.clientWidth / Number(img.dataset.width), sy = img.clientHeight / Number(img.dataset.height);
  rect.style.left = `${box[0] * sx}px`;
  rect.style.top = `${box[1] * sy}px`;
  rect.style.width = `${box[2] * sx}px`;
  rect.style.height = `${box[3] * sy}px`;
  rect.hidden = false;
  val.textContent = `box x ${box[0]}, y ${box[1]}, ${box[2]} × ${box[3]} px`;
  fig.dataset.box = JSON.stringify(box);
}

function boxTool(fig) {
  const img = $("img", fig);
  let start = null;
  const at = (ev) => {
    const r = img.getBoundingClientRect();
    const w = Number(img.dataset.width), h = Number(img.dataset.height);
    const x = Math.min(Math.max(ev.clientX - r.left, 0), r.width) * w / r.width;
    const y = Math.min(Math.max(ev.clientY - r.top, 0), r.height) * h / r.height;
    return [x, y];
  };
  const boxOf = (a, b) => [Math.round(Math.min(a[0], b[0])), Math.round(Math.min(a[1], b[1])),
    Math.round(Math.abs(a[0] - b[0])), Math.round(Math.abs(a[1] - b[1]))];
  img.addEventListener("dragstart", (ev) => ev.preventDefault());
  img.addEventListener("pointerdown", (ev) => { start = at(ev); img.setPointerCapture(ev.pointerId); ev.preventDefault(); });
  img.addEventListener("pointermove", (ev) => { if (start) drawRect(fig, boxOf(start, at(ev))); });
  img.addEventListener("pointerup", (ev) => {
    if (!start) return;
    const box = boxOf(start, at(ev));
    start = null;
    if (box[2] >= 2 && box[3] >= 2) { boxes[fig.dataset.modality] = box; drawRect(fig, box); } else { delete boxes[fig.dataset.modality]; drawRect(fig, null); }
  });
}

// ------------------------------------------------------------------ predicting

async function predict() {
  const form = new FormData();
  for (const f of FIELDS) if (files[f]) form.append(f, files[f]);
  if (Object.keys(boxes).length) form.append("box", JSON.stringify(boxes));
  const clinical = {};
  for (const input of document.querySelectorAll("#clinical input")) if (input.value.trim()) clinical[input.name] = input.value.trim();
  if (Object.keys(clinical).length) form.append("clinical", JSON.stringify(clinical));
  const button = $("#predict");
  button.disabled = true;
  showError("");
  $("#status").textContent = "predicting…";
  document.body.dataset.state = "busy";
  const t0 = performance.now();
  try {
    const res = await api("/api/predict", form);
    render(res);
    $("#status").textContent = `done in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    document.body.dataset.state = "done";
  } catch (err) {
    $("#results").hidden = true;
    $("#status").textContent = "";
    showError(err.message);
    document.body.dataset.state = "error";
  } finally {
    button.disabled = !(files.image || files.video);
  }
}

function cardModel(name) { return card ? card.models.find((m) => m.name === name) : null; }

// the outcome's words the bundle recorded (GET /api/model); neutral ones until the card is read or where none was
function words() {
  const o = (card && card.outcome) || {};
  return { negative: o.negative || "negative", positive: o.positive || "positive" };
}

function standing(prob, oof) {
  if (!oof || !oof.prob || !oof.prob.length) return "training probabilities not recorded";
  const share = (ps) => ps.length ? Math.round(100 * ps.filter((p) => p < prob).length / ps.length) : null;
  const neg = oof.prob.filter((_, i) => oof.y[i] === 0), pos = oof.prob.filter((_, i) => oof.y[i] === 1);
  const w = words();
  return `higher than ${share(oof.prob)} % of ${oof.prob.length} training patients ` +
    `(${share(neg) ?? "–"} % of ${neg.length} ${w.negative}, ${share(pos) ?? "–"} % of ${pos.length} ${w.positive}; out-of-fold)`;
}

function render(res) {
  const body = $("#probs tbody");
  body.replaceChildren();
  const warn = $("#warnings");  // whole-frame scoring and the like: said before any number
  if (warn) warn.replaceChildren(...(res.warnings || []).map((w) => el("p", { class: "warning" }, "Warning: " + w)));
  $("#strips").replaceChildren();
  for (const [name, m] of Object.entries(res.models)) {
    const tr = el("tr", { "data-model": name });
    tr.append(el("td", {}, name));
    if (!m.available) {
      tr.append(el("td", { class: "prob na" }, "n/a"), el("td", {}, ""), el("td", {}, ""), el("td", { class: "muted" }, m.reason || ""));
      body.append(tr);
      continue;
    }
    const cm = cardModel(name);
    tr.append(el("td", { class: "prob", "data-prob": String(m.prob) }, m.prob.toFixed(3)),
      el("td", { class: "threshold" }, m.threshold.toFixed(3)),
      el("td", { class: m.class ? "cls pos" : "cls neg" },
        m.class ? `${words().positive} (at or above the threshold)` : `${words().negative} (below the threshold)`),
      el("td", { class: "muted" }, standing(m.prob, cm && cm.train_oof)));
    body.append(tr);
    $("#strips").append(strip(name, m, cm && cm.train_oof));
  }
  renderCams(res);
  renderTic(res.inputs && res.inputs.video);
  $("#results").hidden = false;
}

function strip(name, m, oof) {
  const W = 520, H = 84, L = 90, R = 10, x = (p) => L + p * (W - L - R);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "strip", role: "img", "aria-label": `${name} among the training cohort` });
  s.append(svg("text", { x: 4, y: 12, class: "title" }, `${name}: patient ${m.prob.toFixed(3)}`));
  const rows = [[0, words().negative, 34], [1, words().positive, 58]];
  for (const [cls, label, y] of rows) {
    s.append(svg("text", { x: 4, y: y + 4, class: "axis" }, label));
    s.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "rule" }));
    if (!oof || !oof.prob) continue;
    oof.prob.forEach((p, i) => { if (oof.y[i] === cls) s.append(svg("circle", { cx: x(p), cy: y, r: 3.2, class: cls ? "dot pos" : "dot neg" })); });
  }
  if (!oof || !oof.prob) s.append(svg("text", { x: L + 6, y: 48, class: "axis" }, "training probabilities not recorded"));
  s.append(svg("line", { x1: x(m.threshold), x2: x(m.threshold), y1: 20, y2: 68, class: "threshold" }));
  s.append(svg("line", { x1: x(m.prob), x2: x(m.prob), y1: 18, y2: 72, class: "patient" }));
  for (const t of [0, 0.5, 1]) s.append(svg("text", { x: x(t) - 6, y: 82, class: "axis" }, String(t)));
  return s;
}

function renderCams(res) {
  const box = $("#cams");
  box.replaceChildren();
  const kf = res.inputs && res.inputs.video;
  for (const [name, m] of Object.entries(res.models)) {
    if (!m.available || !m.modality) continue;  // a model not run, or the fused model (no map of its own)
    const when = m.modality === "video" && kf ? ` — keyframes at ${kf.times.map((t) => t.toFixed(1)).join(", ")} s` : " — the still";
    if (!m.gradcam) {
      box.append(el("p", { class: "muted nocam", "data-model": name }, `${name}: no Grad-CAM map: ${m.gradcam_reason || "the answer has none"}`));
      continue;
    }
    const fig = el("figure", { class: m.gradcam_empty ? "cam empty" : "cam", "data-model": name });
    fig.append(el("img", { src: m.gradcam, alt: `Grad-CAM of ${name}` }));
    fig.append(el("figcaption", {}, name + when));
    if (m.gradcam_empty) {  // a flat zero map draws as a dark square: say what it is
      fig.append(el("p", { class: "camnote" }, "The map is empty: no region drove the score (Grad-CAM is zero " +
        "everywhere, so the picture shows the colour of 0 over the whole input, not a dark region)."));
    }
    box.append(fig);
  }
  if (!box.children.length) box.append(el("p", { class: "muted" }, "no Grad-CAM (no image or video model was run)"));
}

// Each perfusion parameter of ingest/perfusion.py (COLUMNS): what it is, its unit (intensities are the mean
// grey level 0–255 inside the nodule; times from the start of the video), and a line for the tooltip.
const GREY = "grey level";
const PERFUSION = {
  baseline: ["baseline intensity", GREY, "mean nodule intensity over the first second"],
  peak_intensity: ["peak intensity", GREY, "highest nodule intensity of the smoothed curve"],
  peak_enhancement: ["peak enhancement", GREY, "peak intensity minus baseline"],
  ring_peak_intensity: ["peak intensity of the surrounding ring", GREY, "highest intensity in the parenchyma ring around the nodule"],
  peak_ratio_ring: ["peak ratio, nodule / ring", "", "nodule peak divided by the ring's peak (1: as bright as the surrounding tissue)"],
  time_to_peak: ["time to peak", "s", "from the start of the video to the nodule's peak"],
  arrival_time: ["arrival time", "s", "from the start of the video to 10 % of the enhancement"],
  rise_time: ["rise time", "s", "from 10 % to 90 % of the enhancement"],
  wash_in_slope: ["wash-in slope", `${GREY}/s`, "steepest rise before the peak"],
  auc: ["area under the curve", `${GREY} × s`, "area between the curve and the baseline"],
  wash_out_slope: ["wash-out slope", `${GREY}/s`, "straight-line slope after the peak (negative: washing out)"],
  gv_A: ["gamma-variate amplitude A", "", "scale of the fitted bolus b + A·(t−t0)^α·exp(−(t−t0)/β)"],
  gv_t0: ["gamma-variate arrival t0", "s", "time the fitted bolus starts"],
  gv_alpha: ["gamma-variate shape α", "", "rise shape of the fitted bolus"],
  gv_beta: ["gamma-variate time constant β", "s", "decay time constant of the fitted bolus"],
  gv_b: ["gamma-variate baseline b", GREY, "baseline of the fitted bolus"],
  gv_peak_time: ["gamma-variate time to peak", "s", "t0 + α·β"],
  gv_mtt: ["gamma-variate mean transit time", "s", "(α + 1)·β"],
  gv_r2: ["gamma-variate fit R²", "", "how well the curve follows a bolus shape (1: perfectly)"],
  tic_frames: ["frames on the curve", "frames", "video frames measured"],
  tic_duration: ["curve duration", "s", "from the first to the last frame measured"],
};

function perfusionCells(k, val) {
  const [label, unit, what] = PERFUSION[k] || [k.replaceAll("_", " "), "", ""];
  const num = Number.isInteger(val) ? String(val) : val.toPrecision(4);
  return [el("th", what ? { title: what } : {}, label), el("td", { "data-key": k }, unit ? `${num} ${unit}` : num)];
}

function renderTic(v) {
  const box = $("#tic"), table = $("#perfusion tbody");
  box.replaceChildren();
  table.replaceChildren();
  if (!v || !v.tic) {
    box.append(el("p", { class: "muted" }, v ? "no time–intensity curve: it needs a video mask or a box" : "no video given"));
    return;
  }
  const t = v.tic, W = 560, H = 240, L = 44, B = 30, T = 30, R = 10;
  const vals = [...t.lesion, ...t.ring, ...(t.fitted || [])].filter((a) => a !== null);
  const tmax = Math.max(...t.times, 1e-6), ymin = Math.min(...vals), ymax = Math.max(...vals, ymin + 1e-6);
  const X = (a) => L + a / tmax * (W - L - R), Y = (a) => H - B - (a - ymin) / (ymax - ymin) * (H - B - T);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "ticplot", role: "img", "aria-label": "time–intensity curve" });
  s.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "rule" }), svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "rule" }));
  for (const k of v.times) s.append(svg("line", { x1: X(k), x2: X(k), y1: T, y2: H - B, class: "keyframe" }));
  const line = (ys, cls) => {
    const pts = t.times.map((a, i) => (ys[i] === null ? null : `${X(a).toFixed(1)},${Y(ys[i]).toFixed(1)}`)).filter(Boolean);
    s.append(svg("polyline", { points: pts.join(" "), class: cls }));
  };
  line(t.ring, "ring");
  line(t.lesion, "lesion");
  if (t.fitted) line(t.fitted, "fitted");
  s.append(svg("text", { x: W / 2 - 20, y: H - 6, class: "axis" }, `time (s), 0–${tmax.toFixed(0)}`));
  s.append(svg("text", { x: 2, y: T + 8, class: "axis" }, ymax.toFixed(0)), svg("text", { x: 2, y: H - B, class: "axis" }, ymin.toFixed(0)));
  s.append(svg("text", { x: L, y: 14, class: "legend lesion-t" }, "— nodule"), svg("text", { x: L + 70, y: 14, class: "legend ring-t" }, "— surrounding ring"),
    svg("text", { x: L + 190, y: 14, class: "legend fitted-t" }, "- - gamma-variate fit"), svg("text", { x: L + 320, y: 14, class: "legend keyframe-t" }, "| keyframes"));
  box.append(s);
  const cells = Object.entries(v.perfusion || {}).filter(([, val]) => typeof val === "number");
  for (let i = 0; i < cells.length; i += 2) {
    const tr = el("tr");
    for (const [k, val] of cells.slice(i, i + 2)) tr.append(...perfusionCells(k, val));
    table.append(tr);
  }
}

// the covariates a fused model reads (DLR + clinical, say): one field each; a model whose covariate is left
// empty answers "n/a" with what it needs, the others are scored
function covariateInputs(names) {
  const box = $("#clinical");
  for (const name of names) {
    const label = el("label", {}, `${name} `);
    label.append(el("input", { type: "text", name, "data-covariate": name }));
    box.append(label);
  }
  box.hidden = !names.length;
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const drop of document.querySelectorAll(".drop")) {
    const field = drop.dataset.field, input = $("input", drop);
    input.addEventListener("change", () => setFile(field, input.files[0]));
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      drop.classList.remove("over");
      if (ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; setFile(field, ev.dataTransfer.files[0]); }
    });
  }
  for (const fig of document.querySelectorAll(".boxer")) boxTool(fig);
  $("#predict").addEventListener("click", predict);
  api("/api/model").then((c) => { card = c; covariateInputs(c.covariates || []); document.body.dataset.card = "loaded"; })
    .catch((err) => showError(err.message));
});
