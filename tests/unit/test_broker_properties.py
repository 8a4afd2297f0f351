"""The local broker's pure parts: rendered Kafka config, ids, pid files and log digging."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from streamtrain.broker.local import (
    LocalBroker,
    default_controller_port,
    escape_property,
    is_broker_cmdline,
    last_meaningful_line,
    new_cluster_id,
    parse_pid,
    render_log4j2_properties,
    render_server_properties,
)
from streamtrain.broker.runtime import ensure_kafka_jars, parse_java_major, render_pom
from streamtrain.errors import BrokerError, ConfigError


def parse_properties(text: str) -> dict[str, str]:
    """Enough of java.util.Properties for what the renderer emits (no continuation lines)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        assert key not in props, f"{key} rendered twice"
        props[key] = value
    return props


def single_node(**overrides: object) -> dict[str, str]:
    kwargs: dict[str, object] = {
        "node_id": 1,
        "log_dir": Path("/data/kafka-logs"),
        "port": 19092,
        "controller_port": 19093,
    }
    kwargs.update(overrides)
    return parse_properties(render_server_properties(**kwargs))  # type: ignore[arg-type]


def test_single_node_is_combined_kraft_on_both_ports() -> None:
    props = single_node()
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://localhost:19092,CONTROLLER://localhost:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["controller.quorum.bootstrap.servers"] == "localhost:19093"
    assert "controller.quorum.voters" not in props  # would conflict with --standalone format
    assert props["log.dirs"] == "/data/kafka-logs"
    assert "zookeeper.connect" not in props


def test_single_node_sizes_internal_topics_for_one_broker() -> None:
    props = single_node()
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_host_is_used_for_every_listener() -> None:
    props = single_node(host="127.0.0.1")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"


def test_cluster_node_is_parameterised_by_id_and_quorum() -> None:
    quorum = ["localhost:19093", "localhost:29093", "localhost:39093"]
    props = single_node(
        node_id=2, port=29092, controller_port=29093, controllers=quorum, replication_factor=3
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.bootstrap.servers"] == ",".join(quorum)
    assert props["listeners"] == "PLAINTEXT://localhost:29092,CONTROLLER://localhost:29093"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"


def test_broker_only_node_has_no_controller_listener() -> None:
    props = single_node(
        node_id=4, roles=("broker",), controller_port=None, controllers=["localhost:19093"]
    )
    assert props["process.roles"] == "broker"
    assert props["listeners"] == "PLAINTEXT://localhost:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    with pytest.raises(ConfigError, match="controllers"):
        single_node(roles=("broker",), controller_port=None)


def test_extra_properties_override_in_place_and_add() -> None:
    text = render_server_properties(
        node_id=1,
        log_dir=Path("/d"),
        extra={"num.partitions": "3", "log.retention.ms": "60000"},
    )
    props = parse_properties(text)
    assert props["num.partitions"] == "3"
    assert props["log.retention.ms"] == "60000"
    assert text.count("num.partitions=") == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 19093}, "share port"),
        ({"port": 0}, "between 1 and 65535"),
        ({"controller_port": 70000}, "between 1 and 65535"),
        ({"roles": ("zookeeper",)}, "roles"),
        ({"node_id": -1}, "node id"),
        ({"extra": {"bad key": "x"}}, "property name"),
    ],
)
def test_invalid_node_settings_are_config_errors(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        single_node(**overrides)


def test_paths_survive_the_latin1_properties_reader() -> None:
    # Kafka and log4j2 read .properties as ISO-8859-1: anything else must be \\u-escaped.
    props = single_node(log_dir=Path("/home/jos\u00e9/k\\logs"))
    assert props["log.dirs"] == "/home/jos\\u00e9/k\\\\logs"
    assert escape_property(" lead") == "\\ lead"
    assert escape_property("a b", key=True) == "a\\ b"
    assert escape_property("\U0001f600") == "\\ud83d\\ude00"
    assert render_server_properties(node_id=1, log_dir=Path("/\u00e9")).isascii()


def test_log4j2_config_points_at_the_log_file() -> None:
    text = render_log4j2_properties(Path("/data/logs/server.log"))
    props = {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in text.splitlines())
        if k.strip() and not k.startswith("#")
    }
    assert props["appender.file.fileName"] == "/data/logs/server.log"
    assert props["rootLogger.appenderRef.file.ref"] == props["appender.file.name"]


def test_local_broker_defaults_and_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMTRAIN_BROKER_DIR", str(tmp_path / "env-dir"))
    broker = LocalBroker()
    assert broker.bootstrap == "localhost:9092"
    assert broker.controller_port == 9093
    assert broker.data_dir == tmp_path / "env-dir"
    props = parse_properties(LocalBroker(data_dir=tmp_path, port=19092).server_properties())
    assert props["listeners"] == "PLAINTEXT://localhost:19092,CONTROLLER://localhost:19093"
    assert props["log.dirs"] == str(tmp_path / "kafka-logs")
    assert default_controller_port(65535) == 65534
    with pytest.raises(ConfigError, match="heap"):
        LocalBroker(data_dir=tmp_path, heap="lots")
    with pytest.raises(ConfigError, match="share port"):
        LocalBroker(data_dir=tmp_path, port=19092, controller_port=19092)


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")


@pytest.mark.parametrize(
    ("text", "pid"),
    [("1234\n", 1234), (" 42 ", 42), ("", None), ("0", None), ("-5", None), ("12ab", None)],
)
def test_parse_pid(text: str, pid: int | None) -> None:
    assert parse_pid(text) == pid


def test_cmdline_must_be_this_data_dirs_broker() -> None:
    config = Path("/data/a/config/server.properties")
    ours = ["/usr/bin/java", "-Xmx512m", "-cp", "/libs/*", "kafka.Kafka", str(config)]
    assert is_broker_cmdline(ours, config)
    assert not is_broker_cmdline(ours, Path("/data/b/config/server.properties"))
    assert not is_broker_cmdline(["/usr/bin/python3", "-m", "pytest"], config)
    assert not is_broker_cmdline([], config)


def test_stale_pid_files_are_removed_not_trusted(tmp_path: Path) -> None:
    broker = LocalBroker(data_dir=tmp_path, port=19092)
    broker.pid_path.write_text("garbage\n")
    assert broker.running_pid() is None
    assert not broker.pid_path.exists()
    # A live process that is not Kafka: this test process.
    broker.pid_path.write_text(f"{os.getpid()}\n")
    assert broker.running_pid() is None
    assert not broker.pid_path.exists()
    assert broker.down() is False


def test_last_meaningful_line_prefers_the_logged_exception() -> None:
    log = """\
[2025-01-01 10:00:00,000] INFO starting (kafka.server.KafkaRaftServer)
[2025-01-01 10:00:01,000] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$)
org.apache.kafka.common.config.ConfigException: Invalid value zero for num.network.threads
\tat org.apache.kafka.common.config.ConfigDef.parseType(ConfigDef.java:776)
\tat kafka.Kafka.main(Kafka.scala)
"""
    assert last_meaningful_line(log) == (
        "org.apache.kafka.common.config.ConfigException: Invalid value zero for num.network.threads"
    )
    bare = (
        'Exception in thread "main" java.lang.IllegalStateException: boom\n\tat x.Y.z(Y.java:1)\n'
    )
    assert last_meaningful_line(bare) == "java.lang.IllegalStateException: boom"
    assert last_meaningful_line("[t] ERROR no exception follows (c)\n") == (
        "no exception follows (c)"
    )
    assert last_meaningful_line("just text\n\n") == "just text"
    assert last_meaningful_line("") is None


def test_pom_pins_a_modern_slf4j_and_the_kafka_version() -> None:
    pom = render_pom("4.1.1")
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>kafka-tools</artifactId>" in pom
    assert "<version>4.1.1</version>" in pom
    assert re.search(r"<artifactId>slf4j-api</artifactId>\s*<version>2\.", pom)
    assert "log4j-slf4j2-impl" in pom


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(BrokerError, match="JAVA_HOME"):
        ensure_kafka_jars(tmp_path / "cache")
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="not on PATH"):
        ensure_kafka_jars(tmp_path / "cache")


def test_old_java_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "jdk8" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk8"))
    with pytest.raises(BrokerError, match=r"needs Java 17 or newer.*Java 8"):
        ensure_kafka_jars(tmp_path / "cache")


def test_missing_mvn_is_a_clear_error_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"17.0.15\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BrokerError, match="mvn"):
        ensure_kafka_jars(tmp_path / "cache")
    assert not (tmp_path / "cache" / "kafka" / "4.1.1").exists()


def test_failing_mvn_reports_its_last_lines_and_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in {
        "java": "echo 'openjdk version \"17.0.15\"' >&2",
        "mvn": "echo '[ERROR] Could not resolve dependencies for project'; exit 1",
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(BrokerError, match=r"mvn failed \(exit 1\).*Could not resolve"):
        ensure_kafka_jars(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "kafka").iterdir()] == [".4.1.1.lock"]


def test_cached_install_is_reused_without_mvn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text("#!/bin/sh\necho 'openjdk version \"21\"' >&2\n")
    (bin_dir / "java").chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))  # no mvn: a second fetch would fail
    home = tmp_path / "cache" / "kafka" / "4.1.1"
    (home / "libs").mkdir(parents=True)
    (home / "libs" / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    with pytest.raises(BrokerError, match="mvn"):
        ensure_kafka_jars(tmp_path / "cache")  # jars without the marker are not an install
    (home / "COMPLETE").write_text("kafka 4.1.1\n")
    assert ensure_kafka_jars(tmp_path / "cache") == home / "libs"
