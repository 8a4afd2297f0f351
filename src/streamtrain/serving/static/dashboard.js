// streamtrain dashboard: metrics records arrive over server-sent events (/events), the served
// model's state is polled from /model. Charts are drawn on <canvas> by hand: no libraries, no
// network beyond this server. Every chart's canvas carries data-points (points drawn), and
// window.streamtrain exposes counts, so tests can watch the page fill up.
"use strict";

(() => {
  const CUMULATIVE = "#2563eb";
  const ROLLING = "rgba(249, 115, 22, 0.8)";
  const GAP_SECONDS = 5; // a pause longer than this in a time series is drawn as a gap
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
  const charts = new Map();
  const $ = (id) => document.getElementById(id);

  // -- formatting --------------------------------------------------------------------------

  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  function fmtInt(v) {
    return v == null || !Number.isFinite(v) ? "—" : intFmt.format(v);
  }
  function fmtCompact(v) {
    if (v == null || !Number.isFinite(v)) return "—";
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
    return a >= 100 ? v.toFixed(1) : v.toFixed(4);
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

  // -- axes --------------------------------------------------------------------------------

  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  function ticks(min, max, count, time) {
    let step;
    if (time) {
      const want = (max - min) / 1000 / Math.max(count, 1);
      step = (TIME_STEPS.find((s) => s >= want) || TIME_STEPS[TIME_STEPS.length - 1]) * 1000;
    } else {
      step = niceStep(max - min, count);
    }
    // Multiples k·step rather than a running sum, which drifts over many ticks.
    const out = [];
    const last = Math.floor(max / step + 1e-9);
    for (let k = Math.ceil(min / step - 1e-9); k <= last; k++) out.push(k * step + 0); // no -0
    return { step, values: out };
  }
  function decimalsFor(step) {
    return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  }
  // One unit for a whole axis (2k 4k … 12k, not 2,000 … 10k), decimals from the tick step.
  function axisFormat(values, step) {
    const top = Math.max(...values.map(Math.abs), 0);
    const [div, suffix] = top >= 1e9 ? [1e9, "G"] : top >= 1e6 ? [1e6, "M"] : top >= 1e4 ? [1e3, "k"] : [1, ""];
    const dec = decimalsFor(step / div);
    const nf = new Intl.NumberFormat("en-US", { minimumFractionDigits: dec, maximumFractionDigits: dec });
    return (v) => nf.format(v / div) + suffix;
  }

  // -- a line chart on canvas --------------------------------------------------------------

  class LineChart {
    constructor(host, opts) {
      this.opts = Object.assign({ xTime: false, yZero: false, yLabel: "", xLabel: "" }, opts);
      this.canvas = document.createElement("canvas");
      this.canvas.dataset.points = "0";
      this.canvas.setAttribute("role", "img");
      this.canvas.setAttribute("aria-label", opts.title || "chart");
      host.appendChild(this.canvas);
      this.series = [];
      this.marker = null;
      this.hover = null;
      this.canvas.addEventListener("mousemove", (e) => this.onHover(e));
      this.canvas.addEventListener("mouseleave", () => { this.hover = null; hideTip(); this.draw(); });
      new ResizeObserver(() => this.draw()).observe(host);
    }

    setData(series, marker) {
      this.series = series;
      this.marker = marker;
      let n = 0;
      for (const s of series) n += s.points.length;
      this.canvas.dataset.points = String(n);
    }

    layout() {
      const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
      return { w, h, l: 62, r: 14, t: 10, b: 38 };
    }

    bounds() {
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const s of this.series) {
        for (const [x, y] of s.points) {
          if (!Number.isFinite(y)) continue;
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
      if (!Number.isFinite(x0)) return null;
      if (this.marker != null && this.marker.x >= x0) x1 = Math.max(x1, this.marker.x);
      if (x1 === x0) { x0 -= this.opts.xTime ? 5000 : 1; x1 += this.opts.xTime ? 5000 : 1; }
      if (this.opts.yZero) y0 = Math.min(0, y0);
      if (y1 === y0) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.06;
      y1 += pad;
      if (!(this.opts.yZero && y0 === 0)) y0 -= pad;
      return { x0, x1, y0, y1 };
    }

    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const L = this.layout();
      if (L.w === 0 || L.h === 0) return;
      c.width = Math.round(L.w * dpr);
      c.height = Math.round(L.h * dpr);
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, L.w, L.h);
      g.font = "11.5px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
      const B = this.bounds();
      if (!B) {
        g.fillStyle = "#94a3b8";
        g.textAlign = "center";
        g.fillText("waiting for data…", L.w / 2, L.h / 2);
        return;
      }
      const pw = L.w - L.l - L.r, ph = L.h - L.t - L.b;
      const sx = (x) => L.l + ((x - B.x0) / (B.x1 - B.x0)) * pw;
      const sy = (y) => L.t + ph - ((y - B.y0) / (B.y1 - B.y0)) * ph;
      this.scale = { sx, sy, B, L, pw, ph };

      // grid and y labels
      const yt = ticks(B.y0, B.y1, Math.max(2, Math.floor(ph / 42)), false);
      const yFmt = axisFormat(yt.values, yt.step);
      g.strokeStyle = "#eef2f6";
      g.lineWidth = 1;
      g.fillStyle = "#64748b";
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (const v of yt.values) {
        const y = Math.round(sy(v)) + 0.5;
        g.beginPath(); g.moveTo(L.l, y); g.lineTo(L.l + pw, y); g.stroke();
        g.fillText(yFmt(v), L.l - 8, y);
      }
      // x labels
      const xt = ticks(B.x0, B.x1, Math.max(2, Math.floor(pw / 95)), this.opts.xTime);
      const xFmt = this.opts.xTime ? fmtClock : axisFormat(xt.values, xt.step);
      g.textAlign = "center";
      g.textBaseline = "top";
      for (const v of xt.values) {
        const x = Math.round(sx(v)) + 0.5;
        g.strokeStyle = "#f3f5f8";
        g.beginPath(); g.moveTo(x, L.t); g.lineTo(x, L.t + ph); g.stroke();
        g.strokeStyle = "#cbd5e1";
        g.beginPath(); g.moveTo(x, L.t + ph); g.lineTo(x, L.t + ph + 4); g.stroke();
        g.fillText(xFmt(v), x, L.t + ph + 7);
      }
      g.strokeStyle = "#cbd5e1";
      g.beginPath(); g.moveTo(L.l, L.t + ph + 0.5); g.lineTo(L.l + pw, L.t + ph + 0.5); g.stroke();
      if (this.opts.xLabel) {
        g.fillStyle = "#94a3b8";
        g.textAlign = "right";
        g.fillText(this.opts.xLabel, L.l + pw, L.t + ph + 22);
      }
      if (this.opts.yLabel) {
        g.save();
        g.translate(12, L.t + ph / 2);
        g.rotate(-Math.PI / 2);
        g.textAlign = "center";
        g.textBaseline = "middle";
        g.fillStyle = "#94a3b8";
        g.fillText(this.opts.yLabel, 0, 0);
        g.restore();
      }

      // served-model marker
      if (this.marker && this.marker.x >= B.x0 && this.marker.x <= B.x1) {
        const x = Math.round(sx(this.marker.x)) + 0.5;
        g.save();
        g.strokeStyle = "#94a3b8";
        g.setLineDash([3, 3]);
        g.beginPath(); g.moveTo(x, L.t); g.lineTo(x, L.t + ph); g.stroke();
        g.restore();
        g.fillStyle = "#64748b";
        g.textAlign = x > L.l + pw - 80 ? "right" : "left";
        g.textBaseline = "top";
        g.fillText(this.marker.label, x + (g.textAlign === "right" ? -5 : 5), L.t + 2);
      }

      // series
      g.save();
      g.beginPath();
      g.rect(L.l, L.t - 2, pw + 2, ph + 4);
      g.clip();
      // Last series first: the first (the main line) is drawn on top.
      for (const s of [...this.series].reverse()) {
        g.strokeStyle = s.color;
        g.lineWidth = s.width || 2;
        g.lineJoin = "round";
        g.setLineDash(s.dash ? [6, 4] : []);
        g.beginPath();
        let pen = false, prev = null, step = null;
        for (const [x, y] of s.points) {
          if (!Number.isFinite(y)) { pen = false; continue; }
          // A pause breaks a time series; thinned older points are far apart but evenly so,
          // so only a gap much wider than the spacing before it counts.
          const dt = prev == null ? 0 : x - prev;
          const broken = prev != null && (this.opts.xTime
            ? dt > GAP_SECONDS * 1000 && (step == null || dt > 3 * step)
            : x < prev);
          if (!pen || broken) g.moveTo(sx(x), sy(y)); else g.lineTo(sx(x), sy(y));
          pen = true;
          if (prev != null) step = dt;
          prev = x;
        }
        g.stroke();
        if (s.fill && s.points.length > 1) {
          g.setLineDash([]);
          g.globalAlpha = 0.08;
          g.fillStyle = s.color;
          g.beginPath();
          const pts = s.points.filter(([, y]) => Number.isFinite(y));
          g.moveTo(sx(pts[0][0]), sy(Math.max(B.y0, 0)));
          for (const [x, y] of pts) g.lineTo(sx(x), sy(y));
          g.lineTo(sx(pts[pts.length - 1][0]), sy(Math.max(B.y0, 0)));
          g.fill();
          g.globalAlpha = 1;
        }
      }
      g.restore();

      // hover crosshair
      if (this.hover) {
        const x = Math.round(sx(this.hover.x)) + 0.5;
        g.strokeStyle = "#94a3b8";
        g.setLineDash([]);
        g.beginPath(); g.moveTo(x, L.t); g.lineTo(x, L.t + ph); g.stroke();
        for (const p of this.hover.values) {
          if (!Number.isFinite(p.y)) continue;
          g.fillStyle = p.color;
          g.beginPath(); g.arc(sx(p.x), sy(p.y), 3.5, 0, Math.PI * 2); g.fill();
        }
      }
    }

    onHover(e) {
      if (!this.scale) return;
      const rect = this.canvas.getBoundingClientRect();
      const { B, L, pw } = this.scale;
      const px = e.clientX - rect.left;
      if (px < L.l || px > L.l + pw) { this.hover = null; hideTip(); this.draw(); return; }
      const xv = B.x0 + ((px - L.l) / pw) * (B.x1 - B.x0);
      const values = [];
      for (const s of this.series) {
        let best = null, bd = Infinity;
        for (const pt of s.points) {
          const d = Math.abs(pt[0] - xv);
          if (d <= bd) { bd = d; best = pt; } // <=: the newest of equal x wins
        }
        if (best) values.push({ name: s.label, color: s.color, x: best[0], y: best[1] });
      }
      if (!values.length) return;
      this.hover = { x: values[0].x, values };
      this.draw();
      const head = this.opts.xTime ? fmtClock(values[0].x) : `${fmtInt(values[0].x)} events`;
      const fmt = this.opts.format || fmtMetric;
      const tip = $("tooltip");
      tip.replaceChildren();
      const h = document.createElement("div");
      h.textContent = head;
      h.style.color = "#94a3b8";
      tip.appendChild(h);
      for (const v of values) {
        const row = document.createElement("div");
        const sw = document.createElement("span");
        sw.className = "sw";
        sw.style.background = v.color;
        row.append(sw, `${v.name}: ${fmt(v.y)}`);
        tip.appendChild(row);
      }
      tip.hidden = false;
      const tx = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = `${tx}px`;
      tip.style.top = `${e.clientY + 14}px`;
    }
  }
  function hideTip() { $("tooltip").hidden = true; }

  // -- data → page -------------------------------------------------------------------------

  function metricNames() {
    const names = new Set();
    for (const r of state.records) for (const k of Object.keys(r.metrics || {})) names.add(k);
    return [...names];
  }

  function curveCard(name) {
    let chart = charts.get("curve:" + name);
    if (chart) return chart;
    $("curves-empty")?.remove();
    const card = document.createElement("div");
    card.className = "card";
    const head = document.createElement("div");
    head.className = "curve-head";
    const title = document.createElement("h3");
    title.textContent = name;
    const now = document.createElement("div");
    now.className = "curve-now";
    head.append(title, now);
    const legend = document.createElement("div");
    legend.className = "legend";
    const host = document.createElement("div");
    host.className = "chart";
    host.dataset.metric = name;
    card.append(head, legend, host);
    $("curves").appendChild(card);
    chart = new LineChart(host, { title: `${name} learning curve`, xLabel: "events learned" });
    chart.now = now;
    chart.legend = legend;
    charts.set("curve:" + name, chart);
    return chart;
  }

  function setLegend(el, items) {
    const key = items.map((i) => i.label).join("|");
    if (el.dataset.key === key) return;
    el.dataset.key = key;
    el.replaceChildren(...items.map((i) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.borderColor = i.color;
      if (i.dash) swatch.className = "dashed";
      span.append(swatch, i.label);
      return span;
    }));
  }

  function render() {
    const recs = state.records;
    const last = recs[recs.length - 1];
    document.body.dataset.records = String(recs.length);
    $("run-records").textContent = fmtInt(recs.length);
    const served = state.model && state.model.loaded ? state.model : null;
    const marker = served ? { x: served.events_learned, label: "served checkpoint" } : null;

    // learning curves, one card per metric
    metricNames().forEach((name) => {
      const chart = curveCard(name);
      const cumulative = [], rolling = [];
      for (const r of recs) {
        const x = r.events_learned;
        if (!(x > 0)) continue; // a metric of nothing learned yet is a placeholder, not a point
        if (r.metrics && name in r.metrics) cumulative.push([x, r.metrics[name]]);
        if (r.rolling && name in r.rolling) rolling.push([x, r.rolling[name]]);
      }
      // Same two colours on every card, so one glance at any legend reads them all.
      const series = [{ label: "cumulative (whole run)", color: CUMULATIVE, points: cumulative, width: 2.4 }];
      if (rolling.length) series.push({ label: "rolling window", color: ROLLING, dash: true, points: rolling, width: 1.3 });
      chart.setData(series, marker);
      setLegend(chart.legend, series);
      const nowV = last?.metrics?.[name], nowR = last?.rolling?.[name];
      chart.now.replaceChildren();
      const b = document.createElement("b");
      b.textContent = fmtMetric(nowV);
      chart.now.append(b);
      if (nowR != null) chart.now.append(`  ·  rolling ${fmtMetric(nowR)}`);
    });

    // throughput and lag over time
    const rate = [], lag = [];
    for (const r of recs) {
      const t = r.ts * 1000;
      rate.push([t, r.events_per_second]);
      lag.push([t, r.total_lag]);
    }
    charts.get("rate").setData([{ label: "events/s", color: "#0891b2", points: rate, fill: true }], null);
    charts.get("lag").setData([{ label: "records behind", color: "#9333ea", points: lag, fill: true }], null);

    renderTiles(last);
    renderDeadLetters(last);
    if (window.streamtrainJoin) window.streamtrainJoin.render(last); // static/join.js
    for (const c of charts.values()) c.draw();
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
    charts.set("rate", new LineChart($("chart-rate"), { xTime: true, yZero: true, yLabel: "events/s", format: fmtCompact, title: "throughput" }));
    charts.set("lag", new LineChart($("chart-lag"), { xTime: true, yZero: true, yLabel: "records", format: fmtInt, title: "consumer lag" }));
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
    points: () => [...charts.values()].reduce((n, c) => n + Number(c.canvas.dataset.points), 0),
    model: () => state.model,
  };
  start();
})();
