"""What a campaign does and feeds, as pure functions of its seed: the fault schedule and the
input records. The same seed (and length) gives the same campaign.

>>> schedule(7, 60) == schedule(7, 60)
True
>>> schedule(7, 60) != schedule(8, 60)
True
>>> sorted({f.kind for f in schedule(7, 600)}) == sorted(KINDS)
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from streamtrain.data.events import encode_event

# Fault kinds, with their weights in a schedule.
KINDS: dict[str, int] = {
    "trainer-kill-9": 3,  # SIGKILL a trainer process (a replacement starts at once)
    "trainer-pause": 2,  # SIGSTOP a trainer, SIGCONT after a while (past its session: fenced)
    "trainer-add": 2,  # one more trainer process joins: a rebalance
    "trainer-remove": 2,  # one leaves with SIGTERM (never the last): a rebalance
    "broker-kill-9": 2,  # SIGKILL one broker of three, restart it after a few seconds
    "broker-pause": 2,  # SIGSTOP one broker: in-flight sends time out and are re-sent
    "leader-move": 2,  # the checkpoint topic's partition leader moved to another broker
}
FIRST_FAULT_S = 6.0  # the trainers have joined and are learning by then
GAP_S = (3.0, 8.0)  # between two faults
QUIET_END_S = 5.0  # no fault starts in the last seconds

POISON = (  # records no model can learn from, each dead-lettered with its reason
    b"\xff\xfe not json",
    b'{"x": {"a": "string"}, "y": true}',
    b'{"y": true}',
    b"[1, 2, 3]",
    b'{"x": {"a": 1.0}, "y": [1]}',
)


@dataclass(frozen=True)
class Fault:
    """One fault: when (seconds from the start), what, and its drawn parameters.

    ``pick`` chooses the victim among what exists then (``pick % len(candidates)``), so
    the schedule needs no knowledge of the run; ``seconds`` is how long a pause or an
    outage lasts.
    """

    at: float
    kind: str
    pick: int
    seconds: float


def schedule(seed: int, seconds: float) -> tuple[Fault, ...]:
    """The faults of a campaign of ``seconds``, drawn from ``seed`` alone."""
    rng = random.Random(f"chaos-schedule-{seed}")
    kinds, weights = list(KINDS), list(KINDS.values())
    faults = []
    at = FIRST_FAULT_S
    while at < seconds - QUIET_END_S:
        kind = rng.choices(kinds, weights)[0]
        length = {
            "trainer-pause": rng.uniform(1.0, 12.0),
            "broker-kill-9": rng.uniform(2.0, 6.0),
            "broker-pause": rng.uniform(2.0, 4.0),
        }.get(kind, 0.0)
        faults.append(Fault(round(at, 3), kind, rng.randrange(1_000), round(length, 3)))
        at += rng.uniform(*GAP_S)
    return tuple(faults)


def record(rng: random.Random) -> bytes:
    """One input record: mostly labelled events (Agrawal-like: nine features, a noisy rule
    for the label), some unlabelled (to be predicted), a few poison (to be dead-lettered)."""
    draw = rng.random()
    if draw < 0.02:
        return rng.choice(POISON)
    salary = rng.uniform(20_000, 150_000)
    commission = 0.0 if salary >= 75_000 else rng.uniform(10_000, 75_000)
    age = rng.randint(20, 80)
    loan = rng.uniform(0, 500_000)
    x = {
        "salary": salary,
        "commission": commission,
        "age": age,
        "elevel": rng.randint(0, 4),
        "hvalue": rng.uniform(50_000, 900_000),
        "loan": loan,
    }
    if draw < 0.12:
        return orjson.dumps({"x": x})
    group = (age < 40 and salary + commission > 90_000) or (
        age >= 40 and salary + commission - loan / 5 > 60_000
    )
    return encode_event(x, int(group != (rng.random() < 0.05)))


def records(seed: int, n: int) -> list[bytes]:
    """The first ``n`` input records of a campaign with ``seed``."""
    rng = random.Random(f"chaos-records-{seed}")
    return [record(rng) for _ in range(n)]
