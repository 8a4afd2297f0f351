"""The local schema registry's checks that need no JVM: Java missing, bad ports, its URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtrain.cli.main import main
from streamtrain.errors import BrokerError, ConfigError
from streamtrain.schema_registry import LocalSchemaRegistry, ensure_registry_jar


def test_without_java_the_registry_says_so_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java (and no mvn) here
    with pytest.raises(BrokerError):
        ensure_registry_jar(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert main(["registry", "up", "--data-dir", str(tmp_path / "registry")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_ports_and_the_api_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LocalSchemaRegistry(data_dir=tmp_path, port=70000)
    registry = LocalSchemaRegistry(data_dir=tmp_path, port=18081)
    assert registry.url == "http://127.0.0.1:18081/apis/ccompat/v7"
    assert registry.running_pid() is None
    assert registry.down() is False
