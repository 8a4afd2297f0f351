"""Settings: flags beat env vars beat the config file beat defaults; raw options pass through."""

from __future__ import annotations

from pathlib import Path

import pytest
from river import metrics

from streamtrain.cli.main import main
from streamtrain.config import load_config_file, parse_raw_options, resolve, resolve_kafka
from streamtrain.errors import ConfigError
from streamtrain.train.settings import TrainSettings
from streamtrain.train.view import _fmt_metric, sparkline

FILE = {
    "bootstrap_servers": "file:9092",
    "kafka": {"security.protocol": "SASL_SSL", "sasl.username": "u", "enable.ssl.x": True},
    "train": {"topic": "from-file", "metrics": ["ROCAUC", "LogLoss"], "batch_size": 7},
}


def test_precedence_flag_env_file_default() -> None:
    env = {"STREAMTRAIN_TOPIC": "from-env"}
    assert resolve(TrainSettings, {}, file=FILE, section="train", env={}).topic == "from-file"
    assert resolve(TrainSettings, {}, file=FILE, section="train", env=env).topic == "from-env"
    flags = {"topic": "from-flag"}
    assert resolve(TrainSettings, flags, file=FILE, section="train", env=env).topic == "from-flag"
    assert resolve(TrainSettings, {}, env={}).topic == "ml_training_data"


def test_types_are_coerced_from_env_and_file() -> None:
    env = {"STREAMTRAIN_EXIT_WHEN_IDLE": "2.5", "STREAMTRAIN_METRICS": "Accuracy, F1"}
    settings = resolve(TrainSettings, {}, file=FILE, section="train", env=env)
    assert settings.exit_when_idle == 2.5
    assert settings.metrics == ("Accuracy", "F1")
    assert settings.batch_size == 7
    with pytest.raises(ConfigError, match="STREAMTRAIN_BATCH_SIZE"):
        resolve(TrainSettings, {}, env={"STREAMTRAIN_BATCH_SIZE": "many"})


def test_raw_options_merge_file_env_flags_and_secrets_stay_hidden() -> None:
    env = {"STREAMTRAIN_X_SASL_PASSWORD": "hunter2", "STREAMTRAIN_X_SASL_USERNAME": "env-user"}
    kafka = resolve_kafka({}, file=FILE, env=env, raw_flags=["sasl.username=flag-user"])
    assert kafka.bootstrap_servers == "file:9092"
    assert kafka.options["security.protocol"] == "SASL_SSL"
    assert kafka.options["enable.ssl.x"] == "true"
    assert kafka.options["sasl.password"] == "hunter2"
    assert kafka.options["sasl.username"] == "flag-user"
    assert kafka.client_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(kafka)
    assert kafka.redacted_options()["sasl.password"] == "***"


def test_bad_raw_options_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_raw_options(["no-equals-sign"])
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("topic = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(broken)


def test_settings_validation() -> None:
    with pytest.raises(ConfigError):
        TrainSettings(exit_when_idle=0)
    with pytest.raises(ConfigError, match="needs --name"):
        TrainSettings(partitioned=True)
    with pytest.raises(ConfigError, match="model name"):
        TrainSettings(name="spaces are not allowed")
    with pytest.raises(ConfigError, match="differ"):
        TrainSettings(topic="a", dead_letter_topic="a")


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["train", "--no-such-flag"],
        ["train", "--exit-when-idle", "soon"],
        ["train", "--from-timestamp", "yesterday-ish"],
        ["train", "--model", "__import__('os')", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "--partitioned", "--bootstrap-servers", "127.0.0.1:1"],
        ["train", "-X", "novalue", "--bootstrap-servers", "127.0.0.1:1"],
        ["serve", "--name", "m", "--log-topic", "t", "--labels-topic", "t"],
        ["serve", "--name", "m", "--labels-topic", "streamtrain.checkpoints"],
        ["serve", "--name", "m", "--delivery-timeout", "0"],
        ["serve", "--name", "m", "--port", "70000"],
        [],
    ],
)
def test_cli_misuse_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse exits on its own
        code = int(exit_.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and "Traceback" not in "\n".join(err)
    assert len([line for line in err if "error" in line]) == 1


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 1.0]) == "▄▄"
    line = sparkline([0.0, 0.5, 1.0])
    assert line[0] == "▁" and line[-1] == "█" and len(line) == 3


def test_metric_values_never_print_as_negative_zero() -> None:
    auc = metrics.ROCAUC()
    auc.update(True, 0.9)  # one class seen so far
    assert _fmt_metric(auc.get()) == "0.000000"
    assert _fmt_metric(-0.0) == "0.000000"
    assert _fmt_metric(0.9506961) == "0.950696"


def test_an_unexpected_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamtrain.cli import catalog

    def broken(_args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(catalog, "run", broken)
    assert main(["list", "models"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "streamtrain: internal error: RuntimeError: a bug (--verbose logs the traceback)"
    ]
