// streamtrain charts: line charts drawn by uPlot (static/uplot/, vendored) from a small spec,
// shared by the dashboard (live) and the HTML report (inlined, static). A spec:
//   {xLabel, yLabel, xTime, yZero, gap, format, height,
//    series: [{label, color, width, dash, fill, points: [[x, y], …]}],
//    markers: [{x, label, color, solid}]}
// xTime: x is Unix seconds. gap: a step in x wider than this breaks the line. Where x goes back
// (a restarted trainer reports from its checkpoint) the series goes on as a new line of the same
// colour, labelled "after restart N". Drag on a chart to zoom, double-click to zoom out; the
// legend under it shows the values under the cursor. Each host carries data-points (points
// given to uPlot), data-series (the lines' labels, JSON) and data-markers (the markers'
// labels, JSON), for tests. Which points a metric's curve has (from where the metric is
// defined) is decided on the Python side (serving/curves.py), for the dashboard and the report.
"use strict";

(() => {
  const FONT = "11.5px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
  const LABEL_FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const MARKER_ROWS = 3; // lines of marker labels at the top of a plot

  function trimZeros(s) {
    return s.includes(".") && !s.includes("e") ? s.replace(/\.?0+$/, "") : s;
  }
  // A figure that shows as zero shows without a sign: minus zero, or a tiny negative at four
  // decimals, prints as zero with no minus before it (serving/curves.py, plain_number, does
  // so on its side).
  function unsigned(s) {
    return s.replace(/^-(?=0(?:[.,]0*)?[^0-9]*$)/, "");
  }
  const FORMATS = {
    int: (v) => intFmt.format(v),
    compact: (v) => {
      const a = Math.abs(v);
      if (a >= 1e9) return trimZeros((v / 1e9).toFixed(a >= 1e10 ? 0 : 1)) + "G";
      if (a >= 1e6) return trimZeros((v / 1e6).toFixed(a >= 1e7 ? 0 : 1)) + "M";
      if (a >= 1e4) return trimZeros((v / 1e3).toFixed(a >= 1e5 ? 0 : 1)) + "k";
      if (a >= 100 || Number.isInteger(v)) return intFmt.format(v);
      return trimZeros(v.toPrecision(3));
    },
    metric: (v) => {
      const a = Math.abs(v);
      if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
      return a >= 100 ? v.toFixed(1) : v.toFixed(4);
    },
  };
  function shown(format) {
    const f = FORMATS[format] || FORMATS.metric;
    return (v) => (v == null || !Number.isFinite(v) ? "—" : unsigned(f(v)));
  }
  function fmtClock(seconds) {
    const d = new Date(seconds * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  // One unit for a whole axis (2k 4k … 12k, not 2,000 … 10k), decimals from the tick step.
  function axisValues(_u, splits) {
    if (!splits.length) return [];
    const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : Math.abs(splits[0]) || 1;
    const top = Math.max(...splits.map(Math.abs), 0);
    const [div, suffix] = top >= 1e9 ? [1e9, "G"] : top >= 1e6 ? [1e6, "M"] : top >= 1e4 ? [1e3, "k"] : [1, ""];
    const scaled = step / div;
    let dec = 0; // as many decimals as the step needs: 2.5k steps print 2.5k, 5k, 7.5k
    while (dec < 6 && Math.abs(Math.round(scaled * 10 ** dec) - scaled * 10 ** dec) > 1e-6 * 10 ** dec) dec++;
    const nf = new Intl.NumberFormat("en-US", { minimumFractionDigits: dec, maximumFractionDigits: dec });
    return splits.map((v) => (v === 0 ? "0" : unsigned(nf.format(v / div + 0) + suffix)));
  }

  function yRange(min, max, yZero) {
    if (min == null || max == null) return [0, 1];
    let lo = yZero ? Math.min(0, min) : min, hi = max;
    if (hi === lo) { const d = Math.abs(lo) * 0.05 || 1; lo -= d; hi += d; }
    const pad = (hi - lo) * 0.06;
    return [yZero && lo === 0 ? 0 : lo - pad, hi + pad];
  }

  // Where x goes back, a new line starts.
  function segments(points) {
    const out = [];
    let seg = null, prev = null;
    for (const p of points) {
      if (seg === null || p[0] < prev) { seg = []; out.push(seg); }
      seg.push(p);
      prev = p[0];
    }
    return out;
  }

  // The aligned table uPlot draws: one x array, one y array per line. undefined where a line has
  // no point at that x (bridged), null where a gap breaks it.
  function table(spec) {
    const lines = [];
    for (const s of spec.series) {
      segments(s.points).forEach((seg, i) => {
        const pts = [];
        for (const [x, y] of seg) {
          const prev = pts[pts.length - 1];
          if (spec.gap != null && prev && x - prev[0] > spec.gap) pts.push([(prev[0] + x) / 2, null]);
          pts.push([x, y]);
        }
        lines.push({ s, label: i === 0 ? s.label : `${s.label} · after restart ${i}`, pts, n: seg.length });
      });
    }
    const xs = [...new Set(lines.flatMap((l) => l.pts.map((p) => p[0])))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const data = [xs];
    for (const l of lines) {
      const ys = new Array(xs.length).fill(undefined);
      for (const [x, y] of l.pts) ys[at.get(x)] = y; // the newest of equal x wins
      data.push(ys);
    }
    return { lines, data, points: lines.reduce((n, l) => n + l.n, 0) };
  }

  // Vertical lines across the plot, each labelled at its top; a label that would run into
  // one drawn before goes a line lower, and one with no room in the top three lines is left
  // out (the line stays; the report lists them all). {solid: true} draws a
  // full line (promotions), whose labels are placed first.
  function drawMarkers(u, markers) {
    if (!markers || !markers.length) return;
    const g = u.ctx, r = uPlot.pxRatio, { left, top, width, height } = u.bbox;
    g.save();
    g.lineWidth = r;
    g.font = FONT.replace("11.5px", `${11 * r}px`);
    g.textBaseline = "top";
    const rows = []; // per label row: [start, end] of the labels drawn in it
    const order = [...markers].sort((a, b) => (b.solid ? 1 : 0) - (a.solid ? 1 : 0) || a.x - b.x);
    for (const m of order) {
      const x = Math.round(u.valToPos(m.x, "x", true)) + 0.5;
      if (!(x >= left && x <= left + width)) continue;
      g.strokeStyle = m.color || "#94a3b8";
      g.fillStyle = m.color || "#64748b";
      g.lineWidth = (m.solid ? 1.5 : 1) * r;
      g.setLineDash(m.solid ? [] : [3 * r, 3 * r]);
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, top + height); g.stroke();
      const w = g.measureText(m.label).width;
      const right = x > left + width - w - 10 * r;
      const [a, b] = right ? [x - 5 * r - w, x - 5 * r] : [x + 5 * r, x + 5 * r + w];
      let row = rows.findIndex((spans) => spans.every(([s, e]) => b + 4 * r < s || a > e + 4 * r));
      if (row < 0 && rows.length >= MARKER_ROWS) continue;
      if (row < 0) { row = rows.length; rows.push([]); }
      rows[row].push([a, b]);
      g.textAlign = "left";
      g.fillText(m.label, a, top + (2 + 13 * row) * r);
    }
    g.restore();
  }

  function options(spec, lines, width, chart) {
    const value = shown(spec.format);
    const axis = { stroke: "#64748b", font: FONT, labelFont: LABEL_FONT, grid: { stroke: "#eef2f6", width: 1 }, ticks: { stroke: "#cbd5e1", width: 1 } };
    return {
      width,
      height: spec.height || 220,
      scales: { x: { time: !!spec.xTime }, y: { range: (_u, min, max) => yRange(min, max, spec.yZero) } },
      axes: [
        { ...axis, label: spec.xLabel, labelSize: 20, space: spec.xTime ? 70 : 50, values: spec.xTime ? (_u, splits) => splits.map(fmtClock) : axisValues },
        { ...axis, label: spec.yLabel, labelSize: 20, size: 58, values: axisValues },
      ],
      series: [
        { label: spec.xLabel, value: (_u, v) => (v == null ? "—" : spec.xTime ? fmtClock(v) : intFmt.format(v)) },
        ...lines.map((l) => ({
          label: l.label,
          stroke: l.s.color,
          width: l.s.width || 2,
          dash: l.s.dash ? [6, 4] : undefined,
          fill: l.s.fill ? l.s.color + "14" : undefined,
          spanGaps: false,
          value: (_u, v) => value(v),
        })),
      ],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      hooks: {
        draw: [(u) => drawMarkers(u, chart.spec.markers)],
        setSelect: [(u) => { if (u.select.width > 0) chart.zoomed = true; }],
      },
    };
  }

  const charts = new WeakMap();

  // Draws spec in host, or redraws the chart already there; keeps a zoom the user chose.
  function render(host, spec) {
    const { lines, data, points } = table(spec);
    host.dataset.points = String(points);
    host.dataset.series = JSON.stringify(lines.filter((l) => l.n > 0).map((l) => l.label));
    host.dataset.markers = JSON.stringify((spec.markers || []).map((m) => m.label));
    let chart = charts.get(host);
    if (!points) {
      if (chart) { chart.u.destroy(); charts.delete(host); }
      if (!host.querySelector(".chart-empty")) {
        const empty = document.createElement("div");
        empty.className = "chart-empty";
        empty.textContent = "waiting for data…";
        host.replaceChildren(empty);
      }
      return null;
    }
    host.querySelector(".chart-empty")?.remove();
    const key = lines.map((l) => l.label).join("\n");
    if (chart && chart.key === key) {
      chart.spec = spec;
      chart.u.setData(data, !chart.zoomed);
      return chart.u;
    }
    if (chart) chart.u.destroy();
    chart = { key, spec, zoomed: false, u: null };
    chart.u = new uPlot(options(spec, lines, Math.max(host.clientWidth, 280), chart), data, host);
    chart.u.over.addEventListener("dblclick", () => { chart.zoomed = false; });
    charts.set(host, chart);
    if (!host.dataset.sized) {
      host.dataset.sized = "1";
      let width = host.clientWidth;
      new ResizeObserver(() => {
        const c = charts.get(host);
        if (c && host.clientWidth !== width && host.clientWidth > 0) {
          width = host.clientWidth;
          c.u.setSize({ width, height: c.spec.height || 220 });
        }
      }).observe(host);
    }
    return chart.u;
  }

  // The report: every [data-chart] element drawn from the specs in #chart-data.
  function renderPage() {
    const specs = JSON.parse(document.getElementById("chart-data").textContent);
    for (const host of document.querySelectorAll("[data-chart]")) render(host, specs[Number(host.dataset.chart)]);
  }

  window.StreamtrainCharts = {
    render,
    renderPage,
    segments,
    unsigned,
    uplot: (host) => charts.get(host)?.u ?? null,
  };
})();
