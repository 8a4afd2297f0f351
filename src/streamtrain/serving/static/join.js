// streamtrain dashboard: the "labels joined later" card, drawn from the newest metrics record's
// "join" object (format: streamtrain/formats.py). dashboard.js calls render on every redraw;
// the card stays hidden for a model whose trainer does not join labels.
"use strict";

window.streamtrainJoin = (() => {
  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const fmtInt = (v) => (Number.isFinite(v) ? intFmt.format(v) : "—");
  function fmtMs(ms) {
    if (!Number.isFinite(ms)) return "—";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
    if (ms < 7200000) return `${(ms / 60000).toFixed(1)} min`;
    return `${(ms / 3600000).toFixed(1)} h`;
  }
  function fmtRate(v) {
    if (!Number.isFinite(v)) return "—";
    return v >= 10 ? intFmt.format(v) : v.toFixed(1);
  }

  // Counts that mean something went missing are marked when not zero.
  const COUNTS = ["expired", "defaulted", "unmatched", "duplicate", "evicted"];
  const WARN = new Set(["expired", "unmatched", "duplicate", "evicted"]);

  function render(last) {
    const card = document.getElementById("join");
    const join = last && last.join;
    card.hidden = !join || typeof join !== "object";
    if (card.hidden) return;
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set("join-pending", fmtInt(join.pending));
    set("join-held", fmtInt(join.held_labels));
    set("join-rate", fmtRate(join.joins_per_second));
    set("join-joined", fmtInt(join.joined));
    set("join-p50", fmtMs(join.label_delay_p50_ms));
    set("join-p99", fmtMs(join.label_delay_p99_ms));
    for (const name of COUNTS) {
      const el = document.getElementById(`join-${name}`);
      el.textContent = fmtInt(join[name]);
      el.className = WARN.has(name) && join[name] > 0 ? "warn" : "";
    }
  }

  return { render };
})();
