"""Terminal views of a running trainer: a live panel on a TTY, periodic log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamtrain.train.progress import Progress, Summary

__all__ = ["LiveView", "LogView", "choose_view"]


def _fmt_metric(value: float) -> str:
    # + 0.0 turns River's -0.0 (e.g. ROCAUC before both classes were seen) into 0.0.
    return f"{value + 0.0:.6f}"


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
    """A panel redrawn in place: throughput, metrics, lag and dead letters."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console(stderr=True)
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._started = False
        self._history: dict[str, list[float]] = {}  # series name -> values, one per report

    def on_progress(self, progress: Progress) -> None:
        if not self._started:
            self._live.start()
            self._started = True
        self._live.update(self._render(progress), refresh=True)

    def on_finish(self, summary: Summary) -> None:
        if self._started:
            self._live.stop()
        self.console.print(final_line(summary))

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
        stats.add_row("elapsed", f"{p.elapsed_seconds:,.1f}s")
        metrics = Table(box=None, padding=(0, 2), show_header=True, header_style="bold cyan")
        metrics.add_column("metric")
        metrics.add_column("progressive", justify="right")
        if p.rolling_metrics:
            metrics.add_column("rolling", justify="right")
        metrics.add_column("learning curve")
        for name, value in p.metrics.items():
            curve = sparkline(self._remember(name, value))
            row = [name, _fmt_metric(value)]
            if p.rolling_metrics:
                rolling = p.rolling_metrics.get(name)
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

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        metrics = " ".join(f"{k}={_fmt_metric(v)}" for k, v in progress.metrics.items())
        print(
            f"learned={progress.events_learned} rate={progress.events_per_second:.0f}/s "
            f"lag={progress.total_lag} dead_lettered={progress.dead_lettered} {metrics}",
            file=self.stream,
            flush=True,
        )

    def on_finish(self, summary: Summary) -> None:
        print(final_line(summary), file=self.stream, flush=True)


def final_line(summary: Summary) -> str:
    metrics = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in summary.metrics.items())
    predicted = summary.events_predicted
    return (
        f"learned {summary.events_learned:,} events from {summary.topic} in "
        f"{summary.elapsed_seconds:.1f}s ({summary.events_per_second:,.0f} ev/s), "
        f"dead-lettered {summary.dead_lettered:,}"
        + (f", predicted {predicted:,} unlabelled" if predicted else "")
        + f"; {metrics} [{summary.stopped_because}]"
    )


def choose_view(mode: str, title: str) -> LiveView | LogView | None:
    """``auto`` is the live panel on a terminal and log lines otherwise."""
    if mode == "none":
        return None
    if mode == "live" or (mode == "auto" and sys.stderr.isatty()):
        return LiveView(title)
    return LogView()
