"""Typed, frozen settings resolved from flags, ``STREAMTRAIN_*`` env vars and a TOML file.

Precedence, highest first: command-line flag, environment variable, config file, default.

* Env vars are ``STREAMTRAIN_<FIELD>`` in upper case (``STREAMTRAIN_BOOTSTRAP_SERVERS``,
  ``STREAMTRAIN_TOPIC``, ...). Tuples take comma-separated values; a comma inside brackets
  or quotes does not separate (``STREAMTRAIN_CHALLENGERS='a=LogisticRegression(l2=0.1, l1=0),
  HoeffdingTreeClassifier'`` is two specs).
* The config file is the path given by ``--config`` or ``STREAMTRAIN_CONFIG``. Its top-level keys
  and the keys of the command's table (``[train]``, ``[produce]``, ``[serve]``) fill the same
  fields; its ``[kafka]`` table holds raw librdkafka options.
* Raw librdkafka options (SASL, SSL, tuning) pass straight to the clients: ``-X key=value`` on
  the command line, ``STREAMTRAIN_X_<KEY>`` in the environment (dots written as underscores,
  e.g. ``STREAMTRAIN_X_SASL_PASSWORD`` for ``sasl.password``; librdkafka keys use no
  underscores, so the mapping is unambiguous) and the ``[kafka]`` table of the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from streamtrain.errors import ConfigError

ENV_PREFIX = "STREAMTRAIN_"
RAW_OPTION_ENV_PREFIX = "STREAMTRAIN_X_"

# librdkafka keys whose values must never reach a log line or a summary file.
_SECRET_MARKERS = ("password", "secret", "sasl.oauthbearer.config", "ssl.key.pem", "token")


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; ``options`` are raw librdkafka settings passed through."""

    bootstrap_servers: str = "localhost:9092"
    connect_timeout: float = 10.0
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """A librdkafka config dict: bootstrap, the raw options, then ``overrides``."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.options)
        conf.update(overrides)
        return conf

    def redacted_options(self) -> dict[str, str]:
        return {k: ("***" if is_secret_key(k) else v) for k, v in self.options.items()}

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"connect_timeout={self.connect_timeout!r}, options={self.redacted_options()!r})"
        )


def is_secret_key(key: str) -> bool:
    return any(marker in key.lower() for marker in _SECRET_MARKERS)


def parse_raw_options(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``-X`` flags."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-X expects key=value, got {pair!r}")
        options[key] = value
    return options


def raw_options_from_env(env: Mapping[str, str]) -> dict[str, str]:
    return {
        name[len(RAW_OPTION_ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith(RAW_OPTION_ENV_PREFIX) and len(name) > len(RAW_OPTION_ENV_PREFIX)
    }


def load_config_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read the TOML config file, or ``{}`` when no path is given."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None


S = TypeVar("S")


def resolve(
    cls: type[S],
    flags: Mapping[str, Any],
    *,
    file: Mapping[str, Any] | None = None,
    section: str | None = None,
    env: Mapping[str, str] | None = None,
    **fixed: Any,
) -> S:
    """Build the frozen settings ``cls`` from flags, env, file and defaults.

    ``flags`` maps field names to parsed flag values; ``None`` means "not given". ``fixed``
    values are taken as they are (e.g. already-built nested settings).
    """
    env = os.environ if env is None else env
    file = file or {}
    table = file.get(section, {}) if section else {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"config file: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(fixed)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.name
        if name in values:
            continue
        flag = flags.get(name)
        if flag is not None and flag != ():
            values[name] = flag
            continue
        env_name = ENV_PREFIX + name.upper()
        if env_name in env:
            values[name] = _coerce(env[env_name], hints[name], env_name)
        elif name in table:
            values[name] = _coerce(table[name], hints[name], f"[{section}] {name}")
        elif name in file and not isinstance(file[name], Mapping):
            values[name] = _coerce(file[name], hints[name], name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def resolve_kafka(
    flags: Mapping[str, Any],
    *,
    file: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    raw_flags: Iterable[str] = (),
) -> KafkaSettings:
    """Kafka settings; raw options merge file, then env, then ``-X`` flags (last wins)."""
    env = os.environ if env is None else env
    file = file or {}
    kafka_table = file.get("kafka", {})
    if not isinstance(kafka_table, Mapping):
        raise ConfigError("config file: [kafka] must be a table of librdkafka options")
    options = {str(k): _option_text(v) for k, v in kafka_table.items()}
    options.update(raw_options_from_env(env))
    options.update(parse_raw_options(raw_flags))
    return resolve(KafkaSettings, flags, file=file, env=env, options=options)


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes.

    >>> split_top_level("ROCAUC, F1(pos_val=False),Select('a,b') | LogisticRegression(l2=0.1)")
    ['ROCAUC', ' F1(pos_val=False)', "Select('a,b') | LogisticRegression(l2=0.1)"]
    """
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    """Convert a value from env (always text) or TOML to the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
            return None
        return _coerce(raw, non_none[0], where)
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if hint is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if hint is str:
            return str(raw)
        if hint is Path:
            return Path(str(raw)).expanduser()
        if origin is tuple:
            items = split_top_level(raw) if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}: cannot use {raw!r} as {name}") from None
    return raw
