// hitstream's dashboard: polls the job's JSON once a second and draws every chart as inline SVG. No libraries.
"use strict";

const POLL_MS = 1000;
const HISTORY = 600;          // progress records kept for the time charts (10 minutes at 1 s)
const DURATION_BARS = 60;     // newest records in the batch-duration chart
const ZIP_BARS = 40;          // bars in the zipcode chart
const PIES = 6;               // newest windows drawn as pies
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd"];

const state = { history: [], lastBatch: -1, runId: null, colors: new Map(), polls: 0 };

// ---------------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const d = digits === undefined ? (Math.abs(n) >= 100 ? 0 : 1) : digits;
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
}

function shortNum(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
  if (a >= 100) return String(Math.round(n));
  return String(Math.round(n * 100) / 100);
}

// A y axis from 0 to at least v in 3 to 6 round steps (1, 2, 2.5 or 5 times a power of ten): {max, steps}.
function niceAxis(v) {
  if (!(v > 0)) return { max: 1, steps: 4 };
  let best = null;
  for (const steps of [4, 5, 6, 3]) {
    const raw = v / steps, p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * p).find(s => s >= raw);
    if (!best || step * steps < best.max) best = { max: step * steps, steps };
  }
  return best;
}

function colorFor(key) {
  if (!state.colors.has(key)) state.colors.set(key, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(key);
}

function hhmmss(ms) { return new Date(ms).toISOString().slice(11, 19); }
// A window bound as HH:MM, or HH:MM:SS when the windows do not fall on whole minutes.
function clock(iso, seconds) { return iso ? iso.slice(11, seconds ? 19 : 16) : "?"; }

function sizeOf(el, defaultHeight) {
  const w = Math.max(240, Math.floor(el.clientWidth || 480));
  return { w, h: defaultHeight };
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

function empty(el, message) {
  clear(el);
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = message;
  el.appendChild(p);
}

// ---------------------------------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------------------------------

// series: [{name, color, points: [[x_ms, y]]}] -> a line chart with a y grid, time labels and a legend.
function lineChart(el, series, opts) {
  const { w, h } = sizeOf(el, (opts && opts.height) || 220);
  const m = { l: 52, r: 12, t: 22, b: 24 };
  const all = series.flatMap(s => s.points);
  clear(el);
  const svg = svgEl("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "line-chart" });
  el.appendChild(svg);
  if (!all.length) { svg.appendChild(svgEl("text", { x: w / 2, y: h / 2, class: "empty-svg" }, "waiting for data…")); return; }
  const x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  const axis = niceAxis(Math.max(...all.map(p => p[1]))), ymax = axis.max;
  const X = x => m.l + (x1 === x0 ? (w - m.l - m.r) : (x - x0) / (x1 - x0) * (w - m.l - m.r));
  const Y = y => h - m.b - y / ymax * (h - m.t - m.b);
  for (let i = 0; i <= axis.steps; i++) {
    const v = ymax * i / axis.steps, y = Y(v);
    svg.appendChild(svgEl("line", { x1: m.l, x2: w - m.r, y1: y, y2: y, class: "grid" }));
    svg.appendChild(svgEl("text", { x: m.l - 6, y: y + 4, class: "axis", "text-anchor": "end" }, shortNum(v)));
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    svg.appendChild(svgEl("text", { x: X(x), y: h - 6, class: "axis", "text-anchor": anchor }, hhmmss(x)));
  }
  let lx = m.l;
  for (const s of series) {
    if (s.points.length) {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, class: "series",
                                      "data-series": s.name }));
      const last = s.points[s.points.length - 1];
      svg.appendChild(svgEl("circle", { cx: X(last[0]), cy: Y(last[1]), r: 3, fill: s.color }));
    }
    svg.appendChild(svgEl("rect", { x: lx, y: 6, width: 10, height: 10, fill: s.color }));
    const label = `${s.name}${s.points.length ? " " + shortNum(s.points[s.points.length - 1][1]) : ""}`;
    svg.appendChild(svgEl("text", { x: lx + 14, y: 15, class: "legend-text" }, label));
    lx += 22 + label.length * 6.6;
  }
}

// items: [{key, label, value, color, parts?: [{value, color, name}]}] -> vertical bars with values on top.
function barChart(el, items, opts) {
  const { w, h } = sizeOf(el, (opts && opts.height) || 240);
  const m = { l: 52, r: 8, t: 16, b: (opts && opts.labelRotate) ? 46 : 24 };
  clear(el);
  const svg = svgEl("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "bar-chart" });
  el.appendChild(svg);
  if (!items.length) { svg.appendChild(svgEl("text", { x: w / 2, y: h / 2, class: "empty-svg" }, (opts && opts.emptyText) || "waiting for data…")); return; }
  const axis = niceAxis(Math.max(...items.map(i => i.value))), ymax = axis.max;
  const Y = y => h - m.b - y / ymax * (h - m.t - m.b);
  for (let i = 0; i <= axis.steps; i++) {
    const v = ymax * i / axis.steps, y = Y(v);
    svg.appendChild(svgEl("line", { x1: m.l, x2: w - m.r, y1: y, y2: y, class: "grid" }));
    svg.appendChild(svgEl("text", { x: m.l - 6, y: y + 4, class: "axis", "text-anchor": "end" }, shortNum(v)));
  }
  const slot = (w - m.l - m.r) / items.length, bw = Math.max(2, Math.min(48, slot * 0.75));
  items.forEach((item, i) => {
    const cx = m.l + slot * (i + 0.5);
    const g = svgEl("g", { class: "bar", "data-key": item.key, "data-value": item.value });
    const parts = item.parts || [{ value: item.value, color: item.color, name: item.key }];
    let base = 0;
    for (const part of parts) {
      const y0 = Y(base), y1 = Y(base + part.value);
      const r = svgEl("rect", { x: cx - bw / 2, y: y1, width: bw, height: Math.max(0, y0 - y1), fill: part.color });
      r.appendChild(svgEl("title", {}, `${item.label}: ${part.name} ${fmt(part.value)}`));
      g.appendChild(r);
      base += part.value;
    }
    if (!(opts && opts.hideValues) && slot > 22) {
      g.appendChild(svgEl("text", { x: cx, y: Y(item.value) - 3, class: "bar-value", "text-anchor": "middle" }, shortNum(item.value)));
    }
    if (slot > 14 || i % Math.ceil(14 / slot) === 0) {
      const ly = h - m.b + 13;
      const attrs = opts && opts.labelRotate
        ? { x: cx, y: ly, class: "axis", "text-anchor": "end", transform: `rotate(-40 ${cx} ${ly})` }
        : { x: cx, y: ly, class: "axis", "text-anchor": "middle" };
      g.appendChild(svgEl("text", attrs, item.label));
    }
    svg.appendChild(g);
  });
}

// slices: [{key, value}] -> one pie with a title; returns the wrapper element.
function pieChart(title, slices, total) {
  const size = 170, r = 70, c = size / 2;
  const wrap = document.createElement("figure");
  wrap.className = "pie";
  const svg = svgEl("svg", { width: size, height: size, viewBox: `0 0 ${size} ${size}` });
  let angle = -Math.PI / 2;
  for (const s of slices) {
    const frac = total ? s.value / total : 0;
    let el;
    if (frac >= 0.9999) {
      el = svgEl("circle", { cx: c, cy: c, r, fill: colorFor(s.key) });
    } else {
      const a1 = angle + frac * 2 * Math.PI;
      const large = frac > 0.5 ? 1 : 0;
      const d = `M${c},${c} L${c + r * Math.cos(angle)},${c + r * Math.sin(angle)} ` +
                `A${r},${r} 0 ${large} 1 ${c + r * Math.cos(a1)},${c + r * Math.sin(a1)} Z`;
      el = svgEl("path", { d, fill: colorFor(s.key) });
      angle = a1;
    }
    el.setAttribute("class", "slice");
    el.setAttribute("data-key", s.key);
    el.setAttribute("data-value", s.value);
    el.appendChild(svgEl("title", {}, `${s.key}: ${fmt(s.value)} (${(frac * 100).toFixed(1)}%)`));
    svg.appendChild(el);
  }
  wrap.appendChild(svg);
  const cap = document.createElement("figcaption");
  cap.appendChild(document.createTextNode(title));
  cap.appendChild(document.createElement("br"));
  cap.appendChild(document.createTextNode(`${fmt(total)} hits`));
  wrap.appendChild(cap);
  return wrap;
}

// ---------------------------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------------------------

function totalLag(p) {
  let sum = 0, any = false;
  for (const s of (p && p.sources) || []) {
    for (const parts of Object.values(s.lag || {})) for (const v of Object.values(parts)) { sum += v; any = true; }
  }
  return any ? sum : null;
}

function renderTiles(p) {
  $("tile-input").textContent = p ? fmt(p.inputRowsPerSecond) : "–";
  $("tile-processed").textContent = p ? fmt(p.processedRowsPerSecond) : "–";
  $("tile-batch").textContent = p ? String(p.batchId) : "–";
  $("tile-batch-rows").textContent = p ? `${fmt(p.numInputRows)} rows, ${fmt(p.durationMs.triggerExecution)} ms` : "rows";
  $("tile-total").textContent = p ? fmt(p.totalInputRows) : "–";
  $("tile-lag").textContent = p ? fmt(totalLag(p)) : "–";
  $("tile-watermark").textContent = (p && p.eventTime.watermark) || "–";
  $("tile-event-time").textContent = p && p.eventTime.max
    ? `event time ${p.eventTime.min.slice(11, 19)} … ${p.eventTime.max.slice(11, 19)}` : "event time";
  $("tile-late").textContent = p ? fmt(p.totalLateRows) : "–";
  $("tile-dead").textContent = p ? fmt(p.totalDeadLetterRows) : "–";
  // Once every window has closed, "in final windows" equals "into windows"; less means hits were lost on the way.
  const w = p && p.windowAccounting;
  $("tile-windows").textContent = w ? `${fmt(w.hitsIntoWindows)} / ${fmt(w.lateHits)} / ${fmt(w.hitsInFinalWindows)}` : "–";
}

function renderTimeCharts() {
  const h = state.history;
  const t = p => Date.parse(p.timestamp);
  lineChart($("chart-rates"), [
    { name: "input rows/s", color: "#1f77b4", points: h.map(p => [t(p), p.inputRowsPerSecond]) },
    { name: "processed rows/s", color: "#2ca02c", points: h.map(p => [t(p), p.processedRowsPerSecond]) },
  ], { height: 240 });
  const recent = h.slice(-DURATION_BARS);
  barChart($("chart-duration"), recent.map(p => ({
    key: String(p.batchId), label: String(p.batchId), value: p.durationMs.triggerExecution,
    parts: [{ name: "read", value: p.durationMs.getBatch, color: "#1f77b4" },
            { name: "write", value: p.durationMs.addBatch, color: "#ff7f0e" }],
  })), { height: 220, hideValues: true });
  lineChart($("chart-late"), [
    { name: "late", color: "#d62728", points: h.map(p => [t(p), p.totalLateRows]) },
    { name: "dead letters", color: "#9467bd", points: h.map(p => [t(p), p.totalDeadLetterRows]) },
  ], { height: 220 });
}

function renderLag(p) {
  const items = [];
  for (const s of (p && p.sources) || []) {
    for (const [topic, parts] of Object.entries(s.lag || {})) {
      for (const [partition, lag] of Object.entries(parts)) {
        const label = Object.keys(s.lag).length > 1 ? `${topic}[${partition}]` : `p${partition}`;
        items.push({ key: `${topic}[${partition}]`, label, value: lag, color: "#17becf" });
      }
    }
  }
  items.sort((a, b) => a.key.localeCompare(b.key, "en", { numeric: true }));
  barChart($("chart-lag"), items, { height: 220, emptyText: "no Kafka partitions reported yet" });
}

function renderSinks(p) {
  const body = $("sinks").tBodies[0];
  clear(body);
  for (const s of (p && p.sinks) || []) {
    const tr = body.insertRow();
    tr.setAttribute("data-sink", s.description);
    for (const v of [s.description, fmt(s.numOutputRows), fmt(s.totalOutputRows), fmt(s.totalErrors)]) {
      tr.insertCell().textContent = v;
    }
    if (s.totalErrors) tr.className = "has-errors";
  }
}

function renderResults(results) {
  const zips = (results.zip_counts || []).slice();
  zips.sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])));
  const bars = zips.slice(0, ZIP_BARS);
  bars.sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  barChart($("chart-zip"), bars.map(([zip, count]) => ({ key: zip, label: zip, value: count, color: colorFor(zip) })),
           { height: 260, labelRotate: bars.length > 16,
             emptyText: results.zip_counts ? "no hits yet" : "this job has no zip_counts sink" });

  const windows = (results.zip_window_counts || []).slice(-PIES);
  const pies = $("chart-windows");
  clear(pies);
  if (!windows.length) {
    empty(pies, results.zip_window_counts ? "no windows yet" : "this job has no zip_window_counts sink");
  }
  const keys = new Set();
  for (const w of windows) {
    const slices = w.counts.map(([zip, count]) => ({ key: zip, value: count }));
    slices.forEach(s => keys.add(s.key));
    const total = slices.reduce((a, s) => a + s.value, 0);
    const seconds = w.window_start.slice(17, 19) !== "00" || w.window_end.slice(17, 19) !== "00";
    const title = `${w.window_start.slice(0, 10)} ${clock(w.window_start, seconds)}–${clock(w.window_end, seconds)}`;
    const fig = pieChart(title, slices, total);
    fig.setAttribute("data-window", w.window_start);
    pies.appendChild(fig);
  }
  const legend = $("legend-windows");
  clear(legend);
  for (const key of [...keys].sort()) {
    const item = document.createElement("span");
    item.className = "legend-item";
    const sw = document.createElement("i");
    sw.style.background = colorFor(key);
    item.appendChild(sw);
    item.appendChild(document.createTextNode(key));
    legend.appendChild(item);
  }
}

function renderStatus(status, ok) {
  const pill = $("status");
  if (!ok) {
    pill.textContent = "disconnected";
    pill.setAttribute("data-state", "down");
    return;
  }
  pill.textContent = status.message || "–";
  pill.setAttribute("data-state", status.isTriggerActive ? "active" : (status.message === "Stopped" ? "stopped" : "idle"));
  $("query-name").textContent = status.name || "";
  $("job-state").textContent = status.jobState ? `job ${status.jobState}` : "";
  $("ids").textContent = status.id ? `id ${status.id.slice(0, 8)} · run ${String(status.runId).slice(0, 8)}` : "";
}

// ---------------------------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function poll() {
  try {
    const [recent, status, results, tables] = await Promise.all([
      getJson(`/progress/recent?since=${state.lastBatch}`), getJson("/status"), getJson("/results"),
      state.polls % 5 === 0 ? getJson("/tables").catch(() => null) : Promise.resolve(null),
    ]);
    if (status.runId && status.runId !== state.runId) {  // a new run of the job: start the charts afresh
      state.runId = status.runId; state.history = []; state.lastBatch = -1;
    }
    for (const p of recent.progress) {
      if (p.runId !== state.runId || p.batchId <= state.lastBatch) continue;
      state.history.push(p);
      state.lastBatch = p.batchId;
    }
    if (state.history.length > HISTORY) state.history.splice(0, state.history.length - HISTORY);
    const last = state.history[state.history.length - 1] || null;
    renderStatus(status, true);
    renderTiles(last);
    renderTimeCharts();
    renderLag(last);
    renderSinks(last);
    renderResults(results);
    if (tables) renderTables(tables.tables || []);
    state.polls += 1;
    document.body.setAttribute("data-polls", String(state.polls));
    $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)}Z`;
  } catch (error) {
    renderStatus(null, false);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SQL box
// ---------------------------------------------------------------------------------------------------------------

// The query the SQL box starts with, per table; the box follows the job's tables until the user types in it.
const STARTING_QUERIES = {
  zip_counts: "SELECT zipcode, count FROM zip_counts ORDER BY count DESC",
  zip_window_counts: "SELECT window_start, window_end, zipcode, count FROM zip_window_counts\n" +
                     "ORDER BY window_start DESC, count DESC",
  isp_counts: "SELECT isp, count FROM isp_counts ORDER BY count DESC",
};
let sqlEdited = false;

function startingQuery(names) {
  const name = names.find(n => n in STARTING_QUERIES) || names[0];
  return STARTING_QUERIES[name] || `SELECT * FROM ${name}`;
}

function renderTables(names) {
  const el = $("sql-tables");
  clear(el);
  if (!names.length) { el.textContent = "none yet (a memory sink creates its table on its first write)"; return; }
  if (!sqlEdited) $("sql-input").value = startingQuery(names);
  names.forEach((name, i) => {
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = name;
    a.addEventListener("click", e => {
      e.preventDefault(); sqlEdited = true; $("sql-input").value = `SELECT * FROM ${name}`; runSql();
    });
    if (i) el.appendChild(document.createTextNode(", "));
    el.appendChild(a);
  });
}

let sqlSeq = 0;

async function runSql() {
  const out = $("sql-output"), err = $("sql-error"), meta = $("sql-meta"), table = $("sql-result");
  const query = $("sql-input").value;
  const limit = Math.max(1, Math.min(10000, parseInt($("sql-limit").value, 10) || 200));
  const seq = ++sqlSeq;
  out.setAttribute("data-state", "running");
  err.textContent = "";
  meta.textContent = "running…";
  const started = performance.now();
  let response, body;
  try {
    response = await fetch(`/sql?q=${encodeURIComponent(query)}&limit=${limit}`, { cache: "no-store" });
    body = await response.json();
  } catch (error) {
    body = { error: `no answer from the job: ${error.message}` };
    response = { ok: false };
  }
  if (seq !== sqlSeq) return;  // a newer query was started meanwhile
  clear(table);
  if (!response.ok || body.error) {
    err.textContent = body.error || "query failed";
    meta.textContent = "";
    out.setAttribute("data-state", "error");
    return;
  }
  const head = table.createTHead().insertRow();
  for (const c of body.columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  const tbody = table.createTBody();
  for (const row of body.rows) {
    const tr = tbody.insertRow();
    for (const v of row) tr.insertCell().textContent = v === null ? "null" : String(v);
  }
  meta.textContent = `${body.rows.length} row${body.rows.length === 1 ? "" : "s"}` +
    (body.truncated ? ` (cut at the limit of ${limit})` : "") + ` · ${Math.round(performance.now() - started)} ms`;
  out.setAttribute("data-state", "ok");
}

$("sql-run").addEventListener("click", runSql);
$("sql-input").addEventListener("input", () => { sqlEdited = true; });
$("sql-input").addEventListener("keydown", e => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(); }
});
window.addEventListener("resize", () => { renderTimeCharts(); });
poll();
