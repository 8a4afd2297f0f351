"""The report of ``make bench``: issue 13's targets computed from a run's results, and the
markdown of ``bench/results.md``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Issue 13's targets (README "Performance"); every figure is a ratio or latency of one run.
TARGETS = {
    "per_event_no_kafka_vs_limit": 0.97,
    "named_vs_limit": 0.90,
    "named_vs_unnamed": 0.95,
    "fast_vs_limit": 10.0,
    "fast_vs_best_consume": 0.80,
    "latency_p99_ms": 10.0,
    "decode_us": 1.0,
    "metric_tolerance": 0.0,
    "rss_growth": 0.10,
}


def verdicts(r: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's table (figure -> value, target, met), computed from this run's results;
    then the older memory targets. Rows a run did not measure are left out."""
    t = r["throughput"]
    rate: Callable[[str], float] = lambda label: t[label]["events_per_second"]  # noqa: E731
    limit_metric = t["limit"]["metric"]
    learners = [k for k in t if t[k]["metric"] is not None]
    max_diff = max(abs(t[k]["metric"] - limit_metric) for k in learners)
    consume = max(rate(k) for k in t if k.startswith("consume-only"))
    lat = r["latency"]
    p99s = [lat[k]["p99_ms"] for k in ("streamtrain per-event", "fast path", "fast path named")]
    decode = r["features"]["10"]
    lim = TARGETS
    rows: dict[str, dict[str, Any]] = {
        "per-event without Kafka (decode + validate + learn + metrics) / River's loop": _row(
            rate("per-event, no Kafka") / rate("limit"),
            ">= 0.97",
            lim["per_event_no_kafka_vs_limit"],
        ),
        "named per-event (checkpoint every 1 s) / River's loop": _row(
            rate("streamtrain named") / rate("limit"), ">= 0.90", lim["named_vs_limit"]
        ),
        "named per-event / unnamed per-event, same run": _row(
            rate("streamtrain named") / rate("streamtrain"), ">= 0.95", lim["named_vs_unnamed"]
        ),
        "fast path over Kafka / River's loop": _row(
            rate("fast path") / rate("limit"), ">= 10", lim["fast_vs_limit"]
        ),
        "fast path over Kafka / best consume-only measured": _row(
            rate("fast path") / consume, ">= 0.80", lim["fast_vs_best_consume"]
        ),
        **_steady_rows(t, consume),
        "p99 record timestamp -> learned at 1,000 ev/s, per-event / fast / fast named (ms)": {
            "value": " / ".join(f"{v:.1f}" for v in p99s),
            "target": "<= 10 each",
            "met": max(p99s) <= lim["latency_p99_ms"],
        },
        "decode per event, 10 features: decode_event (per-event path) (µs)": _row(
            decode["decode_us"], "<= 1", lim["decode_us"], at_most=True
        ),
    }
    if decode.get("decode_batch_us") is not None:
        rows["decode per event, 10 features: decode_batch (fast path, in bulk) (µs)"] = _row(
            decode["decode_batch_us"], "<= 1", lim["decode_us"], at_most=True
        )
    rows["final metrics vs River's loop (max |difference|)"] = _row(
        max_diff, "0 (equal)", lim["metric_tolerance"], at_most=True
    )
    for key, c in r.get("coldstart", {}).items():
        ready = c.get("kernel_ready_seconds")
        shown = f"{c['first_learned_seconds']:.2f}"
        rows[f"cold start: process start -> first event learned, {key} (s)"] = {
            "value": shown if ready is None else f"{shown} (kernel ready {ready:.2f})",
            "target": "—",
            "met": None,
        }
    for label, key in (("fast path", "100k -> 1M"), ("per-event", "100k -> 200k")):
        rss = r["rss"][label]["rss_mb"]
        at = sorted(rss, key=int)
        rows[f"RSS growth {key} events ({label})"] = _row(
            rss[at[-1]] / rss[at[0]] - 1, "<= 10%", lim["rss_growth"], at_most=True
        )
    return rows


def _steady_rows(t: dict[str, Any], consume: float) -> dict[str, dict[str, Any]]:
    """The fast path over Kafka once its kernel is loaded: the rows above time it from the
    first record, so they include the batches River learned while the kernel loaded."""
    steady = t.get("fast path", {}).get("steady_events_per_second")
    if steady is None:  # a results.json from before this figure
        return {}
    return {
        "fast path over Kafka, kernel loaded (steady state) / best consume-only measured": _row(
            steady / consume, ">= 0.80", TARGETS["fast_vs_best_consume"]
        ),
    }


def _row(value: float, target: str, bound: float, at_most: bool = False) -> dict[str, Any]:
    return {"value": value, "target": target, "met": value <= bound if at_most else value >= bound}


def markdown(r: dict[str, Any]) -> str:
    w = r["workload"]
    t = r["throughput"]
    limit = t["limit"]["events_per_second"]
    seed = t["seed"]["events_per_second"]
    lines = ["# streamtrain benchmark", "", *_issue_table(r), ""]
    lines += [
        f"{w['events']:,} events of {w['shape']}; `{w['pipeline']}`, {w['metric']}; "
        f"batch {w['batch_size']}; median of {w['repetitions']} runs (min–max), each run its "
        f"own process. Machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}. "
        "Throughput is timed from the first record received to the last event learned.",
        "",
        "| contender | events/s | min–max | × limit | × seed | peak RSS MB | final ROCAUC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in t.items():
        rate = s["events_per_second"]
        metric = "—" if s["metric"] is None else f"{s['metric']:.12f}"
        lines.append(
            f"| {label} | {rate:,.0f} | {s['min']:,.0f}–{s['max']:,.0f} | {rate / limit:.2f} | "
            f"{rate / seed:.2f} | {s['peak_rss_mb']:.0f} | {metric} |"
        )
    for label, s in t.items():
        if s.get("steady_events_per_second") is not None:
            before = ", ".join(f"{n:,}" for n in s["river_events_before_kernel"] if n is not None)
            lines.append(
                f"\n{label}: {s['steady_events_per_second']:,.0f} events/s once the kernel is "
                f"loaded (median; {s['steady_cpu_us_per_event']:.2f} µs of the learning "
                f"thread's CPU per event); River learned the first {before} events of the runs "
                "while it loaded."
            )
    if "challengers" in r:
        lines += _challenger_lines(r["challengers"])
    if "coldstart" in r:
        lines += _coldstart_lines(r["coldstart"])
    if "join" in r:
        lines += _join_lines(r["join"])
    if "formats" in r:
        lines += _format_lines(r["formats"])
    lines += [
        "",
        "## End-to-end latency at a steady 1,000 events/s (record timestamp → learned)",
        "",
        "Where a slow event's time went. *p99 to the learn call*: record timestamp → the "
        "learn call that took it (the broker and the fetch, and whatever the learning thread "
        "did meanwhile); *slowest learn call*: the longest call that learned a batch; *most CPU "
        "between learn calls*: the learning thread's own work between two of them (its loop: "
        "checkpoint hand-over, reports), as opposed to waiting, which takes no CPU.",
        "",
        "| trainer | p50 ms | p99 ms | max ms | p99 to the learn call ms | slowest learn call "
        "ms | most CPU between learn calls ms | events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, v in r["latency"].items():
        diagnosis = " | ".join(
            _ms(v.get(key))
            for key in ("p99_delivered_ms", "slowest_learn_ms", "most_cpu_between_learns_ms")
        )
        lines.append(
            f"| {k} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} | {diagnosis} "
            f"| {v['events']:,} |"
        )
    lines += [
        "",
        "## Per-event cost vs number of features (in process, µs per event)",
        "",
        "| features | River loop | fast path (learn_many) | decode_event | decode_batch "
        "(bulk, into the matrix) | River / fast |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for d, v in r["features"].items():
        if not d.isdigit():
            continue
        bulk = v.get("decode_batch_us")  # older results.json files lack it
        lines.append(
            f"| {int(d):,} | {v['river_us']:.1f} | {v['fast_us']:.2f} | {v['decode_us']:.2f} | "
            f"{'—' if bulk is None else f'{bulk:.2f}'} | {v['river_us'] / v['fast_us']:.0f} |"
        )
    lines += [
        "",
        "## Checkpoint transaction time vs model size (named models)",
        "",
        "| features | payload bytes | pickle ms | commit ms median (min–max) |",
        "|---:|---:|---:|---:|",
    ]
    for d, v in r["checkpoint"].items():
        if not d.isdigit():
            continue
        lines.append(
            f"| {int(d):,} | {v['payload_bytes']:,} | {v['pickle_ms_median']:.2f} | "
            f"{v['commit_ms_median']:.1f} ({v['commit_ms_min']:.1f}–{v['commit_ms_max']:.1f}) |"
        )
    lines += ["", "## Memory (RSS in process, decode + learn)", ""]
    for k, v in r["rss"].items():
        points = ", ".join(f"{int(at):,} events: {mb:.1f} MB" for at, mb in v["rss_mb"].items())
        lines.append(f"- {k}: {points}")
    if "scaling" in r:
        lines += ["", "## Scale-out (bench/scaling.py)", ""]
        lines += [f"- {k}: {v}" for k, v in r["scaling"].items()]
    j = r["jit"]
    lines += [
        "",
        "## Fast path JIT",
        "",
        f"- first call, empty numba cache (import numba + compile): "
        f"{j['first_call_compile_seconds']:.2f} s",
        f"- later processes (import numba + load from cache): {j['cached_load_seconds']:.2f} s",
        "",
        f"Benchmark wall time: {r['bench_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _issue_table(r: dict[str, Any]) -> list[str]:
    """Issue 13's table with this run's figures, the versions and the machine's load."""
    m = r["machine"]
    load = m.get("load_average_at_start")
    end = m.get("load_average_at_end")
    lines = [
        "## Targets (issue 13), this run",
        "",
        "| figure | now | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for k, v in r["verdicts"].items():
        value, met = v["value"], v["met"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        verdict = "—" if met is None else ("yes" if met else "NO")
        lines.append(f"| {k} | {shown} | {v.get('target', '')} | {verdict} |")
    lines.append("")
    if "versions" in r:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + ".")
    if load is not None:
        shown = ", ".join(f"{x:.2f}" for x in load)
        tail = "" if end is None else f"; at the end {', '.join(f'{x:.2f}' for x in end)}"
        lines.append(
            f"Load average (1, 5, 15 min) at the start of the run: {shown}{tail} "
            f"({m['cpus']} CPUs; other work ran beside it, so ratios within the run are the "
            "figures to read, not absolute rates)."
        )
    return lines


def _challenger_lines(c: dict[str, Any]) -> list[str]:
    none = c["0"]["events_per_second"]
    lines = [
        "",
        "## Cost per challenger (issue 12): named, per-event, checkpoint every second",
        "",
        "Champion `StandardScaler | LogisticRegression`; with challengers every model predicts, "
        "learns and keeps its own metrics, rolling window and drift detector. River's loop: "
        "the same models, each with its ROCAUC, in process.",
        "",
        "| challengers | events/s | × none | River's loop, same models, events/s | × River's "
        "loop | checkpoint payload bytes | final ROCAUC (champion) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for count, v in c.items():
        specs = ", ".join(f"`{s}`" for s in v["specs"]) or "none"
        rate = v["events_per_second"]
        river = v.get("river_events_per_second") or _river_rate(v)
        lines.append(
            f"| {count} ({specs}) | {rate:,.0f} | {rate / none:.2f} | {river:,.0f} | "
            f"{rate / river:.2f} | {v['payload_bytes']:,} | {v['metric']:.12f} |"
        )
    return lines


def _river_rate(v: dict[str, Any]) -> float:
    runs = [r for r in v["raw"] if r.get("river_seconds")]
    rates = sorted(r["events"] / r["river_seconds"] for r in runs)
    return rates[len(rates) // 2] if rates else float("nan")


def _coldstart_lines(c: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Cold start: process start → first event learned (unnamed, one event)",
        "",
        "A fast-path trainer learns its first batches with River while the kernel loads in the "
        "background (same results); *kernel ready* is when the compiled path takes over.",
        "",
        "| trainer, numba cache | first event learned s | interpreter s | imports s | run → "
        "first record s | kernel ready s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, v in c.items():
        ready = v.get("kernel_ready_seconds")
        lines.append(
            f"| {k} | {v['first_learned_seconds']:.2f} | {v['interpreter_seconds']:.2f} | "
            f"{v['imports_seconds']:.2f} | {v['first_event_after_run_seconds']:.2f} | "
            f"{'—' if ready is None else f'{ready:.2f}'} |"
        )
    return lines


def _format_lines(f: dict[str, Any]) -> list[str]:
    json_rate = f["json"]["events_per_second"]
    lines = [
        "",
        "## Record formats: the same flat Phishing events (decode + learn per event, no Kafka)",
        "",
        "| format | events/s | vs flat JSON | bytes/event | ROCAUC |",
        "|---|---:|---:|---:|---:|",
    ]
    for fmt, v in f.items():
        rate = v["events_per_second"]
        size = v["raw"][0]["bytes_per_event"]
        lines.append(
            f"| {fmt} | {rate:,.0f} | {rate / json_rate:.2f}x | {size:.0f} | {v['metric']:.6f} |"
        )
    return lines


def _join_lines(j: dict[str, Any]) -> list[str]:
    inline = j["inline"]["events"] / j["inline"]["seconds"]
    delayed = j["delayed"]["events_per_second"]
    p = j["pending"]
    equal = "equal" if j["delayed"]["metric"] == j["delayed"]["river_metric"] else "DIFFERENT"
    return [
        "",
        "## Labels 1,000 events later, on their own topic (train --labels-topic)",
        "",
        "| stream | events/s | × inline | final ROCAUC |",
        "|---|---:|---:|---:|",
        f"| labels inline (per-event) | {inline:,.0f} | 1.00 | {j['inline']['metric']:.12f} |",
        f"| labels 1,000 events later | {delayed:,.0f} | {delayed / inline:.2f} | "
        f"{j['delayed']['metric']:.12f} |",
        "",
        f"River's progressive_val_score(delay=1000) on the same events: "
        f"{j['delayed']['river_metric']:.12f} ({equal}). Pending state: "
        f"{p['heap_bytes_per_pending']:,.0f} bytes of heap and "
        f"{p['checkpoint_bytes_per_pending']:,.0f} bytes of checkpoint per waiting prediction "
        f"({p['pending']:,} waiting).",
    ]


def _ms(value: float | None) -> str:
    """A latency cell; "—" for a figure the run did not measure (an older results.json)."""
    return "—" if value is None else f"{value:.1f}"
