"""Bar and line charts as inline SVG, drawn on the server from exact integers.

No JavaScript and no library: a chart is a few rectangles or a polyline with axes,
month labels under the x axis, integer ticks on the y axis, and a ``<title>`` and
``<desc>`` so a screen reader announces what it shows. Every value is also written in
the SVG as text (the bar's own ``<title>`` and a data attribute), so the numbers can be
read, copied and tested, not only seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 28, 40
# At most this many month labels under the x axis, so that they never overlap.
MAX_X_LABELS = 7
TICKS = 4


@dataclass(frozen=True, slots=True)
class Series:
    """One chart's data: labels along the x axis and one whole number per label."""

    title: str
    description: str
    labels: Sequence[str]
    values: Sequence[int]
    unit: str = ""

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.values) or not self.labels:
            raise ValueError("a series needs one value per label, and at least one label")
        if any(isinstance(value, bool) or not isinstance(value, int) or value < 0 for value in self.values):
            raise ValueError("chart values are whole numbers of zero or more")


def axis_maximum(largest: int) -> int:
    """The top of the y axis: the smallest "nice" number (1, 2, 5 × 10^n, divisible into ticks) ≥ largest."""
    if largest <= 0:
        return TICKS
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            top = step * magnitude * TICKS
            if top >= largest:
                return top
        magnitude *= 10


def _plot_area() -> tuple[int, int, int, int]:
    return MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_LEFT - MARGIN_RIGHT, HEIGHT - MARGIN_TOP - MARGIN_BOTTOM


def _y(value: int, top: int) -> float:
    left, upper, _, height = _plot_area()
    return upper + height - (value / top) * height


def _frame(series: Series, chart_id: str, body: list[str], top: int) -> Markup:
    left, upper, width, height = _plot_area()
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(series.title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(series.description)}</desc>',
    ]
    for tick in range(TICKS + 1):
        value = top * tick // TICKS
        y = _y(value, top)
        parts.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:,}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{upper}" x2="{left}" y2="{upper + height}"/>')
    parts.append(f'<line class="axis" x1="{left}" y1="{upper + height}" x2="{left + width}" y2="{upper + height}"/>')
    slot = width / len(series.labels)
    every = max(1, -(-len(series.labels) // MAX_X_LABELS))
    for index, label in enumerate(series.labels):
        if index % every == 0:
            x = left + slot * (index + 0.5)
            parts.append(f'<text class="label" x="{x:.1f}" y="{upper + height + 16}" text-anchor="middle">'
                         f'{escape(label)}</text>')
    if series.unit:
        parts.append(f'<text class="unit" x="{left}" y="{upper - 12}">{escape(series.unit)}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(series: Series, *, chart_id: str) -> Markup:
    """Vertical bars, one per label."""
    top = axis_maximum(max(series.values))
    left, upper, width, height = _plot_area()
    slot = width / len(series.labels)
    bar_width = slot * 0.7
    bars = []
    for index, (label, value) in enumerate(zip(series.labels, series.values, strict=True)):
        y = _y(value, top)
        x = left + slot * index + (slot - bar_width) / 2
        bars.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width:.1f}" '
                    f'height="{upper + height - y:.1f}" data-label="{escape(label)}" data-value="{value}">'
                    f'<title>{escape(label)}: {value:,}{escape(" " + series.unit if series.unit else "")}'
                    f'</title></rect>')
    return _frame(series, chart_id, bars, top)


def line_chart(series: Series, *, chart_id: str) -> Markup:
    """A line through one point per label, each point marked."""
    top = axis_maximum(max(series.values))
    left, _, width, _ = _plot_area()
    slot = width / len(series.labels)
    points = [(left + slot * (index + 0.5), _y(value, top)) for index, value in enumerate(series.values)]
    body = [f'<polyline class="line" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>']
    for (x, y), label, value in zip(points, series.labels, series.values, strict=True):
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" data-label="{escape(label)}" '
                    f'data-value="{value}"><title>{escape(label)}: {value:,}'
                    f'{escape(" " + series.unit if series.unit else "")}</title></circle>')
    return _frame(series, chart_id, body, top)
