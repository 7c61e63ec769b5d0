"""Bar charts drawn on the server as SVG geometry (templates/chart.html draws the shapes).

No charting library in the browser: the console's pages carry no script beyond htmx and two
small files, and an SVG of a few dozen rectangles needs none. The y axis runs from 0 to a
"nice" maximum (1, 2 or 5 times a power of ten) with four gridlines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720.0, 240.0
LEFT, RIGHT, TOP, BOTTOM = 64.0, 8.0, 12.0, 28.0  # room for the axis labels
GRIDLINES = 4
MAX_X_LABELS = 12


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    unit: str
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: float = WIDTH
    height: float = HEIGHT
    baseline: float = HEIGHT - BOTTOM
    left: float = LEFT

    @property
    def empty(self) -> bool:
        return not any(bar.value for bar in self.bars)


def nice_ceiling(value: int) -> int:
    """The smallest 1/2/5 x 10^k at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def short_number(value: int) -> str:
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return str(value)


def bar_chart(points: Sequence[tuple[str, int]], *, title: str, unit: str) -> BarChart:
    """One bar per (label, value), in order."""
    top = nice_ceiling(max((value for _, value in points), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        height = plot_height * value / top
        bars.append(
            Bar(
                x=LEFT + index * slot + slot * 0.15,
                y=TOP + plot_height - height,
                width=slot * 0.7,
                height=height,
                label=label,
                value=value,
            )
        )
    y_ticks = [
        Tick(TOP + plot_height * (1 - step / GRIDLINES), short_number(top * step // GRIDLINES))
        for step in range(GRIDLINES + 1)
    ]
    every = max(1, math.ceil(len(points) / MAX_X_LABELS))
    x_ticks = [
        Tick(bar.x + bar.width / 2, bar.label) for i, bar in enumerate(bars) if i % every == 0
    ]
    return BarChart(title=title, unit=unit, bars=bars, y_ticks=y_ticks, x_ticks=x_ticks)
