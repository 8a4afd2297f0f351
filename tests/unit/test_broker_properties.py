"""The local broker's pure parts: rendered Kafka config, ids, pid files and log digging."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from streamtrain.broker.cluster import LocalCluster
from streamtrain.broker.layout import CLUSTER_FILE, ClusterLayout, cluster_ports, is_cluster_dir
from streamtrain.broker.process import is_broker_cmdline, last_meaningful_line, parse_pid
from streamtrain.broker.properties import (
    default_controller_port,
    escape_property,
    new_cluster_id,
    render_initial_controllers,
    render_log4j2_properties,
    render_server_properties,
)
from streamtrain.broker.runtime import ensure_kafka_jars, parse_java_major, render_pom
from streamtrain.broker.single import LocalBroker
from streamtrain.cli.main import main
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
    assert props["min.insync.replicas"] == "1"  # Kafka's own default, made explicit
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


# -- local cluster -----------------------------------------------------------------------------

CLUSTER_PORTS = [(19092, 19093), (19094, 19095), (19096, 19097)]


def test_cluster_ports_are_consecutive_pairs_from_the_base_port() -> None:
    assert cluster_ports(9092, 3) == [(9092, 9093), (9094, 9095), (9096, 9097)]
    assert len(cluster_ports(9092, 5)) == 5
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        cluster_ports(65532, 3)


def test_initial_controllers_name_every_voter_with_its_directory_id() -> None:
    voters = [(1, "localhost", 9093, "AAAAAAAAAAAAAAAAAAAAAQ"), (2, "h", 9095, "dir-2")]
    assert render_initial_controllers(voters) == (
        "1@localhost:9093:AAAAAAAAAAAAAAAAAAAAAQ,2@h:9095:dir-2"
    )
    layout = ClusterLayout.new("localhost", CLUSTER_PORTS)
    entries = layout.initial_controllers.split(",")
    assert [entry.split(":")[0] for entry in entries] == [
        "1@localhost",
        "2@localhost",
        "3@localhost",
    ]
    assert [int(entry.split(":")[1]) for entry in entries] == [19093, 19095, 19097]
    directory_ids = [entry.split(":")[2] for entry in entries]
    assert directory_ids == [node.directory_id for node in layout.nodes]
    assert len(set(directory_ids)) == 3
    for directory_id in directory_ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", directory_id)


def test_three_node_cluster_configs(tmp_path: Path) -> None:
    cluster = LocalCluster(data_dir=tmp_path, ports=CLUSTER_PORTS)
    assert cluster.brokers == 3
    assert cluster.node_ids == (1, 2, 3)
    assert cluster.bootstrap == "localhost:19092,localhost:19094,localhost:19096"
    assert cluster.node_bootstrap(2) == "localhost:19094"
    quorum = "localhost:19093,localhost:19095,localhost:19097"
    for node_id, (port, controller_port) in zip(cluster.node_ids, CLUSTER_PORTS, strict=True):
        props = parse_properties(cluster.server_properties(node_id))
        assert props["node.id"] == str(node_id)
        assert props["process.roles"] == "broker,controller"
        assert props["listeners"] == (
            f"PLAINTEXT://localhost:{port},CONTROLLER://localhost:{controller_port}"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://localhost:{port}"
        assert props["controller.quorum.bootstrap.servers"] == quorum
        assert "controller.quorum.voters" not in props  # the voters come from the format step
        assert props["log.dirs"] == str(tmp_path / f"node-{node_id}" / "kafka-logs")
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["group.initial.rebalance.delay.ms"] == "0"
    assert not (tmp_path / CLUSTER_FILE).exists()  # nothing is written before `up`


def test_cluster_defaults_to_consecutive_ports_from_9092(tmp_path: Path) -> None:
    cluster = LocalCluster(data_dir=tmp_path)
    assert cluster.bootstrap == "localhost:9092,localhost:9094,localhost:9096"
    props = parse_properties(cluster.server_properties(3))
    assert props["listeners"] == "PLAINTEXT://localhost:9096,CONTROLLER://localhost:9097"
    five = LocalCluster(data_dir=tmp_path, brokers=5, base_port=29092, heap="256m")
    assert five.node_bootstrap(5) == "localhost:29100"
    props = parse_properties(five.server_properties(5))
    assert props["controller.quorum.bootstrap.servers"].count(",") == 4
    assert props["default.replication.factor"] == "3"  # capped at 3, not one per node
    assert props["min.insync.replicas"] == "2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"brokers": 1}, "use LocalBroker for 1"),
        ({"brokers": 2}, "3 or 5 brokers"),
        ({"brokers": 4}, "3 or 5 brokers"),
        ({"brokers": 7}, "3 or 5 brokers"),
        ({"ports": CLUSTER_PORTS[:2]}, "3 port pairs"),
        ({"ports": [(1, 2), (2, 3), (4, 5)]}, "share ports"),
        ({"ports": CLUSTER_PORTS, "base_port": 19092}, "either base_port or ports"),
        ({"heap": "lots"}, "heap"),
    ],
)
def test_invalid_cluster_settings_are_config_errors(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LocalCluster(data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_cluster_layout_round_trips_and_fixes_the_shape(tmp_path: Path) -> None:
    layout = ClusterLayout.new("localhost", CLUSTER_PORTS)
    assert not is_cluster_dir(tmp_path)
    layout.save(tmp_path)
    assert is_cluster_dir(tmp_path)
    assert ClusterLayout.load(tmp_path) == layout
    # Opened without ports, a cluster adopts the saved ones; different ones are refused.
    cluster = LocalCluster(data_dir=tmp_path)
    assert cluster.bootstrap == layout.bootstrap
    assert LocalCluster(data_dir=tmp_path, ports=CLUSTER_PORTS, brokers=3).brokers == 3
    with pytest.raises(ConfigError, match="another data directory"):
        LocalCluster(data_dir=tmp_path, base_port=29092)
    with pytest.raises(ConfigError, match="another data directory"):
        LocalCluster(data_dir=tmp_path, host="127.0.0.1")
    with pytest.raises(ConfigError, match="another data directory"):
        LocalCluster(data_dir=tmp_path, brokers=5)
    # The node directories share the cluster id and take their directory ids from the layout.
    quorum = layout.initial_controllers
    for node_id in cluster.node_ids:
        assert cluster.node_dir(node_id) == tmp_path / f"node-{node_id}"
    assert quorum.count("@") == 3

    (tmp_path / CLUSTER_FILE).write_text("{not json")
    with pytest.raises(BrokerError, match="not a streamtrain cluster layout"):
        LocalCluster(data_dir=tmp_path)


def test_single_broker_and_cluster_directories_do_not_mix(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "cluster.id").write_text("abc\n")
    with pytest.raises(ConfigError, match="single-node broker"):
        LocalCluster(data_dir=single)
    clustered = tmp_path / "cluster"
    clustered.mkdir()
    ClusterLayout.new("localhost", CLUSTER_PORTS).save(clustered)
    # Refused before Java or the jars are even looked for.
    with pytest.raises(ConfigError, match="3-broker cluster"):
        LocalBroker(data_dir=clustered, port=19092).up(wait_seconds=1)


def test_cluster_of_stopped_nodes_reports_and_stops_nothing(tmp_path: Path) -> None:
    # Ports 1-6: nothing listens there, so "not answering" is settled by a refused connection.
    cluster = LocalCluster(data_dir=tmp_path, ports=[(1, 2), (3, 4), (5, 6)])
    status = cluster.status(timeout=1)
    assert [node.node_id for node in status.nodes] == [1, 2, 3]
    assert (status.running_count, status.answering_count, status.healthy) == (0, 0, False)
    assert cluster.running_pids() == {1: None, 2: None, 3: None}
    assert cluster.down() is False
    assert cluster.stop_node(2) is False
    with pytest.raises(ConfigError, match="not 4"):
        cluster.stop_node(4)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).strip().splitlines()


@pytest.mark.parametrize("brokers", ["0", "2", "4", "7", "three"])
def test_cli_rejects_unsupported_cluster_sizes(
    brokers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["broker", "up", "--data-dir", str(tmp_path), "--brokers", brokers])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--brokers" in lines[0]
    assert not any(tmp_path.iterdir())


def test_cli_refuses_to_mix_broker_kinds_in_one_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clustered = tmp_path / "cluster"
    clustered.mkdir()
    ClusterLayout.new("localhost", [(1, 2), (3, 4), (5, 6)]).save(clustered)
    code, lines = _cli(["broker", "up", "--data-dir", str(clustered), "--brokers", "1"], capsys)
    assert code == 2 and len(lines) == 1
    assert "holds a 3-broker cluster" in lines[0]
    code, lines = _cli(["broker", "up", "--data-dir", str(clustered), "--port", "9092"], capsys)
    assert code == 2 and len(lines) == 1
    assert "another data directory" in lines[0]

    single = tmp_path / "single"
    (single / "kafka-logs").mkdir(parents=True)
    code, lines = _cli(["broker", "up", "--data-dir", str(single), "--brokers", "3"], capsys)
    assert code == 2 and len(lines) == 1
    assert "single-node broker" in lines[0]


def test_cli_status_and_down_find_the_cluster_by_its_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ClusterLayout.new("localhost", [(1, 2), (3, 4), (5, 6)]).save(tmp_path)
    code, lines = _cli(["broker", "status", "--data-dir", str(tmp_path)], capsys)
    assert code == 1
    assert lines[0].startswith("Kafka cluster at localhost:1,localhost:3,localhost:5:")
    assert "0/3 running, 0/3 answering" in lines[0]
    assert len(lines) == 4
    assert lines[2].strip().startswith("node 2 at localhost:3: not running, not answering")
    code, lines = _cli(["broker", "down", "--data-dir", str(tmp_path)], capsys)
    assert (code, lines) == (0, [f"No cluster node running from {tmp_path}"])
