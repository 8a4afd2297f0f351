"""Agrawal-like labelled events for the tests that need tens of thousands of them.

River's Agrawal generator costs ~90 µs an event on an idle machine and three times that on a
loaded one: 200,000 of them took a minute of a test before it started anything. These are
~20x cheaper and as much work for the model: the same nine features (so probes drawn from
River's Agrawal fit them) and a noisy rule for the label. What the exactly-once tests prove
does not depend on the data, only on replaying the same events offline.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from streamtrain.data.events import encode_event


def agrawal_like_pairs(n: int, seed: int) -> Iterator[tuple[dict[str, Any], int]]:
    """``n`` (features, label) pairs drawn from ``seed`` alone."""
    rng = random.Random(seed)
    for _ in range(n):
        salary = rng.uniform(20_000, 150_000)
        commission = 0.0 if salary >= 75_000 else rng.uniform(10_000, 75_000)
        age = rng.randint(20, 80)
        loan = rng.uniform(0, 500_000)
        x = {
            "salary": salary,
            "commission": commission,
            "age": age,
            "elevel": rng.randint(0, 4),
            "car": rng.randint(1, 20),
            "zipcode": rng.randint(0, 8),
            "hvalue": rng.uniform(50_000, 900_000),
            "hyears": rng.randint(1, 30),
            "loan": loan,
        }
        group = (age < 40 and salary + commission > 90_000) or (
            age >= 40 and salary + commission - loan / 5 > 60_000
        )
        y = group != (rng.random() < 0.05)
        yield x, int(y)


def agrawal_like(n: int, seed: int) -> list[bytes]:
    """``n`` encoded labelled events (:func:`agrawal_like_pairs`)."""
    return [encode_event(x, y) for x, y in agrawal_like_pairs(n, seed)]
