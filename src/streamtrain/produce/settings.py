"""What a replay is asked to do (:class:`ProduceSettings`) and what it did (the report)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProduceReport", "ProduceSettings"]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


@dataclass(frozen=True)
class ProduceSettings:
    """What to replay and where; ``rate`` is events per second, 0 for as fast as possible."""

    topic: str = "ml_training_data"
    dataset: str = "Phishing"
    file: Path | None = None
    target: str | None = None
    limit: int | None = None
    rate: float = 0.0
    key: str | None = None
    partitions: int = 1
    replication_factor: int = -1

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.fullmatch(self.topic) or self.topic in (".", ".."):
            raise ValueError(
                f"topic {self.topic!r} is not a valid Kafka topic name "
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


@dataclass(frozen=True)
class ProduceReport:
    """The outcome of a replay; ``delivered + failed == sent``."""

    topic: str
    sent: int
    delivered: int
    failed: int
    errors: tuple[str, ...]
    elapsed_seconds: float
    events_per_second: float
    stopped: bool = False  # True when stop() ended the replay before the source ran out
