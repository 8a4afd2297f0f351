"""``streamtrain broker up|down|status|fetch``: a local Kafka for development and tests.

``up --brokers 3`` (or 5) starts a local cluster instead of a single broker: that many combined
broker+controller nodes on consecutive port pairs from ``--port``. The data directory records
which it holds (a cluster's has a ``cluster.json``), so ``down``, ``status`` and a later ``up``
find out by themselves; asking for the other kind there is a usage error (exit 2).

``up --secure`` secures a single broker (TLS, SASL/SCRAM-SHA-512, ACLs; see
:mod:`streamtrain.broker.security`) and hands out a user's client settings; ``acl grant``
(:mod:`streamtrain.cli.broker_acl`) gives a user what one command needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streamtrain.broker import KAFKA_VERSION, LocalBroker, LocalCluster, ensure_kafka_jars
from streamtrain.broker.cluster import CLUSTER_SIZES
from streamtrain.broker.layout import ClusterLayout
from streamtrain.broker.node import DEFAULT_HEAP, default_data_dir
from streamtrain.broker.properties import DEFAULT_HOST, DEFAULT_PORT
from streamtrain.broker.security import DEFAULT_USER, check_user_name
from streamtrain.broker.tls import write_private
from streamtrain.cli import broker_acl
from streamtrain.errors import ConfigError

_BROKER_CHOICES = (1, *CLUSTER_SIZES)


def register(subparsers: Any) -> None:
    """Add the ``broker`` command and its actions to the top-level ``subparsers``."""
    broker_parser = subparsers.add_parser(
        "broker",
        help="run a local Apache Kafka broker or cluster (no Docker needed)",
        description=(
            f"Run Apache Kafka {KAFKA_VERSION} (KRaft) from the official jars: one node, or a "
            "local cluster of 3 or 5 to try broker failover. Needs Java 17+; the first run "
            "fetches the jars with Maven."
        ),
    )
    actions = broker_parser.add_subparsers(
        title="actions",
        metavar="ACTION",
        dest="broker_action",
        required=True,
        parser_class=type(broker_parser),
    )

    up = actions.add_parser("up", help="start the broker (or cluster) and wait until it answers")
    _add_location_options(up)
    up.add_argument(
        "--brokers",
        type=int,
        choices=_BROKER_CHOICES,
        default=None,
        metavar="N",
        help=(
            "1 for a single broker, 3 or 5 for a local cluster (a KRaft quorum of N "
            "controllers, replication factor 3, min.insync.replicas 2); default: what the data "
            "directory already holds, else 1"
        ),
    )
    up.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for every node to answer (default: 60, 90 for a cluster)",
    )
    up.add_argument(
        "--heap", default=DEFAULT_HEAP, help=f"JVM heap size of each node (default: {DEFAULT_HEAP})"
    )
    secure = up.add_argument_group("secured broker")
    secure.add_argument(
        "--secure",
        action="store_true",
        help=(
            "TLS and SASL/SCRAM-SHA-512 on the client port, ACLs (nothing allowed unless "
            "granted), a CA and passwords made at first start in DATA_DIR/security; once "
            "secured, a data directory stays so"
        ),
    )
    secure.add_argument(
        "--user",
        default=DEFAULT_USER,
        help=f"the user whose client settings are given, made if new [default: {DEFAULT_USER}]",
    )
    secure.add_argument(
        "--client-config",
        type=Path,
        metavar="PATH",
        help="write the user's settings (password included) to PATH, mode 0600, instead of stdout",
    )
    up.set_defaults(handler=_up)

    down = actions.add_parser("down", help="stop the broker (or every node of the cluster)")
    _add_location_options(down)
    down.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="graceful shutdown time before SIGKILL (default: 30)",
    )
    down.set_defaults(handler=_down)

    status = actions.add_parser(
        "status",
        help="show whether the broker (each node) runs and answers (exit 0 only if all answer)",
    )
    _add_location_options(status)
    status.set_defaults(handler=_status)

    fetch = actions.add_parser(
        "fetch", help=f"only download the Kafka {KAFKA_VERSION} jars (needs mvn)"
    )
    fetch.set_defaults(handler=_fetch)

    broker_acl.register(actions, _add_location_options, _target)


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=(
            "broker state directory (default: $STREAMTRAIN_BROKER_DIR or "
            "~/.local/share/streamtrain/broker)"
        ),
    )
    parser.add_argument(
        "--host",
        default=None,
        help=f"host to listen on and advertise (default: {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=(
            "client port; the controller uses the next one, and cluster node k the pair "
            f"2(k-1) above (default: {DEFAULT_PORT}; a cluster keeps the ports it was created "
            "with)"
        ),
    )


def _target(args: argparse.Namespace) -> LocalBroker | LocalCluster:
    """The single broker or the cluster the data directory holds (or ``up --brokers`` asks
    for)."""
    data_dir = (
        args.data_dir.expanduser().absolute() if args.data_dir is not None else default_data_dir()
    )
    heap = getattr(args, "heap", DEFAULT_HEAP)
    wanted: int | None = getattr(args, "brokers", None)
    layout = ClusterLayout.load(data_dir)
    if layout is not None:
        if wanted == 1:
            raise ConfigError(
                f"{data_dir} holds a {len(layout.nodes)}-broker cluster; start it with "
                f"--brokers {len(layout.nodes)} (or without --brokers), or pick another --data-dir"
            )
        return LocalCluster(
            data_dir=data_dir,
            brokers=wanted,
            host=args.host,
            base_port=args.port,
            heap=heap,
            secure=bool(getattr(args, "secure", False)),
        )
    if wanted is not None and wanted > 1:
        return LocalCluster(
            data_dir=data_dir,
            brokers=wanted,
            host=args.host,
            base_port=args.port,
            heap=heap,
            secure=bool(getattr(args, "secure", False)),
        )
    return LocalBroker(
        data_dir=data_dir,
        host=args.host if args.host is not None else DEFAULT_HOST,
        port=args.port if args.port is not None else DEFAULT_PORT,
        heap=heap,
        secure=bool(getattr(args, "secure", False)),
    )


def _up(args: argparse.Namespace) -> int:
    target = _target(args)
    if args.client_config is not None and not args.secure:
        raise ConfigError("--client-config needs --secure")
    check_user_name(args.user)
    ensure_kafka_jars(quiet=False)  # so a first-run download is announced, not a silent wait
    secured = " (SASL_SSL, SCRAM-SHA-512, ACLs)" if target.secure else ""
    # A user's settings are given only when asked for with --secure; to stdout unless a path
    # is given, and then the status line goes to stderr so stdout is exactly the config file.
    to = sys.stderr if args.secure and args.client_config is None else sys.stdout
    if isinstance(target, LocalCluster):
        if target.up(wait_seconds=args.wait if args.wait is not None else 90.0):
            print(
                f"Kafka {KAFKA_VERSION} cluster of {target.brokers} is up at {target.bootstrap}"
                f"{secured} (data: {target.data_dir}, logs: "
                f"{target.data_dir}/node-*/logs/server.log)",
                file=to,
            )
        else:
            print(
                f"Kafka cluster of {target.brokers} is already running at {target.bootstrap}"
                f"{secured}",
                file=to,
            )
    elif target.up(wait_seconds=args.wait if args.wait is not None else 60.0):
        print(
            f"Kafka {KAFKA_VERSION} is up at {target.bootstrap}{secured} "
            f"(data: {target.data_dir}, log: {target.log_path})",
            file=to,
        )
    else:
        print(
            f"Kafka is already running at {target.bootstrap}{secured} (pid {target.running_pid()})",
            file=to,
        )
    if args.secure:
        _hand_out_user(target, args.user, args.client_config)
    elif target.secure:
        print("`broker up --secure --user U --client-config PATH` gives a user's client settings")
    return 0


def _hand_out_user(broker: LocalBroker | LocalCluster, user: str, path: Path | None) -> None:
    """Make ``user`` if new and give its client settings: to ``path`` (0600), else stdout (the
    one place a password is shown)."""
    created = broker.add_user(user)
    assert broker.security is not None
    text = broker.security.render_client_config(broker.bootstrap, user)
    if path is None:
        sys.stdout.write(text)
        return
    try:
        write_private(path.expanduser(), text.encode())
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}") from None
    made = "new user" if created else "user"
    print(
        f"Client settings of {made} {user!r} written to {path} (use: --config {path}); "
        f"it can do nothing until granted: streamtrain broker acl grant --user {user} ..."
    )


def _down(args: argparse.Namespace) -> int:
    target = _target(args)
    if isinstance(target, LocalCluster):
        pids = sorted(pid for pid in target.running_pids().values() if pid is not None)
        if target.down(timeout=args.timeout):
            print(
                f"Stopped the Kafka cluster at {target.bootstrap} "
                f"({len(pids)} of {target.brokers} nodes ran: pids {', '.join(map(str, pids))})"
            )
        else:
            print(f"No cluster node running from {target.data_dir}")
        return 0
    pid = target.running_pid()
    if target.down(timeout=args.timeout):
        print(f"Stopped Kafka from {target.data_dir} (pid {pid})")
    else:
        print(f"No broker running from {target.data_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    target = _target(args)
    if isinstance(target, LocalCluster):
        cluster = target.status()
        total = len(cluster.nodes)
        print(
            f"Kafka cluster at {cluster.bootstrap}: {cluster.running_count}/{total} running, "
            f"{cluster.answering_count}/{total} answering (data: {cluster.data_dir})"
        )
        for node in cluster.nodes:
            running = f"running (pid {node.pid})" if node.running else "not running"
            answering = "answering" if node.answering else "not answering"
            print(
                f"  node {node.node_id} at {node.bootstrap}: {running}, {answering} "
                f"(log: {node.log_path})"
            )
        return 0 if cluster.healthy else 1
    state = target.status()
    running = f"running (pid {state.pid})" if state.running else "not running"
    answering = "answering" if state.answering else "not answering"
    print(
        f"Kafka at {state.bootstrap}: {running}, {answering} "
        f"(data: {state.data_dir}, log: {state.log_path})"
    )
    return 0 if state.answering else 1


def _fetch(args: argparse.Namespace) -> int:
    libs = ensure_kafka_jars(quiet=False)
    count = sum(1 for _ in libs.glob("*.jar"))
    print(f"Kafka {KAFKA_VERSION}: {count} jars in {libs}")
    return 0
