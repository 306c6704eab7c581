// The mtkit web page: sends the text box's lines to POST /v1/translate and shows the
// translations, the n-best list and the attention heatmap of the selected line.
// Plain browser JavaScript, no libraries and no network beyond this server.
"use strict";

const NBEST_SHOWN = 5; // hypotheses asked for (never more than the beam size)
const SVG_NS = "http://www.w3.org/2000/svg";
const LEGEND_WIDTH = 140; // pixels of the heatmap's colour bar

const $ = (id) => document.getElementById(id);
const page = {
  source: $("source"),
  beam: $("beam"),
  beamValue: $("beam-value"),
  button: $("translate"),
  status: $("status"),
  translations: $("translations"),
  details: $("details"),
  nbestBody: document.querySelector("#nbest tbody"),
  nbestNote: $("nbest-note"),
  heatmap: $("heatmap"),
};

let lastResults = []; // [{source, result}] of the latest answer
let withAttention = true; // false for an ONNX export: its runtime returns no attention

function setStatus(text, isError = false) {
  page.status.textContent = text;
  page.status.classList.toggle("error", isError);
}

function languageName(code) {
  if (!code) return "";
  try {
    const name = new Intl.DisplayNames([navigator.language || "en"], { type: "language" }).of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return code;
  }
}

async function loadModelInfo() {
  const response = await fetch("/v1/model");
  if (!response.ok) throw new Error(`GET /v1/model: HTTP ${response.status}`);
  const info = await response.json();
  const source = languageName(info.source_language);
  const target = languageName(info.target_language);
  $("src-lang").textContent = source || "source";
  $("tgt-lang").textContent = target || "target";
  $("source-title").textContent = source || "Source";
  $("target-title").textContent = target || "Translation";
  document.title = `mtkit: ${info.source_language || "source"} → ${info.target_language || "target"}`;
  const ensemble = info.checkpoints.length > 1 ? `ensemble of ${info.checkpoints.length}: ` : "";
  const parameters = info.parameters == null ? "" : `${formatCount(info.parameters)} parameters · `;
  const backend = info.backend === "onnx" ? "ONNX export · " : "";
  withAttention = info.backend !== "onnx";
  $("model-info").textContent =
    `${ensemble}${info.checkpoints.join(", ")} · ${backend}${parameters}` +
    `${info.models[0].cell.toUpperCase()}, ${info.models[0].attention} attention · ` +
    `${info.device}, ${info.precision}`;
  page.beam.max = String(info.server.max_beam);
  page.beam.value = String(info.server.beam_size);
  page.beamValue.textContent = page.beam.value;
}

function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function errorMessage(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) return detail[0].msg;
  return `HTTP ${status}`;
}

async function translate() {
  const lines = page.source.value.split("\n");
  while (lines.length > 1 && !lines[lines.length - 1].trim()) lines.pop();
  if (!lines.some((line) => line.trim())) {
    setStatus("Type something to translate.");
    return;
  }
  const beam = Number(page.beam.value);
  const request = {
    text: lines,
    beam_size: beam,
    nbest: Math.min(beam, NBEST_SHOWN),
    attention: withAttention,
  };
  page.button.disabled = true;
  setStatus("Translating…");
  const started = performance.now();
  try {
    const response = await fetch("/v1/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      setStatus(errorMessage(response.status, body), true);
      return;
    }
    const ms = Math.round(performance.now() - started);
    const count = lines.filter((line) => line.trim()).length;
    setStatus(`${count} line${count === 1 ? "" : "s"} in ${ms} ms, beam ${body.beam_size}`);
    lastResults = lines.map((source, i) => ({ source, result: body.translations[i] }));
    showTranslations();
  } catch (error) {
    setStatus(`The server did not answer (${error.message}).`, true);
  } finally {
    page.button.disabled = false;
  }
}

function showTranslations() {
  page.translations.replaceChildren();
  lastResults.forEach(({ source, result }, index) => {
    const item = document.createElement("li");
    item.textContent = result.text;
    if (!source.trim()) item.classList.add("empty");
    else {
      item.tabIndex = 0;
      item.title = `Show the n-best list and attention for: ${source}`;
      item.addEventListener("click", () => select(index));
      item.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") select(index);
      });
    }
    page.translations.appendChild(item);
  });
  const first = lastResults.findIndex(({ source }) => source.trim());
  select(first);
}

function select(index) {
  [...page.translations.children].forEach((item, i) =>
    item.classList.toggle("selected", i === index && lastResults.length > 1),
  );
  if (index < 0) {
    page.details.hidden = true;
    return;
  }
  const { source, result } = lastResults[index];
  page.details.hidden = false;
  page.nbestNote.textContent = lastResults.length > 1 ? `(line ${index + 1})` : "";
  showNbest(result.nbest);
  drawHeatmap(result.attention, source);
}

function showNbest(candidates) {
  page.nbestBody.replaceChildren();
  candidates.forEach((candidate, rank) => {
    const row = document.createElement("tr");
    for (const text of [String(rank + 1), candidate.score.toFixed(3), candidate.text]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    page.nbestBody.appendChild(row);
  });
}

function svg(name, attributes = {}, text = null) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== null) element.textContent = text;
  return element;
}

// Width in pixels of the longest label, measured with the page's font.
function labelWidth(labels) {
  const context = document.createElement("canvas").getContext("2d");
  context.font = "13px " + getComputedStyle(document.body).fontFamily;
  return Math.max(0, ...labels.map((label) => context.measureText(label).width));
}

function drawHeatmap(attention, source) {
  page.heatmap.replaceChildren();
  if (!attention) {
    page.heatmap.textContent = "This model reports no attention for this line.";
    return;
  }
  const { source: columns, target: rows, weights } = attention;
  const cell = Math.max(18, Math.min(36, Math.floor(640 / Math.max(columns.length, 1))));
  const left = Math.ceil(labelWidth(rows)) + 12;
  const slant = Math.ceil(labelWidth(columns) * Math.SQRT1_2); // source labels at 45 degrees
  const top = slant + 24;
  const width = Math.max(left + columns.length * cell + slant + 8, left + LEGEND_WIDTH + 40);
  const gridBottom = top + rows.length * cell;
  const height = gridBottom + 44; // room for the legend
  const image = svg("svg", {
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `attention weights: ${rows.length} output pieces by ${columns.length} source pieces`,
  });
  columns.forEach((piece, j) => {
    const x = left + j * cell + cell / 2;
    image.appendChild(
      svg("text", { x, y: top - 6, transform: `rotate(-45 ${x} ${top - 6})`, class: "label" }, piece),
    );
  });
  rows.forEach((piece, i) => {
    const y = top + i * cell + cell / 2;
    image.appendChild(svg("text", { x: left - 6, y, class: "label row-label" }, piece));
    weights[i].forEach((weight, j) => {
      const rect = svg("rect", {
        x: left + j * cell,
        y: top + i * cell,
        width: cell - 1,
        height: cell - 1,
        class: "cell",
        fill: shade(weight),
      });
      rect.appendChild(svg("title", {}, `${piece} ← ${columns[j]}: ${weight.toFixed(3)}`));
      image.appendChild(rect);
    });
  });
  drawLegend(image, left, gridBottom + 14);
  page.heatmap.appendChild(image);
  page.heatmap.dataset.source = source;
}

// A colour bar from weight 0 to 1 under the grid.
function drawLegend(image, x, y) {
  const gradient = svg("linearGradient", { id: "legend-shades" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    gradient.appendChild(svg("stop", { offset: String(t), "stop-color": shade(t) }));
  }
  const defs = svg("defs");
  defs.appendChild(gradient);
  image.appendChild(defs);
  image.appendChild(svg("text", { x: x - 6, y: y + 7, class: "label row-label" }, "0"));
  image.appendChild(
    svg("rect", {
      x,
      y,
      width: LEGEND_WIDTH,
      height: 14,
      fill: "url(#legend-shades)",
      stroke: "#d6dae0",
    }),
  );
  image.appendChild(svg("text", { x: x + LEGEND_WIDTH + 6, y: y + 7, class: "label" }, "1"));
}

// White (0) to deep blue (1); a square root makes small weights visible.
function shade(weight) {
  const t = Math.sqrt(Math.max(0, Math.min(1, weight)));
  const mix = (from, to) => Math.round(from + (to - from) * t);
  return `rgb(${mix(255, 23)}, ${mix(255, 60)}, ${mix(255, 140)})`;
}

page.beam.addEventListener("input", () => {
  page.beamValue.textContent = page.beam.value;
});
page.button.addEventListener("click", translate);
page.source.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    translate();
  }
});
loadModelInfo().catch((error) => setStatus(error.message, true));
