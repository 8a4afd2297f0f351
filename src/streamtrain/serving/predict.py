"""Answering predict requests: each from one snapshot, every prediction on one thread.

Each answer echoes its instance's ``id``. With a log sink (``serve --log-topic``), an instance
without one gets a fresh id (a uuid4, hex), every instance becomes a feature event
(:func:`streamtrain.serving.records.feature_event`) and the request is answered only once the
broker acknowledged them all: an id the client got back is one a label can be posted for.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from streamtrain.data.events import InvalidEvent
from streamtrain.serving.eventlog import Sink
from streamtrain.serving.follower import Servable, SnapshotSource
from streamtrain.serving.prometheus import ServingMetrics
from streamtrain.serving.records import feature_event, now_ms
from streamtrain.serving.responses import RequestRefused, json_response
from streamtrain.serving.validation import (
    DEFAULT_MAX_FEATURES,
    Instance,
    parse_instances,
    read_body,
)

__all__ = ["Predictor"]


class Predictor:
    """Reads, checks and answers the predict requests of model ``name``, counting each."""

    def __init__(
        self,
        name: str,
        source: SnapshotSource,
        metrics: ServingMetrics,
        *,
        max_body_bytes: int,
        max_instances: int,
        max_features: int = DEFAULT_MAX_FEATURES,
        log: Sink | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self.max_features = max_features
        self.log = log
        # One thread runs every prediction: River models are not documented as thread-safe,
        # and keeping them off the event loop keeps /healthz and /metrics answering.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"predict:{name}")

    async def answer(self, request: Request) -> Response:
        t0 = time.perf_counter()
        code = 500
        try:
            body = await read_body(request, self.max_body_bytes)
            instances, batch = parse_instances(body, self.max_instances, self.max_features)
            snapshot = self._loaded()  # read once: every answer of this request uses it
            loop = asyncio.get_running_loop()
            answers = await loop.run_in_executor(
                self._thread, _predict_all, snapshot, [i.x for i in instances], batch
            )
            if self.log is not None:
                answers = await self._logged(instances, answers)
            else:
                answers = [_with_id(i.id, a) for i, a in zip(instances, answers, strict=True)]
            self.metrics.predicted(len(answers))
            code = 200
            return json_response(answers if batch else answers[0])
        except RequestRefused as refusal:
            code = refusal.status
            raise
        finally:
            self.metrics.answered(code, time.perf_counter() - t0)

    async def _logged(
        self, instances: list[Instance], answers: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The answers with their ids, once their feature events are in the log topic."""
        assert self.log is not None
        at = now_ms()
        ids = [i.id if i.id is not None else uuid.uuid4().hex for i in instances]
        await self.log.write(
            [
                feature_event(id_, i.x, answer, self.name, at)
                for id_, i, answer in zip(ids, instances, answers, strict=True)
            ]
        )
        self.metrics.logged(len(answers))
        return [_with_id(id_, a) for id_, a in zip(ids, answers, strict=True)]

    def shutdown(self) -> None:
        """Wait for the running prediction; drop the queued ones."""
        self._thread.shutdown(wait=True, cancel_futures=True)

    def _loaded(self) -> Servable:
        snapshot = self.source.current()
        if snapshot is None:
            raise RequestRefused(
                503, "no-model", f"model {self.name!r} has no verified checkpoint yet"
            )
        return snapshot


def _predict_all(snapshot: Servable, features: list[Any], batch: bool) -> list[dict[str, Any]]:
    answers = []
    for i, x in enumerate(features):
        try:
            answers.append(snapshot.predict(x))
        except InvalidEvent as bad:
            raise RequestRefused(
                422, bad.reason.value, bad.message, instance=i if batch else None
            ) from None
        except Exception as err:  # the model itself failed: a server error, said in JSON
            raise RequestRefused(
                500, "model-error", f"{type(err).__name__}: {err}", instance=i if batch else None
            ) from None
    return answers


def _with_id(id_: str | None, answer: dict[str, Any]) -> dict[str, Any]:
    return answer if id_ is None else {"id": id_, **answer}
