"use strict";
// The digits demo: draw a digit (or choose an image), send it to the predict endpoint as a PNG,
// show the class, the probabilities, the 28x28 input the model saw, and why: the explain
// endpoint's heatmap for the predicted class or any class the person picks; and, when the
// server collects corrections, "Wrong? It was:" sends the right class to the feedback endpoint.
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
  why: null,            // the heatmaps of the image last answered (see showWhy)
  feedback: false,      // the server stores corrections (GET v1/models says)
  answered: null,       // the image last answered, its model, label and request id: what a
                        // correction corrects
};

// --- talking to the API ---------------------------------------------------------------------
class ApiError extends Error {}

function apiUrl(path) {
  return new URL(path, document.baseURI);  // path has no leading "/": it stays under the prefix
}

/** The API's JSON answer; an ApiError in plain words if there is none. */
async function api(path, options = {}) {
  const response = await send(path, options);
  const body = await jsonOf(response);
  if (!response.ok) throw new ApiError(describeError(response, body));
  if (body === null) {
    throw new ApiError("The server's answer was not the JSON expected (HTTP " + response.status + ").");
  }
  return body;
}

/** The API's PNG answer (Accept: image/png) as a Blob, with the response's headers. */
async function apiPicture(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "image/png");
  const response = await send(path, { ...options, headers });
  if (!response.ok) throw new ApiError(describeError(response, await jsonOf(response)));
  const blob = await response.blob();
  if (blob.type !== "image/png") {
    throw new ApiError("The server's answer was not the PNG expected (HTTP " + response.status + ").");
  }
  return { blob, headers: response.headers };
}

/** fetch, with the access token if one is entered; a network failure in plain words. */
async function send(path, options) {
  const headers = new Headers(options.headers || {});
  const token = $("token").value.trim();
  if (token) headers.set("Authorization", "Bearer " + token);
  try {
    return await fetch(apiUrl(path), { ...options, headers });
  } catch (err) {
    throw new ApiError("Could not reach the server: the network request failed (" + err.message +
                       "). Check that the service is running and try again.");
  }
}

async function jsonOf(response) {
  if (!(response.headers.get("Content-Type") || "").includes("json")) return null;
  try { return await response.json(); } catch { return null; }
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
    state.feedback = body.feedback === true;
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
  // The prediction's id, which a correction of it names (the server echoes a sane one).
  const requestId = newRequestId();
  const predict = request();
  predict.headers = { ...(predict.headers || {}), "X-Request-ID": requestId };
  $("result").classList.add("busy");
  forgetFeedback();
  $("status").textContent = "Asking the model…";
  forgetWhy({ keepShown: true });  // dimmed until the new image's heatmap replaces it
  // The predicted class's heatmap is asked for at once, beside the prediction.
  const why = { model, image, label: null, asked: 0, pictures: new Map() };
  const firstPicture = explain(why, null);
  const discard = () => firstPicture.then((picture) => URL.revokeObjectURL(picture.url), () => {});
  firstPicture.catch(() => {});  // its error is shown with the heatmap, if the prediction succeeds
  try {
    const [predicted, seen] = await Promise.all([
      api("v1/models/" + name + "/predict", predict),
      api("v1/models/" + name + "/preprocess", request()),
    ]);
    if (number !== state.sent) return discard();  // a newer stroke or image was sent meanwhile
    hideError();
    const prediction = predicted.predictions[0];
    showPrediction(model, prediction);
    showSeen(seen.inputs[0], seen.shape);
    $("status").textContent = "Model " + predicted.model + ", version " + predicted.version + ".";
    why.label = prediction.label;
    state.why = why;
    showFeedback({ model, image, label: prediction.label, requestId });
    showWhy(why, prediction.label, firstPicture);
  } catch (err) {
    discard();
    if (number !== state.sent) return;
    clearResult("No prediction: see the message above.");
    showError(err.message);
  } finally {
    if (number === state.sent) $("result").classList.remove("busy");
  }
}

/** 128 random bits as 32 hex digits (crypto.randomUUID needs a secure context; this does not). */
function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function formWith(file, fields = {}) {
  const form = new FormData();
  form.append("image", file, file.name);
  for (const [key, value] of Object.entries(fields)) form.append(key, value);
  return form;
}

// --- why: the explain endpoint's heatmap ----------------------------------------------------
// The server draws the heatmap (service/heatmap.py): the page shows exactly the picture that
// `curl -H 'Accept: image/png' .../explain` gives, with one colour scale, and needs no drawing
// code of its own. Each class's picture is asked for once per image and kept as a blob: URL
// (the page's Content-Security-Policy allows blob: images) until the next image.

/** Ask for the heatmap of class `target` (null: the predicted class) of `why.image`. */
async function explain(why, target) {
  const name = encodeURIComponent(why.model.name);
  const { form, blob } = why.image;
  const chosen = target === null ? {} : { target: String(target) };
  // A form carries the target as a field; a raw image body has only the query string for it.
  const query = !form && target !== null ? "?target=" + target : "";
  const options = form
    ? { method: "POST", body: formWith(form, chosen) }
    : { method: "POST", headers: { "Content-Type": blob.type }, body: blob };
  const answer = await apiPicture("v1/models/" + name + "/explain" + query, options);
  return { url: URL.createObjectURL(answer.blob), target: Number(answer.headers.get("X-Target")) };
}

/** Show class `target`'s heatmap: from `pending` (a promise of explain's answer), the ones
 *  already fetched, or a new request. The latest pick wins; a new image drops them all. */
async function showWhy(why, target, pending = null) {
  const asked = ++why.asked;
  showWhyClasses(why, target);
  $("why").hidden = false;
  $("why").classList.add("busy");
  $("why-image").setAttribute("aria-busy", "true");
  let picture = why.pictures.get(target);
  try {
    if (!picture) {
      picture = await (pending || explain(why, target));
      if (state.why === why) why.pictures.set(picture.target, picture);
      else URL.revokeObjectURL(picture.url);  // the image changed meanwhile
    }
  } catch (err) {
    if (state.why !== why || asked !== why.asked) return;
    $("why-image").hidden = true;
    $("why-caption").textContent = "No heatmap for " + why.model.class_names[target] + ": " +
                                   err.message;
    return;
  } finally {
    if (state.why === why && asked === why.asked) {
      $("why").classList.remove("busy");
      $("why-image").removeAttribute("aria-busy");
    }
  }
  if (state.why !== why || asked !== why.asked) return;  // another class or image came since
  const names = why.model.class_names;
  const shown = names[picture.target];
  const image = $("why-image");
  image.src = picture.url;
  image.alt = "Heatmap of the pixels that raised (red) or lowered (blue) the probability of " +
              shown + ".";
  image.dataset.target = String(picture.target);
  image.hidden = false;
  $("why-caption").textContent = picture.target === why.label
    ? "Why " + shown + ": the model's answer."
    : "Why (not) " + shown + ": the model answered " + names[why.label] + ".";
  showWhyClasses(why, picture.target);
}

/** One button per class, the one shown pressed. */
function showWhyClasses(why, pressed) {
  const group = $("why-classes");
  if (group.dataset.model !== why.model.name) {
    group.textContent = "";
    group.dataset.model = why.model.name;
    why.model.class_names.forEach((className, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = className;
      button.dataset.target = String(i);
      button.setAttribute("aria-label", "Explain " + className);
      button.addEventListener("click", () => {
        if (state.why) showWhy(state.why, i);
      });
      group.append(button);
    });
  }
  for (const button of group.children) {
    const i = Number(button.dataset.target);
    button.setAttribute("aria-pressed", String(i === pressed));
    button.classList.toggle("answer", i === why.label);
    button.disabled = false;
  }
}

/** Free the pictures of the image last answered, and hide its heatmap; or, with keepShown
 *  (a new image is on its way), leave the picture on show dimmed, its buttons disabled. */
function forgetWhy({ keepShown = false } = {}) {
  if (state.why) {
    for (const picture of state.why.pictures.values()) URL.revokeObjectURL(picture.url);
  }
  state.why = null;
  if (keepShown) {
    $("why").classList.add("busy");
    for (const button of $("why-classes").children) button.disabled = true;
    return;
  }
  $("why").hidden = true;
  $("why").classList.remove("busy");
  $("why-image").removeAttribute("src");
  $("why-image").hidden = true;
  $("why-caption").textContent = "";
}

// --- corrections: the feedback endpoint ------------------------------------------------------
/** "Wrong? It was:" with a button per class but the answer, when the server stores corrections. */
function showFeedback(answered) {
  state.answered = answered;
  if (!state.feedback) return;
  const group = $("feedback-classes");
  group.textContent = "";
  answered.model.class_names.forEach((className, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = className;
    button.dataset.label = String(i);
    button.setAttribute("aria-label", "It was " + className);
    button.setAttribute("aria-pressed", "false");
    button.disabled = i === answered.label;  // the answer itself is no correction
    button.addEventListener("click", () => sendFeedback(answered, i));
    group.append(button);
  });
  $("feedback-status").textContent = "";
  $("feedback").hidden = false;
}

function forgetFeedback() {
  state.answered = null;
  $("feedback").hidden = true;
  $("feedback-classes").textContent = "";
  $("feedback-status").textContent = "";
}

/** Send the image again with the right class (and what the model said, and the prediction's id). */
async function sendFeedback(answered, label) {
  const name = encodeURIComponent(answered.model.name);
  const fields = {
    label: String(label),
    predicted: String(answered.label),
    request_id: answered.requestId,
  };
  const { form, blob } = answered.image;
  const query = form ? "" : "?" + new URLSearchParams(fields);  // a raw body has only the query
  const options = form
    ? { method: "POST", body: formWith(form, fields) }
    : { method: "POST", headers: { "Content-Type": blob.type }, body: blob };
  const status = $("feedback-status");
  const className = answered.model.class_names[label];
  for (const button of $("feedback-classes").children) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.label) === label));
  }
  status.textContent = "Saving…";
  try {
    const body = await api("v1/models/" + name + "/feedback" + query, options);
    if (state.answered !== answered) return;  // another image since
    const stored = body.stored[0];
    status.textContent = stored.status === "duplicate"
      ? "Already saved as " + className + ": thank you."
      : "Saved as " + className + ": the next training learns from it. Thank you.";
  } catch (err) {
    if (state.answered !== answered) return;
    status.textContent = "Not saved: " + err.message;
  }
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
  forgetWhy();
  forgetFeedback();
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
