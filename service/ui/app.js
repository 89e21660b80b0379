// Model explorer: talks only to the public JSON API (/models, /encode, /denoise,
// /reconstruction-error, /sample), the same endpoints any client uses.
(function () {
  "use strict";

  const KEY_STORAGE = "ae-explorer-api-key";
  // Drawing happens on a grid `fine` times finer than the model's image (at most FINE, and no finer than
  // MAX_FINE_SIDE cells a side), then each fine x fine block is averaged into one pixel (as the digits
  // were made).
  const FINE = 8;
  const MAX_FINE_SIDE = 512;
  const DRAW_SIZE = 256;
  // Side, in screen pixels, of the canvases that show one image at the model's resolution.
  const PIXEL_VIEW = 160;

  // Ten rows of sklearn's load_digits (one per class), raw pixel values 0..16, 8x8 row-major.
  const EXAMPLE_DIGITS = [
    [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0],
    [0,0,0,12,13,5,0,0,0,0,0,11,16,9,0,0,0,0,3,15,16,6,0,0,0,7,15,16,16,2,0,0,0,0,1,16,16,3,0,0,0,0,1,16,16,6,0,0,0,0,1,16,16,6,0,0,0,0,0,11,16,10,0,0],
    [0,0,0,4,15,12,0,0,0,0,3,16,15,14,0,0,0,0,8,13,8,16,0,0,0,0,1,6,15,11,0,0,0,1,8,13,15,1,0,0,0,9,16,16,5,0,0,0,0,3,13,16,16,11,5,0,0,0,0,3,11,16,9,0],
    [0,0,7,15,13,1,0,0,0,8,13,6,15,4,0,0,0,2,1,13,13,0,0,0,0,0,2,15,11,1,0,0,0,0,0,1,12,12,1,0,0,0,0,0,1,10,8,0,0,0,8,4,5,14,9,0,0,0,7,13,13,9,0,0],
    [0,0,0,1,11,0,0,0,0,0,0,7,8,0,0,0,0,0,1,13,6,2,2,0,0,0,7,15,0,9,8,0,0,5,16,10,0,16,6,0,0,4,15,16,13,16,1,0,0,0,0,3,15,10,0,0,0,0,0,2,16,4,0,0],
    [0,0,12,10,0,0,0,0,0,0,14,16,16,14,0,0,0,0,13,16,15,10,1,0,0,0,11,16,16,7,0,0,0,0,0,4,7,16,7,0,0,0,0,0,4,16,9,0,0,0,5,4,12,16,4,0,0,0,9,16,16,10,0,0],
    [0,0,0,12,13,0,0,0,0,0,5,16,8,0,0,0,0,0,13,16,3,0,0,0,0,0,14,13,0,0,0,0,0,0,15,12,7,2,0,0,0,0,13,16,13,16,3,0,0,0,7,16,11,15,8,0,0,0,1,9,15,11,3,0],
    [0,0,7,8,13,16,15,1,0,0,7,7,4,11,12,0,0,0,0,0,8,13,1,0,0,4,8,8,15,15,6,0,0,2,11,15,15,4,0,0,0,0,0,16,5,0,0,0,0,0,9,15,1,0,0,0,0,0,13,5,0,0,0,0],
    [0,0,9,14,8,1,0,0,0,0,12,14,14,12,0,0,0,0,9,10,0,15,4,0,0,0,3,16,12,14,2,0,0,0,4,16,16,2,0,0,0,3,16,8,10,13,2,0,0,1,15,1,3,16,8,0,0,0,11,16,15,11,1,0],
    [0,0,11,12,0,0,0,0,0,2,16,16,16,13,0,0,0,3,16,12,10,14,0,0,0,1,16,1,12,15,0,0,0,0,13,16,9,15,2,0,0,0,0,3,0,9,11,0,0,0,0,0,9,15,4,0,0,0,9,12,13,3,0,0],
  ];
  const EXAMPLE_MAX = 16;

  const $ = (id) => document.getElementById(id);
  // The page lives at <service>/ui/: resolve the API against its parent so a path prefix added by a
  // reverse proxy keeps working.
  const API_BASE = new URL("..", location.href);

  const state = {
    apiKey: "",
    models: [],
    model: null, // the chosen entry of /models
    range: [0, 1], // raw value of an empty pixel and of full ink
    fine: null, // Float32Array, (h * fineScale) * (w * fineScale), ink in [0, 1]
    fineScale: FINE, // fine cells per model pixel, along each axis
    noisePattern: null, // Float32Array (input_dim,), standard normal, fixed until re-rolled
    lastInput: null, // the vector last sent for scoring, raw units
    inflight: false,
    dirty: false,
    generation: 0, // bumped when the model changes so late answers are dropped
    tabRows: null,
    tabResult: null,
    tabSelected: 0,
    series: null, // {names, times, values: steps x channels} of the last scored series
    seriesResult: null,
    seriesSelected: null, // the step whose channel errors are shown
    currentScores: [],
    lastCode: null, // [latent, log_var | null] of the last /encode answer, to redraw on resize
    lastGauge: null, // [score, threshold] of the last /reconstruction-error answer
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => (d && d.msg ? (Array.isArray(d.loc) ? d.loc.join(".") + ": " : "") + d.msg : JSON.stringify(d)))
        .join("; ");
    }
    return JSON.stringify(detail);
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.apiKey) headers.Authorization = "Bearer " + state.apiKey;
    let response;
    try {
      const url = new URL(path.replace(/^\//, ""), API_BASE);
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, "could not reach the service (" + err.message + ")");
    }
    const text = await response.text();
    let payload = null;
    try {
      payload = text ? JSON.parse(text) : null;
    } catch (err) {
      payload = null;
    }
    if (!response.ok) {
      const detail = payload && payload.detail !== undefined ? detailText(payload.detail) : text || response.statusText;
      throw new ApiError(response.status, detail);
    }
    if (payload === null) throw new ApiError(response.status, "the service answered with something that is not JSON");
    return payload;
  }

  function showError(err, context) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      const banner = $("auth-banner");
      banner.textContent =
        err.status === 401
          ? "401 Unauthorized: this service requires an API key. Enter it above and press “Use key”. (" + err.detail + ")"
          : "403 Forbidden: the API key was not accepted. Check it and press “Use key” again. (" + err.detail + ")";
      banner.hidden = false;
      $("api-key").classList.add("needs-attention");
      return;
    }
    const banner = $("error-banner");
    const status = err instanceof ApiError && err.status ? err.status + ": " : "";
    banner.textContent = (context ? context + " failed: " : "") + status + (err.detail || err.message);
    banner.hidden = false;
  }

  function clearErrors() {
    $("auth-banner").hidden = true;
    $("error-banner").hidden = true;
  }

  function modelRef(extra) {
    const m = state.model;
    return Object.assign({ model: m.name, version: m.version }, extra);
  }

  function scoreOptions() {
    const opts = { score: $("score-select").value || state.model.default_score };
    const far = parseFloat($("far-input").value);
    if (Number.isFinite(far)) opts.false_alarm_rate = far;
    return opts;
  }

  // ---------------------------------------------------------------- formatting

  function fmt(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    if (a >= 100) return x.toFixed(1);
    if (a >= 1) return x.toFixed(3);
    return x.toPrecision(3);
  }

  function pct(x) {
    return Number.isFinite(x) ? +(x * 100).toPrecision(3) + "%" : "–";
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  // ---------------------------------------------------------------- model list

  function defaultCalibration(model) {
    const cal = model.calibration || {};
    return cal[model.default_score] || Object.values(cal)[0] || null;
  }

  function isImageModel(model) {
    return model.image != null;
  }

  function isSeriesModel(model) {
    return model.kind === "series" && model.series != null;
  }

  // Column names a model's inputs are keyed by, or null when it has none.
  function columnNames(model) {
    return Array.isArray(model.feature_names) && model.feature_names.length ? model.feature_names : null;
  }

  // [height, width] of an image model's samples.
  function imageShape(model) {
    return [model.image.height, model.image.width];
  }

  function imageChannels(model) {
    return model.image.channels || 1;
  }

  // One image (height * width grey values, row-major) in the layout an image model reads and answers in:
  // [height][width] for one channel, [channels][height][width] (the grey copied to each) for more.
  function asImage(values, model) {
    const [h, w] = imageShape(model);
    const rows = Array.from({ length: h }, (_, y) => values.slice(y * w, (y + 1) * w));
    const c = imageChannels(model);
    return c === 1 ? rows : Array.from({ length: c }, () => rows);
  }

  // An image answered by the service (nested [channels][height][width], [height][width], or flat) as
  // height * width values, the mean over its channels.
  function asGrey(image, model) {
    const flat = Array.isArray(image) ? image.flat(Infinity) : [];
    const [h, w] = imageShape(model);
    const n = h * w;
    const c = Math.max(1, Math.round(flat.length / n));
    const grey = new Array(n).fill(0);
    for (let k = 0; k < c; k++) for (let i = 0; i < n; i++) grey[i] += flat[k * n + i] / c;
    return grey;
  }

  // The raw values an image's 0 and full ink stand for: the model's recorded pixel range.
  function valueRange(model) {
    const range = model.image && model.image.pixel_range;
    if (Array.isArray(range) && range.length === 2 && range[1] > range[0]) return [range[0], range[1]];
    const data = model.data;
    if (data && Array.isArray(data.feature_min) && Array.isArray(data.feature_max) && data.feature_min.length) {
      const lo = Math.min(...data.feature_min);
      const hi = Math.max(...data.feature_max);
      if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) return [lo, hi];
    }
    if (Array.isArray(model.feature_range) && model.feature_range.length === 2) return model.feature_range;
    return [0, 1];
  }

  async function loadModels() {
    $("models-status").textContent = "Loading models…";
    $("models-status").hidden = false;
    let payload;
    try {
      payload = await api("GET", "/models");
    } catch (err) {
      $("models-status").textContent = "Could not list the models.";
      showError(err, "Listing models");
      return;
    }
    clearErrors();
    state.models = Array.isArray(payload.models) ? payload.models : [];
    renderModelTable();
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("model");
    const ready = state.models.filter((m) => m.status !== "failed");
    const keep = state.model && ready.find((m) => m.name === state.model.name && m.version === state.model.version);
    const pick =
      keep ||
      ready.find((m) => m.name === fromHash) ||
      ready.find((m) => isImageModel(m)) ||
      ready[0];
    if (pick) selectModel(pick);
  }

  // Held-out metrics worth a glance in the table; the rest fold away.
  const KEY_METRICS = ["test_mse", "test_mse_raw", "mse_to_pca_ratio", "pca_mse", "denoise_to_noisy_ratio"];

  function metricsCell(all) {
    const item = ([k, v]) => el("span", { class: "metric" }, [el("b", { text: k + " " }), fmt(v)]);
    const entries = Object.entries(all);
    const key = KEY_METRICS.filter((k) => k in all).slice(0, 3);
    const shown = key.length ? key.map((k) => [k, all[k]]) : entries.slice(0, 3);
    const rest = entries.filter(([k]) => !shown.some(([s]) => s === k));
    const cell = el("div", { class: "metrics" }, shown.map(item));
    if (rest.length) {
      const more = el("details", { class: "more-metrics" }, [
        el("summary", { text: "+" + rest.length + " more" }),
        el("div", { class: "metrics" }, rest.map(item)),
      ]);
      // Opening the list should not select the row.
      more.addEventListener("click", (event) => event.stopPropagation());
      cell.append(more);
    }
    return cell;
  }

  function renderModelTable() {
    const body = $("models-body");
    body.replaceChildren();
    if (!state.models.length) {
      $("models-status").textContent = "The service has no models loaded.";
      $("models-table").hidden = true;
      return;
    }
    $("models-status").hidden = true;
    $("models-table").hidden = false;
    for (const m of state.models) {
      const failed = m.status === "failed";
      const cal = defaultCalibration(m);
      const sizes =
        m.input_dim == null
          ? "–"
          : m.input_dim + " → " + m.latent_dim + (isImageModel(m) ? " (" + imageShape(m).join("×") + " image)" : "");
      const metrics = metricsCell(m.metrics || {});
      const threshold = cal
        ? (m.default_score || "mse") + " > " + fmt(cal.threshold) + " (" + pct(cal.false_alarm_rate) + " false alarms)"
        : "not calibrated";
      const statusCell = el("td", {}, [el("span", { class: "pill " + (failed ? "failed" : "ready"), text: m.status || "ready" })]);
      if (failed && m.error) statusCell.append(el("div", { class: "error-text", text: m.error }));
      const row = el(
        "tr",
        { "data-model": m.name, "data-version": String(m.version), class: failed ? "failed" : "" },
        [
          el("td", {}, [el("span", { class: "model-name", text: m.name }), el("span", { class: "muted", text: m.version == null ? "" : " v" + m.version })]),
          el("td", { text: m.variant || "–" }),
          el("td", { text: sizes }),
          el("td", {}, [metrics]),
          el("td", {}, (m.providers || []).map((p) => el("span", { class: "pill", text: p.replace(/ExecutionProvider$/, "") }))),
          el("td", { text: threshold }),
          statusCell,
        ],
      );
      if (!failed) row.addEventListener("click", () => selectModel(m));
      body.append(row);
    }
    highlightSelected();
  }

  function highlightSelected() {
    for (const row of $("models-body").children) {
      const on =
        state.model && row.dataset.model === state.model.name && row.dataset.version === String(state.model.version);
      row.classList.toggle("selected", Boolean(on));
    }
  }

  function selectModel(model) {
    state.model = model;
    state.generation += 1;
    state.inflight = false;
    state.dirty = false;
    state.lastInput = null;
    state.currentScores = [];
    state.lastCode = null;
    state.lastGauge = null;
    state.tabRows = null;
    state.tabResult = null;
    state.series = null;
    state.seriesResult = null;
    state.seriesSelected = null;
    state.range = valueRange(model);
    history.replaceState(null, "", "#model=" + encodeURIComponent(model.name));
    highlightSelected();

    $("explorer").hidden = false;
    $("explorer").dataset.model = model.name;
    $("explorer-title").textContent = model.name + " v" + model.version;
    const bits = [
      "variant " + (model.variant || "?"),
      model.input_dim + " inputs",
      model.latent_dim + "-dimensional code",
      isImageModel(model)
        ? imageShape(model).join("×") + " images"
        : isSeriesModel(model)
          ? "series: windows of " + model.series.window + " steps × " + model.series.channels + " channels"
          : "tabular rows",
    ];
    if (isImageModel(model)) bits.push("pixel values " + fmt(state.range[0]) + " to " + fmt(state.range[1]));
    if (model.generative) bits.push("generative");
    $("explorer-summary").textContent = bits.join(" · ");

    const select = $("score-select");
    select.replaceChildren(...(model.scores || ["mse"]).map((s) => el("option", { value: s, text: s })));
    select.value = model.default_score || (model.scores || ["mse"])[0];
    $("far-input").value = "";

    const image = isImageModel(model);
    const series = !image && isSeriesModel(model);
    $("image-panel").hidden = !image;
    $("series-panel").hidden = !series;
    $("tabular-panel").hidden = image || series;
    if (image) setupImageModel(model);
    else if (series) setupSeriesModel(model);
    else setupTabularModel(model);
    drawCalibration();
  }

  // ---------------------------------------------------------------- drawing

  function fineDims() {
    const [h, w] = imageShape(state.model);
    return [h * state.fineScale, w * state.fineScale];
  }

  // Size a canvas that shows one image so that each model pixel is a whole number of canvas pixels and the
  // longer side fills PIXEL_VIEW screen pixels.
  function sizePixelCanvas(canvas, h, w) {
    const k = Math.max(1, Math.ceil(PIXEL_VIEW / Math.max(h, w)));
    canvas.width = w * k;
    canvas.height = h * k;
    canvas.style.width = Math.round((PIXEL_VIEW * w) / Math.max(h, w)) + "px";
    canvas.style.height = Math.round((PIXEL_VIEW * h) / Math.max(h, w)) + "px";
  }

  function setupImageModel(model) {
    const [h, w] = imageShape(model);
    state.fineScale = Math.max(1, Math.min(FINE, Math.floor(MAX_FINE_SIDE / Math.max(h, w))));
    const [fh, fw] = fineDims();
    state.fine = new Float32Array(fh * fw);
    rerollNoise();
    $("range-lo").value = String(state.range[0]);
    $("range-hi").value = String(state.range[1]);
    $("input-shape").textContent =
      imageShape(model).join("×") + (imageChannels(model) > 1 ? " × " + imageChannels(model) + " channels" : "");
    for (const id of ["input-canvas", "recon-canvas", "errmap-canvas"]) sizePixelCanvas($(id), h, w);
    // Examples only make sense for models of sklearn's digit shape.
    $("example-select").disabled = $("example-btn").disabled = !(h === 8 && w === 8);
    $("sample-card").hidden = !model.generative;
    $("samples").replaceChildren();
    const drawCanvas = $("draw-canvas");
    drawCanvas.height = Math.round((DRAW_SIZE * h) / w);
    drawCanvas.style.height = drawCanvas.height + "px";
    resetResults();
    renderDrawing();
    renderInput(null);
  }

  // Charts are drawn at their laid-out width: draw them again when it changes.
  function redrawCharts() {
    if (!state.model) return;
    drawCalibration();
    if (isImageModel(state.model)) {
      if (state.lastCode && state.lastInput) renderCode(...state.lastCode);
      if (state.lastGauge && state.lastInput) renderGauge(...state.lastGauge);
    } else if (isSeriesModel(state.model)) {
      if (state.seriesResult) renderSeries();
    } else if (state.tabResult) {
      renderRows(state.tabSelected);
    }
  }

  function resetResults() {
    for (const id of ["recon-canvas", "errmap-canvas"]) blankCanvas($(id));
    blankCanvas($("code-canvas"));
    setFlag(null);
    $("score-value").textContent = "–";
    $("threshold-line").textContent = "Draw something to score it.";
    blankCanvas($("gauge-canvas"));
  }

  // Size a chart canvas to its laid-out width (sharp on high-DPI screens); draw in CSS pixels.
  function fitCanvas(canvas, cssHeight) {
    const dpr = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || canvas.width;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
    canvas.style.height = cssHeight + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    return { ctx, W: cssWidth, H: cssHeight };
  }

  function blankCanvas(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    delete canvas.dataset.drawn;
  }

  function rerollNoise() {
    const [h, w] = isImageModel(state.model) ? imageShape(state.model) : [1, state.model.input_dim];
    const n = h * w;
    state.noisePattern = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      // Box-Muller: two independent standard normals from two uniforms.
      const u = 1 - Math.random();
      const v = Math.random();
      const r = Math.sqrt(-2 * Math.log(u));
      state.noisePattern[i] = r * Math.cos(2 * Math.PI * v);
      if (i + 1 < n) state.noisePattern[i + 1] = r * Math.sin(2 * Math.PI * v);
    }
  }

  function inkAt(px, py, radius) {
    const [fh, fw] = fineDims();
    const r = Math.ceil(radius + 1);
    for (let y = Math.max(0, Math.floor(py - r)); y <= Math.min(fh - 1, Math.ceil(py + r)); y++) {
      for (let x = Math.max(0, Math.floor(px - r)); x <= Math.min(fw - 1, Math.ceil(px + r)); x++) {
        const d = Math.hypot(x + 0.5 - px, y + 0.5 - py);
        // A soft-edged disc: full ink inside, fading over one fine cell.
        const v = Math.max(0, Math.min(1, radius + 0.5 - d));
        const i = y * fw + x;
        if (v > state.fine[i]) state.fine[i] = v;
      }
    }
  }

  function strokeTo(from, to) {
    // A pen about as wide as a digit's stroke: 1.7 model pixels on 8x8 digits, 9% of the side on larger
    // images (2.5 pixels on 28x28 MNIST).
    const [h, w] = imageShape(state.model);
    const radius = state.fineScale * Math.max(0.85, 0.045 * Math.min(h, w));
    const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / 1.5));
    for (let s = 0; s <= steps; s++) {
      const t = s / steps;
      inkAt(from[0] + (to[0] - from[0]) * t, from[1] + (to[1] - from[1]) * t, radius);
    }
  }

  function eventToFine(event) {
    const canvas = $("draw-canvas");
    const rect = canvas.getBoundingClientRect();
    const [fh, fw] = fineDims();
    return [((event.clientX - rect.left) / rect.width) * fw, ((event.clientY - rect.top) / rect.height) * fh];
  }

  function setupDrawingEvents() {
    const canvas = $("draw-canvas");
    let last = null;
    canvas.addEventListener("pointerdown", (event) => {
      if (!state.model || !isImageModel(state.model)) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      last = eventToFine(event);
      strokeTo(last, last);
      renderDrawing();
      scheduleUpdate();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (last === null) return;
      event.preventDefault();
      const here = eventToFine(event);
      strokeTo(last, here);
      last = here;
      renderDrawing();
      scheduleUpdate();
    });
    const end = () => {
      if (last === null) return;
      last = null;
      scheduleUpdate();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("lostpointercapture", end);
  }

  function renderDrawing() {
    const canvas = $("draw-canvas");
    const ctx = canvas.getContext("2d");
    const [fh, fw] = fineDims();
    const [h, w] = imageShape(state.model);
    renderPixels(canvas, state.fine, fh, fw, 0, 1, inkColor);
    // The model's pixel grid, so people see what one input pixel covers (where a cell is large enough).
    if (canvas.width / w < 6) return;
    ctx.strokeStyle = "rgba(47, 111, 222, 0.18)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let x = 1; x < w; x++) {
      const px = Math.round((x * canvas.width) / w) + 0.5;
      ctx.moveTo(px, 0);
      ctx.lineTo(px, canvas.height);
    }
    for (let y = 1; y < h; y++) {
      const py = Math.round((y * canvas.height) / h) + 0.5;
      ctx.moveTo(0, py);
      ctx.lineTo(canvas.width, py);
    }
    ctx.stroke();
  }

  function drawingIsEmpty() {
    return !state.fine.some((v) => v > 0);
  }

  // (height * width,) raw values: block means of the fine grid, scaled to the range, then noise.
  function currentInput() {
    const [h, w] = imageShape(state.model);
    const f = state.fineScale;
    const fw = w * f;
    const [lo, hi] = state.range;
    const noise = parseFloat($("noise-slider").value) || 0;
    const out = new Array(h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let sum = 0;
        for (let dy = 0; dy < f; dy++) {
          for (let dx = 0; dx < f; dx++) sum += state.fine[(y * f + dy) * fw + x * f + dx];
        }
        const i = y * w + x;
        const clean = lo + (sum / (f * f)) * (hi - lo);
        const noisy = clean + noise * (hi - lo) * state.noisePattern[i];
        out[i] = Math.min(hi, Math.max(lo, noisy));
      }
    }
    return out;
  }

  function setFinePixels(values, scale) {
    // values: (h * w,) in [0, scale]; each pixel fills its fine x fine block.
    const [h, w] = imageShape(state.model);
    const f = state.fineScale;
    const fw = w * f;
    for (let y = 0; y < h * f; y++) {
      for (let x = 0; x < fw; x++) {
        const v = values[Math.floor(y / f) * w + Math.floor(x / f)] / scale;
        state.fine[y * fw + x] = Math.min(1, Math.max(0, v));
      }
    }
    renderDrawing();
    scheduleUpdate();
  }

  function renderPixels(canvas, values, h, w, lo, hi, color) {
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    const span = hi - lo || 1;
    for (let i = 0; i < h * w; i++) {
      const t = Math.min(1, Math.max(0, (values[i] - lo) / span));
      const [r, g, b] = color(t);
      image.data[4 * i] = r;
      image.data[4 * i + 1] = g;
      image.data[4 * i + 2] = b;
      image.data[4 * i + 3] = 255;
    }
    const off = document.createElement("canvas");
    off.width = w;
    off.height = h;
    off.getContext("2d").putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
    canvas.dataset.drawn = "1";
  }

  const inkColor = (t) => {
    const g = Math.round(255 * (1 - t));
    return [g, g, g];
  };
  const heatColor = (t) => [255 - Math.round(60 * t), Math.round(255 * (1 - t) ** 1.3), Math.round(255 * (1 - t) ** 1.3)];

  function renderInput(values) {
    const canvas = $("input-canvas");
    if (!values) {
      blankCanvas(canvas);
      canvas.dataset.values = "";
      return;
    }
    const [h, w] = imageShape(state.model);
    renderPixels(canvas, values, h, w, state.range[0], state.range[1], inkColor);
    canvas.dataset.values = JSON.stringify(values);
  }

  // ---------------------------------------------------------------- live results (image models)

  function scheduleUpdate() {
    if (!state.model || !isImageModel(state.model)) return;
    if (state.inflight) {
      state.dirty = true;
      return;
    }
    runUpdate();
  }

  async function runUpdate() {
    const generation = state.generation;
    const model = state.model;
    if (drawingIsEmpty()) {
      state.lastInput = null;
      state.currentScores = [];
      renderInput(null);
      resetResults();
      drawCalibration();
      return;
    }
    const input = currentInput();
    renderInput(input);
    state.inflight = true;
    state.dirty = false;
    // One image in the model's own layout; the service answers in it.
    const inputs = [asImage(input, model)];
    try {
      const [den, enc, rec] = await Promise.all([
        api("POST", "/denoise", modelRef({ inputs })),
        api("POST", "/encode", modelRef({ inputs })),
        api("POST", "/reconstruction-error", modelRef(Object.assign({ inputs, per_feature: true }, scoreOptions()))),
      ]);
      if (generation !== state.generation) return;
      clearErrors();
      state.lastInput = input;
      const [h, w] = imageShape(model);
      const denoised = asGrey(den.outputs[0], model);
      renderPixels($("recon-canvas"), denoised, h, w, state.range[0], state.range[1], inkColor);
      $("recon-canvas").dataset.values = JSON.stringify(denoised);
      state.lastCode = [enc.latents[0], enc.log_var ? enc.log_var[0] : null];
      state.lastGauge = [rec.errors[0], rec.threshold];
      renderCode(...state.lastCode);
      if (rec.feature_errors) {
        // The squared error of each pixel, answered in the image's shape (mean over channels).
        const fe = asGrey(rec.feature_errors[0], model);
        renderPixels($("errmap-canvas"), fe, h, w, 0, Math.max(...fe, 1e-12), heatColor);
        $("errmap-canvas").dataset.values = JSON.stringify(fe);
      }
      renderScore(rec, 0);
      state.currentScores = [rec.errors[0]];
      drawCalibration();
    } catch (err) {
      if (generation === state.generation) showError(err, "Scoring the drawing");
    } finally {
      if (generation === state.generation) {
        state.inflight = false;
        if (state.dirty) scheduleUpdate();
      }
    }
  }

  function setFlag(anomaly) {
    const flag = $("anomaly-flag");
    if (anomaly === null) {
      flag.className = "flag flag-idle";
      flag.textContent = "no input yet";
      flag.dataset.anomaly = "";
      return;
    }
    flag.className = "flag " + (anomaly ? "flag-anomaly" : "flag-normal");
    flag.textContent = anomaly ? "ANOMALY" : "normal";
    flag.dataset.anomaly = anomaly ? "true" : "false";
  }

  function renderScore(rec, row) {
    const score = rec.errors[row];
    const value = $("score-value");
    value.textContent = fmt(score);
    value.dataset.score = String(score);
    setFlag(Boolean(rec.anomalies[row]));
    const t = rec.threshold;
    $("threshold-line").textContent =
      rec.score +
      " · threshold " +
      (t === null || t === undefined ? "none" : fmt(t)) +
      (rec.threshold_source ? " (" + rec.threshold_source + ")" : "") +
      (Number.isFinite(rec.false_alarm_rate) ? " · false-alarm rate " + pct(rec.false_alarm_rate) : "");
    $("score-box").dataset.state = rec.anomalies[row] ? "anomaly" : "normal";
    renderGauge(score, t);
  }

  function renderGauge(score, threshold) {
    const { ctx, W, H } = fitCanvas($("gauge-canvas"), 44);
    const hasT = Number.isFinite(threshold);
    // Log scale: scores of noise can be orders of magnitude above the threshold.
    const top = Math.max(hasT ? threshold * 4 : 0, score * 1.2, 1e-9);
    const bottom = Math.min(hasT ? threshold / 20 : top / 1000, Math.max(score, 1e-12), top / 10);
    const xOf = (v) => {
      const t = (Math.log(Math.max(v, bottom)) - Math.log(bottom)) / (Math.log(top) - Math.log(bottom));
      return 8 + Math.min(1, Math.max(0, t)) * (W - 16);
    };
    ctx.fillStyle = "#eef0f3";
    ctx.fillRect(8, 10, W - 16, 14);
    if (hasT) {
      ctx.fillStyle = "#fce8e6";
      ctx.fillRect(xOf(threshold), 10, W - 8 - xOf(threshold), 14);
    }
    ctx.fillStyle = hasT && score > threshold ? "#c5221f" : "#1e8e3e";
    ctx.fillRect(8, 14, xOf(score) - 8, 6);
    ctx.font = "11px system-ui, sans-serif";
    if (hasT) {
      ctx.strokeStyle = "#c5221f";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(xOf(threshold), 4);
      ctx.lineTo(xOf(threshold), 30);
      ctx.stroke();
      ctx.fillStyle = "#c5221f";
      ctx.textAlign = "center";
      ctx.fillText("threshold", Math.min(W - 30, Math.max(30, xOf(threshold))), 41);
    }
  }

  function renderCode(latent, logVar) {
    const canvas = $("code-canvas");
    const { ctx, W, H } = fitCanvas(canvas, 180);
    const n = latent.length;
    const spread = logVar ? logVar.map((lv) => Math.exp(0.5 * lv)) : null;
    let scale = 1e-9;
    for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(latent[i]) + (spread ? spread[i] : 0));
    const left = 44;
    const right = W - 8;
    const mid = H / 2 - 6;
    const half = mid - 8;
    const slot = (right - left) / n;
    ctx.strokeStyle = "#c9ced6";
    ctx.beginPath();
    ctx.moveTo(left, mid + 0.5);
    ctx.lineTo(right, mid + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#667085";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.fillText(fmt(scale), left - 6, mid - half + 4);
    ctx.fillText("0", left - 6, mid + 4);
    ctx.fillText(fmt(-scale), left - 6, mid + half + 4);
    for (let i = 0; i < n; i++) {
      const x = left + i * slot;
      const bw = Math.max(1, slot * 0.7);
      const hgt = (latent[i] / scale) * half;
      ctx.fillStyle = latent[i] >= 0 ? "#2f6fde" : "#e8710a";
      ctx.fillRect(x + (slot - bw) / 2, hgt >= 0 ? mid - hgt : mid, bw, Math.abs(hgt));
      if (spread) {
        const cx = x + slot / 2;
        const lo = mid - ((latent[i] - spread[i]) / scale) * half;
        const hi = mid - ((latent[i] + spread[i]) / scale) * half;
        ctx.strokeStyle = "#1d2330";
        ctx.beginPath();
        ctx.moveTo(cx, lo);
        ctx.lineTo(cx, hi);
        ctx.moveTo(cx - 3, lo);
        ctx.lineTo(cx + 3, lo);
        ctx.moveTo(cx - 3, hi);
        ctx.lineTo(cx + 3, hi);
        ctx.stroke();
      }
      if (n <= 40 || i % Math.ceil(n / 40) === 0) {
        ctx.fillStyle = "#667085";
        ctx.textAlign = "center";
        ctx.fillText(String(i), x + slot / 2, H - 4);
      }
    }
    canvas.dataset.drawn = "1";
    $("code-caption").textContent =
      "From /encode: " + n + " code units" + (spread ? "; whiskers show ±1 standard deviation (from log_var)." : ".");
  }

  // ---------------------------------------------------------------- VAE samples

  async function drawSamples() {
    const model = state.model;
    const generation = state.generation;
    const n = Math.max(1, Math.min(64, parseInt($("sample-n").value, 10) || 8));
    const body = { model: model.name, version: model.version, n };
    const seed = parseInt($("sample-seed").value, 10);
    if (Number.isFinite(seed)) body.seed = seed;
    $("sample-btn").disabled = true;
    try {
      const res = await api("POST", "/sample", body);
      if (generation !== state.generation) return;
      clearErrors();
      const [h, w] = imageShape(model);
      const holder = $("samples");
      holder.replaceChildren();
      for (const output of res.outputs) {
        const values = asGrey(output, model);
        const k = Math.max(1, Math.ceil(64 / Math.max(h, w)));
        const canvas = el("canvas", { width: String(w * k), height: String(h * k), title: "use as input" });
        renderPixels(canvas, values, h, w, state.range[0], state.range[1], inkColor);
        canvas.addEventListener("click", () => {
          const [lo, hi] = state.range;
          setFinePixels(values.map((v) => v - lo), hi - lo);
        });
        holder.append(canvas);
      }
    } catch (err) {
      showError(err, "Sampling");
    } finally {
      $("sample-btn").disabled = false;
    }
  }

  // ---------------------------------------------------------------- tabular models

  function setupTabularModel(model) {
    $("tab-dim").textContent = String(model.input_dim);
    $("rows-body").replaceChildren();
    $("rows-status").textContent = "No rows scored yet.";
    $("feature-row-label").textContent = "";
    blankCanvas($("feature-canvas"));
    const data = model.data;
    $("csv-random-btn").disabled = !(data && Array.isArray(data.feature_min) && data.feature_min.length === model.input_dim);
  }

  function parseCsv(text, dim) {
    const rows = [];
    let names = null;
    const lines = text.split(/\r?\n/);
    for (let ln = 0; ln < lines.length; ln++) {
      const line = lines[ln].trim();
      if (!line || line.startsWith("#")) continue;
      const cells = line.split(/[,;\t]|\s+/).map((c) => c.trim()).filter((c) => c !== "");
      const values = cells.map(Number);
      if (values.some((v) => !Number.isFinite(v))) {
        if (!rows.length && names === null) {
          names = cells;
          continue;
        }
        throw new Error("line " + (ln + 1) + " has a value that is not a number: " + JSON.stringify(line.slice(0, 80)));
      }
      if (values.length !== dim) {
        throw new Error("line " + (ln + 1) + " has " + values.length + " values; this model expects " + dim + " per row");
      }
      rows.push(values);
    }
    if (!rows.length) throw new Error("no rows of numbers found");
    return { rows, names: names && names.length === dim ? names : null };
  }

  async function scoreRows() {
    const model = state.model;
    const generation = state.generation;
    let parsed;
    try {
      parsed = parseCsv($("csv-input").value, model.input_dim);
    } catch (err) {
      showError(err, "Reading the rows");
      return;
    }
    $("csv-score-btn").disabled = true;
    // A header on a model with named columns sends records keyed by it, so the columns may come in any order and
    // the service says which are missing or unknown; otherwise the rows go as they are, in the model's order.
    const names = columnNames(model);
    const input =
      names && parsed.names
        ? { records: parsed.rows.map((row) => Object.fromEntries(parsed.names.map((n, j) => [n, row[j]]))) }
        : { inputs: parsed.rows };
    try {
      const res = await api(
        "POST",
        "/reconstruction-error",
        modelRef(Object.assign(input, { per_feature: true }, scoreOptions())),
      );
      if (generation !== state.generation) return;
      clearErrors();
      state.tabRows = parsed;
      state.tabResult = res;
      state.currentScores = res.errors.slice();
      renderRows(0);
      drawCalibration();
    } catch (err) {
      showError(err, "Scoring the rows");
    } finally {
      $("csv-score-btn").disabled = false;
    }
  }

  function renderRows(selected) {
    const res = state.tabResult;
    state.tabSelected = selected;
    const body = $("rows-body");
    body.replaceChildren();
    const top = Array.isArray(res.top_features) ? res.top_features : null;
    $("top-features-head").hidden = !top;
    res.errors.forEach((score, i) => {
      const anomaly = Boolean(res.anomalies[i]);
      const cells = [
        el("td", { text: String(i + 1) }),
        el("td", { text: fmt(score) }),
        el("td", {}, [el("span", { class: "flag " + (anomaly ? "flag-anomaly" : "flag-normal"), text: anomaly ? "ANOMALY" : "normal" })]),
      ];
      if (top) {
        const worst = top[i] ? top[i].map(([name, err]) => name + " " + fmt(err)).join(", ") : "";
        cells.push(el("td", { class: "top-features", text: worst }));
      }
      const row = el("tr", { class: i === selected ? "selected" : "", "data-anomaly": String(anomaly) }, cells);
      row.addEventListener("click", () => renderRows(i));
      body.append(row);
    });
    const flagged = res.anomalies.filter(Boolean).length;
    $("rows-status").textContent =
      res.errors.length + " rows, " + flagged + " flagged · score " + res.score + ", threshold " +
      (res.threshold === null ? "none" : fmt(res.threshold)) + (res.threshold_source ? " (" + res.threshold_source + ")" : "");
    $("feature-row-label").textContent = "(row " + (selected + 1) + ")";
    const names = columnNames(state.model) || state.tabRows.names;
    if (res.feature_errors) renderFeatureErrors(inOrder(res.feature_errors[selected], names), names, "feature-canvas");
  }

  // Answers to records come back as records: one value per column, in `names`' order.
  function inOrder(values, names) {
    return Array.isArray(values) ? values : names.map((n) => values[n]);
  }

  function renderFeatureErrors(errors, names, canvasId) {
    const canvas = $(canvasId);
    const { ctx, W, H } = fitCanvas(canvas, 200);
    const n = errors.length;
    const top = Math.max(...errors, 1e-12);
    const left = 54;
    const bottom = H - 22;
    const slot = (W - left - 8) / n;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#667085";
    ctx.textAlign = "right";
    ctx.fillText(fmt(top), left - 6, 14);
    ctx.fillText("0", left - 6, bottom);
    ctx.strokeStyle = "#c9ced6";
    ctx.beginPath();
    ctx.moveTo(left, bottom + 0.5);
    ctx.lineTo(W - 8, bottom + 0.5);
    ctx.stroke();
    for (let i = 0; i < n; i++) {
      const hgt = (errors[i] / top) * (bottom - 10);
      ctx.fillStyle = "#c5221f";
      ctx.fillRect(left + i * slot + slot * 0.15, bottom - hgt, Math.max(1, slot * 0.7), hgt);
      if (n <= 40 || i % Math.ceil(n / 40) === 0) {
        ctx.fillStyle = "#667085";
        ctx.textAlign = "center";
        const label = names ? names[i].slice(0, Math.max(3, Math.floor(slot / 6))) : String(i);
        ctx.fillText(label, left + i * slot + slot / 2, H - 6);
      }
    }
    canvas.dataset.drawn = "1";
  }

  function randomRows() {
    const data = state.model.data;
    const lines = [];
    for (let r = 0; r < 5; r++) {
      const row = data.feature_min.map((lo, j) => {
        const hi = data.feature_max[j];
        return +(lo + Math.random() * (hi - lo)).toPrecision(4);
      });
      lines.push(row.join(", "));
    }
    $("csv-input").value = lines.join("\n");
  }

  // ---------------------------------------------------------------- series models

  function seriesColumns(model) {
    const names = columnNames(model) || Array.from({ length: model.series.channels }, (_, c) => "ch" + c);
    return { names, time: model.series.time_column || null };
  }

  function setupSeriesModel(model) {
    const { names, time } = seriesColumns(model);
    $("series-columns").textContent = (time ? [time + " (optional)"] : []).concat(names).join(", ");
    $("series-window").textContent = String(model.series.window);
    $("series-input").placeholder = (time ? [time] : []).concat(names).join(", ");
    $("series-status").textContent = "No series scored yet.";
    $("series-example-note").hidden = true;
    $("spans-body").replaceChildren();
    $("step-label").textContent = "";
    for (const id of ["series-canvas", "step-canvas", "channel-canvas"]) blankCanvas($(id));
  }

  // CSV text -> {names (header or null), times (or null), values: steps x channels in the model's order}.
  function parseSeriesCsv(text, model) {
    const { names, time } = seriesColumns(model);
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    if (!lines.length) throw new Error("no lines found; expected a header and one line per time step");
    const split = (line) => line.split(/[,;\t]/).map((c) => c.trim());
    let header = null;
    let first = split(lines[0]);
    if (first.some((c) => !Number.isFinite(Number(c)) || c === "")) {
      header = first;
      lines.shift();
    }
    const records = [];
    const values = [];
    const times = [];
    lines.forEach((line, k) => {
      const cells = split(line);
      const width = header ? header.length : names.length;
      if (cells.length !== width) {
        throw new Error("line " + (k + (header ? 2 : 1)) + " has " + cells.length + " values; expected " + width);
      }
      if (header) {
        const record = {};
        header.forEach((h, j) => {
          const v = Number(cells[j]);
          record[h] = h === time && !Number.isFinite(v) ? cells[j] : v;
        });
        records.push(record);
        values.push(names.map((n) => (n in record ? Number(record[n]) : NaN)));
        times.push(time && time in record ? record[time] : k);
      } else {
        const row = cells.map(Number);
        if (row.some((v) => !Number.isFinite(v))) {
          throw new Error("line " + (k + 1) + " has a value that is not a number: " + JSON.stringify(line.slice(0, 80)));
        }
        values.push(row);
        times.push(k);
      }
    });
    if (!values.length) throw new Error("a header but no time steps");
    return { header, records: header ? records : null, values, times, names };
  }

  async function scoreSeries() {
    const model = state.model;
    const generation = state.generation;
    let parsed;
    try {
      parsed = parseSeriesCsv($("series-input").value, model);
    } catch (err) {
      showError(err, "Reading the series");
      return;
    }
    // Named columns travel as records, so the service matches them by name and says which are missing.
    const input = parsed.records && columnNames(model) ? { records: parsed.records } : { inputs: parsed.values };
    $("series-score-btn").disabled = true;
    try {
      const res = await api("POST", "/reconstruction-error", modelRef(Object.assign(input, { per_feature: true }, scoreOptions())));
      if (generation !== state.generation) return;
      clearErrors();
      state.series = parsed;
      state.seriesResult = res;
      state.currentScores = [];
      const flagged = res.anomalies.findIndex(Boolean);
      state.seriesSelected = flagged >= 0 ? flagged : null;
      renderSeries();
      drawCalibration();
    } catch (err) {
      showError(err, "Scoring the series");
    } finally {
      $("series-score-btn").disabled = false;
    }
  }

  // Runs of consecutive flagged steps: [[first, last], ...].
  function flaggedSpans(anomalies) {
    const spans = [];
    anomalies.forEach((a, i) => {
      if (!a) return;
      const last = spans[spans.length - 1];
      if (last && last[1] === i - 1) last[1] = i;
      else spans.push([i, i]);
    });
    return spans;
  }

  // Shared x axis of the two series charts.
  function stepAxis(W, n) {
    const left = 64;
    const right = W - 12;
    const xOf = (i) => left + ((i + 0.5) / n) * (right - left);
    const stepOf = (x) => Math.max(0, Math.min(n - 1, Math.floor(((x - left) / (right - left)) * n)));
    return { left, right, xOf, stepOf, width: (right - left) / n };
  }

  function shadeSpans(ctx, axis, spans, top, bottom) {
    ctx.fillStyle = "rgba(197, 34, 31, 0.16)";
    for (const [a, b] of spans) {
      ctx.fillRect(axis.xOf(a) - axis.width / 2, top, (b - a + 1) * axis.width, bottom - top);
    }
  }

  function markStep(ctx, axis, step, top, bottom) {
    if (step === null) return;
    ctx.strokeStyle = "#2f6fde";
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(axis.xOf(step) + 0.5, top);
    ctx.lineTo(axis.xOf(step) + 0.5, bottom);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  function polyline(ctx, axis, values, yOf) {
    ctx.beginPath();
    let pen = false;
    values.forEach((v, i) => {
      if (!Number.isFinite(v)) {
        pen = false;
        return;
      }
      if (pen) ctx.lineTo(axis.xOf(i), yOf(v));
      else ctx.moveTo(axis.xOf(i), yOf(v));
      pen = true;
    });
    ctx.stroke();
  }

  function renderSeries() {
    const { values, names, times } = state.series;
    const res = state.seriesResult;
    const n = values.length;
    const spans = flaggedSpans(res.anomalies);
    const channels = names.length;
    const palette = ["#2f6fde", "#1e8e3e", "#9a5b00", "#7b3fb8", "#0b7b8a", "#b0306a"];

    // Channels: one band each, scaled to its own range.
    const band = Math.max(36, Math.min(80, Math.floor(320 / channels)));
    const { ctx, W, H } = fitCanvas($("series-canvas"), band * channels + 22);
    const axis = stepAxis(W, n);
    shadeSpans(ctx, axis, spans, 0, H - 22);
    ctx.font = "11px system-ui, sans-serif";
    for (let c = 0; c < channels; c++) {
      const column = values.map((row) => row[c]);
      const finite = column.filter(Number.isFinite);
      const lo = Math.min(...finite);
      const hi = Math.max(...finite);
      const top = c * band + 6;
      const bottom = (c + 1) * band - 6;
      const yOf = (v) => (hi > lo ? bottom - ((v - lo) / (hi - lo)) * (bottom - top) : (top + bottom) / 2);
      ctx.strokeStyle = palette[c % palette.length];
      ctx.lineWidth = 1.4;
      polyline(ctx, axis, column, yOf);
      ctx.lineWidth = 1;
      ctx.fillStyle = "#1d2330";
      ctx.textAlign = "right";
      ctx.fillText(names[c].slice(0, 9), axis.left - 6, (top + bottom) / 2 + 4);
      ctx.fillStyle = "#667085";
      ctx.fillText(fmt(hi), axis.left - 6, top + 8);
      ctx.fillText(fmt(lo), axis.left - 6, bottom);
    }
    markStep(ctx, axis, state.seriesSelected, 0, H - 22);
    ctx.fillStyle = "#667085";
    ctx.textAlign = "center";
    for (let k = 0; k <= 6; k++) {
      const i = Math.round(((n - 1) * k) / 6);
      ctx.fillText(String(times[i]).slice(0, 19), axis.xOf(i), H - 6);
    }
    $("series-canvas").dataset.drawn = "1";

    renderStepScores(res, spans);
    renderSpans(res, spans, times);
    renderStepChannels();
  }

  function renderStepScores(res, spans) {
    const canvas = $("step-canvas");
    const { ctx, W, H } = fitCanvas(canvas, 200);
    const n = res.errors.length;
    const axis = stepAxis(W, n);
    const top = 10;
    const bottom = H - 24;
    const threshold = res.threshold;
    const finite = res.errors.filter(Number.isFinite);
    const yMax = Math.max(...finite, Number.isFinite(threshold) ? threshold * 1.25 : 0, 1e-12);
    // Scores far above the threshold would flatten it onto the axis: then the axis is logarithmic.
    const positive = finite.filter((v) => v > 0);
    const yMin = Math.max(Math.min(...positive, Number.isFinite(threshold) ? threshold : yMax), yMax * 1e-6);
    const log = Number.isFinite(threshold) && threshold > 0 && yMax / threshold > 20;
    const yOf = log
      ? (v) => bottom - (Math.log(Math.min(Math.max(v, yMin), yMax) / yMin) / Math.log(yMax / yMin)) * (bottom - top)
      : (v) => bottom - (Math.min(v, yMax) / yMax) * (bottom - top);
    shadeSpans(ctx, axis, spans, top, bottom);
    ctx.strokeStyle = "#1d2330";
    ctx.lineWidth = 1.4;
    polyline(ctx, axis, res.errors, yOf);
    ctx.lineWidth = 1;
    ctx.fillStyle = "#c5221f";
    res.errors.forEach((v, i) => {
      if (res.anomalies[i]) ctx.fillRect(axis.xOf(i) - 1.5, yOf(v) - 1.5, 3, 3);
    });
    if (Number.isFinite(threshold)) {
      ctx.strokeStyle = "#c5221f";
      ctx.setLineDash([5, 4]);
      ctx.beginPath();
      ctx.moveTo(axis.left, yOf(threshold) + 0.5);
      ctx.lineTo(axis.right, yOf(threshold) + 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    markStep(ctx, axis, state.seriesSelected, top, bottom);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#667085";
    ctx.textAlign = "right";
    ctx.fillText(fmt(yMax), axis.left - 6, top + 8);
    if (!Number.isFinite(threshold) || bottom - yOf(threshold) > 14) ctx.fillText(log ? fmt(yMin) : "0", axis.left - 6, bottom);
    if (Number.isFinite(threshold)) {
      ctx.fillStyle = "#c5221f";
      ctx.fillText("threshold", axis.left - 6, yOf(threshold) + 4);
    }
    ctx.fillStyle = "#667085";
    ctx.textAlign = "center";
    ctx.fillText("time step" + (log ? " (score axis logarithmic)" : ""), (axis.left + axis.right) / 2, H - 6);
    canvas.dataset.drawn = "1";
    const flagged = res.anomalies.filter(Boolean).length;
    $("series-status").textContent =
      n + " steps, " + flagged + " flagged in " + spans.length + " span" + (spans.length === 1 ? "" : "s") +
      " · score " + res.score + " per step (" + (state.model.series.step_score || "last") + " rule), threshold " +
      (threshold === null ? "none" : fmt(threshold)) + (res.threshold_source ? " (" + res.threshold_source + ")" : "");
  }

  function renderSpans(res, spans, times) {
    const body = $("spans-body");
    body.replaceChildren();
    spans.forEach(([a, b]) => {
      let peak = a;
      for (let i = a; i <= b; i++) if (res.errors[i] > res.errors[peak]) peak = i;
      const on = state.seriesSelected !== null && state.seriesSelected >= a && state.seriesSelected <= b;
      const row = el("tr", { class: on ? "selected" : "", "data-first": String(a), "data-last": String(b) }, [
        el("td", { text: a === b ? String(times[a]) : times[a] + " – " + times[b] }),
        el("td", { text: String(b - a + 1) }),
        el("td", { text: fmt(res.errors[peak]) + " at " + times[peak] }),
      ]);
      row.addEventListener("click", () => selectStep(peak));
      body.append(row);
    });
  }

  function renderStepChannels() {
    const res = state.seriesResult;
    const step = state.seriesSelected;
    if (step === null || !res.feature_errors) {
      blankCanvas($("channel-canvas"));
      $("step-label").textContent = "(click a step)";
      return;
    }
    $("step-label").textContent = "(step " + state.series.times[step] + ", score " + fmt(res.errors[step]) + ")";
    const names = state.series.names;
    renderFeatureErrors(inOrder(res.feature_errors[step], names), names, "channel-canvas");
  }

  function selectStep(step) {
    state.seriesSelected = step;
    renderSeries();
  }

  function exampleSeries(model) {
    const { names, time } = seriesColumns(model);
    const channels = names.length;
    const window = model.series.window;
    const n = Math.max(200, 4 * window);
    const data = model.data || {};
    // Each channel's range in the training data: the flattened window repeats it once per step.
    const range = (c) => {
      const lo = [];
      const hi = [];
      for (let j = c; j < (data.feature_min || []).length; j += channels) {
        lo.push(data.feature_min[j]);
        hi.push(data.feature_max[j]);
      }
      return lo.length ? [Math.min(...lo), Math.max(...hi)] : [0, 1];
    };
    const ranges = names.map((_, c) => range(c));
    const start = Math.floor(n * 0.6);
    const length = Math.max(window, 10);
    const lines = [(time ? [time] : []).concat(names).join(",")];
    for (let t = 0; t < n; t++) {
      const row = ranges.map(([lo, hi], c) => {
        const mid = (lo + hi) / 2;
        const amp = (hi - lo) / 4 || 1;
        let v = mid + amp * Math.sin((2 * Math.PI * t) / (24 + 7 * c)) + amp * 0.1 * (Math.random() * 2 - 1);
        if (c === 0 && t >= start && t < start + length) v += 3 * amp;
        return +v.toPrecision(5);
      });
      lines.push((time ? [t] : []).concat(row).join(","));
    }
    return lines.join("\n");
  }

  // ---------------------------------------------------------------- calibration chart

  function drawCalibration() {
    const { ctx, W, H } = fitCanvas($("calib-canvas"), 240);
    const model = state.model;
    const scoreName = $("score-select").value || model.default_score;
    const cal = (model.calibration || {})[scoreName];
    if (!cal || !cal.quantiles) {
      ctx.fillStyle = "#667085";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("This model has no calibration for the " + scoreName + " score.", 16, 30);
      $("calib-caption").textContent = "";
      return;
    }
    const points = Object.entries(cal.quantiles)
      .map(([p, x]) => [parseFloat(p), x])
      .filter(([p, x]) => Number.isFinite(p) && Number.isFinite(x))
      .sort((a, b) => a[0] - b[0]);
    if (points.length < 2) return;
    // The far tail would squash everything else to the left edge: stop a little past the 99% level.
    const tailCut = points.filter(([p]) => p <= 0.99).pop() || points[points.length - 1];
    const xMin = points[0][1];
    let xMax = xMin + (Math.max(tailCut[1], cal.threshold) - xMin) * 1.5;
    if (xMax <= xMin) xMax = xMin + 1;
    const left = 50;
    const right = W - 50;
    const top = 16;
    const bottom = H - 30;
    const xOf = (v) => left + ((v - xMin) / (xMax - xMin)) * (right - left);

    // Histogram of equal-width bins: each bin's probability mass read off the piecewise-linear CDF that
    // the recorded quantiles define (raw quantile gaps are too uneven to draw directly).
    const cdf = (v) => {
      if (v <= points[0][1]) return points[0][0];
      for (let i = 1; i < points.length; i++) {
        const [p0, x0] = points[i - 1];
        const [p1, x1] = points[i];
        if (v <= x1) return x1 > x0 ? p0 + ((p1 - p0) * (v - x0)) / (x1 - x0) : p1;
      }
      return points[points.length - 1][0];
    };
    const nBins = 40;
    const binW = (xMax - xMin) / nBins;
    const bars = [];
    for (let b = 0; b < nBins; b++) {
      const x0 = xMin + b * binW;
      bars.push([x0, x0 + binW, (cdf(x0 + binW) - cdf(x0)) / binW]);
    }
    const dMax = Math.max(...bars.map((b) => b[2]), 1e-12);
    ctx.fillStyle = "#d6e4fb";
    ctx.strokeStyle = "#9dbdf3";
    for (const [x0, x1, d] of bars) {
      const hgt = (d / dMax) * (bottom - top);
      if (hgt <= 0) continue;
      ctx.fillRect(xOf(x0), bottom - hgt, xOf(x1) - xOf(x0), hgt);
      ctx.strokeRect(xOf(x0) + 0.5, bottom - hgt + 0.5, Math.max(1, xOf(x1) - xOf(x0) - 1), hgt);
    }
    // CDF through the quantile points (right axis 0..1).
    ctx.strokeStyle = "#1d2330";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([p, x], i) => {
      const px = xOf(Math.min(x, xMax));
      const py = bottom - p * (bottom - top);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.lineWidth = 1;

    // Axes and ticks.
    ctx.strokeStyle = "#c9ced6";
    ctx.beginPath();
    ctx.moveTo(left, bottom + 0.5);
    ctx.lineTo(right, bottom + 0.5);
    ctx.stroke();
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#667085";
    ctx.textAlign = "center";
    for (let k = 0; k <= 5; k++) {
      const v = xMin + ((xMax - xMin) * k) / 5;
      ctx.fillText(fmt(v), xOf(v), bottom + 14);
    }
    ctx.fillText(scoreName + " score", (left + right) / 2, H - 2);
    ctx.textAlign = "left";
    ctx.fillText("1", right + 6, top + 4);
    ctx.fillText("0.5", right + 6, (top + bottom) / 2 + 4);
    ctx.fillText("0", right + 6, bottom + 4);
    ctx.save();
    ctx.translate(12, (top + bottom) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.fillText("density", 0, 0);
    ctx.restore();

    const marker = (v, color, label, dashed, row) => {
      const clipped = v > xMax;
      const x = xOf(Math.min(Math.max(v, xMin), xMax));
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 2;
      ctx.setLineDash(dashed ? [5, 4] : []);
      ctx.beginPath();
      ctx.moveTo(x, top - 4);
      ctx.lineTo(x, bottom);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.lineWidth = 1;
      ctx.textAlign = x > right - 120 ? "right" : "left";
      ctx.fillText(label + (clipped ? " →" : ""), x + (x > right - 120 ? -6 : 6), top + 10 + row * 14);
    };
    marker(cal.threshold, "#c5221f", "threshold " + fmt(cal.threshold) + " (" + pct(cal.false_alarm_rate) + ")", true, 0);
    state.currentScores.slice(0, 20).forEach((s, i) => {
      if (Number.isFinite(s)) {
        const label = state.currentScores.length === 1 ? "this input " + fmt(s) : "";
        marker(s, "#2f6fde", label, false, 1 + (i % 2));
      }
    });
    $("calib-caption").textContent =
      "Held-out normal rows (n = " + cal.n + ", mean " + fmt(cal.mean) + ", std " + fmt(cal.std) + "). Bars: " +
      "histogram rebuilt from the " + points.length + " recorded quantiles; line: cumulative share (right axis); red dashed: the default threshold" +
      (state.currentScores.length ? "; blue: the current input" + (state.currentScores.length > 1 ? "s" : "") : "") +
      ". Scores beyond the axis are drawn at its right edge.";
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    state.apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
    $("api-key").value = state.apiKey;
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.apiKey = $("api-key").value.trim();
      if (state.apiKey) sessionStorage.setItem(KEY_STORAGE, state.apiKey);
      else sessionStorage.removeItem(KEY_STORAGE);
      $("api-key").classList.remove("needs-attention");
      clearErrors();
      loadModels();
    });
    $("key-forget").addEventListener("click", () => {
      state.apiKey = "";
      $("api-key").value = "";
      sessionStorage.removeItem(KEY_STORAGE);
      clearErrors();
      loadModels();
    });
    $("models-reload").addEventListener("click", loadModels);

    $("example-select").replaceChildren(
      ...EXAMPLE_DIGITS.map((_, d) => el("option", { value: String(d), text: "digit " + d })),
    );
    $("example-btn").addEventListener("click", () => {
      setFinePixels(EXAMPLE_DIGITS[parseInt($("example-select").value, 10)], EXAMPLE_MAX);
    });
    $("clear-btn").addEventListener("click", () => {
      state.fine.fill(0);
      renderDrawing();
      scheduleUpdate();
    });
    $("noise-fill-btn").addEventListener("click", () => {
      const [h, w] = imageShape(state.model);
      const n = h * w;
      setFinePixels(Array.from({ length: n }, () => Math.random()), 1);
    });
    $("noise-slider").addEventListener("input", () => {
      $("noise-value").textContent = Math.round(parseFloat($("noise-slider").value) * 100) + "%";
      scheduleUpdate();
    });
    $("reroll-btn").addEventListener("click", () => {
      rerollNoise();
      scheduleUpdate();
    });
    for (const id of ["range-lo", "range-hi"]) {
      $(id).addEventListener("change", () => {
        const lo = parseFloat($("range-lo").value);
        const hi = parseFloat($("range-hi").value);
        if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) {
          state.range = [lo, hi];
          scheduleUpdate();
        } else {
          showError(new Error("the pixel range needs two numbers, the first below the second"), "Setting the range");
        }
      });
    }
    const rescore = () => {
      drawCalibration();
      if (!state.model) return;
      if (isImageModel(state.model)) scheduleUpdate();
      else if (isSeriesModel(state.model)) {
        if (state.seriesResult) scoreSeries();
      } else if (state.tabResult) scoreRows();
    };
    $("score-select").addEventListener("change", rescore);
    $("far-input").addEventListener("change", rescore);
    $("sample-btn").addEventListener("click", drawSamples);
    $("csv-score-btn").addEventListener("click", scoreRows);
    $("csv-random-btn").addEventListener("click", () => {
      randomRows();
      scoreRows();
    });
    $("csv-file").addEventListener("change", async () => {
      const file = $("csv-file").files[0];
      if (!file) return;
      try {
        $("csv-input").value = await file.text();
      } catch (err) {
        showError(err, "Reading " + file.name);
        return;
      }
      scoreRows();
    });
    $("series-score-btn").addEventListener("click", scoreSeries);
    $("series-example-btn").addEventListener("click", () => {
      $("series-input").value = exampleSeries(state.model);
      $("series-example-note").hidden = false;
      scoreSeries();
    });
    $("series-file").addEventListener("change", async () => {
      const file = $("series-file").files[0];
      if (!file) return;
      try {
        $("series-input").value = await file.text();
      } catch (err) {
        showError(err, "Reading " + file.name);
        return;
      }
      $("series-example-note").hidden = true;
      scoreSeries();
    });
    for (const id of ["series-canvas", "step-canvas"]) {
      $(id).addEventListener("click", (event) => {
        if (!state.seriesResult) return;
        const rect = event.currentTarget.getBoundingClientRect();
        selectStep(stepAxis(rect.width, state.seriesResult.errors.length).stepOf(event.clientX - rect.left));
      });
    }
    setupDrawingEvents();
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(redrawCharts, 150);
    });
    loadModels();
  }

  // Tests and curious people can read what the page last sent.
  window.explorer = {
    get lastInput() {
      return state.lastInput;
    },
    get model() {
      return state.model ? { name: state.model.name, version: state.model.version } : null;
    },
    get busy() {
      return state.inflight || state.dirty;
    },
    get seriesSelected() {
      return state.seriesSelected;
    },
  };

  document.addEventListener("DOMContentLoaded", wire);
})();
