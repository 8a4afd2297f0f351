"""Record values to Python dicts: what every decoder promises, and the plain JSON one.

A decoder is called with a record's value and topic and returns the record as a dict. A record
at fault raises :class:`RecordUndecodable` with a stable ``reason`` for its dead letter; a
schema registry that does not answer raises
:class:`~streamtrain.errors.SchemaRegistryUnreachable` instead, which is no record's fault.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import orjson

# Dead-letter reasons, stable across releases.
UNDECODABLE: Final = "undecodable"
"""The bytes are not a record of the format at all (no JSON object, no wire-format header)."""
UNKNOWN_SCHEMA: Final = "unknown-schema"
"""The header names a schema id the registry does not know."""
SCHEMA_MISMATCH: Final = "schema-mismatch"
"""The bytes do not match the schema they name (or the JSON Schema rejects the record)."""
UNUSABLE_SCHEMA: Final = "unusable-schema"
"""The schema exists but this reader cannot use it: another format than asked for, a top level
that is not a record, or Protobuf imports of other registered schemas."""
REASONS: Final = (UNDECODABLE, UNKNOWN_SCHEMA, SCHEMA_MISMATCH, UNUSABLE_SCHEMA)

MAGIC_BYTE: Final = 0
"""First byte of the schema-registry wire format, followed by a 4-byte big-endian schema id."""


class RecordUndecodable(Exception):
    """A record that cannot become a dict; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Decoder(Protocol):
    """Turns one record value into a dict (see the module docstring for what it raises)."""

    def __call__(self, value: bytes | None, topic: str) -> dict[str, Any]: ...


def is_wire_format(value: bytes | None) -> bool:
    """True if ``value`` starts like a schema-registry framed record (magic byte 0 and an id).

    >>> is_wire_format(b"\\x00\\x00\\x00\\x00\\x07payload"), is_wire_format(b'{"a": 1}')
    (True, False)
    """
    return value is not None and len(value) >= 5 and value[0] == MAGIC_BYTE


def decode_json(value: bytes | None, topic: str = "") -> dict[str, Any]:
    """A JSON object record as a dict.

    >>> decode_json(b'{"amount": 12.5, "country": "FR"}')
    {'amount': 12.5, 'country': 'FR'}
    """
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as err:
        raise RecordUndecodable(UNDECODABLE, f"not JSON: {err}") from err
    if not isinstance(record, dict):
        raise RecordUndecodable(UNDECODABLE, f"a JSON {type(record).__name__}, not an object")
    return record
