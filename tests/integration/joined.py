"""Feature and label topics for the joined-label tests: what ``streamtrain produce
--labels-topic --label-delay`` writes, from a stream and one delay per event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from topics import fill
from trainers import train_command

# Event time of the first feature event, in ms: ten minutes ago. Not a fixed date: the
# broker's retention (7 days) deletes a log whose records are stamped before then at its next
# check, which can come while a test reads it (its trainer then resumes at an offset that is
# gone and is reset to the log's new start).
START = int(time.time() * 1000) - 600_000

# The bytes of a feature event (id, x) and of a label event (id, y): the seed's JSON.
Encode = Callable[[str, Any], bytes]


def seed_feature(event_id: str, x: Any) -> bytes:
    return orjson.dumps({"id": event_id, "x": x})


def seed_label(event_id: str, y: Any) -> bytes:
    return orjson.dumps({"id": event_id, "y": y})


def fill_joined(
    bootstrap: str,
    features: str,
    labels: str,
    stream: list[Any],
    delays: list[int],
    parts: int,
    labels_first: bool = False,
) -> None:
    """Feature i (id ``str(i)``) at START + i ms on partition i % parts; its label at
    + delays[i], each partition's labels in due order, ties in event order (River's
    ``simulate_qa`` order). ``labels_first`` writes the whole labels topic before the
    features, so its log is complete before the first feature event lands."""
    if labels_first:
        fill_labels(bootstrap, labels, stream, delays, parts)
    fill_features(bootstrap, features, stream, parts)
    if not labels_first:
        fill_labels(bootstrap, labels, stream, delays, parts)


def fill_features(
    bootstrap: str, features: str, stream: list[Any], parts: int, encode: Encode = seed_feature
) -> None:
    ids = [str(i) for i in range(len(stream))]
    fill(
        bootstrap,
        features,
        [encode(ids[i], x) for i, (x, _y) in enumerate(stream)],
        keys=[i.encode() for i in ids],
        partitions=parts,
        timestamps=[START + i for i in range(len(stream))],
        to=[i % parts for i in range(len(stream))],
    )


def fill_labels(
    bootstrap: str,
    labels: str,
    stream: list[Any],
    delays: list[int],
    parts: int,
    encode: Encode = seed_label,
) -> None:
    ids = [str(i) for i in range(len(stream))]
    due = sorted(range(len(stream)), key=lambda i: (i + delays[i], i))
    fill(
        bootstrap,
        labels,
        [encode(ids[i], stream[i][1]) for i in due],
        keys=[ids[i].encode() for i in due],
        partitions=parts,
        timestamps=[START + i + delays[i] for i in due],
        to=[i % parts for i in due],
    )


class JoinedModel(NamedTuple):
    """The topics of a named joined model and the command that trains it."""

    features: str
    labels: str
    name: str
    ckpt: str
    cmd: list[str]


def named_joined(
    bootstrap: str,
    unique_name: Callable[..., str],
    stream: list[Any],
    delays: list[int],
    parts: int,
    *flags: str,
) -> JoinedModel:
    """Fresh feature and label topics filled by :func:`fill_joined`, a model name and
    checkpoint topic, and its ``train --labels-topic`` command (``flags`` last)."""
    features, labels = unique_name("feat"), unique_name("lab")
    name, ckpt = unique_name("joined"), unique_name("ckpt")
    fill_joined(bootstrap, features, labels, stream, delays, parts)
    cmd = train_command(bootstrap, features, name, ckpt, "--labels-topic", labels, *flags)
    return JoinedModel(features, labels, name, ckpt, cmd)
