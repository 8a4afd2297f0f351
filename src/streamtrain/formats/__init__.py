"""Formats: what records look like on the topics streamtrain reads and writes.

:mod:`~streamtrain.formats.metrics` is what trainers and servers agree on (topic names, record
keys, the metrics records); its names are re-exported here. Decoding training records lives in
:mod:`~streamtrain.formats.decoding` (JSON, the reasons records fail) and
:mod:`~streamtrain.formats.registry` (Avro, Protobuf, JSON Schema through a schema registry);
:func:`decoder` picks one from :class:`~streamtrain.formats.settings.FormatSettings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamtrain.formats.metrics import (
    DEFAULT_CHECKPOINT_TOPIC,
    DEFAULT_METRICS_TOPIC,
    FINAL,
    METRICS_FORMAT,
    PROGRESS,
    decode_metrics_record,
    encode_metrics_record,
    replica_key,
    replica_partition,
)

if TYPE_CHECKING:
    from streamtrain.formats.decoding import Decoder
    from streamtrain.formats.settings import FormatSettings

__all__ = [
    "DEFAULT_CHECKPOINT_TOPIC",
    "DEFAULT_METRICS_TOPIC",
    "FINAL",
    "METRICS_FORMAT",
    "PROGRESS",
    "decode_metrics_record",
    "decoder",
    "encode_metrics_record",
    "replica_key",
    "replica_partition",
]


def decoder(settings: FormatSettings) -> Decoder:
    """The decoder of ``settings.format``: record value and topic in, dict out.

    >>> from streamtrain.formats.settings import FormatSettings
    >>> decoder(FormatSettings())(b'{"amount": 3.5, "is_fraud": false}', "payments")
    {'amount': 3.5, 'is_fraud': False}
    """
    # Imported here: the registry client and its serdes are heavy, and most users of this
    # package only want the metrics names.
    from streamtrain.formats.decoding import decode_json
    from streamtrain.formats.settings import JSON

    if settings.format == JSON:
        return decode_json
    from streamtrain.formats.registry import RegistryDecoder

    return RegistryDecoder(settings)
