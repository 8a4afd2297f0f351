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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
if (ROOT / "src").is_dir():
    sys.path.insert(0, str(ROOT / "src"))

from contenders import RESULT_PREFIX, phishing_events, seed_bytes  # noqa: E402
from report import markdown, verdicts  # noqa: E402

from streamtrain.broker.process import free_ports  # noqa: E402
from streamtrain.train.clients import CONSUMER_DEFAULTS  # noqa: E402


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
    # The fast path's rate once its kernel is loaded (before that, River learns the batches).
    steady = [r["steady_events"] / r["steady_seconds"] for r in runs if r.get("steady_seconds")]
    return {
        "steady_events_per_second": statistics.median(steady) if steady else None,
        "steady_cpu_us_per_event": statistics.median(
            r["steady_cpu_seconds"] / r["steady_events"] * 1e6 for r in runs
        )
        if steady
        else None,
        "river_events_before_kernel": [r.get("river_events_before_kernel") for r in runs],
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
        rendered = json.loads(opts.render.read_text())
        if "versions" in rendered:  # a run of this version: its table from its own figures
            rendered["verdicts"] = verdicts(rendered)
        print(markdown(rendered))
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
            "load_average_at_start": os.getloadavg(),
        },
        "versions": versions(),
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
            "per-event, one core kept busy": child("latency", {**lat, "busy": True}, env),
            "fast path, one core kept busy": child(
                "latency", {**lat, "fast": True, "busy": True}, env
            ),
            "fast path named, one core kept busy": child(
                "latency", {**lat, "fast": True, "named": True, "busy": True}, env
            ),
        }

        log("cold start: process start -> first event learned (numba cache warm, then empty)")
        results["coldstart"] = run_coldstart(bootstrap, topic, Path(tmp), env)

        log("cost per challenger: named per-event with 0, 1 and 3 challengers")
        results["challengers"] = run_challengers(
            base, min(n, 10_000 if opts.quick else 40_000), opts.reps, env
        )

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
    results["machine"]["load_average_at_end"] = os.getloadavg()
    out: Path = opts.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    results["verdicts"] = verdicts(results)  # after the raw figures are safe on disk
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


def versions() -> dict[str, str]:
    """The versions the figures depend on (librdkafka above all: its fetcher sets the pace)."""
    import confluent_kafka
    import numba
    import river

    return {
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent-kafka": str(confluent_kafka.__version__),
        "river": river.__version__,
        "numba": numba.__version__,
    }


def run_coldstart(bootstrap: str, topic: str, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Process start -> first event learned, per-event and fast path, with numba's cache
    empty (a fresh NUMBA_CACHE_DIR: the fast path compiles its kernel) and then warm (the
    same directory again: it loads the kernel from there)."""
    out: dict[str, Any] = {}
    for label, fast in (("per-event", False), ("fast path", True)):
        cache = tmp / f"numba-cold-{'fast' if fast else 'per-event'}"
        cache_env = {**env, "NUMBA_CACHE_DIR": str(cache)}
        for state in ("cold", "warm"):
            args = {"bootstrap": bootstrap, "topic": topic, "fast": fast}
            out[f"{label}, cache {state}"] = child(
                "coldstart", {**args, "spawned_at": time.time()}, cache_env
            )
    return out


def run_challengers(base: dict[str, Any], n: int, reps: int, env: dict[str, str]) -> dict[str, Any]:
    """A named per-event trainer with 0, 1 and 3 challengers (repetitions interleaved)."""
    from costs import CHALLENGER_SPECS

    runs: dict[str, list[dict[str, Any]]] = {"0": [], "1": [], "3": []}
    for _ in range(reps):
        for count, done in runs.items():
            specs = list(CHALLENGER_SPECS[: int(count)])
            done.append(child("challengers", {**base, "events": n, "challengers": specs}, env))
    return {
        count: {
            **summarize(done),
            "river_events_per_second": statistics.median(
                r["events"] / r["river_seconds"] for r in done
            ),
            "specs": list(CHALLENGER_SPECS[: int(count)]),
            "payload_bytes": done[0]["payload_bytes"],
        }
        for count, done in runs.items()
    }


if __name__ == "__main__":
    sys.exit(main())
