"""A real Kafka broker for the integration tests.

The session starts one :class:`LocalBroker` on free ports in a temporary directory and stops it
at the end. Set ``STREAMTRAIN_TEST_BOOTSTRAP=host:port`` to run against a broker you already
have (say the docker-compose one); it is then neither started nor stopped.

Tests of broker failover ask for ``kafka_cluster`` instead: a 3-node :class:`LocalCluster`
started the first time a test requests it (and only then), stopped at the end of the session.
It is always a cluster of the session's own, since tests stop and restart its nodes.

Tests of Avro, Protobuf and JSON Schema topics ask for ``schema_registry``: a local Apicurio
Registry on a free port, likewise started only when first requested. Set
``STREAMTRAIN_TEST_SCHEMA_REGISTRY=URL`` to use a registry you already have.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from streamtrain.broker import LocalBroker, LocalCluster
from streamtrain.broker.process import broker_answers, free_ports
from streamtrain.schema_registry import LocalSchemaRegistry, registry_answers

EXTERNAL_BOOTSTRAP_ENV = "STREAMTRAIN_TEST_BOOTSTRAP"
EXTERNAL_REGISTRY_ENV = "STREAMTRAIN_TEST_SCHEMA_REGISTRY"


@pytest.fixture(scope="session")
def local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    """The session's broker, or None when the tests use ``$STREAMTRAIN_TEST_BOOTSTRAP``.

    Tests may stop and restart it; it keeps its ports and data across restarts.
    """
    if os.environ.get(EXTERNAL_BOOTSTRAP_ENV):
        yield None
        return
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        data_dir=tmp_path_factory.mktemp("kafka"),
        port=port,
        controller_port=controller_port,
        # A transaction a kill -9 left open is aborted once its timeout has passed, at the
        # broker's next sweep: every 10 s by default, every second here. Tests that read the
        # committed state after a kill wait that much less; nothing else changes.
        extra_properties={"transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000"},
    )
    broker.up(wait_seconds=120)
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A secured broker (TLS, SASL/SCRAM-SHA-512, ACLs denying by default) on free ports,
    started the first time a test asks for it, stopped at the end of the session. Its
    ``security`` has the admin's and the users' passwords."""
    port, controller_port, internal_port = free_ports(3)
    broker = LocalBroker(
        data_dir=tmp_path_factory.mktemp("kafka-secure"),
        port=port,
        controller_port=controller_port,
        internal_port=internal_port,
        secure=True,
    )
    broker.up(wait_seconds=120)
    try:
        yield broker
    finally:
        broker.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_broker: LocalBroker | None) -> str:
    """``host:port`` of a running Kafka broker."""
    if local_broker is not None:
        return local_broker.bootstrap
    bootstrap = os.environ[EXTERNAL_BOOTSTRAP_ENV]
    if not broker_answers(bootstrap, timeout=15):
        pytest.fail(f"{EXTERNAL_BOOTSTRAP_ENV}={bootstrap} but no Kafka broker answers there")
    return bootstrap


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """A factory of topic/group names no other test (or earlier run) has used."""

    def make(prefix: str = "t") -> str:
        # Only [a-z0-9-]: Kafka warns about topics that differ just by "." versus "_".
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture(name="free_ports")
def free_ports_fixture() -> Callable[[int], list[int]]:
    """``free_ports(n)``: n ports to start a broker of a test's own on."""
    return free_ports


@pytest.fixture(scope="session")
def free_port_pairs() -> Callable[[int], list[tuple[int, int]]]:
    """``free_port_pairs(n)``: n (broker, controller) port pairs for a cluster of a test's own.

    Session-scoped, so module- and session-scoped fixtures can use it too.
    """

    def pairs(count: int) -> list[tuple[int, int]]:
        ports = free_ports(2 * count)
        return list(zip(ports[::2], ports[1::2], strict=True))

    return pairs


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    free_port_pairs: Callable[[int], list[tuple[int, int]]],
) -> Iterator[LocalCluster]:
    """A running 3-node Kafka cluster (KRaft quorum of 3, replication factor 3,
    ``min.insync.replicas=2``); ``kafka_cluster.bootstrap`` lists all three nodes.

    Tests may stop and restart nodes (``stop_node``/``start_node``, ids 1-3) but must leave
    every node running again, with its replicas back in sync, for the next test.
    """
    cluster = LocalCluster(
        data_dir=tmp_path_factory.mktemp("kafka-cluster"), ports=free_port_pairs(3)
    )
    cluster.up(wait_seconds=180)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def local_schema_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalSchemaRegistry | None]:
    """The session's own schema registry, or None when the tests use
    ``$STREAMTRAIN_TEST_SCHEMA_REGISTRY``."""
    if os.environ.get(EXTERNAL_REGISTRY_ENV):
        yield None
        return
    registry = LocalSchemaRegistry(data_dir=tmp_path_factory.mktemp("registry"), port=0)
    registry.up(wait_seconds=120)
    try:
        yield registry
    finally:
        registry.down()


@pytest.fixture(scope="session")
def schema_registry(local_schema_registry: LocalSchemaRegistry | None) -> str:
    """The Confluent-compatible API root of a running schema registry (compatibility BACKWARD).

    Schemas registered by one test stay for the next: tests use subjects of their own.
    """
    if local_schema_registry is not None:
        return local_schema_registry.url
    url = os.environ[EXTERNAL_REGISTRY_ENV]
    if not registry_answers(url, timeout=15):
        pytest.fail(f"{EXTERNAL_REGISTRY_ENV}={url} but no schema registry answers there")
    return url
