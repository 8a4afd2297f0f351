"""Where replayed events come from: a River dataset or a local file, as ``(x, y)`` pairs.

The producer replays data, it does not judge it: a feature that is not a number is sent as it is
and the trainer dead-letters it. Only a file that cannot be read as records at all (a line that
is not JSON, a CSV row with the wrong number of fields) stops the replay, with a ``file:line``
error.

File formats, chosen by extension:

* ``.jsonl`` / ``.ndjson``: one JSON object per line, either an event ``{"x": {...}, "y": ...}``
  (used as it is) or a flat record whose ``target`` field is the label and whose other fields
  are the features. Blank lines are skipped.
* ``.csv``: a header row, then one record per row; ``target`` names the label column. Feature
  cells that read as finite numbers become ints or floats, other cells stay strings. A label
  cell ``true``/``false`` (any case) becomes a boolean, a number becomes an int or a float,
  anything else stays a string.
* ``.avro``: an Avro object container file (read with fastavro); each record is a flat record
  whose ``target`` field is the label, as for JSON lines.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from streamtrain.errors import ConfigError
from streamtrain.models.spec import dataset_registry, parse_spec

__all__ = ["DEFAULT_DATASET", "Event", "Source", "open_source"]

DEFAULT_DATASET = "Phishing"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)
AVRO_SUFFIXES = (".avro",)

Event = tuple[dict[str, Any], Any]


class Source:
    """A replayable stream of ``(x, y)`` events; each iteration starts from the beginning.

    ``size`` is the number of events an iteration yields (after the limit), or ``None`` when it
    is unknown or endless. For files it is counted on first access, by reading the file once.
    """

    def __init__(
        self,
        name: str,
        events: Callable[[], Iterator[Event]],
        size: int | Callable[[], int | None] | None,
    ) -> None:
        self.name = name
        self._events = events
        self._size = size

    @property
    def size(self) -> int | None:
        if callable(self._size):
            self._size = self._size()
        return self._size

    def __iter__(self) -> Iterator[Event]:
        return self._events()

    def __repr__(self) -> str:
        return f"Source(name={self.name!r})"


def open_source(
    *,
    dataset: str | None = None,
    file: Path | None = None,
    target: str | None = None,
    limit: int | None = None,
) -> Source:
    """Open a dataset spec (default ``Phishing``) or a file; at most ``limit`` events.

    Raises :class:`ConfigError` for an unknown dataset, an endless generator without ``limit``,
    a missing or unsupported file, or a CSV header without the ``target`` column.
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    if file is not None:
        if dataset is not None:
            raise ConfigError("give a dataset or a file, not both")
        return _open_file(Path(file), target, limit)
    if target is not None:
        raise ConfigError("a target column applies to files only; datasets carry their labels")
    return _open_dataset(dataset or DEFAULT_DATASET, limit)


def _open_dataset(spec: str, limit: int | None) -> Source:
    ds = parse_spec(spec, dataset_registry())
    n_samples = getattr(ds, "n_samples", None)
    if n_samples is None and limit is None:
        raise ConfigError(
            f"dataset {spec!r} is an endless generator; pass --limit N to bound the replay"
        )

    def events() -> Iterator[Event]:
        stream: Iterator[Event] = iter(ds)
        if limit is not None:
            stream = itertools.islice(stream, limit)
        for x, y in stream:
            # Synthetic generators name features 0, 1, ...; JSON object keys must be strings.
            if not all(type(k) is str for k in x):
                x = {str(k): v for k, v in x.items()}
            yield x, y

    size = n_samples if limit is None else (limit if n_samples is None else min(n_samples, limit))
    return Source(spec.strip(), events, size)


def _open_file(path: Path, target: str | None, limit: int | None) -> Source:
    suffix = path.suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES + AVRO_SUFFIXES:
        raise ConfigError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            "use .jsonl, .ndjson, .csv or .avro"
        )
    if not path.exists():
        raise ConfigError(f"file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a file")

    events: Callable[[], Iterator[Event]]
    if suffix in CSV_SUFFIXES:
        header = _csv_header(path, target)

        def events() -> Iterator[Event]:
            return _csv_events(path, header, target or "")

        def count() -> int:
            return sum(1 for _ in _csv_rows(path, skip_header=True))
    elif suffix in AVRO_SUFFIXES:
        if target is None:
            raise ConfigError(f"{path}: pass --target naming the label field of its records")

        def events() -> Iterator[Event]:
            return _avro_events(path, target or "")

        def count() -> int:
            return _avro_count(path)
    else:

        def events() -> Iterator[Event]:
            return _jsonl_events(path, target)

        def count() -> int:
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())

    def limited() -> Iterator[Event]:
        stream = events()
        return stream if limit is None else itertools.islice(stream, limit)

    def size() -> int | None:
        if limit == 0:
            return 0
        if not path.is_file():  # a FIFO or device can only be read once
            return limit
        try:
            n = count()
        except (OSError, UnicodeDecodeError, csv.Error, ValueError):
            return None  # the replay itself reports the problem with its line number
        return n if limit is None else min(n, limit)

    return Source(str(path), limited, size)


# --- Avro container files -----------------------------------------------------------------


def _avro_events(path: Path, target: str) -> Iterator[Event]:
    import fastavro

    try:
        fh = path.open("rb")
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    with fh:
        try:
            records = fastavro.reader(fh)
        except ValueError as err:  # fastavro's word for "no Avro header here"
            raise ConfigError(f"{path}: not an Avro container file ({err})") from None
        for number, record in enumerate(records, 1):
            if type(record) is not dict:
                raise ConfigError(f"{path}: record {number} is not an Avro record")
            if target not in record:
                raise ConfigError(f"{path}: record {number} has no label field {target!r}")
            y = record.pop(target)
            yield record, y


def _avro_count(path: Path) -> int:
    import fastavro

    with path.open("rb") as fh:
        return sum(block.num_records for block in fastavro.block_reader(fh))


# --- JSON lines ---------------------------------------------------------------------------


def _jsonl_events(path: Path, target: str | None) -> Iterator[Event]:
    try:
        fh = path.open("rb")
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ConfigError(
                    f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})"
                ) from None
            if type(record) is not dict:
                raise ConfigError(
                    f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
                )
            x = record.get("x")
            if type(x) is dict and "y" in record:
                yield x, record["y"]
                continue
            if target is None:
                raise ConfigError(
                    f'{path}:{lineno}: the record is not an {{"x": ..., "y": ...}} event; '
                    "pass --target naming its label field"
                )
            if target not in record:
                raise ConfigError(f"{path}:{lineno}: the record has no label field {target!r}")
            y = record.pop(target)
            yield record, y


# --- CSV ------------------------------------------------------------------------------------


def _csv_rows(path: Path, *, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """Non-empty rows with the line they end on; decoding errors become ``ConfigError``."""
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                if skip_header:
                    skip_header = False
                    continue
                if row:
                    yield reader.line_num, row
        except UnicodeDecodeError:
            raise ConfigError(f"{path}:{reader.line_num + 1}: not valid UTF-8") from None
        except csv.Error as err:
            raise ConfigError(f"{path}:{reader.line_num}: {err}") from None


def _csv_header(path: Path, target: str | None) -> list[str]:
    first = next(_csv_rows(path, skip_header=False), None)
    if first is None:
        raise ConfigError(f"{path}: the file is empty; a CSV file needs a header row")
    header = [name.strip() for name in first[1]]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate column(s) in the header: {', '.join(duplicates)}")
    if target is None:
        raise ConfigError(f"{path}: pass --target naming the label column of the CSV file")
    if target not in header:
        raise ConfigError(
            f"{path}: no column {target!r} in the header (columns: {', '.join(header)})"
        )
    return header


def _csv_events(path: Path, header: list[str], target: str) -> Iterator[Event]:
    label_at = header.index(target)
    width = len(header)
    rows = _csv_rows(path, skip_header=True)
    for lineno, row in rows:
        if len(row) != width:
            raise ConfigError(
                f"{path}:{lineno}: {len(row)} fields, but the header has {width} columns"
            )
        x = {
            name: _number_or_text(cell)
            for i, (name, cell) in enumerate(zip(header, row, strict=True))
            if i != label_at
        }
        yield x, _label(row[label_at])


def _number_or_text(cell: str) -> Any:
    """An int or a finite float when ``cell`` reads as one, else ``cell`` unchanged."""
    text = cell.strip()
    # int()/float() also accept "1_000" and non-ASCII digits; a CSV number is neither.
    if not text or "_" in text or not text.isascii():
        return cell
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return cell
    # "nan"/"inf" would reach the wire as null; as text the trainer names the problem.
    return value if math.isfinite(value) else cell


def _label(cell: str) -> Any:
    """A CSV label: ``true``/``false`` → bool, numbers → int/float, anything else → the text."""
    lowered = cell.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return _number_or_text(cell)
