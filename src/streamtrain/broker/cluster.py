"""A local Kafka cluster: 3 (or 5) nodes on one machine forming one cluster and one controller
quorum::

    <data_dir>/cluster.json               the layout: node ids, ports, cluster and directory ids
    <data_dir>/node-<id>/                 one node, laid out like a LocalBroker's data directory

Each node is a :class:`~streamtrain.broker.node._Node`, the machinery
:class:`~streamtrain.broker.single.LocalBroker` runs on; the layout is a
:class:`~streamtrain.broker.layout.ClusterLayout`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from streamtrain.broker.layout import ClusterLayout, cluster_internal_ports, cluster_ports
from streamtrain.broker.node import (
    CLUSTER_ID_FILE,
    DEFAULT_HEAP,
    LOCK_FILE,
    LOG_DIRS,
    PID_FILE,
    _await_answers,
    _Launch,
    _Node,
    default_data_dir,
)
from streamtrain.broker.process import _lock_file
from streamtrain.broker.properties import DEFAULT_HOST, DEFAULT_PORT
from streamtrain.broker.runtime import ensure_kafka_jars, find_java
from streamtrain.broker.security import ADMIN_USER, BrokerSecurity, admin_last, create_users
from streamtrain.errors import ConfigError

NODE_DIR_PREFIX = "node-"
# Odd sizes only: a quorum of 2 or 4 voters survives no more lost nodes than one of 1 or 3.
CLUSTER_SIZES = (3, 5)
DEFAULT_CLUSTER_BROKERS = 3
# Replicas of each partition in a cluster (and min.insync.replicas one less): one node may be
# down while acks=all writes and transactions still succeed.
CLUSTER_REPLICATION_FACTOR = 3
_T = TypeVar("_T")


@dataclass(frozen=True)
class NodeStatus:
    """One node as :meth:`LocalCluster.status` found it."""

    node_id: int
    running: bool
    """A JVM started from this node's directory is alive."""
    pid: int | None
    port: int
    controller_port: int
    bootstrap: str
    answering: bool
    """A broker answered a metadata request at this node's own address."""
    data_dir: Path
    log_path: Path


@dataclass(frozen=True)
class ClusterStatus:
    """What :meth:`LocalCluster.status` found, node by node."""

    bootstrap: str
    data_dir: Path
    nodes: tuple[NodeStatus, ...]

    @property
    def running_count(self) -> int:
        return sum(node.running for node in self.nodes)

    @property
    def answering_count(self) -> int:
        return sum(node.answering for node in self.nodes)

    @property
    def healthy(self) -> bool:
        """Every node answers."""
        return self.answering_count == len(self.nodes)


class LocalCluster:
    """A local Kafka cluster: ``brokers`` combined broker+controller JVMs on this machine.

    The controllers form a KRaft quorum of ``brokers`` voters, so the cluster keeps working
    with any minority of nodes stopped. Cluster-wide defaults suit failover tests: replication
    factor 3 (for new topics and Kafka's internal ones) and ``min.insync.replicas=2``, so
    ``acks=all`` writes and transactions succeed with one node down.

    Files live under one data directory::

        <data_dir>/cluster.json    the layout (see :class:`ClusterLayout`); marks a cluster
        <data_dir>/node-<id>/      one node, laid out like a LocalBroker's data directory

    Node ids are 1 to ``brokers``; node ``id`` listens on ``base_port + 2 * (id - 1)`` for
    clients and the port after it for the controller quorum, unless ``ports`` lists the
    (broker, controller) pairs. An existing cluster keeps the host and ports it was created
    with: passing None adopts them, anything else must match.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        brokers: int | None = None,
        host: str | None = None,
        base_port: int | None = None,
        ports: Sequence[tuple[int, int]] | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        secure: bool = False,
        internal_ports: Sequence[int] | None = None,
    ) -> None:
        self.data_dir = (
            Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
        )
        saved = ClusterLayout.load(self.data_dir)
        if brokers is None:
            brokers = len(saved.nodes) if saved is not None else DEFAULT_CLUSTER_BROKERS
        if brokers not in CLUSTER_SIZES:
            sizes = " or ".join(str(n) for n in CLUSTER_SIZES)
            raise ConfigError(
                f"a local cluster has {sizes} brokers (an odd number, so a majority of the "
                f"controller quorum survives a lost node), got {brokers}; use LocalBroker for 1"
            )
        if host is None:
            host = saved.host if saved is not None else DEFAULT_HOST
        if ports is not None:
            if base_port is not None:
                raise ConfigError("pass either base_port or ports, not both")
            node_ports = [(int(p), int(c)) for p, c in ports]
            if len(node_ports) != brokers:
                raise ConfigError(f"{brokers} brokers need {brokers} port pairs, got {len(ports)}")
        elif base_port is not None or saved is None:
            node_ports = cluster_ports(
                base_port if base_port is not None else DEFAULT_PORT, brokers
            )
        else:
            node_ports = saved.ports
        internal: list[int] | None = None
        if saved is not None:
            if secure and not saved.secured:
                raise ConfigError(
                    f"the cluster in {self.data_dir} was made without --secure; a cluster is "
                    "secured when it is made (its nodes need a port more), so use another "
                    "data directory"
                )
        elif secure:
            if internal_ports is not None:
                internal = [int(p) for p in internal_ports]
            elif ports is None:
                base = base_port if base_port is not None else DEFAULT_PORT
                internal = cluster_internal_ports(base, brokers)
            else:
                raise ConfigError("a secured cluster on given ports needs internal_ports too")
            if len(internal) != brokers:
                raise ConfigError(f"{brokers} brokers need {brokers} internal ports")
        flat = [port for pair in node_ports for port in pair] + (internal or [])
        if len(set(flat)) != len(flat):
            raise ConfigError(f"cluster nodes cannot share ports: {node_ports}")
        if saved is not None:
            if brokers != len(saved.nodes):
                wanted = f"{brokers} brokers"
            elif (host, node_ports) != (saved.host, saved.ports):
                wanted = f"{host} ports {_pairs(node_ports)}"
            else:
                wanted = ""
            if wanted:
                raise ConfigError(
                    f"the cluster in {self.data_dir} has {len(saved.nodes)} brokers on "
                    f"{saved.host} ports {_pairs(saved.ports)}, not {wanted}; its controller "
                    "addresses are part of its storage, so use another data directory"
                )
        elif _holds_single_broker(self.data_dir):
            raise ConfigError(
                f"{self.data_dir} holds a single-node broker, not a cluster; "
                "use another data directory for the cluster"
            )
        self.host = host
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.cache_dir = cache_dir
        self._layout = saved if saved is not None else ClusterLayout.new(host, node_ports, internal)
        # Secured: TLS and SASL for clients, mutual TLS between the nodes (broker/security.py);
        # one certificate for every node, as they share the host.
        self.secure = self._layout.secured
        self.security = BrokerSecurity.load(self.data_dir) if self.secure else None
        self._nodes = self._make_nodes(self._layout)

    def __repr__(self) -> str:
        return f"LocalCluster(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    @property
    def brokers(self) -> int:
        return len(self._nodes)

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(node.node_id for node in self._nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated: a client survives any one of them
        being down."""
        return self._layout.bootstrap

    @property
    def replication_factor(self) -> int:
        return min(CLUSTER_REPLICATION_FACTOR, len(self._nodes))

    def node_bootstrap(self, node_id: int) -> str:
        """``host:port`` of one node."""
        return self._node(node_id).bootstrap

    def node_dir(self, node_id: int) -> Path:
        return self._node(node_id).data_dir

    def node_log_path(self, node_id: int) -> Path:
        return self._node(node_id).log_path

    def server_properties(self, node_id: int) -> str:
        """The ``server.properties`` node ``node_id`` is started with."""
        return self._node(node_id).server_properties()

    def running_pids(self) -> dict[int, int | None]:
        """Node id to the pid of its running JVM (None if it is not running)."""
        return {node.node_id: node.running_pid() for node in self._nodes}

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, wait_seconds: float = 90) -> bool:
        """Start every node that is not running, all at once, and wait until each answers.

        Returns False if all were already running. Raises :class:`BrokerError` (after stopping
        the nodes it started) when a port is taken, a JVM exits, or a node does not answer
        within ``wait_seconds``.
        """
        started = self._start_nodes(self.node_ids, wait_seconds)
        if started and self.security is not None:
            # Users live in the metadata log: those stored, the admin first, are made anew.
            self._create_users(admin_last(self.security.users()))
        return started

    @property
    def internal_bootstrap(self) -> str:
        """Where streamtrain itself reaches the nodes (their internal listeners if secured)."""
        if not self._layout.secured:
            return self.bootstrap
        return ",".join(f"{self.host}:{node.internal_port}" for node in self._layout.nodes)

    def add_user(self, name: str, timeout: float = 30.0) -> bool:
        """As :meth:`LocalBroker.add_user <streamtrain.broker.single.LocalBroker.add_user>`."""
        if self.security is None:
            raise ConfigError(f"the cluster in {self.data_dir} is not secured")
        created = self.security.add_user(name)
        self._create_users(admin_last({ADMIN_USER, name}), timeout)
        return created

    def _create_users(self, names: list[str], timeout: float = 30.0) -> None:
        assert self.security is not None
        create_users(self.security, self.internal_bootstrap, self.bootstrap, names, timeout)

    def start_node(self, node_id: int, wait_seconds: float = 60) -> bool:
        """Start one node (after :meth:`stop_node`) and wait until it answers.

        It rejoins on its own: it catches up with the metadata log, and the partition leaders
        add its replicas back to the ISR once they catch up. A lone node cannot answer without
        a majority of the quorum, so most of the cluster must be running. Returns False if it
        already ran.
        """
        self._node(node_id)
        return self._start_nodes((node_id,), wait_seconds)

    def stop_node(self, node_id: int, timeout: float = 30, *, hard: bool = False) -> bool:
        """Stop one node: gracefully (SIGTERM, so it hands its partition leadership over in a
        controlled shutdown; SIGKILL after ``timeout`` seconds) or, with ``hard``, SIGKILL at
        once as a crash would. Returns False if it was not running."""
        node = self._node(node_id)
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            return node._stop(timeout, hard=hard)

    def down(self, timeout: float = 30) -> bool:
        """Stop every node at once (SIGTERM, SIGKILL after ``timeout`` seconds).

        Returns False if no node was running.
        """
        if not self.data_dir.is_dir():
            return False
        with self._locked():
            stopped = _in_parallel(
                [partial(node._stop, timeout, hard=False) for node in self._nodes]
            )
        return any(stopped)

    def status(self, timeout: float = 3.0) -> ClusterStatus:
        """Each node: whether its JVM runs and whether it answers at its own address."""

        def one(node: _Node) -> NodeStatus:
            pid = node.running_pid()
            return NodeStatus(
                node_id=node.node_id,
                running=pid is not None,
                pid=pid,
                port=node.port,
                controller_port=node.controller_port,
                bootstrap=node.bootstrap,
                answering=node.answers(timeout),
                data_dir=node.data_dir,
                log_path=node.log_path,
            )

        nodes = _in_parallel([partial(one, node) for node in self._nodes])
        return ClusterStatus(bootstrap=self.bootstrap, data_dir=self.data_dir, nodes=tuple(nodes))

    # -- internals ---------------------------------------------------------------------------

    def _make_nodes(self, layout: ClusterLayout) -> tuple[_Node, ...]:
        return tuple(
            _Node(
                data_dir=self.data_dir / f"{NODE_DIR_PREFIX}{spec.node_id}",
                node_id=spec.node_id,
                host=layout.host,
                port=spec.port,
                controller_port=spec.controller_port,
                heap=self.heap,
                extra_properties=self.extra_properties,
                cache_dir=self.cache_dir,
                name=f"Kafka node {spec.node_id}",
                controllers=layout.controllers,
                replication_factor=min(CLUSTER_REPLICATION_FACTOR, len(layout.nodes)),
                initial_controllers=layout.initial_controllers,
                cluster_id=layout.cluster_id,
                security=self.security,
                internal_port=spec.internal_port,
            )
            for spec in layout.nodes
        )

    def _node(self, node_id: int) -> _Node:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise ConfigError(f"the cluster has nodes {list(self.node_ids)}, not {node_id}")

    def _start_nodes(self, node_ids: Sequence[int], wait_seconds: float) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._adopt_layout()
            nodes = [self._node(node_id) for node_id in node_ids]
            with ExitStack() as locks:
                for node in nodes:
                    node.data_dir.mkdir(parents=True, exist_ok=True)
                    locks.enter_context(node._locked())
                todo = [node for node in nodes if node.running_pid() is None]
                if not todo:
                    return False
                libs = ensure_kafka_jars(self.cache_dir)
                java = find_java()
                if self.secure:
                    # Made at first start; certificates lost since are made anew.
                    self.security = BrokerSecurity.ensure(self.data_dir, self.host)
                    self._nodes = self._make_nodes(self._layout)
                    todo = [self._node(node.node_id) for node in todo]
                for node in todo:
                    node._check_ports()
                for node in todo:
                    node._write_config()
                _in_parallel([partial(node._format_storage, java, libs) for node in todo])
                launched: list[tuple[_Node, _Launch]] = []
                try:
                    for node in todo:
                        launched.append((node, node._launch(java, libs)))
                    _await_answers(launched, wait_seconds)
                except BaseException:
                    _in_parallel([partial(node._abort, launch) for node, launch in launched])
                    raise
        return True

    def _adopt_layout(self) -> None:
        """Save the layout on first start; adopt one another process saved meanwhile."""
        saved = ClusterLayout.load(self.data_dir)
        if saved is None:
            self._layout.save(self.data_dir)
        elif saved != self._layout:
            if saved.host != self._layout.host or saved.ports != self._layout.ports:
                raise ConfigError(
                    f"the cluster in {self.data_dir} was just created on {saved.bootstrap} "
                    f"by another process, not on {self.bootstrap}"
                )
            self._layout = saved
            self._nodes = self._make_nodes(saved)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _lock_file(self.data_dir / LOCK_FILE):
            yield


def _pairs(ports: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{port}/{controller_port}" for port, controller_port in ports)


def _holds_single_broker(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in (CLUSTER_ID_FILE, LOG_DIRS, PID_FILE))


def _in_parallel(calls: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run ``calls`` in threads; their results in order, or the first one's exception once all
    have finished (so nothing is left running behind the caller's back)."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]
