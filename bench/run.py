"""``make bench``: streamtrain vs River's own loop vs the seed, and the fast path.

One command: starts a local Kafka broker on free ports in a temporary directory, preloads the
workload into a 1-partition topic, runs every contender in its own child process (repetitions
interleaved, so machine noise spreads over all of them), stops the broker, and writes
``bench/results.json`` and ``bench/results.md`` (also printed).

Options: ``--events N`` (default 200000), ``--reps R`` (default 3), ``--quick`` (a smaller,
faster run for trying the benchmark itself), ``--bootstrap HOST:PORT`` (use a running broker),
``--with-scaling`` (also run ``bench/scaling.py``'s scale-out measurement; not in the default
run, which stays within 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if (ROOT / "src").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

from contenders import RESULT_PREFIX, phishing_events, seed_bytes  # noqa: E402

from streamtrain.broker.process import free_ports  # noqa: E402
from streamtrain.train.clients import CONSUMER_DEFAULTS  # noqa: E402

TARGETS = {
    "per_event_vs_limit": 0.85,
    "per_event_vs_seed": 2.0,
    "fast_vs_limit": 5.0,
    "latency_p99_ms": 25.0,
    "rss_growth": 0.10,
    "metric_tolerance": 1e-9,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child(
    name: str, args: dict[str, Any], env: dict[str, str], timeout: float = 600
) -> dict[str, Any]:
    """Run one contender in its own process; return its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "contenders.py"), name, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"contender {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def bench_broker(given: str | None, tmp: Path, stack: ExitStack) -> str:
    """``given``, or the bootstrap of a local broker started in ``tmp`` (stopped by ``stack``)."""
    if given is not None:
        return given
    from streamtrain.broker import LocalBroker

    port, controller_port = free_ports(2)
    broker = LocalBroker(data_dir=tmp / "kafka", port=port, controller_port=controller_port)
    log(f"starting a local broker on port {port}")
    broker.up(wait_seconds=120)
    stack.callback(broker.down)
    return broker.bootstrap


def preload(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer

    from streamtrain.config import KafkaSettings
    from streamtrain.kafka.clients import ensure_topic

    ensure_topic(KafkaSettings(bootstrap_servers=bootstrap), topic, partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "compression.type": "none",
        }
    )
    started = time.perf_counter()
    for x, y in phishing_events(n):
        while True:
            try:
                producer.produce(topic, value=seed_bytes(x, y), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} events not delivered while preloading")
    return time.perf_counter() - started


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["events"] / r["seconds"] for r in runs if r["seconds"] > 0]
    return {
        "events_per_second": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": len(rates),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "metric": runs[0].get("metric"),
        "metrics_agree_across_runs": len({r.get("metric") for r in runs}) == 1,
        "raw": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument(
        "--with-scaling",
        action="store_true",
        help="also run bench/scaling.py (partitioned scale-out; several more minutes)",
    )
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render", type=Path, help="only re-render the report of a results.json")
    opts = parser.parse_args()
    if opts.render is not None:
        print(markdown(json.loads(opts.render.read_text())))
        return 0
    if opts.quick:
        opts.events = min(opts.events, 20_000)
        opts.reps = 1
    n = opts.events
    began = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(HERE), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("STREAMTRAIN_SECRET", secrets.token_hex(16))  # signs the named checkpoints
    env["PYTHONHASHSEED"] = "0"

    results: dict[str, Any] = {
        "workload": {
            "events": n,
            "shape": "Phishing (9 numeric features, boolean label) repeated, seed JSON",
            "pipeline": "StandardScaler | LogisticRegression",
            "metric": "ROCAUC",
            "batch_size": 500,
            "repetitions": opts.reps,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="streamtrain-bench-") as tmp, ExitStack() as stack:
        bootstrap = bench_broker(opts.bootstrap, Path(tmp), stack)
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        log(f"preloading {n:,} events into {topic}")
        results["workload"]["preload_seconds"] = preload(bootstrap, topic, n)
        base = {"bootstrap": bootstrap, "topic": topic, "events": n}

        # JIT: compile into an empty cache, then load from it (what every later start pays).
        jit_cache = Path(tmp) / "numba-cache"
        jit_env = {**env, "NUMBA_CACHE_DIR": str(jit_cache)}
        log("fast path: compiling the kernel into an empty cache, then loading it from there")
        results["jit"] = {
            "first_call_compile_seconds": child("jit", {}, jit_env)["kernel_load_seconds"],
            "cached_load_seconds": child("jit", {}, jit_env)["kernel_load_seconds"],
        }
        # The contenders use the default cache; warm it so no run compiles.
        child("jit", {}, env)

        # Named contenders checkpoint every second (not also every 10,000 events).
        every_second = {"checkpoint_interval": 1.0, "checkpoint_every": 10**9}
        plan: list[tuple[str, str, dict[str, Any]]] = [
            ("limit", "limit", {"events": n}),
            ("consume-only", "consume_only", base),
            (
                "consume-only, streamtrain's consumer settings",
                "consume_only",
                {**base, "consumer": dict(CONSUMER_DEFAULTS)},
            ),
            ("seed", "seed", base),
            ("streamtrain", "trainer", base),
            ("streamtrain named", "trainer", {**base, "named": True, **every_second}),
            ("fast path", "trainer", {**base, "fast": True}),
            ("fast path named", "trainer", {**base, "fast": True, "named": True, **every_second}),
            ("per-event, no Kafka", "in_process", {"events": n}),
            ("fast path, no Kafka", "in_process", {"events": n, "fast": True}),
        ]
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in plan}
        for rep in range(opts.reps):
            for label, name, args in plan:
                log(f"rep {rep + 1}/{opts.reps}: {label}")
                runs[label].append(child(name, args, env))
        results["throughput"] = {label: summarize(r) for label, r in runs.items()}

        # Ratios in one run: the same stream with labels inline, then 1,000 events later.
        log("labels 1,000 events later vs inline (bench/joined.py)")
        results["join"] = {
            "inline": child("trainer", base, env),
            "delayed": child("joined", {"bootstrap": bootstrap, "events": n}, env),
            "pending": child("pending_memory", {"pending": 1000}, env),
        }

        log("record formats: flat JSON vs Avro vs Protobuf (bench/formats.py, local registry)")
        results["formats"] = run_formats(Path(tmp), min(n, 50_000), opts.reps, env)

        log("latency at a steady 1,000 events/s")
        lat_seconds = 5 if opts.quick else 12
        lat = {"bootstrap": bootstrap, "rate": 1000, "seconds": lat_seconds}
        results["latency"] = {
            "streamtrain per-event": child("latency", lat, env),
            "fast path": child("latency", {**lat, "fast": True}, env),
            "fast path named": child("latency", {**lat, "fast": True, "named": True}, env),
        }

        if opts.with_scaling:
            from scaling import run_scaling

            log("scale-out (bench/scaling.py)")
            results["scaling"] = run_scaling(bootstrap)

        log("checkpoint time vs model size")
        results["checkpoint"] = child(
            "checkpoint",
            {
                "bootstrap": bootstrap,
                "sizes": [10, 100, 1000, 10000],
                "reps": 5 if opts.quick else 9,
            },
            env,
        )

    log("per-event cost vs number of features")
    sizes = [[10, 3000, 20000], [100, 600, 5000], [1000, 100, 1000]]
    if not opts.quick:
        sizes = [[10, 10000, 50000], [100, 2000, 20000], [1000, 300, 4000]]
    results["features"] = child("features", {"sizes": sizes}, env)

    log("RSS after 100k vs 1M events (in process)")
    big = 200_000 if opts.quick else 1_000_000
    small = 20_000 if opts.quick else 100_000
    results["rss"] = {
        "fast path": child("rss", {"events": big, "at": [small, big], "fast": True}, env),
        "per-event": child(
            "rss", {"events": big // (5 if not opts.quick else 1), "at": [small, big // 5]}, env
        ),
    }
    results["bench_seconds"] = time.perf_counter() - began
    results["verdicts"] = verdicts(results)
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = markdown(results)
    (out / "results.md").write_text(report)
    print(report)
    return 0


def run_formats(tmp: Path, n: int, reps: int, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The format contenders (decode + learn per event, in process) against a local registry
    of this run's own."""
    from streamtrain.schema_registry import LocalSchemaRegistry

    registry = LocalSchemaRegistry(data_dir=tmp / "registry", port=0)
    registry.up(wait_seconds=180)
    try:
        runs: dict[str, list[dict[str, Any]]] = {"json": [], "avro": [], "protobuf": []}
        for _ in range(reps):
            for fmt, done in runs.items():
                args = {"format": fmt, "events": n, "registry": registry.url}
                done.append(child("format", args, env))
    finally:
        registry.down()
    return {fmt: summarize(done) for fmt, done in runs.items()}


def verdicts(r: dict[str, Any]) -> dict[str, Any]:
    t = r["throughput"]
    rate: Callable[[str], float] = lambda label: t[label]["events_per_second"]  # noqa: E731
    limit_metric = t["limit"]["metric"]
    learners = [k for k in t if t[k]["metric"] is not None]
    max_diff = max(abs(t[k]["metric"] - limit_metric) for k in learners)
    rss_fast = r["rss"]["fast path"]["rss_mb"]
    keys = sorted(rss_fast, key=int)
    growth = rss_fast[keys[-1]] / rss_fast[keys[0]] - 1
    rss_pe = r["rss"]["per-event"]["rss_mb"]
    keys_pe = sorted(rss_pe, key=int)
    growth_pe = rss_pe[keys_pe[-1]] / rss_pe[keys_pe[0]] - 1
    p99 = r["latency"]["fast path"]["p99_ms"]
    p99_stock = r["latency"]["streamtrain per-event"]["p99_ms"]
    v = {
        "streamtrain named (checkpoints on) / limit >= 0.85": rate("streamtrain named")
        / rate("limit"),
        "streamtrain / seed >= 2": rate("streamtrain") / rate("seed"),
        "fast path / limit >= 5 (end to end over Kafka)": rate("fast path") / rate("limit"),
        "fast path named / limit >= 5": rate("fast path named") / rate("limit"),
        "final metrics equal to River's loop (max |diff| <= 1e-9)": max_diff,
        "latency p99 at 1,000 ev/s <= 25 ms (fast path)": p99,
        "latency p99 at 1,000 ev/s <= 25 ms (per-event)": p99_stock,
        "RSS growth 100k -> 1M <= 10% (fast path)": growth,
        "RSS growth 100k -> 200k <= 10% (per-event)": growth_pe,
    }
    met = {
        "streamtrain named (checkpoints on) / limit >= 0.85": v[
            "streamtrain named (checkpoints on) / limit >= 0.85"
        ]
        >= 0.85,
        "streamtrain / seed >= 2": v["streamtrain / seed >= 2"] >= 2,
        "fast path / limit >= 5 (end to end over Kafka)": v[
            "fast path / limit >= 5 (end to end over Kafka)"
        ]
        >= 5,
        "fast path named / limit >= 5": v["fast path named / limit >= 5"] >= 5,
        "final metrics equal to River's loop (max |diff| <= 1e-9)": max_diff <= 1e-9,
        "latency p99 at 1,000 ev/s <= 25 ms (fast path)": p99 <= 25,
        "latency p99 at 1,000 ev/s <= 25 ms (per-event)": p99_stock <= 25,
        "RSS growth 100k -> 1M <= 10% (fast path)": growth <= 0.10,
        "RSS growth 100k -> 200k <= 10% (per-event)": growth_pe <= 0.10,
    }
    return {k: {"value": v[k], "met": met[k]} for k in v}


def markdown(r: dict[str, Any]) -> str:
    w = r["workload"]
    t = r["throughput"]
    limit = t["limit"]["events_per_second"]
    seed = t["seed"]["events_per_second"]
    lines = [
        "# streamtrain benchmark",
        "",
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
    lines += ["", "## Targets", "", "| target | value | met |", "|---|---:|:---:|"]
    for k, v in r["verdicts"].items():
        value = v["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"| {k} | {shown} | {'yes' if v['met'] else 'NO'} |")
    if "join" in r:
        lines += _join_lines(r["join"])
    if "formats" in r:
        lines += _format_lines(r["formats"])
    lines += [
        "",
        "## End-to-end latency at a steady 1,000 events/s (record timestamp → learned)",
        "",
        "| trainer | p50 ms | p99 ms | max ms | events |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in r["latency"].items():
        lines.append(
            f"| {k} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} | {v['events']:,} |"
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


if __name__ == "__main__":
    sys.exit(main())
