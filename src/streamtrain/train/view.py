"""Terminal views of a running trainer: a live panel on a TTY, periodic log lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamtrain.train.challengers import CHAMPION
from streamtrain.train.progress import Progress, Summary, joins_per_second

__all__ = ["LiveView", "LogView", "choose_view"]


def _fmt_metric(value: float) -> str:
    # + 0.0 turns River's -0.0 (e.g. ROCAUC before both classes were seen) into 0.0.
    return f"{value + 0.0:.6f}"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1_000:
        return f"{ms:.0f} ms"
    if ms < 120_000:
        return f"{ms / 1_000:.1f} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


_OUTCOMES = ("expired", "defaulted", "unmatched", "duplicate", "evicted")


def join_rows(join: Mapping[str, Any], rate: float | None) -> list[tuple[str, str]]:
    """The live panel's join rows, (label, text): what waits, how fast labels join, how
    the rest ended, and the label delay."""
    outcomes = ", ".join(f"{name} {join[name]:,}" for name in _OUTCOMES)
    return [
        ("pending", f"{join['pending']:,} predictions, {join['held_labels']:,} labels held"),
        ("joins/s", "—" if rate is None else f"{rate:,.0f}"),
        ("joined", f"{join['joined']:,}  ({outcomes})"),
        (
            "label delay",
            f"p50 {_fmt_ms(join['label_delay_p50_ms'])} · "
            f"p99 {_fmt_ms(join['label_delay_p99_ms'])}",
        ),
    ]


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """The last ``width`` values as a row of bars scaled between their min and max."""
    tail = values[-width:]
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    span = high - low
    if span <= 0:
        return _BARS[3] * len(tail)
    return "".join(_BARS[min(int((v - low) / span * len(_BARS)), len(_BARS) - 1)] for v in tail)


class LiveView:
    """A panel redrawn in place: throughput, metrics, lag, dead letters and joins."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console(stderr=True)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._started = False
        self._history: dict[str, list[float]] = {}  # series name -> values, one per report
        self._previous: Progress | None = None  # the report before, for the join rate

    def on_progress(self, progress: Progress) -> None:
        if not self._started:
            self._live.start()
            self._started = True
        self._live.update(self._render(progress), refresh=True)
        self._previous = progress

    def on_finish(self, summary: Summary) -> None:
        if self._started:
            self._live.stop()
        # Plain text: "[idle]" at its end is not rich markup.
        self.console.print(final_line(summary), markup=False, highlight=False)

    def _remember(self, name: str, value: float) -> list[float]:
        series = self._history.setdefault(name, [])
        series.append(value)
        del series[:-200]
        return series

    def _render(self, p: Progress) -> Panel:
        stats = Table.grid(padding=(0, 2))
        stats.add_column(style="bold")
        stats.add_column()
        stats.add_row("events learned", f"{p.events_learned:,}")
        rate = self._remember("events/s", p.events_per_second)
        stats.add_row("events/s", f"{p.events_per_second:,.0f}  [green]{sparkline(rate)}[/]")
        lag = "—" if not p.lag else f"{p.total_lag:,}"
        if len(p.lag) > 1:
            lag += "  (" + ", ".join(f"p{k}:{v:,}" for k, v in sorted(p.lag.items())) + ")"
        stats.add_row("consumer lag", lag)
        dlq = f"{p.dead_lettered:,}"
        if p.dead_letter_reasons:
            dlq += "  (" + ", ".join(f"{r}: {n}" for r, n in p.dead_letter_reasons.items()) + ")"
        stats.add_row("dead-lettered", Text(dlq, style="yellow" if p.dead_lettered else ""))
        if p.events_predicted:
            stats.add_row("unlabelled, predicted", f"{p.events_predicted:,}")
        if p.join is not None:
            joins = joins_per_second(self._previous, p)
            for label, text in join_rows(p.join, joins):
                if label == "joins/s" and joins is not None:
                    text += f"  [magenta]{sparkline(self._remember('joins/s', joins))}[/]"
                stats.add_row(label, text)
        stats.add_row("elapsed", f"{p.elapsed_seconds:,.1f}s")
        metrics = Table(box=None, padding=(0, 2), show_header=True, header_style="bold cyan")
        if p.challengers:
            metrics.add_column("model")
        metrics.add_column("metric")
        metrics.add_column("progressive", justify="right")
        if p.rolling_metrics:
            metrics.add_column("rolling", justify="right")
        metrics.add_column("learning curve")
        for label, values, rolling_values in model_metrics(p):
            for name, value in values.items():
                curve = sparkline(self._remember(f"{label}:{name}", value))
                row = [label, name] if p.challengers else [name]
                row.append(_fmt_metric(value))
                if p.rolling_metrics:
                    rolling = rolling_values.get(name)
                    row.append("" if rolling is None else _fmt_metric(rolling))
                metrics.add_row(*row, f"[cyan]{curve}[/]")
        parts: list[Table | Text] = [stats, Text(""), metrics]
        if p.broker_error:
            parts.append(Text(f"kafka: {p.broker_error}", style="red"))
        return Panel(Group(*parts), title=self.title, title_align="left", border_style="blue")


class LogView:
    """One plain line every ``every`` seconds, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0
        self._previous: Progress | None = None  # the last one printed, for the join rate

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        metrics = " ".join(f"{k}={_fmt_metric(v)}" for k, v in progress.metrics.items())
        join = "" if progress.join is None else " " + join_fields(progress, self._previous)
        self._previous = progress
        challengers = "".join(
            f" | {label} learned={c['events_learned']} "
            + " ".join(f"{k}={_fmt_metric(v)}" for k, v in c["metrics"].items())
            for label, c in progress.challengers.items()
        )
        print(
            f"learned={progress.events_learned} rate={progress.events_per_second:.0f}/s "
            f"lag={progress.total_lag} dead_lettered={progress.dead_lettered} {metrics}{join}"
            f"{challengers}",
            file=self.stream,
            flush=True,
        )

    def on_finish(self, summary: Summary) -> None:
        print(final_line(summary), file=self.stream, flush=True)


def model_metrics(
    progress: Progress,
) -> list[tuple[str, Mapping[str, float], Mapping[str, float]]]:
    """(label, metrics, rolling metrics) of the champion, then of each challenger."""
    rows = [(CHAMPION, progress.metrics, progress.rolling_metrics)]
    for label, c in progress.challengers.items():
        rows.append((label, c["metrics"], c.get("rolling", {})))
    return rows


def join_fields(progress: Progress, previous: Progress | None) -> str:
    """A log line's join part: ``pending=... joined=... joins=.../s ...`` (the rate since
    ``previous``, left out without one)."""
    join = progress.join or {}
    rate = joins_per_second(previous, progress)
    fields = [
        f"pending={join['pending']}",
        f"held_labels={join['held_labels']}",
        f"joined={join['joined']}",
        *([] if rate is None else [f"joins={rate:.0f}/s"]),
        *(f"{name}={join[name]}" for name in _OUTCOMES),
        *(
            f"{name}={join[name]:.0f}"
            for name in ("label_delay_p50_ms", "label_delay_p99_ms")
            if join[name] is not None
        ),
    ]
    return " ".join(fields)


def final_line(summary: Summary) -> str:
    metrics = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in summary.metrics.items())
    predicted = summary.events_predicted
    join = summary.join
    return (
        f"learned {summary.events_learned:,} events from {summary.topic} in "
        f"{summary.elapsed_seconds:.1f}s ({summary.events_per_second:,.0f} ev/s), "
        f"dead-lettered {summary.dead_lettered:,}"
        + (f", predicted {predicted:,} unlabelled" if predicted else "")
        + (
            ""
            if join is None
            else f", joined {join['joined']:,} labels ({join['pending']:,} still pending, "
            f"{join['expired']:,} expired, {join['unmatched']:,} unmatched)"
        )
        + f"; {f'{CHAMPION}: ' if summary.challengers else ''}{metrics}"
        + "".join(
            f"; {label} ({c['spec']}): "
            + ", ".join(f"{k} {_fmt_metric(v)}" for k, v in c["metrics"].items())
            for label, c in summary.challengers.items()
        )
        + _drift_part(summary)
        + f" [{summary.stopped_because}]"
    )


def _drift_part(summary: Summary) -> str:
    """``; drift detected: champion 2, c1 1`` when a detector fired (streamtrain.train.drift)."""
    counts = (summary.drift or {}).get("detections") or {}
    if not counts:
        return ""
    return "; drift detected: " + ", ".join(f"{label} {n}" for label, n in counts.items())


def choose_view(mode: str, title: str) -> LiveView | LogView | None:
    """``auto`` is the live panel on a terminal and log lines otherwise."""
    if mode == "none":
        return None
    if mode == "live" or (mode == "auto" and sys.stderr.isatty()):
        return LiveView(title)
    return LogView()
