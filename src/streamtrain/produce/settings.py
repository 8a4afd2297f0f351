"""What a replay is asked to do (:class:`ProduceSettings`) and what it did (the reports)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from streamtrain.produce.labels import LabelDelay

__all__ = ["LabelReport", "ProduceReport", "ProduceSettings"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class ProduceSettings:
    """What to replay and where; ``rate`` is events per second, 0 for as fast as possible.

    The ``label_*``, ``seed``, ``id_prefix`` and ``start_time`` (ms since the epoch, default
    the start of the replay) fields apply only with ``labels_topic``; ``label_delay`` defaults
    to 0, ``label_drop`` to 0 and ``seed`` to 0.
    """

    topic: str = "ml_training_data"
    dataset: str = "Phishing"
    file: Path | None = None
    target: str | None = None
    limit: int | None = None
    rate: float = 0.0
    key: str | None = None
    partitions: int = 1
    replication_factor: int = -1
    labels_topic: str | None = None
    label_delay: str | None = None
    label_drop: float | None = None
    seed: int | None = None
    id_prefix: str | None = None
    start_time: int | None = None

    def __post_init__(self) -> None:
        for topic in (self.topic, self.labels_topic):
            if topic is not None and (not _TOPIC_NAME.fullmatch(topic) or topic in (".", "..")):
                raise ValueError(
                    f"topic {topic!r} is not a valid Kafka topic name "
                    "(1-249 characters from letters, digits, '.', '_' and '-')"
                )
        if not math.isfinite(self.rate) or self.rate < 0:
            raise ValueError(f"rate must be a finite number >= 0 events/s, got {self.rate}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.replication_factor != -1 and self.replication_factor < 1:
            raise ValueError(
                "replication_factor must be >= 1, or -1 for the broker's default, "
                f"got {self.replication_factor}"
            )
        if self.key is not None and not self.key:
            raise ValueError("key must name a feature")
        self._check_label_settings()

    def _check_label_settings(self) -> None:
        if self.labels_topic is None:
            for name in ("label_delay", "label_drop", "seed", "id_prefix", "start_time"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(f"{flag} applies only with --labels-topic")
            return
        if self.key is not None:
            raise ValueError("--key cannot be used with --labels-topic: records are keyed by id")
        if self.label_drop is not None and not 0 <= self.label_drop < 1:
            raise ValueError(f"label drop must be >= 0 and < 1, got {self.label_drop}")
        if self.start_time is not None and self.start_time < 0:
            raise ValueError(f"start time must be >= 0 ms since the epoch, got {self.start_time}")
        self.label_delay_spec()  # a bad spec fails here, naming itself

    def label_delay_spec(self) -> LabelDelay:
        """The parsed ``label_delay`` (0 when unset)."""
        return LabelDelay.parse("0" if self.label_delay is None else self.label_delay)


@dataclass(frozen=True)
class LabelReport:
    """The label events of a replay; ``delivered + failed == sent``.

    ``dropped`` labels were left out on purpose, ``unlabelled`` events had none to send and
    ``pending`` labels were still waiting for their time when the replay was stopped.
    """

    topic: str
    sent: int
    delivered: int
    failed: int
    dropped: int
    unlabelled: int
    pending: int


@dataclass(frozen=True)
class ProduceReport:
    """The outcome of a replay; ``delivered + failed == sent``, counting events (features)."""

    topic: str
    sent: int
    delivered: int
    failed: int
    errors: tuple[str, ...]
    elapsed_seconds: float
    events_per_second: float
    stopped: bool = False  # True when stop() ended the replay before the source ran out
    labels: LabelReport | None = None  # with a labels topic only
