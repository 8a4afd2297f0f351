"""What a running trainer reports: periodic progress snapshots and the final summary."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot of a running trainer, taken every ``progress_interval`` seconds."""

    topic: str
    model: str
    events_learned: int
    dead_lettered: int
    events_per_second: float  # over the last interval
    elapsed_seconds: float
    metrics: Mapping[str, float]
    lag: Mapping[int, int]  # partition -> records not yet consumed (None when unknown)
    dead_letter_reasons: Mapping[str, int]
    broker_error: str | None = None  # last client-level error, e.g. broker unreachable
    rolling_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    positions: Mapping[int, int] = dataclasses.field(default_factory=dict)  # next offsets
    name: str | None = None
    group: str = ""
    tasks: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    events_predicted: int = 0  # unlabelled events answered
    join: Mapping[str, Any] | None = None  # labels joined later: see join_summary
    # label -> spec, metrics, rolling, events_learned, model_errors, started_at (challengers)
    challengers: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # detector, on_drift, detections by label, recent ones (streamtrain.train.drift); None: off
    drift: Mapping[str, Any] | None = None
    # The champion's label when a promotion gate decides it (one task), and the gate's event
    # count when it was promoted (0: the model the run began with); None otherwise
    champion: str | None = None
    champion_since: int = 0
    champion_spec: str = ""

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def joins_per_second(before: Progress | None, after: Progress) -> float | None:
    """Labels joined per second between two reports of one run; None without a join or an
    earlier report. A count that went down (a rollback, a task moved to another process)
    gives 0, not a negative rate."""
    if before is None or before.join is None or after.join is None:
        return None
    seconds = after.elapsed_seconds - before.elapsed_seconds
    if seconds <= 0:  # another run, or the same instant
        return None
    return max(int(after.join["joined"]) - int(before.join["joined"]), 0) / seconds


class TrainerListener(Protocol):
    """Receives progress; every hook is optional to implement (see :class:`NullListener`)."""

    def on_progress(self, progress: Progress) -> None: ...

    def on_finish(self, summary: Summary) -> None: ...


class NullListener:
    def on_progress(self, progress: Progress) -> None:
        pass

    def on_finish(self, summary: Summary) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Summary:
    """The result of a run, also written as JSON by ``--summary``."""

    topic: str
    group: str
    model: str
    events_learned: int
    dead_lettered: int
    dead_letter_reasons: Mapping[str, int]
    dead_letter_failures: int
    metrics: Mapping[str, float]
    positions: Mapping[int, int]  # partition -> next offset to consume
    elapsed_seconds: float
    events_per_second: float
    stopped_because: str
    name: str | None = None
    checkpoints: int = 0  # committed by this run (named models)
    restored_from: str | None = None  # model version the run resumed from
    first_event_after_seconds: float | None = None  # start-up to the first record consumed
    tasks: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    learned_this_run: int = 0  # events_learned counts what restored checkpoints had learned too
    events_predicted: int = 0  # unlabelled events answered (predictions topic)
    producer_replacements: int = 0  # transactional producers replaced (failed or stuck)
    fast_path_disabled: str | None = None  # why the compiled path was given up on, if it was
    consumer_rejoins: int = 0  # consumers replaced after failing for good (named models)
    # With --labels-topic: pending, held_labels, joined, expired, defaulted, unmatched,
    # duplicate, evicted, label_delay_p50_ms, label_delay_p99_ms (streamtrain.join.state).
    join: Mapping[str, Any] | None = None
    # label -> spec, metrics, rolling, events_learned, model_errors, started_at; the
    # champion is ``model`` and ``metrics`` above (streamtrain.train.challengers).
    challengers: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # detector, on_drift, detections by label, recent ones (streamtrain.train.drift); None: off
    drift: Mapping[str, Any] | None = None
    # With challengers, the promotion gate: champion (its label), spec, rule, wins, promotions,
    # events (streamtrain.train.promotion); a partitioned model's as {"replicas": {key: ...}}.
    promotion: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["positions"] = {str(p): o for p, o in self.positions.items()}
        return data

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a summary."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".summary-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
