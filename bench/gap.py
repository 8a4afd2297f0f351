"""Where the named trainer's wall-clock time goes, next to the unnamed one's (issue 13, item 4).

``python bench/gap.py [--events N] [--reps R] [--bootstrap HOST:PORT]`` starts a local broker
(unless given one), preloads N Phishing events and runs the bench's per-event ``trainer``
contender unnamed and named (checkpoint every second) in turn, R times, each in its own
process. Each run reports, over its timed window (first batch to the N-th event):

* CPU per thread (``/proc/self/task``): the learning thread, the committer, librdkafka's
  threads by name, and the rest of the process (threads that ended in the window);
* the learning thread's wall time by part of the loop (wall and thread CPU each), and its
  scheduler wait (``/proc/self/task/TID/schedstat``: runnable, not running). Wall time that
  is neither CPU nor scheduler wait is time the thread was blocked: on I/O, a lock or the GIL;
* the checkpoints made, the commit's time on the committer thread, and the renewals;
* the local broker's CPU over each whole run (start-up included), when it started the broker.

``--src LABEL=PATH`` adds a named contender run from another copy of ``src`` (A/B, e.g. the
base commit's ``git archive``); ``--variant LABEL=JSON`` one with other arguments (e.g.
``{"idle_poll": 1.0}``). Prints one table per contender (medians) and the named/unnamed ratios.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PREFIX = "GAP-RESULT "
_TICK = os.sysconf("SC_CLK_TCK")


def _task_times() -> dict[int, tuple[str, float]]:
    """Every live thread of this process: tid -> (name, CPU seconds)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _run_queue_wait() -> float:
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


class Clock:
    """Wall and thread-CPU seconds per label, counted only while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.wall: dict[str, float] = collections.defaultdict(float)
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.each: dict[str, list[float]] = collections.defaultdict(list)  # wall per call

    def wrap(self, cls: type, method: str, label: str | None = None, only: Any = None) -> None:
        original = getattr(cls, method)
        name = label or method
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not clock.on or (only is not None and not only(*args, **kwargs)):
                return original(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - wall
                clock.wall[name] += took
                if took > 0.002:
                    clock.each[name].append(round(took * 1e3, 1))
                clock.cpu[name] += time.thread_time() - cpu
                clock.calls[name] += 1

        setattr(cls, method, timed)


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """One trainer run in this process, instrumented (no change in behaviour)."""
    from contenders import _timed_trainer_class

    from streamtrain.config import KafkaSettings
    from streamtrain.train import committer, handover, requests
    from streamtrain.train.checkpointing import Checkpointing
    from streamtrain.train.settings import TrainSettings
    from streamtrain.train.trainer import Trainer

    clock, side = Clock(), Clock()  # the learning thread; the committer thread
    for method in ("_consume", "_learn", "_collect", "_checkpoint", "_write_outputs", "_idle"):
        clock.wrap(Trainer, method)
    clock.wrap(
        handover.HandOver,
        "collect",
        "checkpoint: wait for the previous commit",
        only=lambda *a, **k: k.get("block") and k.get("learned") is None,
    )
    clock.wrap(Checkpointing, "prepare", "checkpoint: prepare (pickle, sign inputs)")
    clock.wrap(handover.Rethaw, "after", "checkpoint: renewal (Rethaw)")
    clock.wrap(handover.TaskRegistry, "record_positions", "checkpoint: record positions")
    clock.wrap(requests.Requests, "apply", "checkpoint: promotion requests")
    clock.wrap(requests.Requests, "_catch_up", "checkpoint: requests catch-up")
    side.wrap(Checkpointing, "send", "commit (committer thread)")
    side.wrap(committer.Committer, "_serve_idle", "idle producer poll (committer thread)")

    if "idle_poll" in args:  # how often an idle committer thread wakes to serve the producer
        committer._IDLE_POLL = args["idle_poll"]
    n = args["events"]
    base = _timed_trainer_class(Trainer)
    marks: dict[str, Any] = {}

    class Measured(base):  # type: ignore[misc, valid-type]
        def _learn(self, consumer: Any, messages: list[Any], now: float, started: float) -> None:
            if messages and not clock.on:
                marks["tasks"], marks["process"] = _task_times(), _process_cpu()
                marks["rq"], marks["wall"] = _run_queue_wait(), time.perf_counter()
                marks["checkpoints"] = self._checkpointing.checkpoints if self._checkpointing else 0
                clock.on = side.on = True
            super()._learn(consumer, messages, now, started)

        def _loop(self, started: float) -> None:
            super()._loop(started)
            if clock.on and "end" not in marks:
                clock.on = side.on = False
                marks["end"] = (
                    _task_times(),
                    _process_cpu(),
                    _run_queue_wait(),
                    time.perf_counter(),
                )
                marks["checkpoints_end"] = (
                    self._checkpointing.checkpoints if self._checkpointing else 0
                )

    name = f"gap-{uuid.uuid4().hex[:10]}" if args.get("named") else None
    settings = TrainSettings(
        topic=args["topic"],
        name=name,
        max_events=n,
        checkpoint_interval=1.0,
        checkpoint_every=10**9,
        fast_path=False,
    )
    trainer = Measured(KafkaSettings(bootstrap_servers=args["bootstrap"]), settings)
    trainer.run()
    learner = threading.main_thread().native_id
    python_names = {t.native_id: t.name for t in threading.enumerate()}
    ends, process_end, rq_end, wall_end = marks["end"]
    per_thread: dict[str, float] = collections.defaultdict(float)
    for tid, (comm, cpu) in ends.items():
        before = marks["tasks"].get(tid, (comm, 0.0))[1]
        label = "learning thread" if tid == learner else python_names.get(tid, comm)
        per_thread[label] += cpu - before
    process = process_end - marks["process"]
    per_thread["threads ended in the window"] = process - sum(per_thread.values())
    rethaw = trainer._handover.rethaw if trainer._handover else None
    return {
        "events": n,
        "seconds": trainer.last_batch_done - trainer.first_batch_at,
        "window": wall_end - marks["wall"],
        "process_cpu": process,
        "threads": dict(per_thread),
        "run_queue_wait": rq_end - marks["rq"],
        "parts": {k: [clock.wall[k], clock.cpu[k], clock.calls[k]] for k in clock.wall},
        "side": {k: [side.wall[k], side.cpu[k], side.calls[k]] for k in side.wall},
        "slow_calls_ms": {**clock.each, **side.each},
        "checkpoints": marks["checkpoints_end"] - marks["checkpoints"],
        "renewals": rethaw.done if rethaw else 0,
        "load": os.getloadavg()[0],
    }


def _broker_cpu(marker: str) -> float:
    """CPU seconds so far of the process whose command line holds ``marker`` (the local
    broker's JVM, found by its data directory), or NaN."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    for label, rs in runs.items():
        print(f"\n## {label}: {len(rs)} runs, load {[round(r['load'], 1) for r in rs]}")
        rate = _median([r["events"] / r["seconds"] for r in rs])
        print(f"events/s {rate:,.0f} (each: {[round(r['events'] / r['seconds']) for r in rs]})")
        us = 1e6 / rs[0]["events"]
        print(
            f"window s {_median([r['window'] for r in rs]):.2f}; process CPU µs/event "
            f"{_median([r['process_cpu'] for r in rs]) * us:.1f}; learning thread run-queue "
            f"wait µs/event {_median([r['run_queue_wait'] for r in rs]) * us:.1f}; "
            f"checkpoints {[r['checkpoints'] for r in rs]}, renewals "
            f"{[r['renewals'] for r in rs]}"
        )
        broker = _median([r.get("broker_cpu", float("nan")) for r in rs])
        print(f"broker JVM CPU over the whole run, µs per event {broker * us:.1f}")
        names = sorted({k for r in rs for k in r["threads"]})
        for name in names:
            cpu = _median([r["threads"].get(name, 0.0) for r in rs])
            if cpu * us >= 0.05:
                print(f"  thread {name:40s} CPU µs/event {cpu * us:7.2f}")
        for kind in ("parts", "side"):
            for part in sorted({k for r in rs for k in r[kind]}):
                wall = _median([r[kind].get(part, [0, 0, 0])[0] for r in rs])
                cpu = _median([r[kind].get(part, [0, 0, 0])[1] for r in rs])
                calls = _median([r[kind].get(part, [0, 0, 0])[2] for r in rs])
                print(
                    f"  {part:45s} wall µs/event {wall * us:7.2f}  CPU {cpu * us:7.2f}"
                    f"  calls {calls:,.0f}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=80_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        help="LABEL=PATH: also run named with this src (A/B); repeatable",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=JSON: also run named with these contender arguments; repeatable",
    )
    opts = parser.parse_args()
    from run import bench_broker, preload

    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.setdefault("STREAMTRAIN_SECRET", secrets.token_hex(16))
    plan = [("unnamed", {}, None), ("named", {"named": True}, None)]
    for spec in opts.src:
        label, path = spec.split("=", 1)
        plan.append((f"named {label}", {"named": True}, path))
    for spec in opts.variant:
        label, extra = spec.split("=", 1)
        plan.append((f"named {label}", {"named": True, **json.loads(extra)}, None))
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in plan}
    with tempfile.TemporaryDirectory(prefix="streamtrain-gap-") as tmp, ExitStack() as stack:
        bootstrap = bench_broker(opts.bootstrap, Path(tmp), stack)
        topic = f"gap-{uuid.uuid4().hex[:8]}"
        preload(bootstrap, topic, opts.events)
        for rep in range(opts.reps):
            for label, extra, src in plan:
                src_path = src or str(HERE.parent / "src")
                child_env = {**env, "PYTHONPATH": os.pathsep.join([src_path, str(HERE)])}
                job = {"bootstrap": bootstrap, "topic": topic, "events": opts.events, **extra}
                broker_before = _broker_cpu(tmp)
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(job)],
                    capture_output=True,
                    text=True,
                    env=child_env,
                    timeout=900,
                )
                lines = [x for x in proc.stdout.splitlines() if x.startswith(PREFIX)]
                if not lines:
                    raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(lines[-1][len(PREFIX) :])
                # The whole child run (start-up and final checkpoint included), not the window.
                result["broker_cpu"] = _broker_cpu(tmp) - broker_before
                runs[label].append(result)
                print(
                    f"[gap] rep {rep + 1} {label}: "
                    f"{result['events'] / result['seconds']:,.0f} ev/s, load "
                    f"{result['load']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    report(runs)
    for label, rs in runs.items():
        for r in rs:
            print(f"{label} calls over 2 ms (ms): {r['slow_calls_ms']}")
    names = list(runs)
    for other in names[1:]:
        pairs = [
            a["seconds"] / b["seconds"] for a, b in zip(runs["unnamed"], runs[other], strict=False)
        ]
        print(
            f"\n{other}/unnamed events/s, per rep: {[round(p, 3) for p in pairs]}, "
            f"median {_median(pairs):.3f}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE))
        result = measure(json.loads(sys.argv[2]))
        print(PREFIX + json.dumps(result), flush=True)
    else:
        sys.exit(main())
