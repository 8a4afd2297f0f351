"""The checkpoint envelope: a signed header plus the pickled model, verified before unpickling.

Layout (all integers big-endian)::

    b"STCK"  version:u8  header_len:u32  header (UTF-8 JSON)  payload  hmac_sha256(32 bytes)

The HMAC covers every byte before it, under the :class:`~streamtrain.state.keys.SigningKey`.
:func:`open_envelope` checks length, magic, version and the HMAC (constant-time compare) and
only then parses the header; :func:`load_state` unpickles the payload of an *opened* envelope.
Bytes that fail any check raise :class:`CheckpointRejected` and are never unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import pickle
import struct
from collections.abc import Mapping
from typing import Any

from streamtrain.errors import StreamtrainError
from streamtrain.state.keys import SigningKey

MAGIC = b"STCK"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sBI")
_MAC_LEN = hashlib.sha256().digest_size


class CheckpointRejected(StreamtrainError):
    """A checkpoint that is truncated, malformed, tampered with or signed with another key."""

    exit_code = 5


def model_version(topic: str, offsets: Mapping[int, int]) -> str:
    """``topic:p@offset,...`` in partition order: the next offset to learn in each partition.

    This names a model state wherever one is shown: checkpoints, HTTP answers, predictions
    of unlabelled events, metrics records.

    >>> model_version("ml_training_data", {1: 640, 0: 1250})
    'ml_training_data:0@1250,ml_training_data:1@640'
    """
    return ",".join(f"{topic}:{p}@{o}" for p, o in sorted(offsets.items()))


@dataclasses.dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself; readable without unpickling anything."""

    model_name: str
    model_spec: str
    offsets: Mapping[str, Mapping[int, int]]  # topic -> partition -> next offset to learn
    events_learned: int
    dead_lettered: int
    metrics: Mapping[str, float]
    created_at: float  # seconds since the epoch
    versions: Mapping[str, str]
    format_version: int = FORMAT_VERSION
    # The model's checkpoint count, 1 for its first (0: written before versions were numbered),
    # and the version a rollback restored (streamtrain.state.history).
    sequence: int = 0
    restored_from: int | None = None
    # The champion's label, with challengers (None: the model it was created with), and the
    # promotion gate's rule in words (streamtrain.train.promotion).
    champion: str | None = None
    promotion_rule: str | None = None

    @property
    def model_version(self) -> str:
        """Offsets learned up to, e.g. ``ml_training_data:0@1250``: names a model state."""
        return ",".join(
            model_version(topic, parts) for topic, parts in sorted(self.offsets.items()) if parts
        )

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["offsets"] = {t: {str(p): o for p, o in ps.items()} for t, ps in self.offsets.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointHeader:
        offsets = {
            str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in data["offsets"].items()
        }
        return cls(
            model_name=str(data["model_name"]),
            model_spec=str(data["model_spec"]),
            offsets=offsets,
            events_learned=int(data["events_learned"]),
            dead_lettered=int(data["dead_lettered"]),
            metrics={str(k): float(v) for k, v in data["metrics"].items()},
            created_at=float(data["created_at"]),
            versions={str(k): str(v) for k, v in data["versions"].items()},
            format_version=int(data["format_version"]),
            sequence=int(data.get("sequence", 0)),
            restored_from=_optional_int(data.get("restored_from")),
            champion=_optional_text(data.get("champion")),
            promotion_rule=_optional_text(data.get("promotion_rule")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class OpenedCheckpoint:
    """An envelope whose signature was verified; ``payload`` is still pickled bytes."""

    header: CheckpointHeader
    payload: bytes


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # Reading package metadata takes ~2.5 ms; a checkpoint asks once per task.
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("streamtrain", "river", "confluent-kafka"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return tuple(out.items())


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a checkpoint's pickle depends on."""
    return dict(_installed_versions())


def seal(header: CheckpointHeader, payload: bytes, key: SigningKey) -> bytes:
    """Sign ``header`` and the pickled ``payload`` together into one envelope."""
    header_bytes = json.dumps(header.to_json(), sort_keys=True).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes + payload
    return body + hmac.new(key.key, body, hashlib.sha256).digest()


def open_envelope(
    data: bytes | None, key: SigningKey, *, what: str = "checkpoint"
) -> OpenedCheckpoint:
    """Verify ``data`` and return its header and (still pickled) payload."""
    if not data or len(data) < _PREFIX.size + _MAC_LEN:
        raise CheckpointRejected(f"{what} is empty or truncated")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointRejected(f"{what} is not a streamtrain checkpoint (bad magic)")
    if version != FORMAT_VERSION:
        raise CheckpointRejected(
            f"{what} has format version {version}; this build reads {FORMAT_VERSION}"
        )
    body, mac = data[:-_MAC_LEN], data[-_MAC_LEN:]
    expected = hmac.new(key.key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise CheckpointRejected(
            f"{what} signature does not verify (tampered with, truncated, or signed with "
            f"another key than the one from {key.source})"
        )
    end = _PREFIX.size + header_len
    if end > len(body):
        raise CheckpointRejected(f"{what} header runs past its end")
    try:
        header = CheckpointHeader.from_json(json.loads(body[_PREFIX.size : end]))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointRejected(f"{what} header is malformed: {err}") from None
    return OpenedCheckpoint(header=header, payload=body[end:])


def load_state(opened: OpenedCheckpoint) -> Any:
    """Unpickle the payload of a verified checkpoint."""
    # Safe only because open_envelope verified the HMAC over these exact bytes.
    return pickle.loads(opened.payload)
