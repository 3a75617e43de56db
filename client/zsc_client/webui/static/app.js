// The WebUI page: posts the form to /api/classify (the same JSON API other callers use) and draws the
// answer as HTML bars. No framework and no chart library, so the page works with no network at all.
"use strict";

const HISTORY_SIZE = 10;
const HISTORY_KEY = "zsc-webui-history";
const FIELD_INPUTS = { text: "text", labels: "labels", hypothesis_template: "template", multi_label: "multi-label" };
const FIELD_NAMES = {
  text: "Text", labels: "Candidate labels", hypothesis_template: "Hypothesis template", multi_label: "Multi-label",
};

const $ = (id) => document.getElementById(id);
let history = loadHistory();

function loadHistory() {
  try {
    const stored = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(stored) ? stored.filter(isHistoryEntry).slice(0, HISTORY_SIZE) : [];
  } catch {
    return []; // storage disabled or corrupt: history lasts for this page only
  }
}

// an entry another version of this page (or anyone with the browser's storage) wrote must not stop the page
function isHistoryEntry(entry) {
  return typeof entry?.request?.text === "string" && Array.isArray(entry.response?.labels) &&
    Array.isArray(entry.response?.scores) && entry.response.labels.length > 0 &&
    entry.response.scores.every((score) => typeof score === "number");
}

function saveHistory() {
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(history));
  } catch {
    // quota or privacy mode: keep the in-memory history
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // textContent only: labels and texts are user input
  return node;
}

function formatMs(ms) {
  return ms === null || ms === undefined ? "n/a" : `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
}

async function checkHealth() {
  const status = $("status");
  try {
    const response = await fetch("/api/health", { cache: "no-store" });
    const body = await response.json();
    status.textContent = body.ready
      ? `Triton ready · ${body.triton} (${body.protocol}) · model ${body.model}`
      : `Triton is not ready at ${body.triton} (${body.protocol}): requests fail until it is`;
    status.className = `status ${body.ready ? "ok" : "down"}`;
  } catch {
    status.textContent = "The WebUI server does not answer";
    status.className = "status down";
  }
}

function readForm() {
  const template = $("template").value;
  return {
    text: $("text").value,
    labels: $("labels").value,
    hypothesis_template: template.trim() ? template : null,
    multi_label: $("multi-label").checked,
  };
}

function fillForm(request) {
  $("text").value = request.text;
  $("labels").value = Array.isArray(request.labels) ? request.labels.join(", ") : request.labels;
  $("template").value = request.hypothesis_template || "";
  $("multi-label").checked = Boolean(request.multi_label);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
  for (const id of Object.values(FIELD_INPUTS)) $(id).removeAttribute("aria-invalid");
}

function showError(message, field) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  const input = field && FIELD_INPUTS[field] ? $(FIELD_INPUTS[field]) : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function describeError(status, body) {
  const detail = body.error || `HTTP ${status}`;
  if (status === 503) return `Triton is unreachable. ${detail}`;
  if (status === 413) return `The request is too large: ${detail}`;
  if (body.field && FIELD_NAMES[body.field]) return `${FIELD_NAMES[body.field]}: ${detail}`;
  return status === 400 ? `Bad input: ${detail}` : `The server failed (HTTP ${status}): ${detail}`;
}

async function readBody(response) {
  try {
    return await response.json();
  } catch {
    return { error: `${response.status} ${response.statusText}`.trim() }; // a proxy's HTML error page
  }
}

function showResult(entry) {
  const { labels, scores, multi_label: multiLabel, triton_round_trip_ms: serverMs, inside_triton_ms: tritonMs,
          from_cache: fromCache } = entry.response;
  // Triton already ranks them; sorting again keeps the chart right whatever produced the answer
  const ranked = labels.map((label, i) => ({ label, score: scores[i] })).sort((a, b) => b.score - a.score);
  const bars = $("bars");
  bars.replaceChildren();
  for (const { label, score } of ranked) {
    const row = element("li", "bar-row");
    row.dataset.label = label;
    row.dataset.score = String(score);
    const name = element("span", "bar-label", label);
    name.title = label;
    const track = element("span", "bar-track");
    const fill = element("span", "bar-fill");
    // scores are probabilities, or cosine similarities in [-1, 1] for embedding models: clamp the bar
    fill.style.width = `${(Math.max(0, Math.min(1, score)) * 100).toFixed(2)}%`;
    track.append(fill);
    row.append(name, track, element("span", "bar-value", score.toFixed(4)));
    bars.append(row);
  }
  $("result-note").textContent = multiLabel
    ? "Multi-label: each label is scored on its own."
    : "Single-label: the labels are ranked against each other.";
  $("latency-e2e").textContent = formatMs(entry.endToEndMs);
  $("latency-server").textContent = formatMs(serverMs);
  $("latency-triton").textContent = formatMs(tritonMs);
  $("latency-triton-part").hidden = tritonMs === null || tritonMs === undefined;
  $("latency-cached").hidden = !fromCache;
  $("result-empty").hidden = true;
  $("result").hidden = false;
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  $("history-empty").hidden = history.length > 0;
  history.forEach((entry, index) => {
    const item = element("li");
    const button = element("button", "history-entry");
    button.type = "button";
    const text = entry.request.text.length > 60 ? `${entry.request.text.slice(0, 60)}…` : entry.request.text;
    const top = entry.response.labels[0];
    button.append(
      element("span", "history-text", text),
      element("span", "history-top", `${top} ${entry.response.scores[0].toFixed(3)}`),
      element("span", "history-meta",
        `${entry.response.labels.length} labels${entry.request.multi_label ? ", multi" : ""} · ` +
        `${formatMs(entry.endToEndMs)} · ${new Date(entry.at).toLocaleTimeString()}`),
    );
    button.addEventListener("click", () => {
      clearError();
      fillForm(entry.request);
      showResult(history[index]);
    });
    item.append(button);
    list.append(item);
  });
}

function setBusy(busy) {
  $("submit").disabled = busy;
  $("submit").textContent = busy ? "Classifying…" : "Classify";
}

async function classify(event) {
  event.preventDefault();
  clearError();
  const request = readForm();
  setBusy(true);
  const started = performance.now();
  let response;
  let body;
  try {
    response = await fetch("/api/classify", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    body = await readBody(response);
  } catch (error) {
    showError(`The WebUI server did not answer (${error.message}). Is zsc webui still running?`);
    return;
  } finally {
    setBusy(false);
  }
  const endToEndMs = performance.now() - started;
  if (!response.ok) {
    showError(describeError(response.status, body), body.field);
    if (response.status === 503) checkHealth();
    return;
  }
  const entry = { request, response: body, endToEndMs, at: new Date().toISOString() };
  showResult(entry);
  history = [entry, ...history].slice(0, HISTORY_SIZE);
  saveHistory();
  renderHistory();
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", classify);
  $("form").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
  });
  $("clear-history").addEventListener("click", () => {
    history = [];
    saveHistory();
    renderHistory();
  });
  renderHistory();
  checkHealth();
});
