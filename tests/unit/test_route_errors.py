"""TaskRegistry.route with an error among the messages: the error reaches ``on_error`` whole.

Real ``KafkaError`` objects, because the bug was in how the C extension compares them: a batch
check that compared each message's error with None left a TypeError set inside confluent-kafka,
and the next call into it (``err.code()`` in the error handler) raised SystemError instead.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError

from streamtrain.train.registry import TaskRegistry


class _Msg:
    def __init__(self, error: KafkaError | None, partition: int = 0) -> None:
        self._error, self._partition = error, partition

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition


def _route(messages: list[Any]) -> tuple[list[int], list[tuple[str, int]]]:
    task = SimpleNamespace(key="t-0")
    registry = SimpleNamespace(by_input={("t", 0): task})
    codes: list[int] = []
    routed = [
        (t.key, len(batch))
        for t, batch in TaskRegistry.route(registry, messages, lambda e: codes.append(e.code()))  # type: ignore[arg-type]
    ]
    return codes, routed


def test_an_error_in_the_batch_reaches_the_handler_intact() -> None:
    denied = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    codes, routed = _route([_Msg(None), _Msg(denied), _Msg(None)])
    assert codes == [KafkaError.GROUP_AUTHORIZATION_FAILED]
    assert routed == [("t-0", 2)]


def test_a_batch_without_errors_goes_to_its_task_whole() -> None:
    codes, routed = _route([_Msg(None), _Msg(None)])
    assert codes == []
    assert routed == [("t-0", 2)]
