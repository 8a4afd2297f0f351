"""The promotion rule applied offline, with River alone: the oracle of the promotion tests.

Written from the rule as the README states it, not from streamtrain's gate: every model
predicts, learns and scores each event (River's ``progressive_val_score`` protocol), each keeps
the metric over its last ``window`` events in a ``utils.Rolling``, and after every ``every``-th
event each challenger that has learned ``min_events`` and beats the champion by at least
``margin`` (strictly) counts a win, any other outcome resets its count; ``after`` wins in a
row promote it (the one ahead by most, then the first in order), the old champion taking its
place among the challengers, and every count restarts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from river import metrics, utils


def offline_promotions(
    stream: Iterable[tuple[dict[str, Any], Any]],
    founder: Callable[[], Any],
    challengers: dict[str, Callable[[], Any]],
    *,
    window: int,
    every: int,
    after: int,
    margin: float = 0.0,
    min_events: int | None = None,
    metric: Callable[[], Any] = metrics.ROCAUC,
) -> list[tuple[int, str, str]]:
    """``(event count, from label, to label)`` of each promotion, the founder labelled c0."""
    least = window if min_events is None else min_events
    models = {"c0": founder(), **{label: make() for label, make in challengers.items()}}
    windows = {label: utils.Rolling(metric(), window_size=window) for label in models}
    champion, order = "c0", list(challengers)
    wins = dict.fromkeys(challengers, 0)
    promotions = []
    for n, (x, y) in enumerate(stream, start=1):
        for label, model in models.items():
            proba = model.predict_proba_one(x)
            model.learn_one(x, y)
            if proba:
                windows[label].update(y, proba)
        if n % every:
            continue
        best: tuple[float, str] | None = None
        for label in order:
            lead = windows[label].get() - windows[champion].get()
            won = n >= least and math.isfinite(lead) and lead > 0 and lead >= margin
            wins[label] = wins[label] + 1 if won else 0
            if wins[label] >= after and (best is None or lead > best[0]):
                best = (lead, label)
        if best is not None:
            new = best[1]
            promotions.append((n, champion, new))
            order[order.index(new)] = champion
            wins = dict.fromkeys(order, 0)
            champion = new
    return promotions


def offline_promote_best(
    stream: Iterable[tuple[dict[str, Any], Any]],
    founder: Callable[[], Any],
    challengers: dict[str, Callable[[], Any]],
    *,
    window: int,
    detector: Callable[[], Any],
    margin: float = 0.0,
    metric: Callable[[], Any] = metrics.ROCAUC,
) -> list[tuple[int, str, str]]:
    """``--on-drift promote-best`` (with a gate that never promotes on its own), from the rule
    as the README states it: every model feeds its own ``detector`` its 0/1 error (arg-max of
    ``predict_proba_one``); when the champion's fires on the d-th event (none pending), then
    right after event d + ``window`` the challenger ahead of the champion by most on its
    windowed metric (strictly, by at least ``margin``; the first in order on a tie) is
    promoted, the old champion taking its place. ``(event count, from, to)`` of each."""
    models = {"c0": founder(), **{label: make() for label, make in challengers.items()}}
    windows = {label: utils.Rolling(metric(), window_size=window) for label in models}
    detectors = {label: detector() for label in models}
    champion, order = "c0", list(challengers)
    best_at = 0
    promotions = []
    for n, (x, y) in enumerate(stream, start=1):
        fired = False
        for label, model in models.items():
            proba = model.predict_proba_one(x)
            model.learn_one(x, y)
            if proba:
                windows[label].update(y, proba)
                detectors[label].update(0.0 if max(proba, key=proba.get) == y else 1.0)
                fired = fired or (label == champion and detectors[label].drift_detected)
        if fired and not best_at:
            best_at = n + window
        if not best_at or n < best_at:
            continue
        best_at = 0
        best: tuple[float, str] | None = None
        for label in order:
            lead = windows[label].get() - windows[champion].get()
            ahead = n >= window and math.isfinite(lead) and lead > 0 and lead >= margin
            if ahead and (best is None or lead > best[0]):
                best = (lead, label)
        if best is not None:
            new = best[1]
            promotions.append((n, champion, new))
            order[order.index(new)] = champion
            champion = new
    return promotions
