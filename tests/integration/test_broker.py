"""The local Kafka broker for real: start, answer, serve, restart, stop, and fail clearly.

These tests start brokers of their own (own directory, own free ports), never the session's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from streamtrain.broker import KAFKA_VERSION, LocalBroker
from streamtrain.broker.process import pid_alive, process_cmdline
from streamtrain.cli.main import main
from streamtrain.errors import BrokerError

pytestmark = pytest.mark.kafka


def _produce_one(bootstrap: str, topic: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0


def _consume_all(bootstrap: str, topic: str, group: str, timeout: float = 30) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return values
                continue  # e.g. the topic's leader not known yet right after creation
            value = message.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    pytest.fail(f"no end of partition on {topic} within {timeout} s (got {values})")


def test_up_status_serve_restart_down(
    tmp_path: Path, free_ports: Callable[[int], list[int]], unique_name: Callable[..., str]
) -> None:
    port, controller_port = free_ports(2)
    broker = LocalBroker(data_dir=tmp_path / "kafka", port=port, controller_port=controller_port)
    # A pid file left by a crash, naming a live process that is not Kafka (this one).
    broker.data_dir.mkdir()
    broker.pid_path.write_text(f"{os.getpid()}\n")

    topic, group = unique_name("broker"), unique_name("group")
    try:
        assert broker.up(wait_seconds=90) is True
        status = broker.status()
        assert status.running and status.answering
        assert status.bootstrap == f"localhost:{port}"
        assert status.pid == int(broker.pid_path.read_text())
        assert "kafka.Kafka" in process_cmdline(status.pid)
        assert broker.up() is False
        # A second handle, as another CLI invocation would have, finds the same process.
        assert LocalBroker(data_dir=broker.data_dir, port=port).running_pid() == status.pid

        _produce_one(broker.bootstrap, topic, b"hello")  # auto-creates the topic
        assert _consume_all(broker.bootstrap, topic, group) == [b"hello"]

        # log4j2 must be the SLF4J binding, or the broker would log nothing at all.
        log = broker.log_path.read_text()
        assert f"Kafka version: {KAFKA_VERSION}" in log
        assert "Kafka Server started" in log

        cluster_id = (broker.data_dir / "cluster.id").read_text()
        assert broker.down() is True
        assert not pid_alive(status.pid)

        # Restart: same storage and cluster id, the message is still there.
        assert broker.up(wait_seconds=90) is True
        assert (broker.data_dir / "cluster.id").read_text() == cluster_id
        assert cluster_id.strip() in (broker.log_dir / "meta.properties").read_text()
        assert _consume_all(broker.bootstrap, topic, unique_name("group")) == [b"hello"]
        pid = broker.running_pid()
        assert pid is not None and pid != status.pid
    finally:
        stopped = broker.down()

    assert stopped is True
    after = broker.status(timeout=1)
    assert (after.running, after.pid, after.answering) == (False, None, False)
    assert not broker.pid_path.exists()
    assert broker.down() is False


def test_dead_pid_in_pid_file_is_cleaned_up(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    broker = LocalBroker(data_dir=tmp_path, port=1)
    broker.pid_path.write_text(f"{dead.pid}\n")
    status = broker.status(timeout=1)
    assert (status.running, status.pid) == (False, None)
    assert not broker.pid_path.exists()
    assert broker.down() is False


def test_taken_port_is_refused_before_starting(
    tmp_path: Path, free_ports: Callable[[int], list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = LocalBroker(data_dir=tmp_path / "a", port=taken, controller_port=free_ports(1)[0])
        with pytest.raises(BrokerError, match=f"localhost:{taken} is already in use"):
            broker.up(wait_seconds=10)
        assert broker.running_pid() is None

        code = main(["broker", "up", "--data-dir", str(tmp_path / "b"), "--port", str(taken)])
    assert code == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("streamtrain: error: cannot start Kafka")


def test_jvm_that_dies_during_startup_is_reported(
    tmp_path: Path, free_ports: Callable[[int], list[int]]
) -> None:
    port, controller_port = free_ports(2)
    # Storage formatting accepts this; only the starting broker finds the class missing.
    broker = LocalBroker(
        data_dir=tmp_path,
        port=port,
        controller_port=controller_port,
        extra_properties={"authorizer.class.name": "com.example.NoSuchAuthorizer"},
    )
    with pytest.raises(BrokerError) as caught:
        broker.up(wait_seconds=60)
    message = str(caught.value)
    assert "exited during start-up" in message
    assert "NoSuchAuthorizer" in message
    assert str(broker.log_path) in message
    assert "\n" not in message
    assert not broker.pid_path.exists()
    assert broker.status(timeout=1).answering is False


def test_cli_status_against_a_dead_port_exits_1_with_one_line(
    tmp_path: Path, free_ports: Callable[[int], list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    (dead_port,) = free_ports(1)
    code = main(["broker", "status", "--data-dir", str(tmp_path), "--port", str(dead_port)])
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert code == 1
    assert len(lines) == 1
    assert f"localhost:{dead_port}" in lines[0]
    assert "not running" in lines[0] and "not answering" in lines[0]


def test_cli_status_of_the_session_broker_exits_0(
    local_broker: LocalBroker | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if local_broker is None:
        pytest.skip("using an external broker")
    code = main(
        [
            "broker",
            "status",
            "--data-dir",
            str(local_broker.data_dir),
            "--port",
            str(local_broker.port),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"running (pid {local_broker.running_pid()}), answering" in out
