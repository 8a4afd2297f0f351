"""Answering ``POST /labels``: outcomes that arrive after the prediction, written for training.

A label names the instance it belongs to by the ``id`` its prediction was made (or answered)
with. Each is checked against the served model's problem with the trainer's own rules
(:func:`streamtrain.data.events.validate_label`), so a label accepted here is one the trainer
learns from, then written as a label event (:func:`streamtrain.serving.records.label_event`);
the answer ``{"accepted": n}`` comes once the broker acknowledged them all. A bad label refuses
the whole request, as a bad instance does a predict request.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from streamtrain.data.events import InvalidEvent, validate_label
from streamtrain.serving.eventlog import Sink
from streamtrain.serving.follower import SnapshotSource
from streamtrain.serving.prometheus import ServingMetrics
from streamtrain.serving.records import label_event, now_ms
from streamtrain.serving.responses import RequestRefused, json_response
from streamtrain.serving.validation import parse_labels, read_body

__all__ = ["LabelTaker"]


class LabelTaker:
    """Reads, checks and writes the labels posted for model ``name``; ``sink`` None: off (404)."""

    def __init__(
        self,
        name: str,
        source: SnapshotSource,
        metrics: ServingMetrics,
        sink: Sink | None,
        *,
        max_body_bytes: int,
        max_labels: int,
    ) -> None:
        self.name = name
        self.source = source
        self.metrics = metrics
        self.sink = sink
        self.max_body_bytes = max_body_bytes
        self.max_labels = max_labels

    async def answer(self, request: Request) -> Response:
        code, accepted = 500, 0
        try:
            if self.sink is None:
                raise RequestRefused(
                    404,
                    "labels-off",
                    "this server takes no labels; start it with --labels-topic TOPIC",
                )
            body = await read_body(request, self.max_body_bytes)
            labels, batch = parse_labels(body, self.max_labels)
            snapshot = self.source.current()
            if snapshot is None:
                raise RequestRefused(
                    503,
                    "no-model",
                    f"model {self.name!r} has no verified checkpoint yet, and its kind "
                    "(classifier or regressor) decides which labels are valid",
                )
            problem = snapshot.problem
            for i, label in enumerate(labels):
                try:
                    validate_label(label.y, problem)
                except InvalidEvent as bad:
                    raise RequestRefused(
                        422, bad.reason.value, bad.message, instance=i if batch else None
                    ) from None
            at = now_ms()
            await self.sink.write([label_event(label.id, label.y, at) for label in labels])
            code, accepted = 200, len(labels)
            return json_response({"accepted": accepted})
        except RequestRefused as refusal:
            code = refusal.status
            raise
        finally:
            self.metrics.labels_answered(code, accepted)
