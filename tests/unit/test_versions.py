"""Version numbers in checkpoint headers and the retention setting (state/history.py)."""

from __future__ import annotations

import pytest

from streamtrain.errors import ConfigError
from streamtrain.state.envelope import CheckpointHeader, open_envelope, seal
from streamtrain.state.keys import SigningKey
from streamtrain.train.settings import TrainSettings

KEY = SigningKey(b"versions-unit-test-secret", "test")


def _header(**extra: object) -> CheckpointHeader:
    return CheckpointHeader("m", "LR", {"t": {0: 5}}, 5, 0, {}, 1.0, {}, **extra)  # type: ignore[arg-type]


def test_sequence_and_restored_from_survive_the_envelope() -> None:
    header = _header(sequence=7, restored_from=3)
    assert open_envelope(seal(header, b"payload", KEY), KEY).header == header


def test_a_header_from_before_versions_reads_as_version_0() -> None:
    data = _header().to_json()
    del data["sequence"], data["restored_from"]
    old = CheckpointHeader.from_json(data)
    assert (old.sequence, old.restored_from) == (0, None)


@pytest.mark.parametrize("text", ["0", "a week", "-1h"])
def test_keep_versions_for_must_be_a_positive_duration(text: str) -> None:
    with pytest.raises(ConfigError):
        TrainSettings(keep_versions_for=text)
    assert TrainSettings(keep_versions_for="2h").keep_versions_for == "2h"


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "--checkpoint-topic", "T", "rollback", "m", "--to", "2", "--skip"],
        ["models", "rollback", "m", "--to", "2", "--skip", "--checkpoint-topic", "T"],
    ],
)
def test_state_options_count_before_or_after_the_action(argv: list[str]) -> None:
    from streamtrain.cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert (args.checkpoint_topic, args.name, args.version, args.resume) == ("T", "m", 2, "skip")


@pytest.mark.parametrize("count", [0, -3])
def test_keep_versions_must_be_at_least_one(count: int) -> None:
    with pytest.raises(ConfigError):
        TrainSettings(keep_versions=count)
    assert TrainSettings(keep_versions=2).keep_versions == 2


def test_the_count_is_saved_with_each_checkpoint_and_only_when_set() -> None:
    from river import linear_model

    from streamtrain.state.payload import TrainState, freeze, thaw
    from streamtrain.train.progressive import build_metrics
    from streamtrain.train.tasks import Task

    model = linear_model.LogisticRegression()
    state = TrainState(model, build_metrics([], model), 0, {}, {})
    task = Task.from_state("m", state, keep_versions=5)
    saved = task.state()
    assert thaw(freeze(saved), 0, {}).keep_versions == 5
    unset = Task.from_state("m", state).state()
    assert unset.keep_versions is None and thaw(freeze(unset), 0, {}).keep_versions is None
