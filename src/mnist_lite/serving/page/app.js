// The drawing pad: pointer events (mouse, pen, touch) draw ink; while drawing, the pad is sent to POST /predict
// at most every DEBOUNCE_MS, and once more when the stroke ends. Only the newest answer is shown.
"use strict";

const DEBOUNCE_MS = 120;
const INK = "#111", PAPER = "#fff", STROKE = 18;

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const result = document.getElementById("result");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const preview = document.getElementById("preview");
const statusLine = document.getElementById("status");
const bars = [];

let drawing = false, last = null, timer = null, sent = 0, inked = false;

function clearPad() {
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  sent += 1;  // an answer still on its way is for a drawing that is gone
  show(null);
  result.dataset.state = "empty";
  statusLine.textContent = "Draw a digit on the pad.";
}

function buildBars() {
  const list = document.getElementById("bars");
  for (let d = 0; d < 10; d++) {
    const item = document.createElement("li");
    item.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    item.querySelector(".label").textContent = d;
    list.appendChild(item);
    bars.push(item);
  }
}

function show(answer) {
  digit.textContent = answer ? answer.prediction : "–";
  confidence.textContent = answer ? `${(100 * answer.confidence).toFixed(1)}% sure` : "";
  if (answer) preview.src = answer.preview; else preview.removeAttribute("src");
  bars.forEach((item, d) => {
    const p = answer ? answer.probabilities[d] : 0;
    item.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".pct").textContent = answer ? `${(100 * p).toFixed(1)}%` : "";
    item.classList.toggle("top", !!answer && d === answer.prediction);
  });
}

async function ask(body, headers) {
  const mine = ++sent;
  result.dataset.state = "pending";
  try {
    const response = await fetch("/predict", { method: "POST", body, headers });
    const answer = await response.json();
    if (mine !== sent) return;
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    show(answer);
    result.dataset.state = "ready";
    statusLine.textContent = answer.confidence < 0.5 ? "Not sure: try a bigger, clearer digit." : "";
  } catch (error) {
    if (mine !== sent) return;
    show(null);
    result.dataset.state = "error";
    statusLine.textContent = error.message;
  }
}

function askAboutPad() {
  clearTimeout(timer);
  timer = null;
  if (inked) ask(JSON.stringify({ image: pad.toDataURL("image/png") }), { "Content-Type": "application/json" });
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

function strokeTo(p) {
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  strokeTo(last);  // a tap leaves a dot
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) strokeTo(point(e));
  if (timer === null) timer = setTimeout(askAboutPad, DEBOUNCE_MS);
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    askAboutPad();
  });
}

async function openImage(file) {
  if (!file) return;
  clearPad();
  statusLine.textContent = file.name;
  try {  // show it on the pad where the browser can decode it (not TIFF); the server reads the file itself
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    inked = true;
  } catch (error) { /* the answer below says whether the server could read it */ }
  const form = new FormData();
  form.append("file", file);
  await ask(form, {});
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("file").addEventListener("change", (event) => openImage(event.target.files[0]));
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("drop"); });
pad.addEventListener("dragleave", () => pad.classList.remove("drop"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("drop");
  openImage(event.dataTransfer.files[0]);
});

ctx.lineCap = ctx.lineJoin = "round";
ctx.lineWidth = STROKE;
ctx.strokeStyle = INK;
buildBars();
clearPad();
fetch("/health").then((r) => r.json()).then((h) => {
  document.getElementById("model").textContent = `Model: ${h.checkpoint}, ${h.parameters.toLocaleString("en")} parameters`;
}).catch(() => {});
