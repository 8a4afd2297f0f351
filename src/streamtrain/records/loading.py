"""A record format's decoder as a shape's ``load``: bytes in, the record's object out.

:func:`streamtrain.formats.decoder` raises ``RecordUndecodable`` for a record at fault; a shape
(and so every step) knows :class:`~streamtrain.data.events.InvalidEvent`, which becomes a dead
letter with the same reason. A registry that does not answer is no record's fault:
``SchemaRegistryUnreachable`` passes through and stops the run, and nothing is dead-lettered.

>>> from streamtrain.formats.settings import FormatSettings
>>> load_records(FormatSettings(), "payments") is None  # JSON: the shapes' own reader
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamtrain.data.events import InvalidEvent, Reason
from streamtrain.formats.settings import JSON, FormatSettings

__all__ = ["load_records"]


def load_records(
    settings: FormatSettings, topic: str
) -> Callable[[bytes | None], dict[str, Any]] | None:
    """The reader of ``topic``'s values in ``settings.format``; None for plain JSON, which
    the shapes read themselves (bit for bit as before formats existed)."""
    if settings.format == JSON:
        return None
    from streamtrain.formats import decoder
    from streamtrain.formats.decoding import RecordUndecodable

    decode = decoder(settings)

    def load(value: bytes | None) -> dict[str, Any]:
        try:
            return decode(value, topic)
        except RecordUndecodable as bad:
            raise InvalidEvent(Reason(bad.reason), str(bad)) from bad

    return load
