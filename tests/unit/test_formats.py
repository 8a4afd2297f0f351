"""The formats trainers write and servers read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamtrain.formats import (
    decode_metrics_record,
    encode_metrics_record,
    replica_key,
    replica_partition,
)


@given(name=st.text(min_size=1), partition=st.integers(0, 10_000))
def test_a_replica_key_names_its_model_and_partition(name: str, partition: int) -> None:
    assert replica_partition(replica_key(name, partition), name) == partition


def test_other_keys_are_not_replicas() -> None:
    assert replica_partition("m", "m") is None
    assert replica_partition("m/p", "m") is None
    assert replica_partition("m/px", "m") is None
    assert replica_partition("m-other/p0", "m") is None
    assert replica_partition("m/p0", "m-other") is None


def test_metrics_records_round_trip() -> None:
    record = {"format": 1, "kind": "progress", "metrics": {"ROCAUC": 0.5}, "model": None}
    assert decode_metrics_record(encode_metrics_record(record)) == record


def test_undecodable_metrics_values_are_none() -> None:
    for value in (None, b"", b"{", b"[1, 2]", b"3", b"\xff"):
        assert decode_metrics_record(value) is None
