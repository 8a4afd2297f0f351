"""`streamtrain train` as the integration tests run it: a real process of a named model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from streamtrain.cli.main import main
from streamtrain.config import KafkaSettings
from streamtrain.errors import TopicMissing
from streamtrain.serving.report import read_metrics_records


def train_command(bootstrap: str, topic: str, name: str, ckpt: str, *extra: str) -> list[str]:
    """A named trainer with a test's cadence (checkpoints every 0.3 s or 500 events, batches
    of 100, no live view); ``extra`` flags come last, so they override these."""
    return [
        sys.executable,
        "-m",
        "streamtrain",
        "train",
        "--name",
        name,
        "--topic",
        topic,
        "--checkpoint-topic",
        ckpt,
        "--checkpoint-every",
        "500",
        "--checkpoint-interval",
        "0.3",
        "--batch-size",
        "100",
        "--view",
        "none",
        "--bootstrap-servers",
        bootstrap,
        *extra,
    ]


def trainer_env(secret: str, **extra: str) -> dict[str, str]:
    """This process's environment with the checkpoint secret, and no armed fault point."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMTRAIN_FAULT"}
    env.update(STREAMTRAIN_SECRET=secret, **extra)
    return env


def run_to_end(
    cmd: list[str], summary: Path, env: dict[str, str], timeout: float = 180
) -> dict[str, Any]:
    """Run trainer ``cmd`` until it has been idle 2 s, assert it exited 0, and return the
    summary it wrote."""
    done = subprocess.run(
        [*cmd, "--exit-when-idle", "2", "--summary", str(summary)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(summary.read_text()))


def wait_until_learning(bootstrap: str, name: str, proc: subprocess.Popen[str]) -> None:
    """Return once trainer ``proc`` of model ``name`` has reported learning (its metrics
    record shows events learned): a signal sent before then would land in start-up, which
    takes seconds on a loaded machine, rather than mid-stream."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before learning")
        try:
            records = read_metrics_records(kafka, name)
        except TopicMissing:
            records = []
        if any(r.get("events_learned", 0) > 0 for r in records):
            return
        time.sleep(0.2)
    raise AssertionError("the trainer reported no learning within 120 s")


class CliRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli_in_process(
    capsys: pytest.CaptureFixture[str], bootstrap: str, ckpt: str, *args: str
) -> CliRun:
    """A ``streamtrain`` command run in this process against ``bootstrap`` and the checkpoint
    topic ``ckpt`` (a process per command costs seconds on a loaded machine)."""
    capsys.readouterr()
    code = main([*args, "--checkpoint-topic", ckpt, "--bootstrap-servers", bootstrap])
    out = capsys.readouterr()
    return CliRun(code, out.out, out.err)
