"""``streamtrain broker acl grant``: give a user of the secured local broker the least rights
one command needs (:func:`streamtrain.broker.acls.command_acls`), as its admin user."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from streamtrain.broker.acls import COMMANDS, command_acls, grant
from streamtrain.broker.cluster import LocalCluster
from streamtrain.broker.security import ADMIN_USER, check_user_name
from streamtrain.broker.single import LocalBroker
from streamtrain.errors import ConfigError
from streamtrain.formats import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_METRICS_TOPIC
from streamtrain.kafka.clients import LIBRDKAFKA_LOGGER

_DEFAULT_TOPIC = "ml_training_data"  # train's and produce's default --topic


def register(
    actions: Any,
    add_location_options: Callable[[argparse.ArgumentParser], None],
    target_of: Callable[[argparse.Namespace], object],
) -> None:
    """Add ``acl grant`` to the ``broker`` command's ``actions``."""
    acl = actions.add_parser("acl", help="grant a user of the secured broker what a command needs")
    acl_actions = acl.add_subparsers(
        title="actions",
        metavar="ACTION",
        dest="acl_action",
        required=True,
        parser_class=type(acl),
    )
    parser = acl_actions.add_parser(
        "grant",
        help="allow USER exactly what one command needs (ALLOW ACLs, from any host)",
        description=(
            "Writes the least ACLs the command needs with these options, as the broker's "
            "admin user, and lists them. The README's 'Running on a secured cluster' has the "
            "table."
        ),
    )
    add_location_options(parser)
    parser.add_argument("--user", required=True, help="the SCRAM user to grant to")
    parser.add_argument("--for", dest="command", required=True, choices=COMMANDS)
    parser.add_argument(
        "--topic",
        default=_DEFAULT_TOPIC,
        help=f"train's input or produce's output topic [default: {_DEFAULT_TOPIC}]",
    )
    parser.add_argument("--name", help="the model's name (train --name, serve --name)")
    parser.add_argument("--partitioned", action="store_true", help="train --partitioned")
    parser.add_argument("--labels-topic", help="the labels topic (train, produce, serve)")
    parser.add_argument("--group", help="train --group, when given")
    parser.add_argument("--log-topic", help="serve --log-topic")
    parser.add_argument(
        "--checkpoint-topic",
        default=DEFAULT_CHECKPOINT_TOPIC,
        help="train's, serve's and models' checkpoint topic (its .history too)",
    )
    parser.add_argument("--metrics-topic", default=DEFAULT_METRICS_TOPIC)
    parser.add_argument(
        "--dry-run", action="store_true", help="only list the ACLs; no broker needed"
    )
    parser.set_defaults(handler=lambda args: _grant(args, target_of))


def _grant(args: argparse.Namespace, target_of: Callable[[argparse.Namespace], object]) -> int:
    check_user_name(args.user)
    acls = command_acls(
        args.command,
        topic=args.topic,
        name=args.name,
        labels_topic=args.labels_topic,
        group=args.group,
        partitioned=args.partitioned,
        log_topic=args.log_topic,
        checkpoint_topic=args.checkpoint_topic,
        metrics_topic=args.metrics_topic,
    )
    principal = f"User:{args.user}"
    if not args.dry_run:
        broker = target_of(args)
        if not isinstance(broker, LocalBroker | LocalCluster) or broker.security is None:
            raise ConfigError("acl grant needs a secured broker or cluster (`broker up --secure`)")
        bootstrap = broker.bootstrap
        if isinstance(broker, LocalBroker):
            bootstrap = broker._configured_bootstrap() or bootstrap
        admin: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **broker.security.client_options(ADMIN_USER),
            "logger": LIBRDKAFKA_LOGGER,
        }
        grant(admin, principal, acls, timeout=30.0)
    verb = "would grant" if args.dry_run else "granted"
    for acl in acls:
        print(f"{verb} {principal}: {acl}")
    return 0
