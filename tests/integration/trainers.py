"""`streamtrain train` as the integration tests run it: a real process of a named model."""

from __future__ import annotations

import os
import sys


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
