"""Charts as inline SVG, drawn on the server: line charts (time series), bar charts, heat maps, sparklines.

Pure functions from numbers to SVG text, with nothing to load in the browser (the console works with no
internet). Every piece of text is escaped. Each chart is an `<svg class="chart ...">` whose data carry
`data-*` attributes (how many points a series has, a cell's value), so tests and curious operators can
read back what is drawn. A `None` value is a gap in a line, an empty bar, a grey cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")
NO_DATA = "#e5e7eb"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 12, 26, 28


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); x in epoch ms for time charts; y None: a gap
    color: str | None = None


@dataclass(frozen=True)
class Marker:
    """A vertical line at x with a short label (a decision on a rollout's gate chart)."""

    x: float
    label: str
    color: str = "#6b7280"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


def format_value(value: float | None) -> str:
    """A short human reading of a number (axis ticks, tooltips)."""
    if value is None or not math.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"{value / 1e9:.3g}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 1e3:  # whole: .3g would say 1e+03 for 1000
        return f"{value:.0f}"
    if magnitude == 0 or magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2e}"


def format_time(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About `count` round numbers covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks: list[float] = []
    value = start
    while value < high + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _frame(kind: str, title: str, width: int, height: int, extra: str = "") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_attr(title)}"{extra}>'
            f'<title>{escape(title)}</title>'
            f'<text class="chart-title" x="{MARGIN_LEFT}" y="16" font-size="13" font-weight="600">'
            f'{escape(title)}</text>')  # fmt: skip


def _empty(kind: str, title: str, width: int, height: int, message: str = "no data yet") -> str:
    return (_frame(kind, title, width, height, ' data-empty="true"')
            + f'<text class="no-data" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
            f'font-size="12" fill="#6b7280">{escape(message)}</text></svg>')  # fmt: skip


def line_chart(
    series: Sequence[Series], *, title: str, width: int = 640, height: int = 200, unit: str = "",
    time_axis: bool = True, threshold: float | None = None, markers: Sequence[Marker] = (),
    y_min: float | None = 0.0, y_max: float | None = None,
) -> str:  # fmt: skip
    """One or more series against a shared x axis (time in ms by default), with an optional dashed
    threshold line (a gate's limit) and vertical markers (decisions)."""
    xs = [x for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    ys = [y for s in series for _x, y in s.points if y is not None and math.isfinite(y)]
    if not ys:
        return _empty("line-chart", title, width, height)
    x_low, x_high = min(xs), max(xs)
    x_low = min([x_low, *(m.x for m in markers)])
    x_high = max([x_high, *(m.x for m in markers)])
    if x_high <= x_low:
        x_low, x_high = x_low - 1, x_high + 1
    limits = [*ys, *([threshold] if threshold is not None and math.isfinite(threshold) else [])]
    low = min(limits) if y_min is None else min(y_min, min(limits))
    high = max(limits) if y_max is None else y_max
    ticks = nice_ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])
    if high <= low:
        high = low + 1
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM

    def px(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return MARGIN_TOP + plot_h - (min(max(y, low), high) - low) / (high - low) * plot_h

    out = [_frame("line-chart", title, width, height, f' data-series="{len(series)}"')]
    for tick in ticks:
        if low <= tick <= high:
            y = py(tick)
            out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="#e5e7eb"/><text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                       f'font-size="10" fill="#6b7280">{escape(format_value(tick))}{escape(unit)}</text>')  # fmt: skip
    whole_xs = not time_axis and all(float(x).is_integer() for x in xs)
    drawn: set[str] = set()
    for x, anchor in ((x_low, "start"), ((x_low + x_high) / 2, "middle"), (x_high, "end")):
        label = format_time(x) if time_axis else format_value(x)
        # no "1.5" between versions 1 and 2, and no second "06:14:53" on a chart under a few seconds long
        if label in drawn or (whole_xs and not float(x).is_integer()):
            continue
        drawn.add(label)
        out.append(f'<text class="x-tick" x="{px(x):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="10" '
                   f'fill="#6b7280">{escape(label)}</text>')  # fmt: skip
    if threshold is not None and math.isfinite(threshold):
        y = py(threshold)
        out.append(f'<line class="threshold" data-value="{_attr(threshold)}" x1="{MARGIN_LEFT}" '
                   f'x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dc2626" stroke-dasharray="5 4"/>')
    for marker in markers:
        x = px(marker.x)
        out.append(f'<g class="marker"><line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" '
                   f'y2="{MARGIN_TOP + plot_h}" stroke="{_attr(marker.color)}" stroke-dasharray="2 3"/>'
                   f'<title>{escape(marker.label)} at {escape(format_time(marker.x) if time_axis else _num(marker.x))}'
                   f'</title></g>')  # fmt: skip
    legend_x = width - MARGIN_RIGHT
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        finite = [(x, y) for x, y in s.points if y is not None and math.isfinite(y)]
        out.append(f'<g class="series" data-name="{_attr(s.name)}" data-points="{len(finite)}">')
        run: list[str] = []
        runs: list[list[str]] = []
        for x, value in s.points:
            if value is None or not math.isfinite(value):
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{px(x):.1f},{py(value):.1f}")
        if run:
            runs.append(run)
        for points in runs:
            joined = " ".join(points)
            out.append(f'<polyline fill="none" stroke="{_attr(color)}" stroke-width="1.8" points="{joined}"/>')
        for x, y in finite:
            out.append(f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.2" fill="{_attr(color)}" '
                       f'data-x="{_attr(x)}" data-y="{_attr(y)}"><title>{escape(s.name)}: {escape(format_value(y))}'
                       f'{escape(unit)} at {escape(format_time(x) if time_axis else _num(x))}</title></circle>')
        out.append("</g>")
        legend_x -= 8 + 7 * len(s.name)
        out.append(f'<rect x="{legend_x:.0f}" y="7" width="8" height="8" fill="{_attr(color)}"/>'
                   f'<text x="{legend_x + 11:.0f}" y="15" font-size="11">{escape(s.name)}</text>')
        legend_x -= 14
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    bars: Sequence[tuple[str, float | None]], *, title: str, width: int = 640, height: int = 200, unit: str = "",
    threshold: float | None = None, colors: Sequence[str] | None = None,
) -> str:  # fmt: skip
    """One bar per (label, value); bars over `threshold` are drawn red."""
    values = [v for _label, v in bars if v is not None and math.isfinite(v)]
    if not values:
        return _empty("bar-chart", title, width, height)
    limits = [*values, 0.0, *([threshold] if threshold is not None else [])]
    ticks = nice_ticks(min(limits), max(limits))
    low, high = min(min(limits), ticks[0]), max(max(limits), ticks[-1])
    if high <= low:
        high = low + 1
    plot_w, plot_h = width - MARGIN_LEFT - MARGIN_RIGHT, height - MARGIN_TOP - MARGIN_BOTTOM
    slot = plot_w / len(bars)

    def py(y: float) -> float:
        return MARGIN_TOP + plot_h - (y - low) / (high - low) * plot_h

    out = [_frame("bar-chart", title, width, height, f' data-bars="{len(bars)}"')]
    for tick in ticks:
        y = py(tick)
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e5e7eb"/><text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                   f'fill="#6b7280">{escape(format_value(tick))}{escape(unit)}</text>')  # fmt: skip
    zero = py(0.0)
    show_labels = slot >= 18
    for i, (label, value) in enumerate(bars):
        w = min(max(slot * 0.7, 1.0), 64.0)  # one bar alone stays a bar, not a wall
        x = MARGIN_LEFT + i * slot + (slot - w) / 2
        if value is None or not math.isfinite(value):
            out.append(f'<rect class="bar" data-label="{_attr(label)}" data-value="" x="{x:.1f}" y="{zero - 2:.1f}" '
                       f'width="{w:.1f}" height="2" fill="{NO_DATA}"><title>{escape(label)}: no data</title></rect>')
        else:
            top, bottom = sorted((py(value), zero))
            over = threshold is not None and value > threshold
            color = "#dc2626" if over else (colors[i % len(colors)] if colors else PALETTE[0])
            out.append(f'<rect class="bar" data-label="{_attr(label)}" data-value="{_attr(value)}" x="{x:.1f}" '
                       f'y="{top:.1f}" width="{w:.1f}" height="{max(bottom - top, 0.5):.1f}" fill="{color}">'
                       f'<title>{escape(label)}: {escape(format_value(value))}{escape(unit)}</title></rect>')
        if show_labels:
            text = label if len(label) <= max(int(slot / 6), 3) else label[: max(int(slot / 6), 3) - 1] + "…"
            out.append(f'<text x="{x + w / 2:.1f}" y="{height - 10}" text-anchor="middle" font-size="10" '
                       f'fill="#374151">{escape(text)}</text>')
    if threshold is not None:
        y = py(threshold)
        out.append(f'<line class="threshold" data-value="{_attr(threshold)}" x1="{MARGIN_LEFT}" '
                   f'x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#dc2626" stroke-dasharray="5 4"/>')
    out.append("</svg>")
    return "".join(out)


def heat_color(value: float | None, high: float) -> str:
    """White (0) through amber to red (`high` and above); grey when there is no value."""
    if value is None or not math.isfinite(value):
        return NO_DATA
    t = min(max(value / high, 0.0), 1.0) if high > 0 else 1.0
    stops = ((0.0, (255, 255, 255)), (0.5, (251, 191, 36)), (1.0, (220, 38, 38)))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            r, g, b = (round(a + (z - a) * f) for a, z in zip(c0, c1, strict=True))
            return f"#{r:02x}{g:02x}{b:02x}"
    return "#dc2626"


def heat_map(
    rows: Sequence[str], columns: Sequence[str], values: Sequence[Sequence[float | None]], *, title: str,
    high: float = 0.25, unit: str = "", cell: int = 28, label_width: int = 110,
) -> str:  # fmt: skip
    """A grid of rows x columns coloured by value (e.g. PSI of each feature on each device); `high` is the
    value drawn fully red (a drift threshold)."""
    if not rows or not columns:
        return _empty("heat-map", title, max(label_width + cell * 4, 240), 80)
    if len(values) != len(rows) or any(len(r) != len(columns) for r in values):
        raise ValueError("heat_map: values must have one row per row label and one value per column")
    width = label_width + cell * len(columns) + 16
    height = MARGIN_TOP + 40 + cell * len(rows) + 30
    top = MARGIN_TOP + 40
    out = [_frame("heat-map", title, width, height, f' data-rows="{len(rows)}" data-columns="{len(columns)}"')]
    for j, column in enumerate(columns):
        x = label_width + j * cell + cell / 2
        out.append(f'<text x="{x:.1f}" y="{top - 6}" font-size="10" fill="#374151" '
                   f'transform="rotate(-45 {x:.1f} {top - 6})">{escape(column[:14])}</text>')
    for i, row in enumerate(rows):
        y = top + i * cell
        out.append(f'<text x="{label_width - 6}" y="{y + cell / 2 + 4:.1f}" text-anchor="end" font-size="11" '
                   f'fill="#374151">{escape(row[:18])}</text>')
        for j, column in enumerate(columns):
            value = values[i][j]
            shown = format_value(value) if value is not None else "no data"
            out.append(f'<rect class="cell" data-row="{_attr(row)}" data-column="{_attr(column)}" '
                       f'data-value="{_attr("" if value is None else value)}" x="{label_width + j * cell}" y="{y}" '
                       f'width="{cell - 2}" height="{cell - 2}" fill="{heat_color(value, high)}" stroke="#d1d5db">'
                       f'<title>{escape(row)} / {escape(column)}: {escape(shown)}{escape(unit)}</title></rect>')
    legend_y = top + cell * len(rows) + 12
    for k in range(5):
        value = high * k / 4
        out.append(f'<rect x="{label_width + k * 22}" y="{legend_y}" width="20" height="10" '
                   f'fill="{heat_color(value, high)}" stroke="#d1d5db"/>')
    out.append(f'<text x="{label_width + 5 * 22 + 4}" y="{legend_y + 9}" font-size="10" fill="#374151">'
               f'0 → {escape(format_value(high))}{escape(unit)} and above</text>')
    out.append("</svg>")
    return "".join(out)


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 24, color: str = PALETTE[0]) -> str:
    """A tiny line with no axes (a table cell's trend); empty when there are fewer than two values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" data-points="{len(finite)}" '
                f'width="{width}" height="{height}"></svg>')
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    step = (width - 4) / (len(values) - 1)
    points = [f"{2 + i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
              for i, v in enumerate(values) if v is not None and math.isfinite(v)]  # fmt: skip
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" data-points="{len(finite)}" width="{width}" '
            f'height="{height}"><polyline fill="none" stroke="{_attr(color)}" stroke-width="1.5" '
            f'points="{" ".join(points)}"/></svg>')
