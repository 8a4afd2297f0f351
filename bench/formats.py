"""The record-format contenders: the same Phishing events as flat JSON, Avro and Protobuf (the
registry wire format), decoded and learned per event in process; no Kafka, so the figure is
the cost of reading a format (and the same River learning after it).

Schemas are registered and the decoder's cache is warmed before the clock starts: a running
trainer fetches each schema id once, so its steady state is what is timed.
"""

from __future__ import annotations

import gc
import time
import uuid
from typing import Any

import orjson

TARGET = "is_phishing"


def format_contender(args: dict[str, Any]) -> dict[str, Any]:
    """``{"format": "json"|"avro"|"protobuf", "events": n, "registry": url}``: events/s."""
    from contenders import _pipeline, phishing_events
    from river import metrics

    from streamtrain.formats.encoding import event_encoder
    from streamtrain.formats.settings import JSON, FormatSettings
    from streamtrain.models.problem import Problem
    from streamtrain.records.loading import load_records
    from streamtrain.records.shape import RecordShape
    from streamtrain.train.progressive import ProgressiveEvaluator

    n, fmt = args["events"], args["format"]
    events = phishing_events(n)
    topic = f"bench-{fmt}-{uuid.uuid4().hex[:8]}"
    if fmt == JSON:
        settings = FormatSettings()
        raw = [orjson.dumps({**x, TARGET: y}) for x, y in events]
    else:
        settings = FormatSettings(format=fmt, schema_registry=args["registry"])
        encode = event_encoder(settings, topic, events, TARGET)
        raw = [encode(x, y) for x, y in events]
    load = load_records(settings, topic)
    shape = RecordShape(target=TARGET) if load is None else RecordShape(target=TARGET, load=load)
    shape.decode(raw[0], Problem.CLASSIFICATION)  # the schema fetched once, as a trainer does
    evaluator = ProgressiveEvaluator(_pipeline(), {"ROCAUC": metrics.ROCAUC()})
    decode, learn = shape.decode, evaluator.learn
    gc.collect()
    started = time.perf_counter()
    for value in raw:
        x, y = decode(value, Problem.CLASSIFICATION)
        learn(x, y)
    elapsed = time.perf_counter() - started
    return {
        "events": n,
        "seconds": elapsed,
        "metric": evaluator.values()["ROCAUC"],
        "bytes_per_event": sum(map(len, raw)) / n,
    }
