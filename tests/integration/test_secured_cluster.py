"""streamtrain on a secured 3-node cluster (``broker up --secure --brokers 3``): a named trainer
with only ``broker acl grant --for train``'s rights learns a topic replicated on all three nodes
over SASL_SSL, exactly as River does; clients without TLS and a SASL login get nowhere.

The module runs a cluster of its own (own directory, own free ports): the session's
``kafka_cluster`` is not secured, and a cluster is secured when it is made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient
from oracle import offline
from river import datasets
from topics import fill

from streamtrain.broker import LocalCluster
from streamtrain.broker.process import broker_answers, free_ports
from streamtrain.broker.security import ADMIN_USER
from streamtrain.cli.main import main
from streamtrain.data.events import encode_event
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC

# Three JVMs start before the first test (up to 180 s on a loaded machine).
pytestmark = [pytest.mark.kafka, pytest.mark.timeout(480)]

EVENTS = 300


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A secured 3-node cluster on free ports, stopped at the end however the tests went."""
    ports = free_ports(9)  # (client, controller) per node, then the internal listeners
    cluster = LocalCluster(
        data_dir=tmp_path_factory.mktemp("kafka-secure-cluster"),
        ports=list(zip(ports[0:6:2], ports[1:6:2], strict=True)),
        internal_ports=ports[6:],
        secure=True,
        # Kafka's internal topics made at the first group join and transaction: one partition
        # each instead of 50 (times 3 replicas) is less work for a busy machine.
        extra_properties={
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
        },
    )
    try:  # up() may fail after starting nodes (creating its users): down() stops them too
        cluster.up(wait_seconds=180)
        yield cluster
    finally:
        cluster.down()
    assert not any(cluster.running_pids().values())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_train_with_the_granted_acls_over_sasl_ssl_equals_river(
    secure_cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unique_name: Callable[..., str],
) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", "secured-cluster-test-secret-0123456789")
    monkeypatch.delenv("STREAMTRAIN_CONFIG", raising=False)
    assert secure_cluster.security is not None
    admin: dict[str, Any] = {
        "bootstrap.servers": secure_cluster.bootstrap,
        **secure_cluster.security.client_options(ADMIN_USER),
    }
    topic, name = unique_name("sec"), unique_name("model")
    values = fill(
        secure_cluster.bootstrap,
        topic,
        [encode_event(x, y) for x, y in list(datasets.Phishing())[:EVENTS]],
        replication=3,
        config=admin,
    )[0]
    _, rocauc = offline(values)
    # As a user would: its settings from `broker up --secure`, its rights from `acl grant`.
    where = ["--data-dir", str(secure_cluster.data_dir)]
    config = tmp_path / "alice.toml"
    code, err = _run(capsys, "broker", "up", "--secure", *where, "--user", "alice",
                     "--client-config", str(config))  # fmt: skip
    assert code == 0, err
    code, err = _run(capsys, "broker", "acl", "grant", *where, "--user", "alice", "--for",
                     "train", "--topic", topic, "--name", name)  # fmt: skip
    assert code == 0, err

    code, err = _run(capsys, "train", "--config", str(config), "--topic", topic, "--name", name,
                     "--exit-when-idle", "1", "--view", "none",
                     "--summary", str(tmp_path / "summary.json"))  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["events_learned"] == EVENTS and summary["metrics"]["ROCAUC"] == rocauc
    # Input and checkpoints are replicated on every node.
    client = AdminClient(admin)  # kept alive until its futures are done
    described = client.describe_topics(TopicCollection([topic, DEFAULT_CHECKPOINT_TOPIC]))
    for future in described.values():
        for partition in future.result(timeout=30).partitions:
            assert len(partition.replicas) == 3 and len(partition.isr) == 3


def test_clients_without_tls_and_sasl_are_refused_by_every_node(
    secure_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(capsys, "produce", "--bootstrap-servers", secure_cluster.bootstrap,
                     "--connect-timeout", "3", "--limit", "1")  # fmt: skip
    assert code == 3, err  # nobody answered a plaintext client
    assert secure_cluster.security is not None
    login = secure_cluster.security.client_options(ADMIN_USER)
    for node in secure_cluster.node_ids:
        bootstrap = secure_cluster.node_bootstrap(node)
        assert not broker_answers(bootstrap, timeout=1)
        assert broker_answers(bootstrap, timeout=5, config=login)
