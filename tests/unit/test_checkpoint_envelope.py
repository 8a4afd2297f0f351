"""Checkpoints are verified before anything is unpickled."""

from __future__ import annotations

import os
import pathlib
import pickle
import stat
from pathlib import Path

import pytest
from river import linear_model, preprocessing

from streamtrain.errors import ConfigError
from streamtrain.state.envelope import (
    CheckpointHeader,
    CheckpointRejected,
    load_state,
    open_envelope,
    seal,
)
from streamtrain.state.keys import SigningKey, load_signing_key


class Canary:
    """Unpickling this touches a file: proof that bytes were unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (self.path,))


def _header() -> CheckpointHeader:
    return CheckpointHeader(
        model_name="m",
        model_spec="StandardScaler | LogisticRegression",
        offsets={"t": {0: 42, 1: 7}},
        events_learned=49,
        dead_lettered=1,
        metrics={"ROCAUC": 0.9},
        created_at=1.0,
        versions={"river": "x"},
    )


KEY = SigningKey(b"k" * 32, "test")
OTHER = SigningKey(b"o" * 32, "other")


def test_round_trip_restores_an_identical_model() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i in range(50):
        model.learn_one({"a": float(i), "b": float(i % 3)}, i % 2 == 0)
    sealed = seal(_header(), pickle.dumps(model), KEY)
    opened = open_envelope(sealed, KEY)
    assert opened.header == _header()
    assert opened.header.model_version == "t:0@42,t:1@7"
    restored = load_state(opened)
    x = {"a": 3.5, "b": 1.0}
    assert restored.predict_proba_one(x) == model.predict_proba_one(x)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:-1], id="one-byte-short"),
        pytest.param(lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], id="bit-flip-in-header"),
        pytest.param(lambda b: b[:-40] + bytes([b[-40] ^ 1]) + b[-39:], id="bit-flip-in-model"),
        pytest.param(lambda b: b"XXXX" + b[4:], id="bad-magic"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_mangled_checkpoints_are_refused_before_unpickling(mangle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    canary = tmp_path / "unpickled"
    sealed = seal(_header(), pickle.dumps(Canary(canary)), KEY)
    with pytest.raises(CheckpointRejected):
        load_state(open_envelope(mangle(sealed), KEY))
    assert not canary.exists()


def test_wrong_key_is_refused_and_the_canary_never_runs(tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    sealed = seal(_header(), pickle.dumps(Canary(canary)), OTHER)
    with pytest.raises(CheckpointRejected, match="signature does not verify"):
        load_state(open_envelope(sealed, KEY))
    assert not canary.exists()
    # The same bytes under the right key do unpickle: the canary is a real one.
    load_state(open_envelope(sealed, OTHER))
    assert canary.exists()


def test_unsigned_pickle_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    with pytest.raises(CheckpointRejected):
        open_envelope(pickle.dumps(Canary(canary)), KEY)
    assert not canary.exists()


def test_key_file_is_created_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "conf" / "secret.key"
    monkeypatch.setattr("streamtrain.state.keys.DEFAULT_KEY_FILE", path)
    first = load_signing_key(None, env={})
    second = load_signing_key(None, env={})
    assert first.key == second.key
    assert len(first.key) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.key.decode() not in repr(first)


def test_env_secret_wins_and_short_ones_are_refused() -> None:
    key = load_signing_key(None, env={"STREAMTRAIN_SECRET": "s" * 20})
    assert key.source == "STREAMTRAIN_SECRET"
    with pytest.raises(ConfigError, match="shorter"):
        load_signing_key(None, env={"STREAMTRAIN_SECRET": "short"})


def test_missing_explicit_file_and_loose_permissions(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_signing_key(tmp_path / "nope", env={})
    loose = tmp_path / "loose.key"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_signing_key(loose, env={})
