// Draws Prunelab's charts with plotly.js. Figures are built server-side by plotly.py (webapp/lab/charts.py);
// Plotly.react redraws in place and the figures' uirevision keeps the user's zoom and legend choices.
"use strict";

function chartBox(container, slug, chart) {
  let plot = document.getElementById("chart-" + slug);
  if (plot) return plot;
  const box = document.createElement("section");
  box.className = "chart-box";
  const tools = document.createElement("div");
  tools.className = "tools";
  if (container.dataset.csv) {
    const link = document.createElement("a");
    link.href = container.dataset.csv.replace("SLUG", slug);
    link.textContent = "CSV";
    tools.appendChild(link);
  }
  plot = document.createElement("div");
  plot.className = "chart";
  plot.id = "chart-" + slug;
  // Vector figures for a paper, drawn here by plotly.js itself: nothing leaves this server.
  for (const format of ["svg", "png"]) {
    const link = document.createElement("a");
    link.href = "#";
    link.className = "download-" + format;
    link.textContent = format.toUpperCase();
    link.addEventListener("click", (event) => {
      event.preventDefault();
      Plotly.downloadImage(plot, {format: format, filename: slug, width: 1000, height: 600});
    });
    tools.appendChild(link);
  }
  // PDF needs a print engine: the server draws it from the same figure (webapp/lab/exports.py).
  if (container.dataset.pdf) {
    const link = document.createElement("a");
    link.href = container.dataset.pdf.replace("SLUG", slug);
    link.className = "download-pdf";
    link.textContent = "PDF";
    tools.appendChild(link);
  }
  const note = document.createElement("p");
  note.className = "muted note";
  box.append(tools, plot, note);
  container.appendChild(box);
  return plot;
}

function drawCharts(container, charts) {
  for (const [slug, chart] of Object.entries(charts)) {
    const plot = chartBox(container, slug, chart);
    plot.parentElement.querySelector(".note").textContent = chart.note || "";
    const config = {responsive: true, displaylogo: false, showSendToCloud: false, showEditInChartStudio: false};
    Plotly.react(plot, chart.figure.data, chart.figure.layout, config);
    plot.dataset.drawn = "true";
  }
  // A page may name a note to show while there is nothing to draw (an experiment of one point has no chart).
  const empty = container.dataset.emptyNote && document.getElementById(container.dataset.emptyNote);
  if (empty) empty.hidden = Object.keys(charts).length > 0;
}

function fetchFigures(container) {
  return fetch(container.dataset.figures, {credentials: "same-origin"}).then((response) => response.json());
}

function loadCharts(container, figures) {
  return (figures || fetchFigures(container)).then((body) => drawCharts(container, body.charts));
}

function drawEmbedded(root) {
  for (const container of root.querySelectorAll("[data-charts-json]")) {
    drawCharts(container, JSON.parse(document.getElementById(container.dataset.chartsJson).textContent));
  }
}

// This script runs before plotly.js is loaded (templates/lab/_scripts.html), at the end of the body: the
// figures are requested now, in parallel with plotly.js's download and parse, and drawn once both are there.
const earlyFigures = new Map();
for (const container of document.querySelectorAll("[data-figures]")) {
  earlyFigures.set(container, fetchFigures(container));
}

// A partial swapped in by htmx (e.g. a profile that has just finished) may bring charts of its own.
document.addEventListener("htmx:afterSettle", (event) => drawEmbedded(event.detail.elt));

document.addEventListener("DOMContentLoaded", () => {
  drawEmbedded(document);
  for (const container of document.querySelectorAll("[data-figures]")) {
    loadCharts(container, earlyFigures.get(container));
    document.body.addEventListener("charts-changed", () => loadCharts(container));
  }
});
