"""Settings of one training run."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streamtrain.durations import parse_duration_ms
from streamtrain.errors import ConfigError
from streamtrain.formats import DEFAULT_EVENTS_TOPIC
from streamtrain.formats.settings import JSON, FormatSettings
from streamtrain.join.state import NO_DEFAULT, JoinPolicy
from streamtrain.records import SEED, EventShape, RecordShape
from streamtrain.records.limits import DEFAULT_MAX_FEATURES, DEFAULT_MAX_RECORD_BYTES
from streamtrain.state.history import DEFAULT_KEEP_VERSIONS_FOR
from streamtrain.train.challengers import ChallengerSpec, parse_challengers
from streamtrain.train.defaults import DEFAULT_MODEL, DEFAULT_TOPIC
from streamtrain.train.drift import ALERT, DEFAULT_DETECTOR, PROMOTE_BEST, DriftPolicy, drift_policy
from streamtrain.train.promotion import PromotionRule

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

    ``labels_topic`` joins labels that arrive later to the feature events they complete, by
    id (:mod:`streamtrain.join`): ``id_from`` (``value``: the event's ``"id"``; ``key``: the
    record key), ``label_ttl`` (event time a prediction waits for its label; none: for ever,
    bounded by ``max_pending``), ``default_label`` (learn an expired prediction with this label,
    JSON text such as ``false``, instead of dead-lettering it), ``label_grace`` (how long a label
    waits for its features), ``max_wait`` (how long a caught-up input may hold back the
    event-time merge, like Kafka Streams' ``max.task.idle.ms``).

    ``challengers`` are ``[LABEL=]SPEC`` texts: models that learn every event beside the
    champion (``model``), each with its own metrics (:mod:`streamtrain.train.challengers`).
    The ``promote*`` settings are the promotion gate's rule (:mod:`streamtrain.train.promotion`):
    ``promote`` ``auto`` or ``manual`` (never on its own), ``promote_on`` a metric of the run
    (default: the first), the others :class:`~streamtrain.train.promotion.PromotionRule`'s.
    Drift detections, promotions and requests for them are records on ``events_topic``.

    ``target`` reads flat records instead of the seed's ``{"x", "y"}``
    (:mod:`streamtrain.records.shape`): the label is that field (``a.b`` when nested), the id
    ``id_field``, the features every other field or those matching ``features`` (names or
    globs), less those matching ``drop``. ``formats`` says how a flat record's value is read:
    JSON, or Avro, Protobuf or JSON Schema through a schema registry (:mod:`streamtrain.formats`).

    A record over ``max_record_bytes``, or with more than ``max_features`` features, is
    dead-lettered (``record-too-large``, ``too-many-features``).

    ``drift`` is each model's drift detector spec (``none``: off), ``on_drift`` what a
    detection does (:mod:`streamtrain.train.drift`).
    """

    topic: str = DEFAULT_TOPIC
    name: str | None = None
    partitioned: bool = False
    model: str = DEFAULT_MODEL
    metrics: tuple[str, ...] = ()
    challengers: tuple[str, ...] = ()
    drift: str = DEFAULT_DETECTOR
    on_drift: str = ALERT
    promote: str = "manual"
    promote_on: str | None = None
    promote_window: int = 1000
    promote_margin: float = 0.0
    promote_after: int = 3
    promote_min_events: int | None = None
    promote_every: int | None = None
    events_topic: str = DEFAULT_EVENTS_TOPIC  # detections, promotions, requests
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
    # Send checkpoint transactions on a committer thread while learning goes on (off: the
    # learning thread waits for each commit, as before).
    commit_in_background: bool = True
    checkpoint_topic: str = "streamtrain.checkpoints"
    # How long every checkpoint version stays in <checkpoint_topic>.history (a duration).
    keep_versions_for: str = DEFAULT_KEEP_VERSIONS_FOR
    # At most this many newest versions per model are kept (None: no count; see state.history).
    keep_versions: int | None = None
    secret_file: Path | None = None
    # Short enough that a crashed trainer's open transaction stops holding back readers of
    # the checkpoint topic soon; far longer than a checkpoint interval.
    transaction_timeout: float = 20.0
    session_timeout: float = 10.0
    labels_topic: str | None = None
    id_from: str = "value"
    label_ttl: str | None = None
    default_label: str | None = None
    label_grace: str = "0"
    max_pending: int = 1_000_000
    max_wait: str = "0"
    target: str | None = None
    id_field: str | None = None
    features: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    # Hostile input: larger records, or more features, are dead-lettered (records/limits.py).
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_features: int = DEFAULT_MAX_FEATURES
    # How record values become objects (JSON, or a registry format with --schema-registry).
    formats: FormatSettings = dataclasses.field(default_factory=FormatSettings)

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
        if _duration("keep-versions-for", self.keep_versions_for) <= 0:
            raise ConfigError("keep-versions-for must be more than 0")
        if self.keep_versions is not None and self.keep_versions < 1:
            raise ConfigError("keep-versions must be at least 1")
        if self.transaction_timeout < 1:
            raise ConfigError("transaction-timeout must be at least 1 second")
        if self.dead_letter_topic is not None and self.dead_letter_topic == self.topic:
            raise ConfigError("the dead-letter topic must differ from the input topic")
        if self.predictions_out in (self.topic, self.dlq_topic):
            raise ConfigError(
                "the predictions topic must differ from the input and dead-letter topics"
            )

        if self.id_from not in ("value", "key"):
            raise ConfigError(f"id-from must be 'value' or 'key', got {self.id_from!r}")
        if self.max_pending < 1:
            raise ConfigError("max-pending must be at least 1")
        if self.max_record_bytes < 1 or self.max_features < 1:
            raise ConfigError("max-record-bytes and max-features must be at least 1")
        for flag, text in (
            ("label-ttl", self.label_ttl),
            ("label-grace", self.label_grace),
            ("max-wait", self.max_wait),
        ):
            if text is not None:
                _duration(flag, text)
        if self.labels_topic is None:
            joined = {
                "--label-ttl": self.label_ttl is not None,
                "--default-label": self.default_label is not None,
                "--label-grace": self.label_grace != "0",
                "--max-wait": self.max_wait != "0",
                "--id-from": self.id_from != "value",
            }
            given = [flag for flag, on in joined.items() if on]
            if given:
                raise ConfigError(f"{given[0]} needs --labels-topic")
        elif self.labels_topic in (self.dlq_topic, self.predictions_out):
            raise ConfigError(
                "the labels topic must differ from the dead-letter and predictions topics"
            )
        self.challenger_specs()  # labels: their own checks (specs: when the trainer builds)
        self.promotion_rule(self.promote_on or "")  # its own checks (the metric: the trainer's)
        if self.challengers and self.labels_topic is not None:
            raise ConfigError("--challenger cannot be used with --labels-topic yet")
        self.drift_policy()  # a bad spec or action: misuse, before any network wait
        if self.default_label is not None and self.label_ttl is None:
            raise ConfigError("--default-label needs --label-ttl: it is the label of expiry")
        self._check_shape()

    def _check_shape(self) -> None:
        if self.formats.format != JSON and self.target is None:
            # Registry formats carry flat records (what `produce --format` writes); the seed's
            # {"x": {...}, "y": ...} is JSON's.
            raise ConfigError(f"--format {self.formats.format} reads flat records: give --target")
        if self.target is None:
            flat = {"--id-field": self.id_field, "--features": self.features, "--drop": self.drop}
            given = [flag for flag, value in flat.items() if value]
            if given:
                raise ConfigError(f"{given[0]} needs --target: it reads flat records")
            return
        if self.labels_topic is not None and self.id_from == "value" and self.id_field is None:
            raise ConfigError("--labels-topic with --target needs --id-field (or --id-from key)")
        self.record_shape()  # its own checks

    def record_shape(
        self, load: Callable[[bytes | None], dict[str, Any]] | None = None
    ) -> EventShape:
        """How records are read: flat records with ``target``, else the seed's format;
        ``load`` reads a flat record's bytes (JSON when None)."""
        if self.target is None:
            return SEED
        try:
            if load is not None:
                return RecordShape(self.target, self.id_field, self.features, self.drop, load=load)
            return RecordShape(self.target, self.id_field, self.features, self.drop)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def challenger_specs(self) -> tuple[ChallengerSpec, ...]:
        """The challengers, labelled (``c1``, ``c2``... where no label was given)."""
        return parse_challengers(self.challengers)

    def drift_policy(self) -> DriftPolicy | None:
        """The drift detection asked for; None when off."""
        return drift_policy(self.drift, self.on_drift)

    def promotion_rule(self, default_on: str, bigger_is_better: bool = True) -> PromotionRule:
        """The promotion gate's rule; ``default_on`` is the run's main metric."""
        return PromotionRule(
            on=self.promote_on or default_on,
            window=self.promote_window,
            margin=self.promote_margin,
            after=self.promote_after,
            min_events=self.promote_min_events,
            every=self.promote_every,
            mode=self.promote,
            bigger_is_better=bigger_is_better,
            on_drift=self.on_drift == PROMOTE_BEST and self.drift.strip().lower() != "none",
        )

    @property
    def separate_labels_topic(self) -> str | None:
        """The labels topic when it is not the input topic itself."""
        return self.labels_topic if self.labels_topic != self.topic else None

    def join_policy(self) -> JoinPolicy:
        """How labels that arrive later are joined (with ``labels_topic``)."""
        return JoinPolicy(
            ttl_ms=None if self.label_ttl is None else _duration("label-ttl", self.label_ttl),
            grace_ms=_duration("label-grace", self.label_grace),
            default_label=NO_DEFAULT
            if self.default_label is None
            else _label_value(self.default_label),
            max_pending=self.max_pending,
        )

    @property
    def max_wait_seconds(self) -> float:
        return _duration("max-wait", self.max_wait) / 1000

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


def _duration(flag: str, text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None


def _label_value(text: str) -> Any:
    """A label from its JSON text (``false``, ``0``, ``"no"``); other text is a string label."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
