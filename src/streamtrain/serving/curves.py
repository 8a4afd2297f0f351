"""Every model of a run, as the dashboard and the report draw it: one view per metrics record.

A trainer with challengers reports the champion's figures at the top of each metrics record
and each challenger's under ``challengers`` (:mod:`streamtrain.formats`). A promotion swaps
the two models' places: the promoted challenger's figures move to the top, and the old
champion goes on as a challenger under its own label (``c0`` for the model the run began
with). :class:`ModelViews` follows the labels through that, record by record, and adds to each
record what both the dashboard (``static/dashboard.js``) and the HTML report draw, so the two
agree:

``models``
    One entry per model the run has had, in the order they were first seen (which picks
    their colour): ``label``, ``spec``, ``color``, ``champion`` (true for the one served at
    that record), ``events_learned``, ``started_at``, and ``metrics`` / ``rolling`` with a
    value only where the metric is defined (see :func:`placeholder_zero`), else null.
``promotions``
    The run's promotions so far (at most :data:`KEPT`, oldest first): ``from``, ``to``
    (labels) and ``events``, the run's events learned at the first record that showed the
    new champion (so within one report interval after the gate decided).
``drifts``
    The record's recent drift detections (``drift.recent``) with ``model``, the label of the
    model whose detector fired: a detection the trainer labels ``champion`` belongs to the
    model that was champion at its event count.

Which label is the champion: the record's ``champion`` when the trainer gives one (with
``champion_since``, the event count of its promotion, where the marker goes); else the
founder (``c0``) until a record's challengers include the label of the champion before it,
which was then demoted, and the label that left the challengers is the one promoted. A serve
that starts after a promotion, with the founder already among the challengers, calls the
champion ``champion`` until it sees another promotion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ADDED",
    "CHAMPION",
    "FOUNDER",
    "KEPT",
    "PALETTE",
    "ModelViews",
    "placeholder_zero",
    "plain_number",
]

ADDED = ("models", "promotions", "drifts")  # the fields annotate adds to a record
FOUNDER = "c0"  # the trainer's label for the model a run began with, once promoted over
CHAMPION = "champion"  # what drift detections call the champion, and ours when its name is lost
KEPT = 100
# One colour per model, in the order models are first seen; red is kept for drift markers.
PALETTE = (
    "#2563eb",
    "#16a34a",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#475569",
)


def plain_number(value: Any) -> float | None:
    """A finite number as a float without the sign of a negative zero; None for anything else.

    >>> plain_number(-0.0), plain_number(float("nan")), plain_number(True), plain_number(2)
    (0.0, None, None, 2.0)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    # -0.0 + 0.0 is +0.0: River's metrics and sums of differences give -0.0, which prints
    # as "-0.0000".
    return value + 0.0 if math.isfinite(value) else None


@functools.cache
def placeholder_zero(metric: str) -> bool:
    """Whether River reports 0 for ``metric`` before it can say anything.

    The rule the curves follow: a metric where bigger is better (ROCAUC, Accuracy, F1, R2...)
    is undefined until its first value other than 0 in a segment of the run (a restart that
    went back in events starts a new one): River's ROCAUC is 0 until both classes were seen,
    and a curve drawn from those zeros is a ramp up from 0 that the model never had. A metric
    where smaller is better (MAE, LogLoss...) is defined from the first event learned: its 0
    is the best value, not a placeholder. A name River does not know counts as the first kind.

    >>> placeholder_zero("ROCAUC"), placeholder_zero("MAE"), placeholder_zero("F1(pos_val=0)")
    (True, False, True)
    """
    from streamtrain.errors import ConfigError
    from streamtrain.models.spec import metric_registry, parse_spec

    try:
        built = parse_spec(metric, metric_registry())
    except ConfigError:
        return True
    return bool(getattr(built, "bigger_is_better", True))


class ModelViews:
    """Adds ``models``, ``promotions`` and ``drifts`` to one model's records, in their order."""

    def __init__(self) -> None:
        self.champion = FOUNDER
        self.labels: list[str] = []  # every model seen, in order
        self.promotions: list[dict[str, Any]] = []
        self._specs: dict[str, str] = {}
        self._previous: list[str] | None = None  # the challengers of the record before
        self._defined: set[tuple[str, str, str]] = set()  # (label, field, metric), this segment
        self._events = -1.0

    def annotate(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` with the three fields (the original is left as it was)."""
        challengers = _mapping(record.get("challengers"))
        events = plain_number(record.get("events_learned")) or 0.0
        if events < self._events:  # a restart from an earlier checkpoint: a new segment
            self._defined.clear()
        self._events = events
        self._follow_champion(record, list(challengers), events)
        out = dict(record)
        if not challengers and self.labels in ([], [self.champion]):
            # A run without challengers: one model, under the founder's label.
            self._seen(self.champion)
            out["models"] = [self._view(self.champion, record, True, events)]
        else:
            self._seen(self.champion)
            for label in challengers:
                self._seen(label)
            views = []
            for label in self.labels:
                if label == self.champion:
                    views.append(self._view(label, record, True, events))
                elif label in challengers:
                    views.append(self._view(label, challengers[label], False, events))
            out["models"] = views
        out["promotions"] = list(self.promotions)
        out["drifts"] = self._drifts(record)
        return out

    # -- which model is champion ----------------------------------------------------------

    def _follow_champion(self, record: Mapping[str, Any], labels: list[str], events: float) -> None:
        given = record.get("champion")
        before, previous = self.champion, self._previous
        self._previous = labels
        if isinstance(given, str) and given:
            # The trainer names the champion and the event count it was promoted at: the
            # marker goes there, even when the first record seen comes after the promotion
            # (then the model it replaced is taken to be the founder).
            self.champion = given
            since = plain_number(record.get("champion_since")) or 0.0
            spec = record.get("champion_spec")
            if isinstance(spec, str) and spec:
                self._specs[given] = spec  # the top-level spec stays the run's first model's
            if previous is None and since > 0 and FOUNDER in labels:
                self._seen(FOUNDER)  # it came first: its colour, as if seen from the start
            if given != before and (previous is not None or since > 0):
                where = since if since > 0 else events
                self.promotions.append({"from": before, "to": given, "events": int(where)})
                del self.promotions[:-KEPT]
            return
        if previous is None:
            if before in labels:  # started after a promotion: its name is not known here
                self.champion = CHAMPION
        elif before in labels or before == CHAMPION:
            # The champion before is a challenger now (or, unnamed, some label came in):
            # the label that left the challengers is the promoted one.
            gone = [label for label in previous if label not in labels]
            came = [label for label in labels if label not in previous]
            if before == CHAMPION and gone and came:
                before = came[0]
            if before != CHAMPION:
                self.champion = gone[0] if gone else CHAMPION
        if previous is not None and self.champion not in (before, CHAMPION):
            self.promotions.append({"from": before, "to": self.champion, "events": int(events)})
            del self.promotions[:-KEPT]

    def champion_at(self, events: float) -> str:
        """The label of the champion at ``events`` events learned, by the promotions seen."""
        label = self.promotions[0]["from"] if self.promotions else self.champion
        for promotion in self.promotions:
            if promotion["events"] <= events:
                label = promotion["to"]
        return label

    # -- one model ------------------------------------------------------------------------

    def _seen(self, label: str) -> None:
        if label not in self.labels:
            self.labels.append(label)

    def _view(
        self, label: str, source: Mapping[str, Any], champion: bool, events: float
    ) -> dict[str, Any]:
        spec = source.get("spec")
        if isinstance(spec, str) and (not champion or label not in self._specs):
            self._specs[label] = spec  # a champion's own spec: the one it had as a challenger
        learned = source.get("events_learned") if not champion else events
        return {
            "label": label,
            "spec": self._specs.get(label, ""),
            "color": PALETTE[self.labels.index(label) % len(PALETTE)],
            "champion": champion,
            "events_learned": int(plain_number(learned) or 0),
            "started_at": int(plain_number(source.get("started_at")) or 0),
            "metrics": self._defined_values(label, "metrics", source, events),
            "rolling": self._defined_values(label, "rolling", source, events),
        }

    def _defined_values(
        self, label: str, field: str, source: Mapping[str, Any], events: float
    ) -> dict[str, float | None]:
        # The rule (placeholder_zero): leading zeros of a bigger-is-better metric in a
        # segment are not values yet; nor is anything before the first event learned.
        out: dict[str, float | None] = {}
        for metric, raw in _mapping(source.get(field)).items():
            value = plain_number(raw)
            key = (label, field, metric)
            undefined = value is None or events <= 0 or (value == 0 and placeholder_zero(metric))
            if not undefined:
                self._defined.add(key)
            out[metric] = value if key in self._defined else None
        return out

    def _drifts(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for detection in _mapping(record.get("drift")).get("recent") or []:
            if not isinstance(detection, dict):
                continue
            events = plain_number(detection.get("events"))
            if events is None:
                continue
            label = str(detection.get("label", CHAMPION))
            model = self.champion_at(events) if label == CHAMPION else label
            out.append({"model": model, "events": int(events), "action": detection.get("action")})
        return out


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
