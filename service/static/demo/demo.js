"use strict";
// The digits demo: draw a digit (or choose an image), send it to the predict endpoint as a PNG,
// show the class, the probabilities and the 28x28 input the model saw.
// Every URL is relative to the page (see apiUrl), so the page works at / and under a path prefix.

const INK_WIDTH = 20;          // px on the 280x280 canvas: about 2 of MNIST's 28 pixels
const TOKEN_KEY = "digits-demo-token";
const NEEDS_TOKEN = "This server needs an access token. Enter it in the Access token field " +
                    "above and try again.";

const $ = (id) => document.getElementById(id);
const state = {
  models: new Map(),   // name -> the model's info from GET v1/models
  tab: "draw",          // "draw" or "file": the tab shown
  images: { draw: null, file: null },  // each tab's last image, sent again when the model changes
  sent: 0,              // number of the latest request: older answers are dropped
};

// --- talking to the API ---------------------------------------------------------------------
class ApiError extends Error {}

function apiUrl(path) {
  return new URL(path, document.baseURI);  // path has no leading "/": it stays under the prefix
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = $("token").value.trim();
  if (token) headers.set("Authorization", "Bearer " + token);
  let response;
  try {
    response = await fetch(apiUrl(path), { ...options, headers });
  } catch (err) {
    throw new ApiError("Could not reach the server: the network request failed (" + err.message +
                       "). Check that the service is running and try again.");
  }
  let body = null;
  if ((response.headers.get("Content-Type") || "").includes("json")) {
    try { body = await response.json(); } catch { body = null; }
  }
  if (!response.ok) throw new ApiError(describeError(response, body));
  if (body === null) {
    throw new ApiError("The server's answer was not the JSON expected (HTTP " + response.status + ").");
  }
  return body;
}

/** The API's error in plain words: its message, and what exactly was wrong where it says. */
function describeError(response, body) {
  if (response.status === 401) return NEEDS_TOKEN;
  if (response.status === 403) return "The server refused this access token. Check it and try again.";
  const error = body && body.error;
  if (!error || !error.message) {
    return "The server answered with an error: HTTP " + response.status + " " +
           (response.statusText || "") + ".";
  }
  const details = leaves(error.details);
  if (error.code === "validation_error" && details.length) {
    return "The server could not use this input: " + sentences(details);
  }
  return sentences([error.message, ...details]);
}

function leaves(value) {
  if (value === null || value === undefined) return [];
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(leaves);
  if (typeof value === "object") return Object.values(value).flatMap(leaves);
  return [String(value)];
}

function sentences(parts) {
  return parts.map((s) => {
    s = String(s).trim();
    s = s.charAt(0).toUpperCase() + s.slice(1);
    return /[.!?]$/.test(s) ? s : s + ".";
  }).join(" ");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// --- models ---------------------------------------------------------------------------------
async function loadModels() {
  const select = $("model");
  try {
    const body = await api("v1/models");
    state.models = new Map(body.models.map((m) => [m.name, m]));
    const previous = select.value;
    select.textContent = "";
    for (const model of body.models) {
      select.append(new Option(model.name, model.name));
    }
    select.value = state.models.has(previous) ? previous : body.default_model;
    select.disabled = false;
    hideError();
    if (state.images[state.tab]) classify(state.images[state.tab]);  // drawn while loading
  } catch (err) {
    showError(err.message);
  }
}

function currentModel() {
  return state.models.get($("model").value);
}

// --- prediction -----------------------------------------------------------------------------
/** Send one image ({blob} from the canvas or {form: file}) and show what comes back. */
async function classify(image) {
  const model = currentModel();
  if (!model) return;  // the model list failed to load: its error is already shown
  const number = ++state.sent;
  const name = encodeURIComponent(model.name);
  const request = () => image.form
    ? { method: "POST", body: formWith(image.form) }
    : { method: "POST", headers: { "Content-Type": image.blob.type }, body: image.blob };
  $("result").classList.add("busy");
  $("status").textContent = "Asking the model…";
  try {
    const [predicted, seen] = await Promise.all([
      api("v1/models/" + name + "/predict", request()),
      api("v1/models/" + name + "/preprocess", request()),
    ]);
    if (number !== state.sent) return;  // a newer stroke or image was sent meanwhile
    hideError();
    showPrediction(model, predicted.predictions[0]);
    showSeen(seen.inputs[0], seen.shape);
    $("status").textContent = "Model " + predicted.model + ", version " + predicted.version + ".";
  } catch (err) {
    if (number !== state.sent) return;
    clearResult("No prediction: see the message above.");
    showError(err.message);
  } finally {
    if (number === state.sent) $("result").classList.remove("busy");
  }
}

function formWith(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  return form;
}

function showPrediction(model, prediction) {
  const probabilities = prediction.probabilities;
  $("prediction").textContent = prediction.class_name;
  $("confidence").textContent = percent(probabilities[prediction.label]) + " sure";
  const bars = $("bars");
  bars.textContent = "";
  probabilities.forEach((p, i) => {
    const item = document.createElement("li");
    if (i === prediction.label) item.className = "top";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = model.class_names[i];
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * p).toFixed(1) + "%";
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(p);
    item.append(name, bar, pct);
    bars.append(item);
  });
}

function percent(p) {
  return (100 * p).toFixed(p >= 0.995 || p < 0.0005 ? 0 : 1) + "%";
}

/** The model's input (white ink on black, values in [0, 1]) drawn pixel for pixel. */
function showSeen(input, shape) {
  const canvas = $("seen");
  const rows = shape.length === 2 ? input : null;
  const [h, w] = rows ? shape : [1, input.length];
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(w, h);
  const flat = rows ? rows.flat() : input;
  flat.forEach((v, i) => {
    const g = Math.round(255 * Math.min(1, Math.max(0, v)));
    pixels.data.set([g, g, g, 255], 4 * i);
  });
  ctx.putImageData(pixels, 0, 0);
  $("seen-shape").textContent = shape.join("×");
  $("seen-figure").hidden = false;
}

function clearResult(message) {
  $("prediction").textContent = "–";
  $("confidence").textContent = "";
  $("bars").textContent = "";
  $("status").textContent = message;
  $("seen-figure").hidden = true;
}

// --- drawing --------------------------------------------------------------------------------
function setUpCanvas() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  let last = null;

  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return {
      x: (event.clientX - box.left) * canvas.width / box.width,
      y: (event.clientY - box.top) * canvas.height / box.height,
    };
  };
  const segment = (from, to) => {
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  };

  // Pointer events: one code path for mouse, touch and pen.
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    segment(last, last);  // a tap leaves a dot
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const points = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of points.length ? points : [event]) {
      const point = at(e);
      segment(last, point);
      last = point;
    }
  });
  const end = () => {
    if (!last) return;
    last = null;
    canvas.toBlob((blob) => {  // after each stroke
      state.images.draw = { blob };
      if (state.tab === "draw") classify(state.images.draw);
    }, "image/png");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", clearCanvas);
  clearCanvas();
}

function clearCanvas() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#000";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  state.images.draw = null;
  state.sent++;  // an answer still on its way is for the old drawing
  $("result").classList.remove("busy");
  clearResult("Draw a digit to start.");
  hideError();
}

// --- choosing an image ----------------------------------------------------------------------
function setUpFile() {
  const drop = $("drop");
  const original = $("original");
  original.addEventListener("error", () => { original.hidden = true; });  // not a picture
  const use = (file) => {
    if (!file) return;
    if (original.src) URL.revokeObjectURL(original.src);
    original.src = URL.createObjectURL(file);
    original.hidden = false;
    state.images.file = { form: file };
    classify(state.images.file);
  };
  $("file").addEventListener("change", (event) => use(event.target.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    use(event.dataTransfer.files[0]);
  });
}

// --- tabs, model picker, token --------------------------------------------------------------
function setUpTabs() {
  const tabs = [["tab-draw", "panel-draw"], ["tab-file", "panel-file"]];
  for (const [tabId] of tabs) {
    $(tabId).addEventListener("click", () => {
      for (const [otherTab, otherPanel] of tabs) {
        const selected = otherTab === tabId;
        $(otherTab).setAttribute("aria-selected", String(selected));
        $(otherTab).tabIndex = selected ? 0 : -1;
        $(otherPanel).hidden = !selected;
      }
      state.tab = tabId === "tab-draw" ? "draw" : "file";
      state.sent++;
      $("result").classList.remove("busy");
      hideError();
      const image = state.images[state.tab];
      if (image) classify(image);  // the tab's drawing or file, still there
      else clearResult(state.tab === "draw" ? "Draw a digit to start." : "Choose an image to start.");
    });
  }
}

function setUpSettings() {
  const token = $("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("change", () => {
    const value = token.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    if (!state.models.size) loadModels();
    else if (state.images[state.tab]) classify(state.images[state.tab]);
  });
  $("model").addEventListener("change", () => {
    if (state.images[state.tab]) classify(state.images[state.tab]);
  });
  $("settings").addEventListener("submit", (event) => event.preventDefault());
}

setUpSettings();
setUpTabs();
setUpCanvas();
setUpFile();
loadModels();
