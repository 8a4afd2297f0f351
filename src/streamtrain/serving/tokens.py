"""The bearer tokens ``serve`` accepts, with their roles, and the constant-time check.

A token file (``serve --token-file PATH``) holds one token a line, after its role::

    # who uses it
    full  v7Zq3G1xk0mS9pQ2bE4rT8yU6wA5cD1f
    read  N0tTheSameAsAb0veButAlso32Chars_

``full`` may do everything; ``read`` opens the dashboard, ``/model``, ``/readyz`` and
``/metrics``, but not ``POST /predict`` or ``POST /labels``. Blank lines and ``#`` comments are
skipped. A token is at least :data:`MIN_TOKEN_LENGTH` characters of RFC 6750's token alphabet
(letters, digits, ``-._~+/``, then ``=`` padding), as ``secrets.token_urlsafe(32)`` makes. The
same entries may come from ``STREAMTRAIN_SERVE_TOKENS``, separated by newlines or commas.

No error message, ``repr`` or log line ever holds a token: a bad line is named by its number.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from streamtrain.errors import ConfigError

__all__ = ["ENV_TOKENS", "MIN_TOKEN_LENGTH", "Role", "TokenSet", "load_tokens", "parse_tokens"]

ENV_TOKENS = "STREAMTRAIN_SERVE_TOKENS"
MIN_TOKEN_LENGTH = 16
# RFC 6750 b64token: what may follow "Bearer " in a header, and is also a valid cookie value.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class Role(enum.Enum):
    """What a token may do: ``READ`` looks, ``FULL`` also predicts and posts labels."""

    READ = "read"
    FULL = "full"

    def allows(self, needed: Role) -> bool:
        return self is Role.FULL or needed is Role.READ


class TokenSet:
    """The accepted tokens; :meth:`role_of` checks one in time independent of where it differs.

    >>> tokens = parse_tokens("full aaaaaaaaaaaaaaaaaaaa\\nread bbbbbbbbbbbbbbbbbbbb", "example")
    >>> tokens.role_of("bbbbbbbbbbbbbbbbbbbb"), tokens.role_of("nope")
    (<Role.READ: 'read'>, None)
    >>> tokens
    TokenSet(full=1, read=1, source='example')
    """

    __slots__ = ("_digests", "source")

    def __init__(self, entries: list[tuple[Role, str]], source: str) -> None:
        if not entries:
            raise ConfigError(f"no serve tokens in {source}")
        # Digests have one length, so compare_digest does not even leak a token's length.
        self._digests = [(role, _digest(token)) for role, token in entries]
        self.source = source

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or None; every token is compared, each in constant time."""
        digest = _digest(presented)
        found: Role | None = None
        for role, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = role
        return found

    def count(self, role: Role) -> int:
        return sum(1 for r, _ in self._digests if r is role)

    def __repr__(self) -> str:
        return (
            f"TokenSet(full={self.count(Role.FULL)}, read={self.count(Role.READ)}, "
            f"source={self.source!r})"
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_tokens(text: str, source: str, *, separators: str = "\n") -> TokenSet:
    """The tokens of a token file's ``text`` (entries split at any of ``separators``)."""
    entries: list[tuple[Role, str]] = []
    lines = re.split("|".join(map(re.escape, separators)), text)
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, entry {number}" if separators != "\n" else f"{source}:{number}"
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected '<role> <token>' (role full or read)")
        role_text, token = parts
        try:
            role = Role(role_text.lower())
        except ValueError:
            raise ConfigError(f"{where}: the role must be 'full' or 'read'") from None
        if not _TOKEN.fullmatch(token):
            raise ConfigError(f"{where}: a token may hold only letters, digits and -._~+/=")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters")
        if any(token == other for _, other in entries):
            raise ConfigError(f"{where}: this token is given twice")
        entries.append((role, token))
    return TokenSet(entries, source)


def load_tokens(token_file: Path | None, env: Mapping[str, str] | None = None) -> TokenSet | None:
    """The tokens of ``token_file`` or of ``STREAMTRAIN_SERVE_TOKENS``; None when neither is set.

    Both at once is an error (which would count?). The file must not be readable by others.
    """
    env = os.environ if env is None else env
    inline = env.get(ENV_TOKENS)
    if inline and token_file is not None:
        raise ConfigError(f"give serve tokens either in a token file or in {ENV_TOKENS}, not both")
    if inline:
        return parse_tokens(inline, ENV_TOKENS, separators="\n,")
    if token_file is None:
        return None
    path = token_file.expanduser()
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"token file {path} is readable by others; chmod 600 it")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read token file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not UTF-8 text") from None
    return parse_tokens(text, str(path))
