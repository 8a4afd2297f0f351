"""One local Kafka node, broker and controller in one JVM: :class:`LocalBroker`.

Its data directory is laid out as :mod:`streamtrain.broker.node` describes; with
``secure=True`` (or once secured) it also holds ``security/`` (see
:mod:`streamtrain.broker.security`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from streamtrain.broker.layout import ClusterLayout
from streamtrain.broker.node import DEFAULT_HEAP, _Node, default_data_dir
from streamtrain.broker.properties import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    _checked_port,
    default_controller_port,
)
from streamtrain.broker.runtime import ensure_kafka_jars, find_java
from streamtrain.broker.security import ADMIN_USER, BrokerSecurity, admin_last, create_users
from streamtrain.errors import BrokerError, ConfigError


class LocalBroker(_Node):
    """One local Kafka node (broker and controller in one JVM) owned through its data directory.

    Any process can manage the broker another one started: the pid file and the process's
    command line identify it, and a lock file serialises ``up`` and ``down``.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        secure: bool = False,
        internal_port: int | None = None,
    ) -> None:
        port = _checked_port(port, "broker port")
        data_dir = (
            Path(data_dir).expanduser().absolute() if data_dir is not None else default_data_dir()
        )
        super().__init__(
            data_dir=data_dir,
            node_id=1,
            host=host,
            port=port,
            controller_port=(
                controller_port if controller_port is not None else default_controller_port(port)
            ),
            heap=heap,
            extra_properties=extra_properties,
            cache_dir=cache_dir,
            # A data directory once secured stays so: its users and ACLs live in its metadata.
            security=BrokerSecurity.load(data_dir),
            internal_port=internal_port,
        )
        self.secure = secure or self.security is not None
        if internal_port is None and self.security is not None:
            # Kept from the last start, as `status` and `down` must find it.
            self.internal_port = self._configured_internal_port() or self.internal_port

    def __repr__(self) -> str:
        return f"LocalBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    def up(self, wait_seconds: float = 60) -> bool:
        """Start the broker and wait until it answers a metadata request.

        Returns True if it started one, False if a broker from this data directory was already
        running. Raises :class:`BrokerError` (after stopping anything it started) when the
        ports are taken, the JVM exits, or it does not answer within ``wait_seconds``, and
        :class:`ConfigError` if the directory holds a :class:`LocalCluster`.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            layout = ClusterLayout.load(self.data_dir)
            if layout is not None:
                raise ConfigError(
                    f"{self.data_dir} holds a {len(layout.nodes)}-broker cluster, not a single "
                    "broker; start it as a cluster or use another data directory"
                )
            pid = self.running_pid()
            if pid is not None:
                running_at = self._configured_bootstrap()
                if running_at is not None and running_at != self.bootstrap:
                    raise BrokerError(
                        f"the broker in {self.data_dir} is already running at {running_at} "
                        f"(pid {pid}), not {self.bootstrap}; stop it first"
                    )
                if self.secure and self.security is None:
                    raise ConfigError(
                        f"the broker in {self.data_dir} runs unsecured; stop it, then "
                        "`up --secure` secures it"
                    )
                return False
            libs = ensure_kafka_jars(self.cache_dir)
            java = find_java()
            if self.secure:
                # Made at first start; certificates lost since are made anew (users are kept).
                self.security = BrokerSecurity.ensure(self.data_dir, self.host)
            self._check_ports()
            self._write_config()
            self._format_storage(java, libs)
            self._start(java, libs, wait_seconds)
            if self.security is not None:
                # Users live in the metadata log: those stored, the admin first, are made anew.
                self._create_users(admin_last(self.security.users()))
        return True

    def add_user(self, name: str, timeout: float = 30.0) -> bool:
        """Make sure the running secured broker has SCRAM user ``name`` (with a new random
        password if it had none); True if the user is new. The admin user is (re)created too,
        so this also completes a first start."""
        if self.security is None:
            raise ConfigError(f"the broker in {self.data_dir} is not secured (`up --secure`)")
        created = self.security.add_user(name)
        self._create_users([ADMIN_USER, name] if name != ADMIN_USER else [name], timeout)
        return created

    def _create_users(self, names: list[str], timeout: float = 30.0) -> None:
        assert self.security is not None
        create_users(self.security, self.internal_bootstrap, self.bootstrap, names, timeout)
