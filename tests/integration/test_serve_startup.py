"""serve's start-up reads a bounded part of the metrics topic, however long its retention.

A topic holding a long run (20,000 reports, another model's records among the first ones, a
promotion early on) is followed with a 200-record history: the follower samples the older
part, reads the tail whole, and the dashboard gets the run's first report, its newest 100 as
they are, evenly spaced ones between, the promotion, and every new report after.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from topics import fill

from streamtrain.config import KafkaSettings
from streamtrain.serving.follower import MetricsFollower, ModelKeys

pytestmark = pytest.mark.kafka

REPORTS = 20_000
PROMOTED_AT = 3_000  # the report from which tree is the champion


def _report(i: int) -> dict[str, Any]:
    tree = {"spec": "HoeffdingTreeClassifier", "metrics": {"ROCAUC": 0.9}, "events_learned": 0}
    c0 = {"spec": "LogisticRegression", "metrics": {"ROCAUC": 0.6}, "events_learned": 0}
    return {
        "format": 1,
        "kind": "progress",
        "ts": 1_800_000_000.0 + i,
        "elapsed_seconds": float(i),
        "events_learned": 10 * (i + 1),
        "metrics": {"ROCAUC": 0.9 if i >= PROMOTED_AT else 0.6},
        "challengers": {"c0": c0} if i >= PROMOTED_AT else {"tree": tree},
    }


def test_start_up_reads_a_bounded_part_and_keeps_what_the_dashboard_draws(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("metrics")
    reports = [_report(i) for i in range(REPORTS)]
    values, keys = [], []
    for i, report in enumerate(reports):
        if i < 2_000 and i % 4 == 0:  # another model's records among the first ones
            values.append(orjson.dumps({**report, "metrics": {"ROCAUC": 0.1}}))
            keys.append(b"other")
        values.append(orjson.dumps(report))
        keys.append(b"m")
    fill(kafka_bootstrap, topic, values, keys=keys)

    follower = MetricsFollower(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), ModelKeys("m"), topic, history=200
    )
    bound = follower.bound
    assert (bound.tail, bound.samples, bound.most_records) == (100, 20, 1_100)
    started = time.monotonic()
    follower.start()
    try:
        assert follower.caught_up.wait(60), follower.status()
        took = time.monotonic() - started
        history = follower.history()
        # The bound: the tail whole, and a record or two per sample.
        assert follower.read_at_start <= bound.tail + 2 * bound.samples < len(values) // 100
        learned = [r["events_learned"] for r in history]
        assert learned == sorted(learned) and len(set(learned)) == len(learned)
        # The run's start, and its newest 100 reports as the trainer wrote them.
        assert history[0]["events_learned"] == reports[0]["events_learned"]
        assert learned[-100:] == [r["events_learned"] for r in reports[-100:]]
        # Between them, samples at evenly spaced offsets (every 1,020 or so): the first
        # record of the model at or after each.
        offsets, tail = bound.plan(0, len(values))
        assert tail == len(values) - 100 and offsets[1] - offsets[0] == 1_020
        ours = [o for o, key in enumerate(keys) if key == b"m"]
        firsts = [next(o for o in ours if o >= offset) for offset in offsets]
        expected = [orjson.loads(values[o])["events_learned"] for o in firsts]
        assert learned[: len(learned) - 100] == expected
        assert all(b - a > 8_000 for a, b in itertools.pairwise(expected))  # spread over the run
        # The promotion between two samples: marked at the later one, tree the champion.
        latest = follower.latest()
        assert latest is not None
        (promotion,) = latest["promotions"]
        assert (promotion["from"], promotion["to"]) == ("c0", "tree")
        assert 10 * PROMOTED_AT < promotion["events"] <= 10 * PROMOTED_AT + 10_000
        assert [(m["label"], m["champion"]) for m in latest["models"]] == [
            ("c0", False),
            ("tree", True),
        ]
        # Live from the end on: new reports arrive, and the bound did not grow.
        read = follower.read_at_start
        more = [_report(REPORTS + i) for i in range(5)]
        fill(kafka_bootstrap, topic, [orjson.dumps(r) for r in more], keys=[b"m"] * 5, append=True)
        deadline = time.monotonic() + 30
        while (follower.latest() or {}).get("events_learned") != more[-1]["events_learned"]:
            assert time.monotonic() < deadline, follower.status()
            time.sleep(0.05)
        assert follower.read_at_start == read
        assert follower.received == len(history) + 5
    finally:
        follower.stop()
    assert took < 30
