"""A transactional producer that never hangs its caller and never dies of a recoverable error.

:class:`TransactionalProducer` wraps confluent-kafka's transactional API for a caller that
commits state in Kafka transactions (the named trainer's checkpoints). It owns:

* **Retries with deadlines.** Every blocking call runs on a helper thread with a deadline of
  its own timeout + 20 s: librdkafka can block for good in ``send_offsets_to_transaction`` or
  ``commit_transaction`` after the only broker restarts (its issues 5456 and 5511). Retriable
  errors are retried with backoff (a broker that went away is waited for) until the caller
  stops.
* **Rollback.** An error that requires an abort aborts; a fatal error other than being fenced,
  a call that got stuck, or an abort that fails, *replaces* the producer: a new one with the
  same ``transactional.id``, whose ``init_transactions`` settles the old transaction on the
  broker (completes a commit already under way, else aborts it). Either way the caller gets
  :class:`TransactionAborted` — with ``replaced`` set when whether the last commit landed is
  known only to the broker — and rolls its state back.
* **Typed errors** that keep the :class:`~confluent_kafka.KafkaError`: :class:`Fenced` (a newer
  writer took the id over, or the consumer group fenced this member — the caller must stop
  and forget its state) and :class:`TransactionFatal` (nothing more can be done here).

The commit protocol, as a straight line (see :meth:`TransactionalProducer.commit`)::

    begin  →  produce …  →  send_offsets_to_transaction  →  commit_transaction  →  begin
                              (any failure)  →  abort or replace  →  begin  →  TransactionAborted
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streamtrain.errors import NotAuthorized, StreamtrainError
from streamtrain.faults import crash_point, hang_point
from streamtrain.kafka.authz import not_authorized
from streamtrain.stopping import StopFlag

__all__ = [
    "Fenced",
    "TransactionAborted",
    "TransactionFatal",
    "TransactionalProducer",
    "abandoned_producers",
    "is_stale_member",
]

log = logging.getLogger(__name__)

# A newer producer with our transactional.id took over.
_FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
# Missing rights: replacing the producer would only fail the same way.
_DENIED_CODES = frozenset(
    {
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)
# A commit from a member of an older group generation: a zombie (KIP-447). Abortable.
_STALE_MEMBER_CODES = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)


def is_stale_member(error: KafkaError | None) -> bool:
    """A commit refused because the consumer group moved on without this member."""
    return error is not None and error.code() in _STALE_MEMBER_CODES


# Calls whose retry after a timeout can block for good (librdkafka issues 5456 and 5511).
_STUCK_WHEN_RETRIED = frozenset({"send_offsets_to_transaction", "commit_transaction"})
# Replacements in a row, without a commit in between, before giving up.
MAX_REPLACEMENTS_IN_A_ROW = 5
# A call still running this long after its own timeout is stuck, not slow.
STUCK_AFTER = 20.0


class TransactionError(StreamtrainError):
    """A transactional failure the caller cannot roll back from; ``error`` is the cause."""

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.error = error


class Fenced(TransactionError):
    """Another writer took over this transactional id; stop and forget the in-memory state."""

    exit_code = 6


class TransactionFatal(TransactionError):
    """The transactional producer cannot go on (rights missing, or stuck for good)."""

    exit_code = 7


class TransactionDenied(TransactionFatal):
    """The broker refused a right the transaction needs (its id, a topic, the group)."""

    exit_code = NotAuthorized.exit_code


class TransactionAborted(Exception):
    """The open transaction was rolled back; the caller restores its last committed state.

    ``replaced``: the producer was replaced, so whether the last commit landed is known only to
    the broker, and the caller must read its committed state back before restoring it.
    """

    def __init__(self, why: str, error: KafkaError | None = None, *, replaced: bool = False):
        super().__init__(why)
        self.error = error
        self.replaced = replaced


class ProducerStuck(Exception):
    """A transactional call did not return by its deadline; the producer is unusable."""


# Producers given up on. Kept referenced for the life of the process: destroying a producer
# waits for its threads, and a stuck one never finishes.
_ABANDONED: list[Producer] = []


def abandoned_producers() -> int:
    """How many producers this process gave up on (the CLI then exits without destroying them)."""
    return len(_ABANDONED)


ProducerFactory = Callable[[Callable[[KafkaError], None]], Producer]


class TransactionalProducer:
    """One transactional writer; see the module doc.

    ``make(error_cb)`` builds a configured ``Producer`` (with ``transactional.id``) that reports
    client errors to ``error_cb``. Non-fatal client errors go on to ``on_error``; a fatal one is
    kept as the cause of the calls that fail after it, and handled at the next call.
    """

    def __init__(
        self,
        make: ProducerFactory,
        *,
        label: str,
        timeout: float,
        should_stop: StopFlag,
        on_error: Callable[[KafkaError], None] = lambda _err: None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        self._make = make
        self.label = label  # how errors name the owner (the model)
        # What a refusal names: transactional_id, topics written, group (kafka/authz.py).
        self.resources = dict(resources or {})
        self.timeout = timeout
        self.deadline = timeout + STUCK_AFTER
        self.should_stop = should_stop
        self._on_error = on_error
        self.generation = 0
        self.replacements = 0
        self._in_a_row = 0
        self._fatal: KafkaError | None = None
        self.producer = self._new_producer()

    # -- the protocol ------------------------------------------------------------------------

    def start(self) -> None:
        """Fence older writers of the id and open the first transaction."""
        try:
            self._call("init_transactions", lambda p: p.init_transactions(self.timeout))
        except ProducerStuck:
            raise TransactionFatal(
                f"init_transactions for model {self.label!r} did not return within "
                f"{self.deadline:g}s; restart the trainer"
            ) from None
        except KafkaException as err:
            self._refuse(self._cause(err))
            raise TransactionFatal(
                f"init_transactions for model {self.label!r} failed: {err.args[0].str()}",
                err.args[0],
            ) from None
        self.begin()

    def produce(self, topic: str, value: Any, key: Any = None, **kwargs: Any) -> None:
        """Produce into the open transaction; a full local queue is drained, never dropped."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as err:
                self._roll_back(err)

    def commit(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Add ``offsets`` (input positions of the consumer group) and commit; begin the next.

        Raises :class:`TransactionAborted` after rolling back, :class:`Fenced` or
        :class:`TransactionFatal`.
        """
        try:
            if offsets:
                self._call(
                    "send_offsets_to_transaction",
                    lambda p: p.send_offsets_to_transaction(offsets, group_metadata, self.timeout),
                )
            crash_point("before-commit")
            self._call("commit_transaction", self._commit_call)
        except (KafkaException, ProducerStuck) as err:
            self._roll_back(err)
        self._in_a_row = 0
        self.begin()

    def roll_back(self, why: str) -> None:
        """Abort the open transaction on purpose (e.g. partitions lost); always raises."""
        self._roll_back(None, why=why)

    def begin(self) -> None:
        try:
            self.producer.begin_transaction()
        except KafkaException as err:
            self._roll_back(err)

    def poll(self, timeout: float = 0) -> None:
        """Serve delivery reports and error callbacks."""
        self.producer.poll(timeout)

    def abort_quietly(self) -> None:
        """Best-effort abort at exit; the next writer's init_transactions aborts it anyway."""
        try:
            self._bounded("abort_transaction", lambda p: p.abort_transaction(10))
        except (KafkaException, ProducerStuck) as err:
            log.debug("abort at exit failed: %s", err)

    # -- rollback ----------------------------------------------------------------------------

    def _roll_back(self, err: KafkaException | ProducerStuck | None, *, why: str = "") -> None:
        """Abort (or replace the producer), open a new transaction, raise TransactionAborted."""
        if isinstance(err, ProducerStuck):
            self._replace(str(err), None)
        kerr = self._cause(err) if isinstance(err, KafkaException) else None
        if kerr is not None:
            self._refuse(kerr)
            why = kerr.str()
            if kerr.fatal() or not kerr.txn_requires_abort():
                # Fatal (other than fenced) or unexpected: only a new producer can go on.
                self._replace(f"{err.__class__.__name__}: {why}", kerr)
            if kerr.code() in _STALE_MEMBER_CODES:
                log.warning(
                    "commit refused: the consumer group moved on without this process (%s); "
                    "its uncommitted work is discarded (fenced by the group generation)",
                    why,
                )
            else:
                log.warning("transaction must be aborted (%s); restoring the last checkpoint", why)
        try:
            self._call("abort_transaction", lambda p: p.abort_transaction(self.timeout))
            self.producer.begin_transaction()
        except (KafkaException, ProducerStuck) as failed:
            cause = self._cause(failed) if isinstance(failed, KafkaException) else None
            if cause is not None:
                self._refuse(cause)
            self._replace(f"the abort failed ({failed})", cause)
        raise TransactionAborted(why, kerr)

    def _refuse(self, kerr: KafkaError) -> None:
        """Raise for the errors no new producer can get past."""
        if kerr.code() in _FENCED_CODES:
            raise Fenced(
                f"model {self.label!r} was taken over by another trainer (fenced: {kerr.str()}); "
                "this one stops and discards its in-memory model",
                kerr,
            )
        if kerr.code() in _DENIED_CODES:
            denied = not_authorized(
                kerr, f"the checkpoint transaction of model {self.label!r}", **self.resources
            )
            raise TransactionDenied(str(denied), kerr)

    def _replace(self, why: str, kerr: KafkaError | None) -> None:
        """Swap in a new producer with the same id, settle the old transaction, begin anew, and
        raise :class:`TransactionAborted` (``replaced``)."""
        while True:
            if self._in_a_row >= MAX_REPLACEMENTS_IN_A_ROW:
                raise TransactionFatal(
                    f"the transactional producer of model {self.label!r} failed "
                    f"{self._in_a_row} times in a row ({why}); restart the trainer",
                    kerr,
                )
            log.warning(
                "%s; replacing the producer (same transactional id) and resuming from the last "
                "committed checkpoint",
                why,
            )
            _ABANDONED.append(self.producer)
            self.producer = self._new_producer()
            self.replacements += 1
            self._in_a_row += 1
            try:
                self._call("init_transactions", lambda p: p.init_transactions(self.timeout))
                self.producer.begin_transaction()
            except ProducerStuck:
                raise TransactionFatal(
                    f"the replacement producer for model {self.label!r} is stuck too; restart "
                    "the trainer",
                    kerr,
                ) from None
            except KafkaException as err:
                kerr = self._cause(err)
                self._refuse(kerr)
                why = f"the replacement producer failed too ({kerr.str()})"
                self.should_stop.wait(min(0.5 * self._in_a_row, 5.0))
                continue
            raise TransactionAborted(why, kerr, replaced=True)

    # -- calls -------------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        """A producer whose errors count only while it is the current one."""
        self.generation += 1
        self._fatal = None
        generation = self.generation

        def on_error(err: KafkaError) -> None:
            if generation != self.generation:
                return  # an abandoned producer may still report
            if err.fatal():
                self._fatal = err
                log.error("fatal transactional producer error: %s", err.str())
            else:
                self._on_error(err)

        return self._make(on_error)

    def _cause(self, err: KafkaException) -> KafkaError:
        """The error behind ``err``: after a fatal error, calls fail with just ``_FATAL``, and
        the cause comes through the error callback."""
        kerr: KafkaError = err.args[0]
        if kerr.code() != KafkaError._FATAL:
            return kerr
        if self._fatal is None:
            try:
                self.producer.poll(0)  # serves the error callback that carries the cause
            except KafkaException as polled:  # ... or raises it
                cause: KafkaError = polled.args[0]
                return cause
        return self._fatal or kerr

    def _commit_call(self, producer: Producer) -> None:
        hang_point("hang-commit")
        producer.commit_transaction(self.timeout)

    def _call(self, what: str, call: Callable[[Producer], None]) -> None:
        """Run ``call`` bounded, retrying retriable errors with backoff until it succeeds or we
        stop; non-retriable errors and :class:`ProducerStuck` go to the caller."""
        delay = 0.2
        while True:
            try:
                self._bounded(what, call)
                return
            except KafkaException as err:
                kerr: KafkaError = err.args[0]
                if not kerr.retriable() or kerr.fatal() or kerr.txn_requires_abort():
                    raise
                if kerr.code() == KafkaError._TIMED_OUT and what in _STUCK_WHEN_RETRIED:
                    # Retried after a broker restart, these calls can block for good: settle
                    # the transaction with a new producer at once instead of after the deadline.
                    raise ProducerStuck(f"{what} timed out ({kerr.str()})") from None
                if self.should_stop.is_set() and what != "abort_transaction":
                    raise TransactionFatal(
                        f"stopped while {what} was failing ({kerr.str()}); nothing is lost: the "
                        "next run resumes from the last committed checkpoint",
                        kerr,
                    ) from None
                log.warning("%s failed (%s); retrying in %.1fs", what, kerr.str(), delay)
                self.should_stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _bounded(self, what: str, call: Callable[[Producer], None]) -> None:
        """Run ``call`` on a helper thread; raise :class:`ProducerStuck` past the deadline.

        librdkafka's blocking calls cannot be interrupted, so a stuck one is left behind on a
        daemon thread, which never keeps the process from exiting.
        """
        producer = self.producer
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                call(producer)
                outcome.append(None)
            except BaseException as err:  # handed to the caller's thread below
                outcome.append(err)
            finally:
                done.set()

        threading.Thread(target=run, name=f"streamtrain-{what}", daemon=True).start()
        if not done.wait(self.deadline):
            raise ProducerStuck(f"{what} did not return within {self.deadline:g}s")
        if outcome[0] is not None:
            raise outcome[0]
