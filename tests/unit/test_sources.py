"""Event sources: River datasets and JSONL/CSV files, as (x, y) pairs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from river import datasets

from streamtrain.data.events import decode_event, encode_event
from streamtrain.data.sources import open_source
from streamtrain.errors import ConfigError
from streamtrain.models.problem import Problem


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- datasets ---------------------------------------------------------------------------


def test_phishing_is_the_default_and_matches_river() -> None:
    source = open_source()
    events = list(source)
    assert source.name == "Phishing"
    assert source.size == 1250
    assert len(events) == 1250
    assert events[0] == next(iter(datasets.Phishing()))
    assert events == list(datasets.Phishing())


def test_a_source_replays_from_the_start_each_time() -> None:
    source = open_source(dataset="Phishing", limit=5)
    assert list(source) == list(source)


def test_limit_bounds_a_dataset_and_its_size() -> None:
    source = open_source(dataset="Phishing", limit=10)
    assert source.size == 10
    assert list(source) == list(itertools.islice(datasets.Phishing(), 10))
    # A limit beyond the dataset's length does not inflate the size.
    assert open_source(dataset="Phishing", limit=5000).size == 1250


def test_synthetic_generator_needs_a_limit() -> None:
    with pytest.raises(ConfigError, match="--limit"):
        open_source(dataset="synth.Agrawal(seed=42)")


def test_synthetic_generator_with_limit_is_deterministic() -> None:
    source = open_source(dataset="synth.Agrawal(seed=42)", limit=20)
    assert source.size == 20
    events = list(source)
    assert len(events) == 20
    assert events == list(itertools.islice(datasets.synth.Agrawal(seed=42), 20))


def test_integer_feature_names_become_strings_for_the_wire() -> None:
    # Hyperplane names its features 0, 1, ...; JSON object keys must be strings.
    events = list(open_source(dataset="synth.Hyperplane(seed=1, n_features=3)", limit=3))
    river_events = list(itertools.islice(datasets.synth.Hyperplane(seed=1, n_features=3), 3))
    for (x, y), (rx, ry) in zip(events, river_events, strict=True):
        assert x == {str(k): v for k, v in rx.items()}
        assert y == ry
        decoded_x, decoded_y = decode_event(encode_event(x, y), Problem.CLASSIFICATION)
        assert decoded_x == x
        assert decoded_y == y


def test_unknown_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'NoSuchData'"):
        open_source(dataset="NoSuchData")


def test_dataset_and_file_together_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.jsonl", '{"x": {"a": 1}, "y": 1}\n')
    with pytest.raises(ConfigError, match="not both"):
        open_source(dataset="Phishing", file=path)


def test_target_with_a_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="files only"):
        open_source(dataset="Phishing", target="label")


def test_negative_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="limit"):
        open_source(limit=-1)


# --- JSONL ------------------------------------------------------------------------------


def test_jsonl_event_form_is_used_as_is(tmp_path: Path) -> None:
    lines = [{"x": {"a": 1, "b": 2.5}, "y": True}, {"x": {"a": -3}, "y": "cat"}]
    path = _write(tmp_path, "events.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    source = open_source(file=path)
    assert list(source) == [({"a": 1, "b": 2.5}, True), ({"a": -3}, "cat")]
    assert source.size == 2
    assert source.name == str(path)


def test_jsonl_flat_records_take_the_target_as_label(tmp_path: Path) -> None:
    text = '{"a": 1, "label": 0, "b": "text"}\n\n{"label": true, "a": 2.5}\n'
    path = _write(tmp_path, "flat.ndjson", text)
    source = open_source(file=path, target="label")
    assert list(source) == [({"a": 1, "b": "text"}, 0), ({"a": 2.5}, True)]
    assert source.size == 2  # the blank line is not an event


def test_jsonl_mixes_event_and_flat_forms_when_a_target_is_given(tmp_path: Path) -> None:
    text = '{"x": {"a": 1}, "y": 1}\n{"a": 2, "label": 0}\n'
    path = _write(tmp_path, "mixed.jsonl", text)
    assert list(open_source(file=path, target="label")) == [({"a": 1}, 1), ({"a": 2}, 0)]


def test_jsonl_flat_record_without_target_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "flat.jsonl", '{"x": {"a": 1}, "y": 1}\n{"a": 2, "label": 0}\n')
    source = open_source(file=path)
    with pytest.raises(ConfigError, match=r"flat\.jsonl:2: .*--target"):
        list(source)


def test_jsonl_record_missing_the_target_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "flat.jsonl", '{"a": 1, "label": 0}\n{"a": 2}\n')
    with pytest.raises(ConfigError, match=r"flat\.jsonl:2: .*'label'"):
        list(open_source(file=path, target="label"))


def test_bad_jsonl_line_is_an_error_with_its_line_number(tmp_path: Path) -> None:
    text = '{"x": {"a": 1}, "y": 1}\n\n{"x": {"a": 2}, "y": 0}\n{"x": {"a": 3}, "y": \n'
    path = _write(tmp_path, "bad.jsonl", text)
    seen: list[Any] = []
    with pytest.raises(ConfigError, match=r"bad\.jsonl:4: not valid JSON") as info:
        seen.extend(open_source(file=path))
    assert len(seen) == 2  # nothing after the bad line, nothing before it skipped
    assert "\n" not in str(info.value)


def test_jsonl_line_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "arr.jsonl", "[1, 2]\n")
    with pytest.raises(ConfigError, match=r"arr\.jsonl:1: expected a JSON object"):
        list(open_source(file=path))


def test_jsonl_limit(tmp_path: Path) -> None:
    text = "".join(json.dumps({"x": {"i": i}, "y": i % 2}) + "\n" for i in range(10))
    path = _write(tmp_path, "many.jsonl", text)
    source = open_source(file=path, limit=3)
    assert source.size == 3
    assert [x["i"] for x, _ in source] == [0, 1, 2]
    assert open_source(file=path, limit=100).size == 10


# --- CSV --------------------------------------------------------------------------------


def test_csv_converts_numbers_and_keeps_other_cells_as_text(tmp_path: Path) -> None:
    text = (
        "a,b,c,label\n1,2.5,x,true\n-7, 1e3 ,,FALSE\nnan,1_000,inf,3\n0x10,3.,.5,2.5\n4,5,6,spam\n"
    )
    path = _write(tmp_path, "data.csv", text)
    source = open_source(file=path, target="label")
    events = list(source)
    assert events == [
        ({"a": 1, "b": 2.5, "c": "x"}, True),
        ({"a": -7, "b": 1000.0, "c": ""}, False),
        ({"a": "nan", "b": "1_000", "c": "inf"}, 3),
        ({"a": "0x10", "b": 3.0, "c": 0.5}, 2.5),
        ({"a": 4, "b": 5, "c": 6}, "spam"),
    ]
    assert source.size == 5
    x, y = events[0]
    assert type(x["a"]) is int
    assert type(y) is bool
    assert type(events[2][1]) is int
    assert type(events[3][1]) is float


def test_csv_label_column_can_be_anywhere(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "label,f\n1,2\n0,3\n")
    assert list(open_source(file=path, target="label")) == [({"f": 2}, 1), ({"f": 3}, 0)]


def test_csv_handles_bom_quotes_and_blank_rows(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeffname,score,y\r\n"Doe, J",3,yes\r\n\r\n"x",4,no\r\n'.encode())
    source = open_source(file=path, target="y")
    assert list(source) == [
        ({"name": "Doe, J", "score": 3}, "yes"),
        ({"name": "x", "score": 4}, "no"),
    ]
    assert source.size == 2


def test_csv_requires_a_target(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "a,b\n1,2\n")
    with pytest.raises(ConfigError, match="--target"):
        open_source(file=path)


def test_csv_target_must_be_a_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "a,b\n1,2\n")
    with pytest.raises(ConfigError, match=r"no column 'label'.*a, b"):
        open_source(file=path, target="label")


def test_empty_csv_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.csv", "")
    with pytest.raises(ConfigError, match="header"):
        open_source(file=path, target="y")


def test_csv_row_with_wrong_width_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "a,b,y\n1,2,0\n1,2\n")
    with pytest.raises(ConfigError, match=r"d\.csv:3: 2 fields"):
        list(open_source(file=path, target="y"))


def test_csv_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.csv", "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    source = open_source(file=path, target="y", limit=4)
    assert source.size == 4
    assert [x["a"] for x, _ in source] == [0, 1, 2, 3]


# --- files in general -------------------------------------------------------------------


def test_unsupported_extension_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "data.txt", "1,2\n")
    with pytest.raises(ConfigError, match=r"\.jsonl, \.ndjson, \.csv or \.avro"):
        open_source(file=path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        open_source(file=tmp_path / "nope.jsonl")


def test_an_avro_container_file_replays_its_records_with_the_target_as_label(
    tmp_path: Path,
) -> None:
    import fastavro

    path = tmp_path / "events.avro"
    schema = {
        "type": "record",
        "name": "Row",
        "fields": [
            {"name": "amount", "type": "double"},
            {"name": "country", "type": ["null", "string"]},
            {"name": "is_fraud", "type": "boolean"},
        ],
    }
    rows = [
        {"amount": 1.5, "country": "FR", "is_fraud": False},
        {"amount": 9.0, "country": None, "is_fraud": True},
    ]
    with path.open("wb") as fh:
        fastavro.writer(fh, schema, rows)
    source = open_source(file=path, target="is_fraud")
    assert source.size == 2
    assert list(source) == [
        ({"amount": 1.5, "country": "FR"}, False),
        ({"amount": 9.0, "country": None}, True),
    ]
    with pytest.raises(ConfigError):
        list(open_source(file=path, target="missing"))
    with pytest.raises(ConfigError):
        open_source(file=path)
    not_avro = tmp_path / "not.avro"
    not_avro.write_bytes(b'{"a": 1}\n')
    with pytest.raises(ConfigError):
        list(open_source(file=not_avro, target="a"))
