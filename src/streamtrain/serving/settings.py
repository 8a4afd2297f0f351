"""Settings of ``streamtrain serve``, resolved like every command's (:mod:`streamtrain.config`).

Each field comes from its flag, else ``STREAMTRAIN_<FIELD>`` (``STREAMTRAIN_LOG_TOPIC``, ...),
else the config file's ``[serve]`` table or top level, else the default here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from streamtrain.errors import ConfigError
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC

__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_FEATURES",
    "DEFAULT_MAX_INSTANCES",
    "ServeSettings",
]

# The defaults live here, not beside the code that applies them: every command's parser shows
# them, and importing the server's modules (FastAPI) for that would slow every command's start.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_INSTANCES = 1_000
# Far above any tabular model's width, far below what would make one request a memory burden.
DEFAULT_MAX_FEATURES = 10_000
DEFAULT_DELIVERY_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Where serve listens, what it follows, and where it writes.

    ``metrics_topic`` ``''`` turns the dashboard's feed off. ``log_topic`` turns on the
    prediction log (feature events), ``labels_topic`` ``POST /labels``; ``''`` is the same as
    None. Both wait at most ``delivery_timeout`` seconds for the broker's acknowledgement.
    ``token_file`` turns on bearer tokens (:mod:`streamtrain.serving.tokens`), ``ssl_certfile``
    and ``ssl_keyfile`` (PEM, both or neither) HTTPS; ``access_log`` a line per request
    (method, path, status: never a header, so never a token).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    checkpoint_topic: str = DEFAULT_CHECKPOINT_TOPIC
    metrics_topic: str = DEFAULT_METRICS_TOPIC
    secret_file: Path | None = None
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_features: int = DEFAULT_MAX_FEATURES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_topic: str | None = None
    labels_topic: str | None = None
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    token_file: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        # A flag given as '' arrives as ''; env and file values as None: one meaning, "off".
        object.__setattr__(self, "log_topic", self.log_topic or None)
        object.__setattr__(self, "labels_topic", self.labels_topic or None)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        if self.max_instances < 1:
            raise ConfigError(f"max-instances must be >= 1, got {self.max_instances}")
        if self.max_features < 1:
            raise ConfigError(f"max-features must be >= 1, got {self.max_features}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max-body-bytes must be >= 1, got {self.max_body_bytes}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("HTTPS needs both ssl-certfile and ssl-keyfile")
        if not (math.isfinite(self.delivery_timeout) and 0 < self.delivery_timeout <= 300):
            raise ConfigError(
                "delivery-timeout must be more than 0 and at most 300 seconds, "
                f"got {self.delivery_timeout}"
            )
        if not self.checkpoint_topic:
            raise ConfigError("checkpoint-topic must not be empty")
        written = [t for t in (self.log_topic, self.labels_topic) if t]
        if len(set(written)) < len(written):
            raise ConfigError("the log topic and the labels topic must differ")
        read = {self.checkpoint_topic, self.metrics_topic}
        for topic in written:
            if topic in read:
                raise ConfigError(
                    f"topic {topic!r} is read by serve (checkpoints or metrics): "
                    "it cannot also take feature events or labels"
                )
