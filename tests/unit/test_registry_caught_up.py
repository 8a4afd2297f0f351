"""When a joined task's input counts as caught up: nothing in its log past what the task was
handed, as the consumer's cached watermarks say (the event-time merge may then pass it over)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID
from confluent_kafka import TopicPartition as TP

from streamtrain.train.registry import TaskRegistry

NOTHING_YET = -1  # the task was handed no record of the input in this run


class Watermarks:
    """A consumer as librdkafka answers for a partition read from the beginning, before any
    record of it was consumed: its cached watermarks, and no position yet."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def get_watermark_offsets(self, tp: TP, timeout: Any = None, cached: bool = False) -> Any:
        assert cached  # no broker round trip on the hot path
        return self.low, self.high

    def position(self, partitions: list[TP]) -> list[TP]:
        return [TP(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]


def _caught_up(low: int, high: int, fetched: int) -> bool:
    registry = TaskRegistry(
        name=None,
        partitioned=False,
        build=lambda _key, _state: object(),
        start="earliest",
        fresh=lambda _key: None,
        clock=lambda: 0.0,
    )
    return registry._caught_up(Watermarks(low, high), ("labels", 0), fetched)


@pytest.mark.parametrize(
    ("low", "high", "fetched", "caught_up"),
    [
        (0, 0, NOTHING_YET, True),  # an empty log (labels not posted yet): nothing to wait for
        (7, 7, NOTHING_YET, True),  # every record deleted by retention
        (0, 5, NOTHING_YET, False),  # records the task has not been handed
        (0, 5, 3, False),
        (0, 5, 5, True),
        (OFFSET_INVALID, OFFSET_INVALID, NOTHING_YET, False),  # no fetch response yet
    ],
)
def test_an_input_is_caught_up_when_its_log_holds_nothing_more(
    low: int, high: int, fetched: int, caught_up: bool
) -> None:
    assert _caught_up(low, high, fetched) is caught_up
