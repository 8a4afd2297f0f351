// streamtrain dashboard: metrics records arrive over server-sent events (/events), the served
// model's state is polled from /model. Charts are drawn by uPlot through static/charts.js (both
// served by this server; no network beyond it). Every chart's host carries data-points (points
// given to its chart), and window.streamtrain exposes counts, so tests can watch the page fill.
"use strict";

(() => {
  const CUMULATIVE = "#2563eb";
  const ROLLING = "#f97316";
  const DRIFT = "#dc2626"; // drift markers
  const PROMOTION = "#0f172a"; // a promotion to a model of no known colour
  const GAP_SECONDS = 5; // a pause longer than this in a time series is drawn as a gap
  const Charts = window.StreamtrainCharts; // static/charts.js
  const state = {
    name: null,
    records: [],
    maxRecords: 5000,
    history: null, // a ThinnedHistory, from the first history event on
    model: null, // last /model answer
    modelAt: 0, // performance.now() when it came
    connected: false,
    lastRecordAt: 0,
  };
  const curves = new Map(); // metric name → its card
  const $ = (id) => document.getElementById(id);

  // -- formatting --------------------------------------------------------------------------

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  function fmtInt(v) {
    return v == null || !Number.isFinite(v) ? "—" : intFmt.format(v);
  }
  function fmtCompact(v) {
    if (v == null || !Number.isFinite(v)) return "—";
    v += 0; // -0 shows as 0
    const a = Math.abs(v);
    if (a >= 1e9) return trimZeros((v / 1e9).toFixed(a >= 1e10 ? 0 : 1)) + "G";
    if (a >= 1e6) return trimZeros((v / 1e6).toFixed(a >= 1e7 ? 0 : 1)) + "M";
    if (a >= 1e4) return trimZeros((v / 1e3).toFixed(a >= 1e5 ? 0 : 1)) + "k";
    if (a >= 100 || Number.isInteger(v)) return intFmt.format(v);
    return trimZeros(v.toPrecision(3));
  }
  function fmtMetric(v) {
    if (v == null || !Number.isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return Charts.unsigned(a >= 100 ? v.toFixed(1) : v.toFixed(4)); // a zero without a minus
  }
  function trimZeros(s) {
    return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
  }
  function fmtDuration(s) {
    if (s == null || !Number.isFinite(s)) return "—";
    if (s < 1) return "just now";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  function fmtClock(ms) {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }
  function fmtVersion(v) {
    // ml_training_data:0@1250 → "ml_training_data:0@1,250": offsets are easier read grouped
    return (v || "").replace(/@(\d+)/g, (_m, n) => "@" + intFmt.format(Number(n))) || "—";
  }

  // -- data → page -------------------------------------------------------------------------

  function metricNames() {
    const names = new Set();
    for (const r of state.records) for (const k of Object.keys(r.metrics || {})) names.add(k);
    return [...names];
  }

  // One card per metric; its chart's legend (uPlot's) names the lines and shows the values
  // under the cursor.
  function curveCard(name) {
    let card = curves.get(name);
    if (card) return card;
    $("curves-empty")?.remove();
    const el = document.createElement("div");
    el.className = "card";
    const head = document.createElement("div");
    head.className = "curve-head";
    const title = document.createElement("h3");
    title.textContent = name;
    const now = document.createElement("div");
    now.className = "curve-now";
    head.append(title, now);
    const host = document.createElement("div");
    host.className = "chart";
    host.dataset.metric = name;
    el.append(head, host);
    $("curves").appendChild(el);
    card = { host, now };
    curves.set(name, card);
    return card;
  }

  // One model's points of one metric: null where the metric is not defined yet (the server
  // decides, serving/curves.py), and nothing before the first event learned.
  function curvePoints(recs, label, field, name) {
    const points = [];
    for (const r of recs) {
      const x = r.events_learned;
      if (!(x > 0)) continue;
      const model = (r.models || []).find((m) => m.label === label);
      const v = model?.[field]?.[name];
      if (v != null && Number.isFinite(v)) points.push([x, v]);
    }
    return points;
  }

  // Every model the run has had, in the order the server lists them (which gives the colours),
  // as the newest record that has each one says.
  function models(recs) {
    const byLabel = new Map();
    for (const r of recs) for (const m of r.models || []) byLabel.set(m.label, m);
    const order = new Map();
    for (const r of recs) for (const m of r.models || []) if (!order.has(m.label)) order.set(m.label, order.size);
    return [...byLabel.values()].sort((a, b) => order.get(a.label) - order.get(b.label));
  }

  function render() {
    const recs = state.records;
    const last = recs[recs.length - 1];
    document.body.dataset.records = String(recs.length);
    $("run-records").textContent = fmtInt(recs.length);
    const served = state.model && state.model.loaded ? state.model : null;
    const all = models(recs);
    const colorOf = new Map(all.map((m) => [m.label, m.color]));
    const many = all.length > 1;
    const markers = served ? [{ x: served.events_learned, label: "served checkpoint" }] : [];
    // Promotions (who replaced whom) in the new champion's colour; drift detections in red,
    // named by the model whose detector fired (train --drift).
    for (const p of last?.promotions || []) {
      markers.push({ x: p.events, label: `${p.to} replaces ${p.from}`, color: colorOf.get(p.to) || PROMOTION, solid: true });
    }
    for (const d of last?.drifts || []) {
      if (d.events > 0) markers.push({ x: d.events, label: many ? `drift · ${d.model}` : "drift", color: DRIFT });
    }

    // learning curves, one card per metric: with challengers, one colour per model (solid:
    // whole run, dashed: rolling window); else the one model's two curves.
    metricNames().forEach((name) => {
      const card = curveCard(name);
      const series = [];
      if (many) {
        for (const m of all) {
          const title = `${m.label} · ${m.spec}`;
          series.push({ label: title, color: m.color, points: curvePoints(recs, m.label, "metrics", name), width: 2.2 });
          const rolling = curvePoints(recs, m.label, "rolling", name);
          if (rolling.length) series.push({ label: `${m.label} rolling`, color: m.color, dash: true, points: rolling, width: 1 });
        }
      } else {
        const label = all[0]?.label;
        series.push({ label: "cumulative (whole run)", color: CUMULATIVE, points: curvePoints(recs, label, "metrics", name), width: 2.4 });
        const rolling = curvePoints(recs, label, "rolling", name);
        if (rolling.length) series.push({ label: "rolling window", color: ROLLING, dash: true, points: rolling, width: 1.3 });
      }
      Charts.render(card.host, { xLabel: "events learned", yLabel: name, format: "metric", series, markers });
      card.now.replaceChildren();
      if (many) {
        for (const m of (last?.models || [])) {
          const span = document.createElement("span");
          span.className = m.champion ? "model-now champion" : "model-now";
          span.style.color = m.color;
          span.textContent = `${m.label} ${fmtMetric(m.metrics?.[name])}`;
          span.title = m.champion ? "champion (served)" : "challenger";
          card.now.append(span);
        }
        return;
      }
      const nowV = last?.metrics?.[name], nowR = last?.rolling?.[name];
      const b = document.createElement("b");
      b.textContent = fmtMetric(nowV);
      card.now.append(b);
      if (nowR != null) card.now.append(`  ·  rolling ${fmtMetric(nowR)}`);
    });
    renderModels(last);

    // throughput and lag over time
    const rate = [], lag = [];
    for (const r of recs) {
      if (Number.isFinite(r.events_per_second)) rate.push([r.ts, r.events_per_second]);
      if (Number.isFinite(r.total_lag)) lag.push([r.ts, r.total_lag]);
    }
    const timeChart = { xLabel: "time", xTime: true, yZero: true, gap: GAP_SECONDS, height: 200 };
    Charts.render($("chart-rate"), { ...timeChart, yLabel: "events/s", format: "compact", series: [{ label: "events/s", color: "#0891b2", points: rate, fill: true }] });
    Charts.render($("chart-lag"), { ...timeChart, yLabel: "records", format: "int", series: [{ label: "records behind", color: "#9333ea", points: lag, fill: true }] });

    renderTiles(last);
    renderDeadLetters(last);
    if (window.streamtrainJoin) window.streamtrainJoin.render(last); // static/join.js
  }

  // The models table: champion and challengers as the newest record has them; hidden for a
  // run with one model.
  function renderModels(last) {
    const list = last?.models || [];
    const card = $("models");
    card.hidden = list.length < 2;
    if (card.hidden) return;
    const names = Object.keys(last.metrics || {});
    const head = document.createElement("tr");
    for (const h of ["model", "spec", "role", "events learned", "since event", ...names]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    const promoted = new Map((last.promotions || []).map((p) => [p.to, p.events]));
    const rows = list.map((m) => {
      const tr = document.createElement("tr");
      tr.dataset.model = m.label;
      const since = m.champion && promoted.has(m.label) ? promoted.get(m.label) : m.started_at;
      const cells = [m.label, m.spec, m.champion ? "champion" : "challenger", fmtInt(m.events_learned), fmtInt(since), ...names.map((n) => fmtMetric(m.metrics?.[n]))];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 0) { td.style.color = m.color; td.className = "strong"; }
        if (i >= 3) td.className = (td.className + " num").trim();
        tr.append(td);
      });
      return tr;
    });
    $("models-table").replaceChildren(head, ...rows);
  }

  function renderTiles(last) {
    if (!last) return;
    $("kpi-events").textContent = fmtInt(last.events_learned);
    const predicted = last.events_predicted || 0;
    $("kpi-events-sub").textContent = predicted > 0
      ? `${fmtInt(predicted)} unlabelled predicted · ${fmtInt(last.elapsed_seconds)} s in`
      : `${fmtInt(last.elapsed_seconds)} s into this run`;
    $("kpi-rate").textContent = fmtCompact(last.events_per_second);
    const recent = state.records.slice(-20).map((r) => r.events_per_second).filter(Number.isFinite);
    const avg = recent.reduce((a, b) => a + b, 0) / Math.max(recent.length, 1);
    const procs = last.processes > 1 ? `${last.processes} processes · ` : "";
    $("kpi-rate-sub").textContent = `${procs}avg of last ${recent.length} reports: ${fmtCompact(avg)}/s`;
    $("kpi-lag").textContent = fmtInt(last.total_lag);
    const parts = Object.entries(last.lag || {});
    $("kpi-lag-sub").textContent = parts.length > 1
      ? parts.map(([p, n]) => `p${p}: ${fmtCompact(n)}`).join("  ")
      : last.total_lag === 0 ? "caught up" : "behind the topic's end";
    $("kpi-dlq").textContent = fmtInt(last.dead_lettered);
    const share = last.dead_lettered / Math.max(last.events_learned + last.dead_lettered, 1);
    $("kpi-dlq-sub").textContent = `${(share * 100).toFixed(share < 0.01 && share > 0 ? 2 : 1)}% of records`;
    const names = Object.keys(last.metrics || {});
    if (names.length) {
      const m = names[0];
      $("kpi-metric-label").textContent = m;
      $("kpi-metric").textContent = fmtMetric(last.metrics[m]);
      $("kpi-metric-sub").textContent = last.rolling && m in last.rolling
        ? `rolling window: ${fmtMetric(last.rolling[m])}`
        : "cumulative, progressive validation";
    }
    $("run-topic").textContent = last.topic || "—";
    $("run-version").textContent = fmtVersion(last.model_version);
    $("run-elapsed").textContent = fmtDuration(last.elapsed_seconds);
    const broker = $("run-broker");
    broker.textContent = last.broker_error || "none";
    broker.className = last.broker_error ? "bad" : "";
    if (!state.model || !state.model.spec) $("model-spec").textContent = last.spec || "";
  }

  function renderDeadLetters(last) {
    const reasons = Object.entries((last && last.dead_letter_reasons) || {}).filter(([, n]) => n > 0);
    const host = $("dlq-bars");
    if (!reasons.length) {
      const empty = document.createElement("div");
      empty.className = "empty-inline";
      empty.textContent = last ? "No dead letters: every record was learned." : "No data yet.";
      host.replaceChildren(empty);
      return;
    }
    reasons.sort((a, b) => b[1] - a[1]);
    const max = reasons[0][1];
    host.replaceChildren(...reasons.map(([reason, n]) => {
      const row = document.createElement("div");
      row.className = "bar-row";
      const name = document.createElement("div");
      name.className = "name";
      name.textContent = reason;
      name.title = reason;
      const track = document.createElement("div");
      track.className = "bar-track";
      const fill = document.createElement("div");
      fill.className = "bar-fill";
      fill.style.width = `${(100 * n) / max}%`;
      track.append(fill);
      const count = document.createElement("div");
      count.className = "count";
      count.textContent = fmtInt(n);
      row.append(name, track, count);
      return row;
    }));
  }

  function renderServed() {
    const m = state.model;
    if (!m) return;
    $("model-name").textContent = m.name;
    document.title = `streamtrain · ${m.name}`;
    if (m.spec) $("model-spec").textContent = m.spec;
    const rej = $("served-rejection");
    if (m.last_rejection) {
      const r = m.last_rejection;
      rej.textContent = `${fmtClock(r.at * 1000)} — ${r.error}`;
      rej.className = "bad";
    } else {
      rej.textContent = "none";
      rej.className = "ok";
    }
    $("served-swaps").textContent = fmtInt(m.swaps);
    if (!m.loaded) {
      $("served-version").textContent = "no checkpoint yet";
      return;
    }
    $("served-version").textContent = fmtVersion(m.version);
    $("served-events").textContent = fmtInt(m.events_learned);
    tickAge();
  }

  function tickAge() {
    const m = state.model;
    if (m && m.loaded) {
      const age = m.checkpoint_age_seconds + (performance.now() - state.modelAt) / 1000;
      const el = $("served-age");
      el.textContent = fmtDuration(age);
      el.className = age > 60 ? "bad" : "";
    }
    const s = $("status"), text = $("status-text");
    const last = state.records[state.records.length - 1];
    const quiet = (performance.now() - state.lastRecordAt) / 1000;
    let mode, label;
    if (!state.connected) { mode = "down"; label = "Reconnecting…"; }
    else if (!last) { mode = "idle"; label = "Waiting for the trainer"; }
    else if (last.kind === "final") { mode = "finished"; label = "Run finished"; }
    else if (quiet > 5) { mode = "idle"; label = `No report for ${fmtDuration(quiet)}`; }
    else { mode = "live"; label = "Learning live"; }
    s.dataset.state = mode;
    text.textContent = label;
    if (last) {
      const ago = quiet < 1 ? "just now" : `${fmtDuration(quiet)} ago`;
      $("run-last").textContent = `${fmtClock(last.ts * 1000)} (${ago})`;
    }
  }

  async function pollModel() {
    try {
      const res = await fetch("model", { cache: "no-store" });
      state.model = await res.json();
      state.modelAt = performance.now();
      renderServed();
    } catch (_err) {
      // the status pill already says when the server is gone
    }
  }

  // -- wiring ------------------------------------------------------------------------------

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }

  // A bounded copy of the whole run, by the server's rule (serving/history.py): the newest
  // half whole, older records at a stride that doubles as the run grows.
  class ThinnedHistory {
    constructor(capacity) {
      this.capacity = Math.max(2, capacity);
      this.recent = [];
      this.older = [];
      this.stride = 1;
      this.appended = 0;
    }
    push(record) {
      this.recent.push([this.appended++, record]);
      if (this.recent.length > Math.floor(this.capacity / 2)) {
        const aged = this.recent.shift();
        if (aged[0] % this.stride === 0) this.older.push(aged);
        if (this.older.length > this.capacity - Math.floor(this.capacity / 2)) {
          this.stride *= 2;
          this.older = this.older.filter(([p]) => p % this.stride === 0);
        }
      }
    }
    items() { return this.older.concat(this.recent).map(([, r]) => r); }
  }

  function connect() {
    const es = new EventSource("events");
    es.addEventListener("open", () => { state.connected = true; tickAge(); });
    es.addEventListener("error", () => { state.connected = false; tickAge(); });
    es.addEventListener("history", (e) => {
      // A reconnect starts over from the server's history.
      state.history = new ThinnedHistory(state.maxRecords);
      for (const record of JSON.parse(e.data)) state.history.push(record);
      state.records = state.history.items();
      if (state.records.length) state.lastRecordAt = performance.now();
      schedule();
    });
    es.addEventListener("record", (e) => {
      if (!state.history) state.history = new ThinnedHistory(state.maxRecords);
      state.history.push(JSON.parse(e.data));
      state.records = state.history.items();
      state.lastRecordAt = performance.now();
      schedule();
    });
  }

  async function start() {
    try {
      const cfg = await (await fetch("dashboard.json", { cache: "no-store" })).json();
      state.name = cfg.name;
      state.maxRecords = cfg.max_records || state.maxRecords;
      $("model-name").textContent = cfg.name;
      if (cfg.metrics_topic) $("foot-topic").textContent = cfg.metrics_topic;
    } catch (_err) { /* the model poll fills the name in too */ }
    connect();
    pollModel();
    setInterval(pollModel, 2000);
    setInterval(tickAge, 1000);
    render();
  }

  window.streamtrain = {
    records: () => state.records.length,
    points: () => [...document.querySelectorAll("[data-points]")].reduce((n, el) => n + Number(el.dataset.points), 0),
    model: () => state.model,
  };
  start();
})();
