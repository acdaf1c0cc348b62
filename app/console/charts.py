"""Small line charts as inline SVG, laid out here and drawn by a template macro: no chart library, no script, and
nothing the Content-Security-Policy has to allow. Each chart also says in words what it shows, for screen readers
and for a glance."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

WIDTH, HEIGHT = 520, 210
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 28


@dataclass
class Line:
    label: str
    css: str  # series-1, series-2, ...: the stylesheet's colours
    paths: list[str]  # polyline point lists, one per run without gaps
    dots: list[tuple[float, float]]
    latest: float | None


@dataclass
class Chart:
    title: str
    unit: str
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    empty: str | None = None  # why there is nothing to draw
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom_y: float = HEIGHT - BOTTOM
    right_x: float = WIDTH - RIGHT

    @property
    def summary(self) -> str:
        if self.empty:
            return self.empty
        return "; ".join(f"{line.label}: latest {_fmt(line.latest)} {self.unit}" for line in self.lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (an axis end people read)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def line_chart(
    title: str,
    unit: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float | None]]]],
    start: float,
    end: float,
    *,
    y_max: float | None = None,
    empty: str = "No data yet.",
) -> Chart:
    """`series`: (label, [(epoch seconds, value or None for a gap), ...]) over [start, end]."""
    chart = Chart(title, unit)
    values = [v for _, points in series for _, v in points if v is not None]
    if not values:
        chart.empty = empty
        return chart
    top = y_max if y_max is not None else nice_ceiling(max(values))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return round(LEFT + (min(max(t, start), end) - start) / span * plot_w, 1)

    def y(v: float) -> float:
        return round(TOP + plot_h - min(v, top) / top * plot_h, 1)

    for index, (label, points) in enumerate(series, start=1):
        runs: list[list[tuple[float, float]]] = [[]]
        for t, v in points:
            if v is None:
                runs.append([])
            else:
                runs[-1].append((x(t), y(v)))
        runs = [run for run in runs if run]
        paths = [" ".join(f"{px},{py}" for px, py in run) for run in runs if len(run) > 1]
        # A lone sample has no line to be part of: it is drawn as a dot, and so is the latest one.
        dots = [run[0] for run in runs if len(run) == 1]
        if runs and runs[-1][-1] not in dots:
            dots.append(runs[-1][-1])
        latest = next((v for _, v in reversed(points) if v is not None), None)
        chart.lines.append(Line(label, f"series-{index}", paths, dots, latest))
    chart.y_ticks = [(y(top * f), _fmt(top * f)) for f in (0, 0.5, 1)]
    chart.x_ticks = [(x(t), time.strftime("%H:%M", time.gmtime(t))) for t in (start, (start + end) / 2, end)]
    return chart


def minute_buckets(start: float, end: float, step: int) -> list[float]:
    first = int(start // step) * step
    return [float(t) for t in range(first, int(end) + 1, step)]


def from_snapshots(snapshots: list[dict[str, Any]], read: Any) -> dict[float, float | None]:
    """Snapshots keyed by their bucket's start (epoch seconds), with the value `read(snapshot)`."""
    out = {}
    for snap in snapshots:
        at = datetime.fromisoformat(snap["timestamp"].replace("Z", "+00:00")).timestamp()
        out[at] = read(snap)
    return out
