// hmq dashboard: refreshes the parts of a page (server-rendered HTML fetched every few
// seconds), draws charts with uPlot, and sends the cancel/delete buttons' POSTs.
"use strict";

function setStatus(text, problem, id) {
  const el = document.getElementById(id || "status");
  if (el) { el.textContent = text; el.classList.toggle("problem", !!problem); }
}

function ago(seconds) {
  if (seconds < 90) return Math.max(0, Math.round(seconds)) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function fillTimes(root) {
  const now = Date.now() / 1000;
  root.querySelectorAll("[data-time]").forEach((el) => {
    const t = parseFloat(el.dataset.time);
    el.textContent = el.classList.contains("ago") ? ago(now - t) : new Date(t * 1000).toLocaleString();
    el.title = new Date(t * 1000).toISOString();
  });
}

function readData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

// --- charts -------------------------------------------------------------------------------
const PALETTE = { completed: "#2f9e44", failed: "#e03131", running: "#1c7ed6", pending: "#868e96",
  allocated: "#1c7ed6", used: "#2f9e44", available: "#f59f00", rate: "#ae3ec9", finished: "#2f9e44" };

function series(label, color, scale) {
  return { label: label, stroke: color, width: 2, scale: scale || "y", points: { show: false } };
}

function throughputData(tag) {
  const h = tag.history;
  const xs = [], done = [], rate = [];
  for (let i = 0; i < h.length; i++) {
    xs.push(h[i][0]); done.push(h[i][1]);
    let j = i; while (j > 0 && h[i][0] - h[j - 1][0] <= 15) j--;   // rate over the last ~15 s
    rate.push(i > j ? (h[i][1] - h[j][1]) / (h[i][0] - h[j][0]) : null);
  }
  return [xs, done, rate];
}

function fleetData(fleet, span) {
  const from = fleet.now - span;
  const pts = fleet.points.filter((p) => p.time >= from);
  const xs = pts.map((p) => p.time);
  return {
    cores: [xs, pts.map((p) => p.allocated), pts.map((p) => p.used), pts.map((p) => Math.max(0, p.allocated - p.used))],
    tasks: [xs, pts.map((p) => p.running), pts.map((p) => p.pending)],
  };
}

// The fleet's charts span their whole hour or day, however little of it has samples.
function fleetRange(el) {
  const f = readData(el.dataset.source);
  return f ? [f.now - +el.dataset.span, f.now] : null;
}

const KINDS = {
  throughput: {
    series: [series("finished", PALETTE.finished, "n"), series("tasks/s", PALETTE.rate, "rate")],
    axes: [{ scale: "n", label: "finished" }, { scale: "rate", side: 1, label: "tasks/s", grid: { show: false } }],
    data: (el) => { const t = readData(el.dataset.source); return t ? throughputData(t) : null; },
  },
  cores: {
    series: [series("allocated", PALETTE.allocated), series("used", PALETTE.used), series("available", PALETTE.available)],
    axes: [{ label: "cores" }],
    data: (el) => { const f = readData(el.dataset.source); return f ? fleetData(f, +el.dataset.span).cores : null; },
    range: fleetRange,
  },
  tasks: {
    series: [series("running", PALETTE.running), series("queued", PALETTE.pending)],
    axes: [{ label: "tasks" }],
    data: (el) => { const f = readData(el.dataset.source); return f ? fleetData(f, +el.dataset.span).tasks : null; },
    range: fleetRange,
  },
};

function drawCharts() {
  if (typeof uPlot === "undefined") return;
  document.querySelectorAll(".chart[data-kind]").forEach((el) => {
    const kind = KINDS[el.dataset.kind];
    const data = kind.data(el);
    if (!data) return;
    el._range = kind.range ? kind.range(el) : null;
    if (el._plot) { el._plot.setData(data); return; }
    const opts = {
      width: Math.max(300, el.clientWidth - 16), height: 220,
      series: [{}].concat(kind.series),
      axes: [{}].concat(kind.axes),
      scales: { x: { time: true, range: (u, min, max) => el._range || [min, max] } },
      legend: { live: true },
    };
    el._plot = new uPlot(opts, data, el);
  });
}

// --- refreshing parts -----------------------------------------------------------------------
async function refresh(el) {
  const open = new Set([...el.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  try {
    const response = await fetch(el.dataset.part, { headers: { accept: "text/html" }, cache: "no-store" });
    const text = await response.text();
    if (!response.ok) { setStatus(text || response.statusText, true); return; }
    if (el._last !== text) {
      el._last = text;
      el.innerHTML = text;
      el.querySelectorAll("details[data-key]").forEach((d) => { if (open.has(d.dataset.key)) d.open = true; });
      fillTimes(el);
      drawCharts();
    }
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (exc) {
    setStatus("dashboard unreachable: " + exc, true);
  }
}

function schedule(el) {
  const every = parseInt(el.dataset.every || "3000", 10);
  const tick = async () => { if (!document.hidden) await refresh(el); setTimeout(tick, every); };
  setTimeout(tick, el.hasAttribute("data-now") ? 0 : every);
}

// --- buttons that change something ------------------------------------------------------------
async function post(button) {
  if (!window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.post, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}",
    });
    const out = await response.json();
    setStatus(out.message, !response.ok, "message");
    if (response.ok && button.dataset.then) { window.location.assign(button.dataset.then); return; }
    document.querySelectorAll("[data-part]").forEach(refresh);
  } catch (exc) {
    setStatus("failed: " + exc, true, "message");
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  fillTimes(document);
  drawCharts();
  document.querySelectorAll("[data-part]").forEach(schedule);
  document.querySelectorAll("button[data-post]").forEach((b) => b.addEventListener("click", () => post(b)));
  window.addEventListener("resize", () => {
    document.querySelectorAll(".chart").forEach((el) => {
      if (el._plot) el._plot.setSize({ width: Math.max(300, el.clientWidth - 16), height: 220 });
    });
  });
});
