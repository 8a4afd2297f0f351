"""The report's tables of a run's models and of its promotions and drift detections, from
records annotated by :class:`~streamtrain.serving.curves.ModelViews`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamtrain.serving.figures import escape, int_text, metric_text, number

__all__ = ["changes_table", "color_of", "models_of_run", "models_table"]


def models_of_run(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every model of the run in the order first seen, as the newest record with it has it."""
    newest: dict[str, dict[str, Any]] = {}  # first seen first; values: the newest
    for r in records:
        for m in r.get("models") or []:
            newest[m["label"]] = m
    return list(newest.values())


def color_of(models: Sequence[dict[str, Any]], label: str) -> str:
    return next((m["color"] for m in models if m["label"] == label), "#0f172a")


def models_table(last: dict[str, Any]) -> str:
    """Champion and challengers at the last report; nothing for a run with one model."""
    models = last.get("models") or []
    if len(models) < 2:
        return ""
    names = list((last.get("metrics") or {}).keys())
    promoted = {p["to"]: p["events"] for p in last.get("promotions") or []}
    rows = []
    for m in models:
        since = promoted.get(m["label"], m["started_at"]) if m["champion"] else m["started_at"]
        values = "".join(
            f"<td class='num'>{metric_text(number(m['metrics'].get(n)))}</td>" for n in names
        )
        rows.append(
            f"<tr><td class='strong' style='color:{escape(m['color'])}'>{escape(m['label'])}</td>"
            f"<td><code>{escape(m['spec'])}</code></td>"
            f"<td>{'champion' if m['champion'] else 'challenger'}</td>"
            f"<td class='num'>{int_text(m['events_learned'])}</td>"
            f"<td class='num'>{int_text(since)}</td>{values}</tr>"
        )
    heads = "".join(f"<th class='num'>{escape(n)}</th>" for n in names)
    return (
        "<h2>Models <span class='hint'>at the last report; since: the event count a model "
        "began at, or the champion was promoted at</span></h2><table class='metrics models'>"
        "<thead><tr><th>model</th><th>spec</th><th>role</th><th class='num'>events learned</th>"
        f"<th class='num'>since event</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table>"
    )


def changes_table(last: dict[str, Any]) -> str:
    """Promotions and drift detections in event order; nothing when there were none."""
    rows = [
        (p["events"], "promotion", f"{escape(p['to'])} replaces {escape(p['from'])}")
        for p in last.get("promotions") or []
    ]
    rows += [
        (
            d["events"],
            "drift",
            f"{escape(d['model'])}'s detector fired ({escape(str(d['action']))})",
        )
        for d in last.get("drifts") or []
    ]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td class='num'>{int_text(events)}</td><td>{kind}</td><td>{text}</td></tr>"
        for events, kind, text in sorted(rows, key=lambda row: row[0])
    )
    return (
        "<h2>Promotions and drift detections <span class='hint'>a promotion at the first "
        "report that showed it</span></h2><table class='metrics changes'><thead><tr>"
        "<th class='num'>events learned</th><th>what</th><th>detail</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )
