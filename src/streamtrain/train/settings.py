"""Settings of one training run."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from streamtrain.errors import ConfigError

DEFAULT_TOPIC = "ml_training_data"
DEFAULT_MODEL = "StandardScaler | LogisticRegression"
# Model names become part of a transactional.id, a group id and a record key.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What to consume, what to learn, and when to stop.

    ``start`` is where a trainer without saved state begins: ``earliest`` (the seed's
    behaviour), ``latest``, or a record timestamp in ms since the epoch (``from_timestamp``).

    ``name`` makes the model durable: its state is checkpointed to ``checkpoint_topic`` every
    ``checkpoint_every`` events or ``checkpoint_interval`` seconds, whichever comes first, and
    at a clean stop, in one Kafka transaction with the consumer offsets and dead letters.

    ``partitioned`` gives each input partition its own replica (a task), spread over every
    process started with the same name; see :mod:`streamtrain.train.trainer`.

    ``fast_path`` lets an eligible linear pipeline learn each batch in one compiled call with
    River's exact per-event results (:mod:`streamtrain.fastpath`); others always use River.

    Unlabelled events are predicted, not learned; their predictions go to
    ``predictions_topic`` (default ``<topic>.predictions``).

    ``rolling_window`` > 0 also tracks each metric over the last that many events (it costs
    a second metric update per event, hence off by default).
    """

    topic: str = DEFAULT_TOPIC
    name: str | None = None
    partitioned: bool = False
    model: str = DEFAULT_MODEL
    metrics: tuple[str, ...] = ()
    group: str | None = None
    dead_letter_topic: str | None = None
    predictions_topic: str | None = None
    start: str = "earliest"
    from_timestamp: int | None = None
    exit_when_idle: float | None = None
    max_events: int | None = None
    summary: Path | None = None
    batch_size: int = 500
    rolling_window: int = 0
    fast_path: bool = True
    progress_interval: float = 0.5
    checkpoint_interval: float = 5.0
    checkpoint_every: int = 100_000
    checkpoint_topic: str = "streamtrain.checkpoints"
    secret_file: Path | None = None
    # Short enough that a crashed trainer's open transaction stops holding back readers of
    # the checkpoint topic soon; far longer than a checkpoint interval.
    transaction_timeout: float = 20.0
    session_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConfigError("topic must not be empty")
        if self.start not in ("earliest", "latest"):
            raise ConfigError(f"start must be 'earliest' or 'latest', got {self.start!r}")
        if self.exit_when_idle is not None and self.exit_when_idle <= 0:
            raise ConfigError("exit-when-idle must be a positive number of seconds")
        if self.max_events is not None and self.max_events <= 0:
            raise ConfigError("max-events must be positive")
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError("batch-size must be between 1 and 100000")
        if self.rolling_window < 0:
            raise ConfigError("rolling-window must be >= 0 (0 turns it off)")
        if self.progress_interval <= 0:
            raise ConfigError("progress-interval must be positive")
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"model name {self.name!r} must be 1-200 characters of letters, digits, . _ -"
            )
        if self.partitioned and self.name is None:
            raise ConfigError("--partitioned needs --name: partitioned state is always durable")
        if not 1 <= self.session_timeout <= 300:
            raise ConfigError("session-timeout must be between 1 and 300 seconds")
        if self.checkpoint_interval <= 0 or self.checkpoint_every <= 0:
            raise ConfigError("checkpoint interval and checkpoint-every must be positive")
        if self.transaction_timeout < 1:
            raise ConfigError("transaction-timeout must be at least 1 second")
        if self.dead_letter_topic is not None and self.dead_letter_topic == self.topic:
            raise ConfigError("the dead-letter topic must differ from the input topic")
        if self.predictions_out in (self.topic, self.dlq_topic):
            raise ConfigError(
                "the predictions topic must differ from the input and dead-letter topics"
            )

    @property
    def dlq_topic(self) -> str:
        return self.dead_letter_topic or f"{self.topic}.dlq"

    @property
    def predictions_out(self) -> str:
        """Where predictions of unlabelled events go."""
        return self.predictions_topic or f"{self.topic}.predictions"

    @property
    def durable(self) -> bool:
        return self.name is not None
