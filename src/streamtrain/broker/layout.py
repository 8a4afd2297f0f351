"""The shape of a local cluster: node ids, ports, cluster and directory ids.

Saved as ``<data_dir>/cluster.json`` when the cluster's storage is first formatted; both
:class:`~streamtrain.broker.cluster.LocalCluster` and
:class:`~streamtrain.broker.single.LocalBroker` (which refuses a cluster's directory) read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamtrain.broker.properties import (
    _checked_port,
    new_cluster_id,
    render_initial_controllers,
)
from streamtrain.broker.runtime import KAFKA_VERSION
from streamtrain.errors import BrokerError

CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterNodeSpec:
    """One node of a :class:`ClusterLayout`."""

    node_id: int
    port: int
    controller_port: int
    directory_id: str
    """The metadata log directory's id, part of the controller quorum's identity (KIP-853)."""
    internal_port: int | None = None
    """A secured cluster's inter-broker listener (see broker/security.py); None when plain."""


@dataclass(frozen=True)
class ClusterLayout:
    """The shape of a local cluster, fixed when its storage is first formatted.

    Saved as ``<data_dir>/cluster.json``, which is also what marks a data directory as a
    cluster's. The controllers' addresses and directory ids are written into every node's
    formatted metadata log, so neither the host nor the ports can change afterwards.
    """

    cluster_id: str
    host: str
    nodes: tuple[ClusterNodeSpec, ...]

    @classmethod
    def new(
        cls,
        host: str,
        ports: Sequence[tuple[int, int]],
        internal_ports: Sequence[int] | None = None,
    ) -> ClusterLayout:
        internal: Sequence[int | None] = (
            list(internal_ports) if internal_ports is not None else [None] * len(ports)
        )
        return cls(
            cluster_id=new_cluster_id(),
            host=host,
            nodes=tuple(
                ClusterNodeSpec(
                    node_id=index + 1,
                    port=port,
                    controller_port=controller_port,
                    # Directory ids are Kafka Uuids, the same format as cluster ids.
                    directory_id=new_cluster_id(),
                    internal_port=internal[index],
                )
                for index, (port, controller_port) in enumerate(ports)
            ),
        )

    @property
    def secured(self) -> bool:
        return all(node.internal_port is not None for node in self.nodes)

    @property
    def ports(self) -> list[tuple[int, int]]:
        return [(node.port, node.controller_port) for node in self.nodes]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{node.port}" for node in self.nodes)

    @property
    def controllers(self) -> list[str]:
        return [f"{self.host}:{node.controller_port}" for node in self.nodes]

    @property
    def initial_controllers(self) -> str:
        """The ``kafka-storage format --initial-controllers`` value: every voter as
        ``id@host:port:directory-id``."""
        return render_initial_controllers(
            [
                (node.node_id, self.host, node.controller_port, node.directory_id)
                for node in self.nodes
            ]
        )

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "kafka_version": KAFKA_VERSION,
                    "cluster_id": self.cluster_id,
                    "host": self.host,
                    "nodes": [
                        {
                            "node_id": node.node_id,
                            "port": node.port,
                            "controller_port": node.controller_port,
                            "directory_id": node.directory_id,
                            **(
                                {"internal_port": node.internal_port}
                                if node.internal_port is not None
                                else {}
                            ),
                        }
                        for node in self.nodes
                    ],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterLayout:
        raw = json.loads(text)
        return cls(
            cluster_id=str(raw["cluster_id"]),
            host=str(raw["host"]),
            nodes=tuple(
                ClusterNodeSpec(
                    node_id=int(node["node_id"]),
                    port=int(node["port"]),
                    controller_port=int(node["controller_port"]),
                    directory_id=str(node["directory_id"]),
                    internal_port=(int(node["internal_port"]) if "internal_port" in node else None),
                )
                for node in raw["nodes"]
            ),
        )

    @classmethod
    def load(cls, data_dir: Path) -> ClusterLayout | None:
        """The layout saved in ``data_dir``, or None if it is not a cluster's directory."""
        path = data_dir / CLUSTER_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise BrokerError(f"cannot read {path}: {err.strerror or err}") from err
        try:
            layout = cls.from_json(text)
        except (ValueError, KeyError, TypeError) as err:
            raise BrokerError(f"{path} is not a streamtrain cluster layout: {err}") from err
        if not layout.nodes:
            raise BrokerError(f"{path} lists no nodes")
        return layout

    def save(self, data_dir: Path) -> None:
        # Written whole or not at all: a torn file would orphan the formatted storage.
        path = data_dir / CLUSTER_FILE
        partial = path.with_name(f".{CLUSTER_FILE}.partial")
        partial.write_text(self.to_json(), encoding="utf-8")
        os.replace(partial, path)


def is_cluster_dir(data_dir: Path) -> bool:
    """True if ``data_dir`` holds a :class:`LocalCluster` (it has a ``cluster.json``)."""
    return (Path(data_dir).expanduser() / CLUSTER_FILE).is_file()


def cluster_ports(base_port: int, brokers: int) -> list[tuple[int, int]]:
    """(broker, controller) ports of each node: ``base_port`` and the next one for the first,
    the following two for the second, and so on."""
    ports = [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(brokers)]
    for port, controller_port in ports:
        _checked_port(port, "broker port")
        _checked_port(controller_port, "controller port")
    return ports


def cluster_internal_ports(base_port: int, brokers: int) -> list[int]:
    """A secured cluster's inter-broker ports, one per node, after all the (broker,
    controller) pairs of :func:`cluster_ports`."""
    return [_checked_port(base_port + 2 * brokers + i, "internal port") for i in range(brokers)]
