"""How record values are encoded, and how to reach the schema registry that describes them.

Registry client options (basic auth, TLS, timeouts) pass straight to confluent-kafka's
``SchemaRegistryClient``, like ``-X`` options to librdkafka: ``-S key=value`` on the command
line, ``STREAMTRAIN_S_<KEY>`` in the environment (dots written as underscores:
``STREAMTRAIN_S_BASIC_AUTH_USER_INFO`` for ``basic.auth.user.info``) and the config file's
``[schema_registry_options]`` table (flags beat env beat file).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

from streamtrain.config import _option_text, is_secret_key, resolve
from streamtrain.errors import ConfigError

JSON: Final = "json"
AVRO: Final = "avro"
PROTOBUF: Final = "protobuf"
JSONSCHEMA: Final = "jsonschema"
AUTO: Final = "auto"
FORMATS: Final = (JSON, AVRO, PROTOBUF, JSONSCHEMA, AUTO)
REGISTRY_FORMATS: Final = (AVRO, PROTOBUF, JSONSCHEMA)
"""Formats written in the registry wire format (what ``produce --format`` can write)."""

REGISTRY_OPTION_ENV_PREFIX = "STREAMTRAIN_S_"
REGISTRY_CONFIG_TABLE = "schema_registry_options"
# SchemaRegistryClient wants numbers for these; -S and env give text.
_NUMERIC_OPTIONS = {
    "timeout": float,
    "cache.capacity": int,
    "cache.latest.ttl.sec": int,
    "max.retries": int,
    "retries.wait.ms": int,
    "retries.max.wait.ms": int,
}
# Each request gives up after this long unless -S timeout says otherwise; the decoder retries
# within ``registry_wait`` on top.
_REQUEST_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class FormatSettings:
    """``format`` of record values (``auto``: registry wire format when the value starts with
    the magic byte 0, else JSON); ``schema_registry`` the registry's API root; ``registry_wait``
    seconds a decoder keeps retrying an unreachable registry before the run stops;
    ``registry_options`` raw ``SchemaRegistryClient`` settings.

    >>> FormatSettings(format="avro", schema_registry="http://127.0.0.1:8081").client_config()
    {'url': 'http://127.0.0.1:8081', 'timeout': 5.0}
    """

    format: str = JSON
    schema_registry: str | None = None
    registry_wait: float = 30.0
    registry_options: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {self.format!r}")
        if self.format != JSON and not self.schema_registry:
            raise ConfigError(
                f"--format {self.format} needs --schema-registry URL "
                "(`streamtrain registry up` runs one locally)"
            )
        if self.registry_wait <= 0:
            raise ConfigError("registry-wait must be a positive number of seconds")
        for key in ("url", "schema.registry.url"):
            if key in self.registry_options:
                raise ConfigError(f"-S {key} is not allowed: give the URL as --schema-registry")
        self.client_config()  # a non-numeric -S timeout=... is misuse, found before any run

    def client_config(self) -> dict[str, Any]:
        """The ``SchemaRegistryClient`` config: the URL, then the raw options."""
        conf: dict[str, Any] = {"url": self.schema_registry, "timeout": _REQUEST_TIMEOUT_SECONDS}
        for key, value in self.registry_options.items():
            kind = _NUMERIC_OPTIONS.get(key)
            try:
                conf[key] = kind(value) if kind is not None else value
            except ValueError:
                raise ConfigError(f"-S {key} must be a number, got {value!r}") from None
        return conf

    def redacted_options(self) -> dict[str, str]:
        return {
            k: ("***" if is_secret_key(k) or k == "basic.auth.user.info" else v)
            for k, v in self.registry_options.items()
        }

    def __repr__(self) -> str:  # keep credentials out of logs and tracebacks
        return (
            f"FormatSettings(format={self.format!r}, schema_registry={self.schema_registry!r}, "
            f"registry_wait={self.registry_wait!r}, "
            f"registry_options={self.redacted_options()!r})"
        )


def parse_registry_options(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``-S`` flags."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-S expects key=value, got {pair!r}")
        options[key] = value
    return options


def resolve_format_settings(
    flags: Mapping[str, Any],
    *,
    file: Mapping[str, Any] | None = None,
    section: str | None = None,
    env: Mapping[str, str] | None = None,
    raw_flags: Iterable[str] = (),
) -> FormatSettings:
    """Format settings from flags, ``STREAMTRAIN_*`` env and the config file; registry options
    merge the file's ``[schema_registry_options]`` table, then ``STREAMTRAIN_S_*``, then ``-S``."""
    env = os.environ if env is None else env
    file = file or {}
    table = file.get(REGISTRY_CONFIG_TABLE, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"config file: [{REGISTRY_CONFIG_TABLE}] must be a table")
    options = {str(k): _option_text(v) for k, v in table.items()}
    options.update(
        {
            name[len(REGISTRY_OPTION_ENV_PREFIX) :].lower().replace("_", "."): value
            for name, value in env.items()
            if name.startswith(REGISTRY_OPTION_ENV_PREFIX)
            and len(name) > len(REGISTRY_OPTION_ENV_PREFIX)
        }
    )
    options.update(parse_registry_options(raw_flags))
    return resolve(
        FormatSettings, flags, file=file, section=section, env=env, registry_options=options
    )
