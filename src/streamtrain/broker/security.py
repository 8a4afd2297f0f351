"""A secured local broker: its listeners, users and the client settings that reach it.

``streamtrain broker up --secure`` makes ``<data_dir>/security/`` (mode 0700) at first start;
a data directory that has it is secured on every later start too::

    security/ca.pem        the local CA's certificate (clients trust it)
    security/broker.pem    the broker's key and certificate (0600)
    security/users.json    SCRAM user names and their random passwords (0600)

The listeners:

* ``CLIENT`` (``--port``): SASL_SSL with SCRAM-SHA-512, the only one clients use.
* ``INTERNAL`` (inter-broker) and ``CONTROLLER``: TLS with client certificates required, on the
  given host. Only the broker's own certificate (CN ``streamtrain-broker``, a super user) can
  authenticate there, so these are not an open back door for local processes, as plaintext
  internal listeners with ``User:ANONYMOUS`` as super user would be. streamtrain also uses them
  itself, with that certificate, to see that the broker answers and to create SCRAM users
  (they must exist before anyone can log in over ``CLIENT``), so no password ever appears on a
  command line.

Authorization is KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``:
a user can do only what ACLs grant (``streamtrain broker acl grant``). The ``admin`` user is a
super user for administration over ``CLIENT``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamtrain.broker.tls import (
    BROKER_FILE,
    BROKER_PRINCIPAL,
    CA_FILE,
    TlsFiles,
    ensure_tls,
    write_private,
)
from streamtrain.errors import BrokerError, ConfigError

SECURITY_DIR = "security"
USERS_FILE = "users.json"
ADMIN_USER = "admin"
DEFAULT_USER = "streamtrain"
SCRAM_MECHANISM = "SCRAM-SHA-512"
_SCRAM_ITERATIONS = 8192
_USER_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def default_internal_port(port: int) -> int:
    """The internal (inter-broker) listener's port of a secured broker on ``port``: two above,
    the controller having the one above."""
    return port + 2 if port < 65534 else port - 2


def check_user_name(name: str) -> str:
    """``name`` if it can be a SCRAM user (letters, digits, ``. _ -``; 1-64 characters)."""
    if not _USER_RE.fullmatch(name):
        raise ConfigError(f"user name {name!r} must be 1-64 characters of letters, digits, . _ -")
    return name


@dataclass(frozen=True)
class BrokerSecurity:
    """The security material of one secured data directory."""

    directory: Path
    tls: TlsFiles

    @classmethod
    def load(cls, data_dir: Path) -> BrokerSecurity | None:
        """The data directory's security material, or None if it is not secured."""
        directory = data_dir / SECURITY_DIR
        if not (directory / USERS_FILE).is_file():
            return None
        return cls(directory, TlsFiles(directory / CA_FILE, directory / BROKER_FILE))

    @classmethod
    def ensure(cls, data_dir: Path, host: str) -> BrokerSecurity:
        """The data directory's security material, made now (certificates, an admin password)
        if missing."""
        directory = data_dir / SECURITY_DIR
        security = cls(directory, ensure_tls(directory, host))
        if not (directory / USERS_FILE).is_file():
            security._save_users({ADMIN_USER: _new_password()})
        return security

    # -- users ---------------------------------------------------------------------------

    def users(self) -> dict[str, str]:
        """Every user name and its password."""
        path = self.directory / USERS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BrokerError(f"cannot read the broker's users from {path}: {err}") from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise BrokerError(f"{path} is not a map of user names to passwords")
        return raw

    def add_user(self, name: str) -> bool:
        """Give ``name`` a random password unless it has one; True if it is new."""
        users = self.users()
        if check_user_name(name) in users:
            return False
        users[name] = _new_password()
        self._save_users(users)
        return True

    def _save_users(self, users: Mapping[str, str]) -> None:
        write_private(self.directory / USERS_FILE, (json.dumps(users, indent=2) + "\n").encode())

    # -- configuration -------------------------------------------------------------------

    def server_properties(
        self, *, host: str, port: int, internal_port: int | None, controller_port: int
    ) -> dict[str, str]:
        """The properties that secure a node (``internal_port`` None for a controller only)."""
        listeners = [f"CONTROLLER://{host}:{controller_port}"]
        props: dict[str, str] = {}
        if internal_port is not None:
            listeners[:0] = [f"CLIENT://{host}:{port}", f"INTERNAL://{host}:{internal_port}"]
            props["advertised.listeners"] = (
                f"CLIENT://{host}:{port},INTERNAL://{host}:{internal_port}"
            )
            props["inter.broker.listener.name"] = "INTERNAL"
        props.update(
            {
                "listeners": ",".join(listeners),
                "listener.security.protocol.map": ("CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"),
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.tls.broker_pem),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.tls.ca_pem),
                "listener.name.internal.ssl.client.auth": "required",
                "listener.name.controller.ssl.client.auth": "required",
                "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                "listener.name.client.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "authorizer.class.name": (
                    "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
                ),
                "allow.everyone.if.no.acl.found": "false",
                "super.users": f"{BROKER_PRINCIPAL};User:{ADMIN_USER}",
            }
        )
        return props

    def internal_client_config(self) -> dict[str, Any]:
        """librdkafka settings for the INTERNAL listener, authenticated as the broker."""
        key, cert = self.tls.broker_key_and_cert()
        return {
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.tls.ca_pem),
            "ssl.key.pem": key,
            "ssl.certificate.pem": cert,
        }

    def client_options(self, user: str) -> dict[str, str]:
        """librdkafka settings with which ``user`` reaches the CLIENT listener."""
        password = self.users().get(user)
        if password is None:
            raise ConfigError(
                f"the broker has no user {user!r} (`broker up --secure --user` adds one)"
            )
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.tls.ca_pem),
        }

    def render_client_config(self, bootstrap: str, user: str) -> str:
        """A streamtrain config file (``--config``) with ``user``'s settings for ``bootstrap``."""
        lines = [
            f"# {user} on the secured local broker at {bootstrap}; keep this file private.",
            f"bootstrap_servers = {json.dumps(bootstrap)}",
            "",
            "[kafka]",
            *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in self.client_options(user).items()),
        ]
        return "\n".join(lines) + "\n"

    def create_scram_users(
        self, internal_bootstrap: str, names: Iterable[str], timeout: float = 30.0
    ) -> None:
        """Create (or reset to the stored password) ``names`` in the broker, over the INTERNAL
        listener as the broker itself."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialAlteration,
            UserScramCredentialUpsertion,
        )

        users = self.users()
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(name, info, users[name].encode()) for name in names
        ]
        admin = AdminClient(
            {"bootstrap.servers": internal_bootstrap, **self.internal_client_config()}
        )
        futures = admin.alter_user_scram_credentials(upserts, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as err:
                raise BrokerError(f"cannot create the broker's user {name!r}: {err}") from err


def create_users(
    security: BrokerSecurity,
    internal_bootstrap: str,
    bootstrap: str,
    names: list[str],
    timeout: float = 30.0,
) -> None:
    """Create ``names`` (stored passwords) in a running secured broker or cluster, and wait
    until the last can log in at ``bootstrap``: SCRAM credentials reach the client listeners
    through the metadata log, and settings handed out must work at once."""
    from streamtrain.broker.process import broker_answers

    security.create_scram_users(internal_bootstrap, names, timeout)
    options = security.client_options(names[-1])
    deadline = time.monotonic() + timeout
    while not broker_answers(bootstrap, timeout=3.0, config=options):
        if time.monotonic() > deadline:
            raise BrokerError(f"user {names[-1]!r} cannot log in at {bootstrap}")
        time.sleep(0.2)


def admin_last(names: Iterable[str]) -> list[str]:
    """``names`` with the admin first (so the login waited for is a user's)."""
    return sorted(names, key=lambda name: name != ADMIN_USER)


def _new_password() -> str:
    return secrets.token_urlsafe(24)
