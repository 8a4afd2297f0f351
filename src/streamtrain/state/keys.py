"""The secret that signs checkpoints.

From ``STREAMTRAIN_SECRET`` (any string, at least 16 characters) when set; otherwise from a key
file: ``--secret-file``, ``STREAMTRAIN_SECRET_FILE``, or ``~/.config/streamtrain/secret.key``.
The default key file is created with 32 random bytes and mode 0600 on first use, which suits a
single machine; processes on several machines must share one secret (set the env var).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from streamtrain.errors import ConfigError

MIN_SECRET_LENGTH = 16
DEFAULT_KEY_FILE = Path("~/.config/streamtrain/secret.key")


class SigningKey:
    """Bytes that sign and verify checkpoints; ``repr`` never shows them."""

    __slots__ = ("_key", "source")

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"the checkpoint secret from {source} is shorter than {MIN_SECRET_LENGTH} bytes"
            )
        self._key = key
        self.source = source

    @property
    def key(self) -> bytes:
        return self._key

    def __repr__(self) -> str:
        return f"SigningKey(source={self.source!r})"


def load_signing_key(
    secret_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    create: bool = True,
) -> SigningKey:
    env = os.environ if env is None else env
    secret = env.get("STREAMTRAIN_SECRET")
    if secret:
        return SigningKey(secret.encode(), "STREAMTRAIN_SECRET")
    if secret_file is None and env.get("STREAMTRAIN_SECRET_FILE"):
        secret_file = Path(env["STREAMTRAIN_SECRET_FILE"])
    explicit = secret_file is not None
    path = (secret_file or DEFAULT_KEY_FILE).expanduser()
    if not path.exists():
        if explicit or not create:
            raise ConfigError(f"checkpoint secret file not found: {path}")
        _create_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"checkpoint secret file {path} is readable by others; chmod 600 it")
    return SigningKey(path.read_bytes().strip(), str(path))


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two processes starting at once must not overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
