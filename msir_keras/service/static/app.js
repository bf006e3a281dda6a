// The page of `msir serve`: a file (chosen, dropped or recorded) -> /v1/predict, or /v1/timeline when it is
// longer than the server's predict limit; probabilities as bars, a timeline as an SVG line chart.
"use strict";

const COLORS = ["#dc2626", "#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const $ = (id) => document.getElementById(id);
let health = null;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function loadHealth() {
  try {
    const response = await fetch("/v1/health");
    health = await response.json();
  } catch (error) {
    $("model").textContent = "The server does not answer: " + error;
    return;
  }
  const classes = Object.values(health.classes).flat().filter((c) => !c.startsWith("not-"));
  $("model").textContent = `Model: ${classes.join(", ")} · ${health.branches ? "branches " + health.branches.join("+") : "inputs " + health.inputs.join("+")} · upstream ` +
    `${health.upstream} · trained on ${health.corpus ? health.corpus.corpus : "an unknown corpus"} · ` +
    `${health.folds} fold model(s)`;
  $("version").textContent = health.version;
  $("limits").textContent = `Up to ${health.limits.max_mb} MB; recordings longer than ` +
    `${health.limits.max_seconds} s get a timeline of 4 s windows.`;
  $("key-section").hidden = !health.api_key_required;
}

async function post(url, blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const response = await fetch(url, { method: "POST", body: form, headers: headers() });
  let body;
  try {
    body = await response.json();
  } catch (error) {
    body = { error: `HTTP ${response.status}` };
  }
  return { status: response.status, body };
}

async function analyse(blob, name) {
  $("result").hidden = true;
  setStatus(`Analysing ${name}…`);
  let { status, body } = await post("/v1/predict", blob, name);
  if (status === 413 && String(body.error).includes("/v1/timeline")) {
    setStatus(`${name} is long: computing its timeline…`);
    ({ status, body } = await post("/v1/timeline?window=4&hop=1", blob, name));
  }
  if (status !== 200) {
    setStatus(`${name}: ${body.error || "HTTP " + status}`, true);
    return;
  }
  setStatus("");
  show(body);
}

function show(result) {
  $("result").hidden = false;
  $("result-title").textContent = result.name;
  const warnings = $("warnings");
  warnings.replaceChildren(...(result.warnings || []).map((w) => {
    const item = document.createElement("li");
    item.textContent = w;
    return item;
  }));
  $("bars").replaceChildren();
  $("timeline").replaceChildren();
  if (result.windows) {
    $("summary").textContent = `${result.duration.toFixed(1)} s: ${result.windows.length} windows of ` +
      `${result.window} s every ${result.hop} s.`;
    drawTimeline(result.windows, result.duration);
    const mean = {};
    for (const key of probabilityKeys(result.windows[0] || {})) {
      mean[key.slice(2)] = result.windows.reduce((s, w) => s + w[key], 0) / result.windows.length;
    }
    drawBars(mean, null, "Mean over the windows");
  } else {
    const detected = Object.entries(result.decisions).filter(([, v]) => v).map(([k]) => k);
    $("summary").textContent = `${result.duration.toFixed(2)} s · ` + (result.predicted
      ? `predicted: ${result.predicted}` : `detected: ${detected.join(", ") || "none"}`);
    drawBars(result.probabilities, result.predicted);
  }
}

function probabilityKeys(row) {
  return Object.keys(row).filter((k) => k.startsWith("p_"));
}

function drawBars(probabilities, predicted, caption) {
  const bars = $("bars");
  if (caption) {
    const title = document.createElement("p");
    title.className = "muted";
    title.textContent = caption;
    bars.append(title);
  }
  Object.entries(probabilities).forEach(([name, p], i) => {
    const row = document.createElement("div");
    row.className = "bar" + (name === predicted ? " top" : "");
    row.dataset.emotion = name;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
      '<span class="value"></span>';
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".fill").style.background = COLORS[i % COLORS.length];
    row.querySelector(".value").textContent = p.toFixed(3);
    bars.append(row);
  });
}

function svg(tag, attributes, parent) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
  if (parent) parent.append(element);
  return element;
}

function drawTimeline(windows, duration) {
  const W = 800, H = 280, left = 44, right = 12, top = 12, bottom = 34;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "emotion timeline" });
  const x = (t) => left + (W - left - right) * t / Math.max(duration, 1e-9);
  const y = (p) => top + (H - top - bottom) * (1 - p);
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    svg("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), class: p === 0 ? "axis" : "grid" }, chart);
    svg("text", { x: left - 6, y: y(p) + 4, "text-anchor": "end" }, chart).textContent = p.toFixed(2);
  }
  const step = Math.max(1, Math.ceil(duration / 10));
  for (let t = 0; t <= duration + 1e-9; t += step) {
    svg("text", { x: x(t), y: H - bottom + 16, "text-anchor": "middle" }, chart).textContent = `${t}`;
  }
  svg("text", { x: (left + W - right) / 2, y: H - 4, "text-anchor": "middle" }, chart).textContent =
    "seconds (window centres)";
  const caption = document.createElement("p");
  caption.className = "muted";
  caption.textContent = "Per window";
  const legend = document.createElement("div");
  legend.className = "legend";
  probabilityKeys(windows[0] || {}).forEach((key, i) => {
    const color = COLORS[i % COLORS.length];
    const points = windows.map((w) => `${x((w.start + w.end) / 2).toFixed(1)},${y(w[key]).toFixed(1)}`);
    svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }, chart);
    const entry = document.createElement("span");
    entry.style.setProperty("--swatch", color);
    entry.textContent = key.slice(2);
    legend.append(entry);
  });
  $("timeline").append(caption, legend, chart);
}

// A recording: MediaRecorder's compressed audio, decoded by the browser and written as 16-bit mono wav,
// which the server's libsndfile reads.
function encodeWav(buffer) {
  const rate = buffer.sampleRate, length = buffer.length, channels = buffer.numberOfChannels;
  const mono = new Float32Array(length);
  for (let c = 0; c < channels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < length; i++) mono[i] += data[i] / channels;
  }
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * length, true);
  for (let i = 0; i < length; i++) {
    const s = Math.max(-1, Math.min(1, mono[i]));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([view], { type: "audio/wav" });
}

let recorder = null;

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setStatus("No microphone: " + error.message, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    recorder = null;
    button.textContent = "Record from the microphone";
    button.classList.remove("recording");
    try {
      const context = new AudioContext();
      const decoded = await context.decodeAudioData(await new Blob(chunks).arrayBuffer());
      await analyse(encodeWav(decoded), "recording.wav");
    } catch (error) {
      setStatus("The recording could not be decoded: " + error.message, true);
    }
  };
  recorder.start();
  button.textContent = "Stop and analyse";
  button.classList.add("recording");
  setStatus("Recording… speak, then press Stop.");
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) analyse(file, file.name);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) analyse(file, file.name);
  });
  $("record").addEventListener("click", toggleRecording);
  if (!navigator.mediaDevices || !window.MediaRecorder) $("record").hidden = true;
  loadHealth();
}

setUp();
