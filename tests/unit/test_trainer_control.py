"""The trainer's control paths, driven through in-memory Kafka fakes (``kafka_fakes``): aborted,
fenced, failed and stuck checkpoint transactions, lost and revoked partitions.

A run that recovers must end where River's ``progressive_val_score`` ends on the same events,
bit for bit (metric, model parameters, last checkpoint); every checkpoint it ever committed must
lie on River's learning curve at its offset (nothing learned twice or skipped, no fork); and each
dead letter and prediction must be committed exactly once (the read_committed view equals an
uninterrupted run's).
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from kafka_fakes import FakeClients, FakeCluster, FakeProducer, FakeStore
from river import datasets, evaluate, linear_model, metrics, preprocessing

from streamtrain.config import KafkaSettings
from streamtrain.data.events import InvalidEvent, decode_event, encode_event
from streamtrain.errors import StreamtrainError
from streamtrain.kafka.transactions import (
    MAX_REPLACEMENTS_IN_A_ROW,
    Fenced,
    TransactionalProducer,
    TransactionFatal,
)
from streamtrain.models.problem import Problem
from streamtrain.state.keys import load_signing_key
from streamtrain.state.payload import state_of
from streamtrain.train import checkpointing as checkpointing_module
from streamtrain.train.progress import Summary
from streamtrain.train.settings import TrainSettings
from streamtrain.train.trainer import Trainer

TOPIC, NAME, CHECKPOINTS = "events", "m", "streamtrain.checkpoints"
TXN_ID = f"streamtrain.{NAME}"
KAFKA = KafkaSettings(bootstrap_servers="fake:9092", connect_timeout=1.0)
BASE: dict[str, Any] = {
    "topic": TOPIC,
    "name": NAME,
    "fast_path": False,
    "batch_size": 16,
    "checkpoint_every": 40,
    "checkpoint_interval": 1e6,  # checkpoints by count only: deterministic
    "exit_when_idle": 1.0,  # five empty polls of the fake clock
}
T0 = 1_700_000_000_000  # timestamp (ms) of the first input record; one second apart

ABORTABLE = KafkaError(
    KafkaError._MSG_TIMED_OUT, "1 message(s) failed delivery", txn_requires_abort=True
)
FATAL = KafkaError(
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "Broker: Out of order sequence number", fatal=True
)


def _events(n: int = 240) -> tuple[bytes, ...]:
    """Phishing events; every 23rd record undecodable, every 31st with a non-numeric feature,
    every 17th event unlabelled (predicted, not learned)."""
    out = []
    for i, (x, y) in enumerate(itertools.islice(datasets.Phishing(), n)):
        if i % 23 == 22:
            out.append(b"not json")
        if i % 31 == 30:
            out.append(b'{"x": {"a": "high"}, "y": true}')
        out.append(encode_event(x, None if i % 17 == 16 else y))
    return tuple(out)


EVENTS = _events()


# -- River, offline ----------------------------------------------------------------------------


def new_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def labelled(values: tuple[bytes, ...]) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for value in values:
        try:
            x, y = decode_event(value, Problem.CLASSIFICATION)
        except InvalidEvent:
            continue
        if y is not None:
            out.append((x, y))
    return out


@functools.cache
def oracle(values: tuple[bytes, ...]) -> tuple[tuple[Any, ...], float]:
    """Model parameters and ROCAUC of ``river.evaluate.progressive_val_score`` over ``values``."""
    model = new_model()
    metric = evaluate.progressive_val_score(labelled(values), model, metrics.ROCAUC())
    return params(model), float(metric.get())


@functools.cache
def curve(values: tuple[bytes, ...]) -> list[tuple[int, float]]:
    """(events learned, ROCAUC) after River learned the records before each offset."""
    model, metric, n = new_model(), metrics.ROCAUC(), 0
    out = [(0, float(metric.get()))]
    for value in values:
        for x, y in labelled((value,)):
            proba = model.predict_proba_one(x)
            if proba:
                metric.update(y, proba)
            model.learn_one(x, y)
            n += 1
        out.append((n, float(metric.get())))
    return out


def params(model: Any) -> tuple[Any, ...]:
    scaler, lr = model["StandardScaler"], model["LogisticRegression"]
    return (
        dict(scaler.counts),
        dict(scaler.means),
        dict(scaler.vars),
        dict(lr.weights),
        lr.intercept,
    )


# -- harness -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMTRAIN_SECRET", "unit-tests-only-secret-0123456789")


def make_cluster(partitions: int = 1, events: tuple[bytes, ...] = EVENTS) -> FakeCluster:
    """``events`` spread round-robin over the partitions, keyed, one second apart."""
    cluster = FakeCluster()
    cluster.create_topic(TOPIC, partitions)
    for i, value in enumerate(events):
        cluster.append(TOPIC, i % partitions, value, f"k{i}", timestamp=T0 + 1000 * i)
    return cluster


def per_partition(partitions: int, events: tuple[bytes, ...] = EVENTS) -> dict[int, tuple]:
    return {p: events[p::partitions] for p in range(partitions)}


@pytest.fixture
def clients() -> Any:
    made = FakeClients(make_cluster())
    yield made
    made.release()  # lets scripted hangs end


@pytest.fixture
def clients2() -> Any:
    """Two input partitions."""
    made = FakeClients(make_cluster(2))
    yield made
    made.release()


@pytest.fixture(params=[False, True], ids=["river", "fast"])
def fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Learn with River per event, or with the compiled path (counting its batches)."""
    spy = type("Spy", (), {"on": request.param, "batches": 0})()
    if request.param:
        pytest.importorskip("numba")
        from streamtrain.fastpath import FastEvaluator, fast_evaluator_for

        if fast_evaluator_for(new_model(), {"ROCAUC": metrics.ROCAUC()}, wait=True) is None:
            pytest.skip("the compiled path is unavailable here")
        learn_many = FastEvaluator.learn_many

        def counting(self: Any, xs: Any, ys: Any, matrix: Any = None) -> Any:
            out = learn_many(self, xs, ys, matrix)
            spy.batches += 1
            return out

        monkeypatch.setattr(FastEvaluator, "learn_many", counting)
    return spy


def make_trainer(clients: FakeClients, **overrides: Any) -> Trainer:
    settings = TrainSettings(**{**BASE, **overrides})
    return Trainer(KAFKA, settings, clients=clients, clock=clients.cluster.clock)


def train(clients: FakeClients, **overrides: Any) -> tuple[Trainer, Summary]:
    trainer = make_trainer(clients, **overrides)
    return trainer, trainer.run()


def outputs(cluster: FakeCluster) -> dict[str, list[tuple[Any, ...]]]:
    """Dead letters and predictions as read_committed readers see them, in each output
    partition's order, per input partition (a replayed stretch may interleave the input
    partitions differently)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for topic in (f"{TOPIC}.dlq", f"{TOPIC}.predictions"):
        records = [(r.key, r.value, tuple(r.headers or ())) for r in cluster.committed(topic)]
        out[topic] = sorted(records, key=lambda r: dict(r[2])["streamtrain.source.partition"])
    return out


@functools.cache
def baseline(partitions: int = 1) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
    """An uninterrupted run's outputs, and how many commits it made."""
    clients = FakeClients(make_cluster(partitions))
    train(clients, partitioned=partitions > 1)
    return outputs(clients.cluster), clients.script.calls["commit_transaction"]


def entries(cluster: FakeCluster, kind: str) -> list[tuple[Any, ...]]:
    return [e for e in cluster.journal if e[0] == kind]


def store(cluster: FakeCluster) -> FakeStore:
    return FakeStore(cluster, load_signing_key(), CHECKPOINTS)


def check_exactly_once(cluster: FakeCluster, partitions: int = 1) -> None:
    """The last checkpoint of every task is River's result on its partition; every checkpoint
    ever committed is on River's curve at its offset; outputs equal an uninterrupted run's."""
    keys = {NAME: 0} if partitions == 1 else {f"{NAME}/p{p}": p for p in range(partitions)}
    parts = per_partition(partitions)
    latest = store(cluster).latest_many(list(keys))
    assert set(latest) == set(keys)
    for key, p in keys.items():
        header = latest[key].header
        model_params, auc = oracle(parts[p])
        assert header.offsets == {TOPIC: {p: len(parts[p])}}
        assert header.events_learned == len(labelled(parts[p]))
        assert header.metrics == {"ROCAUC": auc}
        assert params(state_of(latest[key], TOPIC).model) == model_params
    checked = 0
    for checkpoint in store(cluster).history(list(keys)):
        header = checkpoint.header
        p = keys[header.model_name]
        learned, auc = curve(parts[p])[header.offsets[TOPIC].get(p, 0)]
        assert (header.events_learned, header.metrics["ROCAUC"]) == (learned, auc), header
        checked += 1
    assert checked >= len(keys)
    assert outputs(cluster) == baseline(partitions)[0]


def check_end(trainer: Trainer, summary: Summary) -> None:
    """The trainer's own model and summary are River's, on every event of the topic."""
    model_params, auc = oracle(EVENTS)
    assert summary.metrics == {"ROCAUC": auc}
    assert summary.events_learned == len(labelled(EVENTS))
    assert params(trainer.model) == model_params
    check_exactly_once(trainer.clients.cluster)


# -- an uninterrupted run ----------------------------------------------------------------------


def test_an_uninterrupted_run_is_rivers_progressive_validation(clients: FakeClients, fast: Any):
    trainer, summary = train(clients, fast_path=fast.on)
    check_end(trainer, summary)
    assert summary.stopped_because == "idle"
    assert summary.checkpoints == len(entries(clients.cluster, "committed")) > 1
    assert summary.producer_replacements == 0 and not entries(clients.cluster, "aborted")
    assert (fast.batches > 0) == fast.on and summary.fast_path_disabled is None
    # Each dead letter and each prediction once, in input order.
    found = outputs(clients.cluster)
    invalid = [i for i, v in enumerate(EVENTS) if v == b"not json" or b'"high"' in v]
    unlabelled = [i for i, v in enumerate(EVENTS) if v.endswith(b'"y":null}')]
    for topic, offsets in (("dlq", invalid), ("predictions", unlabelled)):
        sources = [
            dict(headers)["streamtrain.source.offset"] for *_, headers in found[f"{TOPIC}.{topic}"]
        ]
        assert sources == [str(i).encode() for i in offsets]


# -- aborted transactions ----------------------------------------------------------------------

ABORTABLE_CASES = {
    "first commit": ("commit_transaction", 1, ABORTABLE),
    "third commit": ("commit_transaction", 3, ABORTABLE),
    "send offsets": (
        "send_offsets_to_transaction",
        2,
        KafkaError(KafkaError._STATE, "Operation not valid in state", txn_requires_abort=True),
    ),
}


@pytest.mark.parametrize(("method", "at", "error"), ABORTABLE_CASES.values(), ids=ABORTABLE_CASES)
def test_an_abortable_error_rolls_back_to_the_last_checkpoint(
    clients: FakeClients, fast: Any, method: str, at: int, error: KafkaError
):
    clients.fail(method, at, error)
    trainer, summary = train(clients, fast_path=fast.on)
    journal = clients.cluster.journal
    (aborted,) = entries(clients.cluster, "aborted")
    before = journal[: journal.index(aborted)]
    committed = [e[2][0] for e in before if e[0] == "committed"]
    # Aborted in place (no new producer), the consumer sought back to the last commit.
    assert len(clients.producers) == 1 and summary.producer_replacements == 0
    assert [tp.offset for tp in clients.consumers[0].seeks] == [committed[-1] if committed else 0]
    check_end(trainer, summary)
    assert (fast.batches > 0) == fast.on


# -- fenced ------------------------------------------------------------------------------------


def test_fenced_at_commit_stops_and_commits_nothing_more(clients: FakeClients):
    clients.fail(
        "commit_transaction", 2, KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True)
    )
    with pytest.raises(Fenced) as caught:
        train(clients)
    assert caught.value.exit_code == 6
    assert len(clients.producers) == 1  # never replaced: a newer writer owns the id
    (first,) = entries(clients.cluster, "committed")
    clients.cluster.init_producer(TXN_ID)  # the newer owner settles what was left open
    (checkpoint,) = store(clients.cluster).history([NAME])
    assert checkpoint.header.offsets == {TOPIC: first[2]}
    for records in outputs(clients.cluster).values():
        assert all(int(dict(h)["streamtrain.source.offset"]) < first[2][0] for *_, h in records)


def test_a_newer_trainer_fences_this_one(clients: FakeClients):
    cluster = clients.cluster
    # Another trainer with the name starts: its init_transactions aborts our open transaction.
    cluster.after(
        100, lambda _c: FakeProducer(cluster, {"transactional.id": TXN_ID}).init_transactions()
    )
    with pytest.raises(Fenced) as caught:
        train(clients)
    assert caught.value.exit_code == 6 and "\n" not in str(caught.value)
    takeover = cluster.journal.index(entries(cluster, "init")[1])
    assert entries(cluster, "committed")  # some before
    assert not [e for e in cluster.journal[takeover:] if e[0] == "committed"]
    assert len(clients.producers) == 1


# -- fatal errors: the producer is replaced ----------------------------------------------------

FATAL_CASES: dict[str, list[tuple[str, int, KafkaError, dict[str, bool]]]] = {
    "send offsets": [("send_offsets_to_transaction", 2, FATAL, {})],
    "commit": [("commit_transaction", 2, FATAL, {})],
    "commit, landed": [("commit_transaction", 2, FATAL, {"landed": True})],
    "commit, cause via error_cb": [("commit_transaction", 2, FATAL, {"via_callback": True})],
    "produce, cause via error_cb": [("produce", 5, FATAL, {"via_callback": True})],
    "begin after a commit": [("begin_transaction", 2, FATAL, {})],
    "abort": [("commit_transaction", 2, ABORTABLE, {}), ("abort_transaction", 1, FATAL, {})],
}


@pytest.mark.parametrize("script", FATAL_CASES.values(), ids=FATAL_CASES)
def test_a_fatal_error_replaces_the_producer_and_reads_the_state_back(
    clients: FakeClients, fast: Any, script: list[tuple[str, int, KafkaError, dict[str, bool]]]
):
    for method, at, error, how in script:
        clients.fail(method, at, error, **how)
    trainer, summary = train(clients, fast_path=fast.on)
    old, new = clients.producers
    assert old.txn_id == new.txn_id == TXN_ID and new.epoch == old.epoch + 1
    assert summary.producer_replacements == 1
    check_end(trainer, summary)
    checkpoints, _history = clients.stores  # the checkpoint and history topics
    assert checkpoints.reads == 2  # the restore at start, and the read-back


@pytest.mark.parametrize("landed", [False, True], ids=["not landed", "landed"])
def test_a_stuck_commit_replaces_the_producer(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch, landed: bool
):
    class Impatient(TransactionalProducer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.deadline = 0.5

    monkeypatch.setattr(checkpointing_module, "TransactionalProducer", Impatient)
    clients.hang("commit_transaction", 2, landed=landed)
    started = time.monotonic()
    trainer, summary = train(clients)
    assert time.monotonic() - started < 10
    assert len(clients.producers) == 2 and summary.producer_replacements == 1
    check_end(trainer, summary)
    assert clients.stores[0].reads == 2


def test_too_many_failures_in_a_row_give_up(clients: FakeClients):
    clients.fail("commit_transaction", range(1, 100), FATAL)
    with pytest.raises(TransactionFatal) as caught:
        train(clients)
    err = caught.value
    assert isinstance(err, StreamtrainError) and err.exit_code == 7
    assert "\n" not in str(err) and f"{MAX_REPLACEMENTS_IN_A_ROW} times in a row" in str(err)
    assert len(clients.producers) == 1 + MAX_REPLACEMENTS_IN_A_ROW
    assert not entries(clients.cluster, "committed")


def test_failures_separated_by_commits_do_not_add_up(clients: FakeClients):
    """More replacements than the limit in all, but never two without a commit in between."""
    clients.fail("commit_transaction", range(2, 2 * MAX_REPLACEMENTS_IN_A_ROW + 3, 2), FATAL)
    trainer, summary = train(clients, checkpoint_every=20)
    assert summary.producer_replacements == MAX_REPLACEMENTS_IN_A_ROW + 1
    check_end(trainer, summary)


def test_the_cli_says_why_it_gave_up_in_one_line(
    clients: FakeClients, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from streamtrain.cli import main
    from streamtrain.train import trainer

    clients.fail("commit_transaction", range(1, 100), FATAL)
    with_fakes = functools.partial(Trainer, clients=clients, clock=clients.cluster.clock)
    # The command imports the Trainer when it runs (its parser is built at every start).
    monkeypatch.setattr(trainer, "Trainer", with_fakes)
    argv = ["train", "--topic", TOPIC, "--name", NAME, "--exit-when-idle", "1", "--view", "none"]
    argv += ["--metrics-topic", "", "--no-fast-path", "--checkpoint-every", "40"]
    assert main.main(argv) == 7
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("streamtrain: error: the transactional producer")


# -- rebalances --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "stale_commits"), [(50, 0), (1, 1)], ids=["uncommitted work", "stale commit"]
)
def test_lost_partitions_drop_uncommitted_work(
    clients: FakeClients, every: int, stale_commits: int
):
    """The group moves on at record 100; the trainer hears of it at its next poll. With a
    checkpoint after every batch, the one in between is refused (stale generation)."""
    cluster = clients.cluster
    seen: dict[str, Any] = {}

    def watch(entry: tuple[Any, ...]) -> None:
        if entry[0] == "expelled":
            seen["reached"] = dict(clients.consumers[0].app)
        if entry[0] == "lost":
            (last,) = store(cluster).latest_many([NAME]).values()
            seen["task"] = (trainer.tasks[NAME].events_learned, dict(trainer.tasks[NAME].offsets))
            seen["committed"] = (last.header.events_learned, dict(last.header.offsets[TOPIC]))
            seen["fetching"] = dict(clients.consumers[0].fetching)

    cluster.watchers.append(watch)
    cluster.after(100, lambda consumer: consumer.lose())
    # Commits on the learning thread: which checkpoint lands before the news is then fixed
    # (test_committer.py loses partitions with a commit in flight).
    trainer = make_trainer(clients, checkpoint_every=every, commit_in_background=False)
    summary = trainer.run()
    journal = cluster.journal
    moved_on = journal.index(("expelled",))
    back = next(i for i, e in enumerate(journal) if i > moved_on and e[0] == "assigned")
    between = [e[0] for e in journal[moved_on:back]]
    assert "committed" not in between and between.count("aborted") == stale_commits
    if not stale_commits:  # there was learned, uncommitted work when the news came
        assert seen["committed"][1][0] < seen["reached"][0]
    assert seen["task"] == seen["committed"]  # rolled back in on_lost ...
    assert seen["fetching"] == seen["committed"][1]  # ... and the consumer with it
    check_end(trainer, summary)


def test_lost_partitions_of_a_partitioned_model(clients2: FakeClients):
    cluster = clients2.cluster
    cluster.after(150, lambda consumer: consumer.lose())
    _trainer, summary = train(clients2, partitioned=True)
    journal = cluster.journal
    moved_on = journal.index(("expelled",))
    back = next(i for i, e in enumerate(journal) if i > moved_on and e[0] == "assigned")
    assert "committed" not in [e[0] for e in journal[moved_on:back]]
    assert clients2.stores[0].reads == 2  # at the first assignment, and when the tasks return
    check_exactly_once(cluster, 2)
    for p, values in per_partition(2).items():
        assert summary.tasks[f"{NAME}/p{p}"]["metrics"] == {"ROCAUC": oracle(values)[1]}


@pytest.mark.parametrize("partitions", [1, 2], ids=["named", "partitioned"])
def test_revoked_partitions_are_checkpointed_before_they_are_released(
    partitions: int,
):
    clients = FakeClients(make_cluster(partitions))
    cluster = clients.cluster
    at_release: list[Any] = []

    def watch(entry: tuple[Any, ...]) -> None:
        if entry[0] == "released" and not at_release:
            at_release.extend([cluster.journal[-2], dict(clients.consumers[0].app)])

    cluster.watchers.append(watch)
    cluster.after(100, lambda consumer: consumer.revoke())
    train(clients, partitioned=partitions > 1)
    last_entry, positions = at_release
    # What was consumed up to the revocation was committed right before the release.
    assert last_entry[0] == "committed" and last_entry[2] == positions
    assert sum(positions.values()) >= 100
    check_exactly_once(cluster, partitions)


@pytest.mark.parametrize("partitions", [1, 2], ids=["named", "partitioned"])
def test_an_aborted_checkpoint_at_revocation_rolls_back(partitions: int):
    """Only two commits: at the revocation (aborted) and the final one."""
    clients = FakeClients(make_cluster(partitions))
    clients.cluster.after(100, lambda consumer: consumer.revoke())
    clients.fail("commit_transaction", 1, ABORTABLE)
    train(clients, partitioned=partitions > 1, checkpoint_every=10_000)
    kinds = [e[0] for e in clients.cluster.journal if e[0] in ("aborted", "released", "committed")]
    assert kinds == ["aborted", "released", "committed", "released"]
    check_exactly_once(clients.cluster, partitions)


def test_fenced_while_checkpointing_at_revocation(clients: FakeClients):
    cluster = clients.cluster

    def takeover_then_rebalance(consumer: Any) -> None:
        FakeProducer(cluster, {"transactional.id": TXN_ID}).init_transactions()
        consumer.revoke()

    cluster.after(100, takeover_then_rebalance)
    with pytest.raises(Fenced):
        train(clients, checkpoint_every=10_000)
    assert not entries(cluster, "committed")
    assert clients.consumers[0].closed


# -- bugs these tests found in the reshaped trainer, fixed ---------------------------------------


def test_an_aborted_final_checkpoint_is_retried(clients: FakeClients):
    final = baseline()[1]  # the last commit of an uninterrupted run is the final checkpoint
    clients.fail("commit_transaction", final, ABORTABLE)
    trainer, summary = train(clients)
    assert summary.stopped_because == "idle"  # a clean stop, exit 0 ...
    check_exactly_once(clients.cluster)  # ... so everything learned must be committed
    check_end(trainer, summary)


@pytest.mark.parametrize(
    ("start", "fail"),
    [
        ("timestamp", False),
        ("timestamp", True),
        ("latest", False),
        ("latest", True),
    ],
    ids=["from-timestamp", "from-timestamp, rolled back", "latest", "latest, rolled back"],
)
def test_a_rollback_to_a_fresh_model_resumes_where_the_run_started(start: str, fail: bool):
    """Rolling back before the first checkpoint once sought to ``offset_of()``, which for a
    partition without a committed offset is OFFSET_BEGINNING/OFFSET_END, not where this run
    started (--from-timestamp: learns records before the timestamp; --from-end: skips all
    records that arrived since the start)."""
    if start == "timestamp":
        clients = FakeClients(make_cluster())
        overrides: dict[str, Any] = {"from_timestamp": T0 + 1000 * 100}
    else:  # 100 records before the trainer joins, the rest after
        clients = FakeClients(make_cluster(events=EVENTS[:100]))
        overrides = {"start": "latest"}

        def arrive(entry: tuple[Any, ...]) -> None:
            if entry[0] == "assigned" and len(clients.cluster.topics[TOPIC][0]) == 100:
                for i, value in enumerate(EVENTS[100:], start=100):
                    clients.cluster.append(TOPIC, 0, value, f"k{i}", timestamp=T0 + 1000 * i)

        clients.cluster.watchers.append(arrive)
    if fail:
        clients.fail("commit_transaction", 1, ABORTABLE)
    _trainer, summary = train(clients, **overrides)
    _params, auc = oracle(EVENTS[100:])
    assert summary.events_learned == len(labelled(EVENTS[100:]))
    assert summary.metrics == {"ROCAUC": auc}


def test_a_commit_that_landed_is_counted(clients: FakeClients):
    clients.fail("commit_transaction", 2, FATAL, landed=True)
    _trainer, summary = train(clients)
    assert summary.checkpoints == len(entries(clients.cluster, "committed"))


@pytest.mark.parametrize("via", ["error_cb", "message"])
def test_a_failed_consumer_is_replaced_and_the_run_ends_as_river(clients: FakeClients, via: str):
    """A consumer's fatal error (a static member fenced after its session ran out while the
    broker was away, librdkafka issue 3437) once left the trainer refused at every commit,
    for ever: it now rolls back and joins the group again with a new consumer."""
    trainer = make_trainer(clients)
    fatal = KafkaError(KafkaError._FATAL, "static consumer fenced", fatal=via == "error_cb")

    def fail(_consumer: Any) -> None:
        if via == "error_cb":
            trainer._errors.on_consumer_error(fatal)
        else:
            trainer._errors.on_message_error(fatal)

    clients.cluster.after(len(EVENTS) // 2, fail)
    summary = trainer.run()
    # The trainer's consumers (not its request follower's, which reads the events topic).
    group = [c for c in clients.consumers if c.group == trainer.group]
    assert summary.consumer_rejoins == 1 and len(group) == 2
    deadline = time.monotonic() + 5  # the failed consumer is closed on a thread of its own
    while not clients.consumers[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert clients.consumers[0].closed
    check_end(trainer, summary)
