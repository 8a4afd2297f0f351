"""``produce --labels-topic`` against a real broker: feature and label events read back."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from confluent_kafka.admin import AdminClient, NewTopic
from river import datasets
from topics import read_messages

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.produce import ProduceSettings, Replayer
from streamtrain.produce.labels import LabelDelay

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class Logged:
    key: bytes
    value: dict[str, object]
    partition: int
    offset: int
    timestamp_ms: int


def _read(bootstrap: str, topic: str) -> list[Logged]:
    """Every committed record of ``topic``, partition by partition, in log order."""
    records = []
    for msg in read_messages(bootstrap, topic, config={"isolation.level": "read_committed"}):
        kind, ts = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        value = msg.value()
        assert value is not None
        records.append(Logged(msg.key(), orjson.loads(value), msg.partition(), msg.offset(), ts))
    return records


def _partitions(records: list[Logged]) -> dict[int, list[Logged]]:
    return {p: list(group) for p, group in itertools.groupby(records, key=lambda r: r.partition)}


def test_features_then_labels_with_seeded_delays_and_drops(
    kafka_bootstrap: str, unique_name: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic, labels_topic = unique_name("features"), unique_name("labels")
    spec, seed, n = "random:0ms..50ms", 7, 200
    code = main(
        [
            "produce",
            "--topic", topic,
            "--labels-topic", labels_topic,
            "--limit", str(n),
            "--label-delay", spec,
            "--label-drop", "0.1",
            "--seed", str(seed),
            "--bootstrap-servers", kafka_bootstrap,
            "-q",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""

    rows = list(itertools.islice(datasets.Phishing(), n))
    features = _read(kafka_bootstrap, topic)
    assert [r.value for r in features] == [{"id": str(i), "x": x} for i, (x, _) in enumerate(rows)]
    assert [r.key for r in features] == [str(i).encode() for i in range(n)]
    start = features[0].timestamp_ms
    assert abs(start - time.time() * 1000) < 120_000  # the wall clock at the start of the run
    assert [r.timestamp_ms for r in features] == [start + i for i in range(n)]

    labels = _read(kafka_bootstrap, labels_topic)
    draw = LabelDelay.parse(spec).sampler(seed)
    delays = [draw(x) for x, _ in rows]
    ids = [int(str(r.value["id"])) for r in labels]
    assert len(set(ids)) == len(ids)
    for record, i in zip(labels, ids, strict=True):
        assert record.key == str(i).encode()
        assert record.value == {"id": str(i), "y": rows[i][1]}
        assert record.timestamp_ms == features[i].timestamp_ms + delays[i]
    # The labels topic is in event-time order, ties by event index.
    order = [(r.timestamp_ms, i) for r, i in zip(labels, ids, strict=True)]
    assert order == sorted(order)
    assert order != sorted(order, key=lambda o: o[1])  # the delays did reorder some labels

    dropped = n - len(labels)
    assert 0 < dropped < 50  # 20 expected of 200
    assert out.startswith(f"produced {n} events to {topic} in ")
    assert out.rstrip().endswith(f"; {len(labels)} labels to {labels_topic}, {dropped} dropped")


@pytest.mark.parametrize("same_topic", [False, True])
def test_labels_are_co_partitioned_with_their_features(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    same_topic: bool,
) -> None:
    topic = unique_name("events")
    labels_topic = topic if same_topic else unique_name("labels")
    start = int(time.time() * 1000)
    code = main(
        [
            "produce",
            "--topic", topic,
            "--labels-topic", labels_topic,
            "--partitions", "3",
            "--limit", "150",
            "--label-delay", "feature:age_of_domain",
            "--id-prefix", "run-",
            "--start-time", str(start),
            "--bootstrap-servers", kafka_bootstrap,
            "-q",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    # The producer's own count, to tell a record lost on the way from one missed by the read.
    assert "produced 150 events" in (out := capsys.readouterr().out), out
    assert "; 150 labels to" in out, out

    logs = [_read(kafka_bootstrap, topic)]
    if not same_topic:
        logs.append(_read(kafka_bootstrap, labels_topic))
        assert len(_partitions(logs[1])) == 3  # created with the main topic's count
    logged = [record for log in logs for record in log]
    features = {r.value["id"]: r for r in logged if "x" in r.value}
    labels = {r.value["id"]: r for r in logged if "y" in r.value}
    assert len(features) == len(labels) == 150
    assert len({r.partition for r in features.values()}) == 3
    for event_id, label in labels.items():
        feature = features[event_id]
        i = int(str(event_id).removeprefix("run-"))
        assert label.key == feature.key == f"run-{i}".encode()
        assert feature.timestamp_ms == start + i
        delay_seconds = feature.value["x"]["age_of_domain"]  # type: ignore[index]
        assert label.timestamp_ms == feature.timestamp_ms + round(delay_seconds * 1000)
        assert label.partition == feature.partition
        if same_topic:
            assert label.offset > feature.offset
    # Sent in event-time order, so each partition's log is too.
    for log in logs:
        for records in _partitions(log).values():
            stamps = [r.timestamp_ms for r in records]
            assert stamps == sorted(stamps)


def _kafka(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, connect_timeout=15.0)


def test_a_rate_paces_labels_by_their_event_time(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic, labels_topic = unique_name("paced"), unique_name("paced-labels")
    settings = ProduceSettings(
        topic=topic, labels_topic=labels_topic, limit=40, rate=200, label_delay="300ms"
    )
    report = Replayer(_kafka(kafka_bootstrap), settings).run()
    assert (report.sent, report.delivered, report.failed) == (40, 40, 0)
    assert report.labels is not None
    assert (report.labels.sent, report.labels.delivered, report.labels.dropped) == (40, 40, 0)
    # Events are 5 ms apart, so the last label is due 39 * 5 + 300 ms after the first event;
    # the features alone take 0.195 s. A lower bound only: CI can be slow.
    assert report.elapsed_seconds >= 0.45
    features = _read(kafka_bootstrap, topic)
    start = features[0].timestamp_ms
    assert [r.timestamp_ms for r in features] == [start + 5 * i for i in range(40)]
    labels = _read(kafka_bootstrap, labels_topic)
    assert [r.timestamp_ms for r in labels] == [start + 5 * i + 300 for i in range(40)]


def test_a_stopped_replay_reports_the_labels_not_yet_due(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic, labels_topic = unique_name("stopped"), unique_name("stopped-labels")
    settings = ProduceSettings(
        topic=topic,
        labels_topic=labels_topic,
        dataset="synth.Agrawal(seed=1)",
        limit=10_000,
        rate=200,
        label_delay="random:500ms..2s",
        label_drop=0.2,
    )
    replayer = Replayer(_kafka(kafka_bootstrap), settings)
    timer = threading.Timer(1.5, replayer.stop)
    timer.start()
    try:
        report = replayer.run()
    finally:
        timer.cancel()
    labels = report.labels
    assert report.stopped
    assert labels is not None
    assert 0 < report.sent < 10_000
    assert labels.sent > 0
    assert labels.pending > 0
    assert labels.unlabelled == 0
    # Every event sent has its label sent, dropped or still pending: none is lost or invented.
    assert labels.sent + labels.dropped + labels.pending == report.sent
    assert labels.delivered == labels.sent == len(_read(kafka_bootstrap, labels_topic))
    assert report.delivered == report.sent == len(_read(kafka_bootstrap, topic))


def test_a_new_labels_topic_gets_the_existing_topics_partition_count(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic, labels_topic = unique_name("existing"), unique_name("new-labels")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(60)
    settings = ProduceSettings(topic=topic, labels_topic=labels_topic, limit=20)  # partitions=1
    report = Replayer(_kafka(kafka_bootstrap), settings).run()
    assert report.labels is not None
    assert (report.delivered, report.labels.delivered) == (20, 20)
    labels = _read(kafka_bootstrap, labels_topic)
    assert len(admin.list_topics(labels_topic, timeout=10).topics[labels_topic].partitions) == 2
    features = {r.key: r.partition for r in _read(kafka_bootstrap, topic)}
    assert {r.key: r.partition for r in labels} == features
    assert set(features.values()) == {0, 1}
