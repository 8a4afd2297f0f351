"""Kafka's refusals of missing rights, told by error code, as one line naming the right.

A secured cluster answers a request the principal has no ACL for with an authorization error
code; the text around it varies by client and path, so only the code is looked at.

>>> from confluent_kafka import KafkaError
>>> err = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
>>> print(not_authorized(err, "consume", group="streamtrain.ctr"))  # doctest: +ELLIPSIS
not authorized: consume needs READ on consumer group 'streamtrain.ctr' (GROUP_AUTHORIZATION_...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard

from confluent_kafka import KafkaError

from streamtrain.errors import NotAuthorized

# The resource each refusal is about.
_RESOURCE = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "consumer group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}
_HINT = "`streamtrain broker acl grant` gives a command its rights"


def is_denied(err: object) -> TypeGuard[KafkaError]:
    """True if ``err`` is the broker refusing a right."""
    return isinstance(err, KafkaError) and err.code() in _RESOURCE


def not_authorized(
    err: KafkaError,
    doing: str,
    *,
    topics: Sequence[str] = (),
    group: str | None = None,
    transactional_id: str | None = None,
    topic_right: str = "READ",
    group_right: str = "READ",
) -> NotAuthorized:
    """The :class:`NotAuthorized` error for refusal ``err`` of ``doing``: it names the resource
    of the refused kind among those given and the right it needs (``topic_right`` on topics,
    ``group_right`` on the group, WRITE on the transactional id)."""
    code = err.code()
    kind = _RESOURCE.get(code, "resource")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        names = ", ".join(repr(t) for t in topics)
        what = f"topic {names}" if len(topics) == 1 else f"topics {names}" if topics else kind
        right = topic_right
    elif code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        what = f"{kind} {group!r}" if group else kind
        right = group_right
    elif code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        what = f"{kind} {transactional_id!r}" if transactional_id else kind
        right = "WRITE"
    else:
        what = kind
        right = "a right"
    return NotAuthorized(
        f"not authorized: {doing} needs {right} on {what} ({err.name()}); {_HINT}", err
    )
