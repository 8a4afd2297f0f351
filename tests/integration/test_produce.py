"""The producer against a real broker, read back by a plain kafka-python consumer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, TopicPartition
from river import datasets

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.errors import BrokerUnreachable, ConfigError
from streamtrain.produce import ProduceSettings, Replayer

pytestmark = pytest.mark.kafka


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Every record of ``topic``, partition by partition, in offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assignment)
        consumer.seek_to_beginning(*assignment)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def _partitions(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def _kafka(bootstrap: str, connect_timeout: float = 15.0) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, connect_timeout=connect_timeout)


def test_cli_replays_phishing_in_the_seed_wire_format(
    kafka_bootstrap: str, unique_name: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("phishing")
    code = main(["produce", "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"produced 1250 events to {topic} in ")
    assert out.rstrip().endswith("ev/s)")
    assert err == ""

    records = _read_all(kafka_bootstrap, topic, 1250)
    assert len(records) == 1250
    expected = [{"x": x, "y": y} for x, y in datasets.Phishing()]
    assert [json.loads(r.value) for r in records] == expected
    assert all(r.key is None for r in records)
    assert _partitions(kafka_bootstrap, topic) == 1


def test_partitions_and_keys(
    kafka_bootstrap: str, unique_name: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("keyed")
    argv = ["produce", "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "-q"]
    code = main([*argv, "--partitions", "3", "--key", "age_of_domain", "--limit", "300"])
    assert code == 0, capsys.readouterr().err
    assert _partitions(kafka_bootstrap, topic) == 3

    records = _read_all(kafka_bootstrap, topic, 300)
    assert len(records) == 300
    for record in records:
        event = json.loads(record.value)
        assert record.key == str(event["x"]["age_of_domain"]).encode()
    # Same key, same partition: each key's events keep their dataset order there.
    by_key: dict[bytes, set[int]] = {}
    for record in records:
        by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_replayer_reports_and_accepts_any_events(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("events")
    seen: list[int] = []
    events = [({"a": i, "b": i / 2}, i % 3 == 0) for i in range(100)]
    replayer = Replayer(
        _kafka(kafka_bootstrap), ProduceSettings(topic=topic), on_progress=seen.append
    )
    report = replayer.run(events)
    assert (report.topic, report.sent, report.delivered, report.failed) == (topic, 100, 100, 0)
    assert report.errors == ()
    assert not report.stopped
    assert report.elapsed_seconds > 0
    assert report.events_per_second == pytest.approx(100 / report.elapsed_seconds)
    assert seen and seen[-1] == 100
    values = [json.loads(r.value) for r in _read_all(kafka_bootstrap, topic, 100)]
    assert values == [{"x": x, "y": y} for x, y in events]


def test_file_source_through_the_cli(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("csv")
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,2.5,true\n3,x,false\n", encoding="utf-8")
    source = ["--file", str(path), "--target", "label"]
    code = main(
        ["produce", "--topic", topic, *source, "--bootstrap-servers", kafka_bootstrap, "-q"]
    )
    assert code == 0, capsys.readouterr().err
    values = [json.loads(r.value) for r in _read_all(kafka_bootstrap, topic, 2)]
    assert values == [{"x": {"a": 1, "b": 2.5}, "y": True}, {"x": {"a": 3, "b": "x"}, "y": False}]


def test_rate_is_honoured(kafka_bootstrap: str, unique_name: Callable[..., str]) -> None:
    settings = ProduceSettings(topic=unique_name("paced"), limit=50, rate=100)
    report = Replayer(_kafka(kafka_bootstrap), settings).run()
    assert report.delivered == 50
    # 50 events at 100/s: 49 intervals of 10 ms. A lower bound only; CI can be slow.
    assert report.elapsed_seconds >= 0.45


def test_stop_from_another_thread_flushes_what_was_sent(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("stopped")
    settings = ProduceSettings(topic=topic, dataset="synth.Agrawal(seed=1)", limit=10_000, rate=200)
    replayer = Replayer(_kafka(kafka_bootstrap), settings)
    timer = threading.Timer(1.0, replayer.stop)
    timer.start()
    try:
        report = replayer.run()
    finally:
        timer.cancel()
    assert report.stopped
    assert 0 < report.sent < 10_000
    assert report.delivered == report.sent
    assert len(_read_all(kafka_bootstrap, topic, report.sent)) == report.sent


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_stops_cleanly_and_reports(
    kafka_bootstrap: str, unique_name: Callable[..., str], sig: signal.Signals, code: int
) -> None:
    topic = unique_name("signalled")
    args = ["--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--rate", "500"]
    source = ["--dataset", "synth.Agrawal(seed=1)", "--limit", "100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtrain", "produce", *args, *source],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        deadline = time.monotonic() + 60
        # The command creates the topic right before it starts producing.
        while topic not in admin.list_topics(timeout=10).topics:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err == ""
    prefix = f"stopped by {sig.name}: produced "
    assert out.startswith(prefix), out
    produced = int(out[len(prefix) :].split()[0])
    assert 0 < produced < 100_000
    assert len(_read_all(kafka_bootstrap, topic, produced)) == produced


def test_missing_key_feature_is_a_clear_error(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("nokey")
    events = [({"id": 1, "a": 1.0}, 0), ({"id": 2, "a": 2.0}, 1), ({"a": 3.0}, 0)]
    replayer = Replayer(_kafka(kafka_bootstrap), ProduceSettings(topic=topic, key="id"))
    with pytest.raises(ConfigError, match=r"event 3 has no feature 'id'.*2 events before it"):
        replayer.run(events)
    # The two events before it were flushed, not lost.
    assert [r.key for r in _read_all(kafka_bootstrap, topic, 2)] == [b"1", b"2"]


def test_unreachable_broker_fails_within_the_connect_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        replayer = Replayer(_kafka(f"127.0.0.1:{port}", connect_timeout=1), ProduceSettings())
        started = time.monotonic()
        with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
            replayer.run([({"a": 1}, 0)])
        assert time.monotonic() - started < 1 + 3


def test_unreachable_broker_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        argv = ["produce", "--bootstrap-servers", f"127.0.0.1:{port}", "--connect-timeout", "1"]
        assert main([*argv, "-q"]) == BrokerUnreachable.exit_code
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1  # no librdkafka chatter around the one error line
    assert err.startswith("streamtrain: error: no Kafka broker answered")


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "Phishing", "--file", "x.csv"],
        ["--dataset", "NoSuchDataset"],
        ["--rate", "-1"],
        ["--partitions", "0"],
        ["--dataset", "synth.Agrawal(seed=1)"],
        ["--dataset", "Phishing", "--target", "label"],
        ["--topic", "bad topic"],
        ["-X", "no-equals-sign"],
        ["--label-delay", "5s"],
        ["--label-drop", "0.5"],
        ["--seed", "3"],
        ["--labels-topic", "l", "--label-delay", "in a while"],
        ["--labels-topic", "l", "--label-delay", "random:2s..1s"],
        ["--labels-topic", "l", "--label-drop", "1"],
        ["--labels-topic", "l", "--key", "https"],
        ["--labels-topic", "l", "--start-time", "yesterday"],
    ],
)
def test_cli_misuse_is_one_line_and_exit_code_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # A closed port: misuse must be reported before any connection is attempted.
    argv = ["produce", *args, "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "30"]
    started = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code  # type: ignore[assignment]
    assert code == 2
    assert time.monotonic() - started < 10
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "error" in err


def test_env_and_config_file_fill_what_flags_do_not(
    kafka_bootstrap: str,
    unique_name: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = unique_name("configured")
    config = tmp_path / "streamtrain.toml"
    config.write_text(
        f'bootstrap_servers = "{kafka_bootstrap}"\n[produce]\ntopic = "{topic}"\nlimit = 7\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("STREAMTRAIN_CONFIG", str(config))
    monkeypatch.setenv("STREAMTRAIN_LIMIT", "5")  # env beats the file
    assert main(["produce", "-q", "--key", "https"]) == 0
    assert capsys.readouterr().out.startswith(f"produced 5 events to {topic} ")
    assert main(["produce", "-q", "--limit", "3"]) == 0  # the flag beats env
    assert len(_read_all(kafka_bootstrap, topic, 8)) == 8
