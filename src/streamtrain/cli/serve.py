"""``streamtrain serve`` (HTTP predictions and a live dashboard) and ``streamtrain report``."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamtrain.cli.common import (
    add_kafka_options,
    kafka_settings_from_args,
    positive_float,
    positive_int,
)
from streamtrain.config import resolve
from streamtrain.errors import ConfigError, NotAuthorized, StreamtrainError
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC
from streamtrain.serving.settings import (
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_INSTANCES,
    ServeSettings,
)
from streamtrain.serving.tokens import ENV_TOKENS, Role, TokenSet, load_tokens
from streamtrain.stopping import stop_on_signals

if TYPE_CHECKING:
    import uvicorn


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a named model over HTTP, hot-swapping each new checkpoint, with a dashboard",
        description="Follows the model's checkpoints (verified before use) and its trainer's "
        "metrics in Kafka. POST /predict answers with the newest checkpoint; GET / is a live "
        "dashboard; /model, /healthz, /readyz and /metrics (Prometheus) are for operators. "
        "For labels that arrive later: --log-topic writes each predicted instance as a feature "
        "event under its id, --labels-topic takes the outcomes at POST /labels; a trainer run "
        "with --topic LOG --labels-topic LABELS learns from them, and serve hot-swaps it in. "
        "--token-file requires a bearer token on every route but /healthz (a read-only token "
        "may look but not write), --ssl-certfile/--ssl-keyfile serve HTTPS.",
    )
    serve.add_argument("--name", required=True, help="model name (as given to train --name)")
    serve.add_argument(
        "--pin",
        type=int,
        metavar="VERSION",
        help="serve this kept version (`streamtrain models history NAME`) instead of "
        "following the newest checkpoint [default: follow]",
    )
    serve.add_argument("--host", help="address to listen on [default: 127.0.0.1]")
    serve.add_argument("--port", type=int, help="[default: 8000]")
    serve.add_argument(
        "--checkpoint-topic", metavar="TOPIC", help=f"[default: {DEFAULT_CHECKPOINT_TOPIC}]"
    )
    serve.add_argument(
        "--metrics-topic",
        metavar="TOPIC",
        help="trainer metrics for the dashboard; '' turns it off "
        f"[default: {DEFAULT_METRICS_TOPIC}]",
    )
    serve.add_argument(
        "--secret-file", metavar="PATH", help="key file verifying checkpoints (see train --help)"
    )
    serve.add_argument(
        "--max-instances",
        type=positive_int,
        metavar="N",
        help=f"most instances (or labels) in one request [default: {DEFAULT_MAX_INSTANCES}]",
    )
    serve.add_argument(
        "--max-features",
        type=positive_int,
        metavar="N",
        help=f"most features in one instance, then 422 [default: {DEFAULT_MAX_FEATURES}]",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=positive_int,
        metavar="BYTES",
        help=f"largest request body, then 413 [default: {DEFAULT_MAX_BODY_BYTES}]",
    )
    serve.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="bearer tokens, one '<role> <token>' a line (role full or read; mode 600); every "
        f"route but /healthz then needs one. Or the same lines in {ENV_TOKENS} "
        "[default: none, no authentication]",
    )
    serve.add_argument(
        "--ssl-certfile",
        type=Path,
        metavar="PATH",
        help="serve HTTPS with this certificate (PEM, chain included) [default: HTTP]",
    )
    serve.add_argument(
        "--ssl-keyfile", type=Path, metavar="PATH", help="the certificate's private key (PEM)"
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log a line per request to stdout (client, method, path, status; no headers)",
    )
    serve.add_argument(
        "--log-topic",
        metavar="TOPIC",
        help="write each predicted instance here as a feature event keyed by its id, answering "
        "once the broker has it; a trainer's --topic [default: none]",
    )
    serve.add_argument(
        "--labels-topic",
        metavar="TOPIC",
        help="take outcomes at POST /labels and write them here as label events; "
        "a trainer's --labels-topic [default: none, /labels answers 404]",
    )
    serve.add_argument(
        "--delivery-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="longest wait for the broker to acknowledge logged instances or labels, "
        f"then 503 [default: {DEFAULT_DELIVERY_TIMEOUT:g}]",
    )
    add_kafka_options(serve)
    serve.set_defaults(handler=run_serve)

    report = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a model's training from the metrics topic",
    )
    report.add_argument("--name", required=True, help="model name")
    report.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to write it; '-' for stdout [default: NAME-report.html]",
    )
    report.add_argument(
        "--metrics-topic",
        default=DEFAULT_METRICS_TOPIC,
        metavar="TOPIC",
        help="[default: %(default)s]",
    )
    add_kafka_options(report)
    report.set_defaults(handler=run_report)


def serve_settings_from_args(args: argparse.Namespace, file: dict[str, Any]) -> ServeSettings:
    flags = {
        "host": args.host,
        "port": args.port,
        "checkpoint_topic": args.checkpoint_topic,
        "metrics_topic": args.metrics_topic,
        "secret_file": args.secret_file,
        "max_instances": args.max_instances,
        "log_topic": args.log_topic,
        "labels_topic": args.labels_topic,
        "delivery_timeout": args.delivery_timeout,
        "max_features": args.max_features,
        "max_body_bytes": args.max_body_bytes,
        "token_file": args.token_file,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
        "access_log": args.access_log,
    }
    return resolve(ServeSettings, flags, file=file, section="serve")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from streamtrain.serving.app import create_kafka_app
    from streamtrain.state.keys import load_signing_key

    kafka, file = kafka_settings_from_args(args)
    settings = serve_settings_from_args(args, file)
    tokens = load_tokens(settings.token_file)
    https = _check_tls(settings)
    key = load_signing_key(settings.secret_file)
    refusal = _Refusal()
    app = create_kafka_app(
        kafka,
        key,
        args.name,
        checkpoint_topic=settings.checkpoint_topic,
        metrics_topic=settings.metrics_topic or None,
        max_instances=settings.max_instances,
        max_features=settings.max_features,
        max_body_bytes=settings.max_body_bytes,
        log_topic=settings.log_topic,
        labels_topic=settings.labels_topic,
        delivery_timeout=settings.delivery_timeout,
        tokens=tokens,
        secure_cookie=https,
        on_denied=refusal.note,
        pin=args.pin,
    )
    # Bind here rather than in uvicorn, so a taken port is a one-line error, not a log dump.
    try:
        sock = socket.create_server((settings.host, settings.port))
    except OSError as err:
        raise StreamtrainError(
            f"cannot listen on {settings.host}:{settings.port}: {err.strerror or err}"
        ) from None
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=settings.access_log,
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        # Dashboards hold event streams open: don't wait on them forever at Ctrl-C.
        timeout_graceful_shutdown=2,
    )
    if settings.access_log:  # uvicorn logs requests at info, the rest of it stays at warning
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    host, port = sock.getsockname()[:2]
    writes = "".join(
        [
            f", feature events to {settings.log_topic!r}" if settings.log_topic else "",
            f", POST /labels to {settings.labels_topic!r}" if settings.labels_topic else "",
        ]
    )
    scheme = "https" if https else "http"
    pinned = "" if args.pin is None else f" pinned to version {args.pin}"
    print(
        f"streamtrain: serving model {args.name!r}{pinned} at {scheme}://{host}:{port}/ "
        f"(dashboard), POST /predict{writes}",
        file=sys.stderr,
    )
    for line in access_notes(settings.host, tokens, https):
        print(f"streamtrain: {line}", file=sys.stderr)
    server = refusal.server = _server_without_signal_handlers(config)
    # uvicorn's own answer to a signal: the first stops gracefully, a second SIGINT at once.
    with sock, stop_on_signals(lambda sig: server.handle_exit(sig, None)):
        server.run(sockets=[sock])
    if refusal.error is not None:
        raise refusal.error
    return 0


class _Refusal:
    """The first right the broker refused serve's followers: it stops the server, and serve
    then ends with it (exit 8) instead of staying unready for ever."""

    def __init__(self) -> None:
        self.error: NotAuthorized | None = None
        self.server: uvicorn.Server | None = None

    def note(self, err: NotAuthorized) -> None:  # called from a follower's thread
        if self.error is None:
            self.error = err
        if self.server is not None:
            self.server.should_exit = True  # read by its loop every 0.1 s


def access_notes(host: str, tokens: TokenSet | None, https: bool) -> list[str]:
    """Who may use this server, and a warning where that is more than its host intended.

    >>> access_notes("127.0.0.1", None, False)
    ['no --token-file: anyone on this machine may predict and post labels']
    >>> access_notes("0.0.0.0", None, False)[0].startswith("warning:")
    True
    """
    local = _is_loopback(host)
    notes = []
    if tokens is None and local:
        notes.append("no --token-file: anyone on this machine may predict and post labels")
    elif tokens is None:
        notes.append(
            f"warning: no --token-file: anyone who can reach {host} may predict and post "
            "labels; give --token-file, or listen on 127.0.0.1 behind an authenticating proxy"
        )
    else:
        notes.append(
            f"{tokens.count(Role.FULL)} full and {tokens.count(Role.READ)} read-only token(s) "
            f"from {tokens.source}; /healthz is open"
        )
        if not https and not local:
            notes.append(
                f"warning: tokens cross the network to {host} in clear text; "
                "give --ssl-certfile and --ssl-keyfile, or put a TLS proxy in front"
            )
    return notes


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _check_tls(settings: ServeSettings) -> bool:
    """True for HTTPS, once the certificate and key load: a bad pair is a one-line error."""
    if settings.ssl_certfile is None or settings.ssl_keyfile is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"cannot use {settings.ssl_certfile} with key {settings.ssl_keyfile} for HTTPS: "
            f"{getattr(err, 'strerror', None) or err}"
        ) from None
    return True


def _server_without_signal_handlers(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server that leaves SIGINT and SIGTERM to :func:`stop_on_signals`.

    Its own handlers would raise the signal again once it stopped, and replay none caught
    while the app was being built.
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    return Server(config)


def run_report(args: argparse.Namespace) -> int:
    from streamtrain.serving.report import read_metrics_records, render_report

    kafka, _file = kafka_settings_from_args(args)
    records = read_metrics_records(kafka, args.name, args.metrics_topic)
    if not records:
        raise StreamtrainError(
            f"no metrics records of model {args.name!r} in {args.metrics_topic!r} "
            "(trainers publish them unless --metrics-topic '')"
        )
    page = render_report(args.name, records)
    output = args.output or f"{args.name}-report.html"
    if output == "-":
        sys.stdout.write(page)
        return 0
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot write {output}: {err.strerror}") from None
    print(f"streamtrain: wrote {output} ({len(records):,} metrics records)", file=sys.stderr)
    return 0
