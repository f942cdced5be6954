"""The primary metric over the partitions, as an SVG drawn on the server (no script, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from edge_training.ui.rows import PartitionRow

WIDTH, HEIGHT = 960, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 36


def metric_chart(rows: Sequence[PartitionRow]) -> str:
    """An SVG of each day's primary metric, oldest day left; the production model's day is ringed.

    Days without a metric (no run, a refused partition, a failed job) are gaps on the time axis, not
    interpolated. Returns a small note instead of an empty chart when no day has a metric.
    """
    days = sorted(row.day for row in rows)
    points = sorted((row.day, float(row.metric_value), row) for row in rows if row.metric_value is not None)
    if not points:
        return '<p class="empty">No day in this range has a primary metric yet.</p>'
    metric = next((row.metric_name for _, _, row in points if row.metric_name), "metric")
    values = [v for _, v, _ in points]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    index = {day: i for i, day in enumerate(days)}
    span = max(len(days) - 1, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: str) -> float:
        return LEFT + plot_w * (index[day] / span if len(days) > 1 else 0.5)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'aria-label="{escape(metric)} per partition day" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 6}" y="{y(high) + 4:.1f}" text-anchor="end">{high:.4g}</text>',
        f'<text x="{LEFT - 6}" y="{y(low) + 4:.1f}" text-anchor="end">{low:.4g}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 10}">{escape(days[0])}</text>',
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">{escape(days[-1])}</text>',
        f'<text x="{LEFT + 8}" y="{TOP + 12}" class="label">{escape(metric)}</text>',
    ]
    # One polyline per run of consecutive days that have a value, so a missing day is a visible gap.
    segment: list[str] = []
    previous = None
    for day, value, _ in points:
        if previous is not None and index[day] != index[previous] + 1:
            parts.append(_polyline(segment))
            segment = []
        segment.append(f"{x(day):.1f},{y(value):.1f}")
        previous = day
    parts.append(_polyline(segment))
    for day, value, row in points:
        title = f"{day}: {metric} {value:.4g}" + (f", model version {row.model_version}" if row.model_version else "")
        css = "point failed-gate" if row.gate_passed is False else "point"
        parts.append(f'<circle cx="{x(day):.1f}" cy="{y(value):.1f}" r="3.5" class="{css}" data-day="{escape(day)}">'
                     f"<title>{escape(title)}</title></circle>")
        if row.production:
            parts.append(f'<circle cx="{x(day):.1f}" cy="{y(value):.1f}" r="8" class="production" '
                         f'data-day="{escape(day)}"><title>{escape(title)} (production)</title></circle>')
            parts.append(f'<text x="{x(day):.1f}" y="{y(value) - 12:.1f}" text-anchor="middle" '
                         f'class="production-label">production v{escape(str(row.model_version))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: list[str]) -> str:
    return f'<polyline class="line" points="{" ".join(points)}"/>' if len(points) > 1 else ""
