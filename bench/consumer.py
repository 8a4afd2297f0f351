"""Consume-only throughput under candidate librdkafka settings, ratios from one run.

``python bench/consumer.py [--events N] [--reps R] [--bootstrap HOST:PORT]``: starts a local broker
(unless given one), preloads the bench workload, then runs the ``consume_only`` contender once per
candidate per repetition, interleaved, and prints each candidate's median records/s and its ratio
to the best. This is how streamtrain's consumer defaults (``train/clients.py``) were chosen.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from run import bench_broker, child, log, preload  # noqa: E402

from streamtrain.train.clients import CONSUMER_DEFAULTS  # noqa: E402

CANDIDATES: dict[str, dict[str, Any]] = {
    "librdkafka defaults": {},
    "backoff 100": {"fetch.queue.backoff.ms": 100},
    "backoff 20": {"fetch.queue.backoff.ms": 20},
    "backoff 5": {"fetch.queue.backoff.ms": 5},
    "queued.min.messages 1M": {"queued.min.messages": 1_000_000},
    # The pacing made visible on a slow (busy) machine: a queue this short fills at any speed.
    "queued.min.messages 10k": {"queued.min.messages": 10_000},
    "queued.min.messages 10k, backoff 20": {
        "queued.min.messages": 10_000,
        "fetch.queue.backoff.ms": 20,
    },
    "streamtrain's defaults": dict(CONSUMER_DEFAULTS),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    opts = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join((str(HERE.parent / "src"), str(HERE)))
    candidates = {k: v for k, v in CANDIDATES.items() if not opts.only or k in opts.only}
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    starved: dict[str, list[float]] = {name: [] for name in candidates}
    with tempfile.TemporaryDirectory(prefix="streamtrain-bench-") as tmp, ExitStack() as stack:
        bootstrap = bench_broker(opts.bootstrap, Path(tmp), stack)
        topic = f"bench-consumer-{uuid.uuid4().hex[:8]}"
        log(f"preloading {opts.events:,} events into {topic}")
        preload(bootstrap, topic, opts.events)
        base = {"bootstrap": bootstrap, "topic": topic, "events": opts.events}
        for rep in range(opts.reps):
            for name, conf in candidates.items():
                result = child("consume_only", {**base, "consumer": conf}, env)
                rate = result["events"] / result["seconds"]
                rates[name].append(rate)
                starved[name].append(result["starved_seconds"] / result["seconds"])
                log(
                    f"rep {rep + 1}/{opts.reps}: {name}: {rate:,.0f} records/s, "
                    f"{starved[name][-1]:.0%} of the time waiting on an empty queue"
                )
    medians = {name: statistics.median(r) for name, r in rates.items()}
    best = max(medians.values())
    print("| settings | records/s (median) | min–max | × best | waiting on an empty queue |")
    print("|---|---:|---:|---:|---:|")
    for name, median in medians.items():
        low, high = min(rates[name]), max(rates[name])
        wait = statistics.median(starved[name])
        print(
            f"| {name} | {median:,.0f} | {low:,.0f}–{high:,.0f} | {median / best:.2f} "
            f"| {wait:.0%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
