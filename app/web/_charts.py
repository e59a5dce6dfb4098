"""Charts drawn on the server as SVG: no script, no library, nothing to load; they print and scale.

One shape serves every chart on the pages: values over evenly spaced moments (hours or days), as bars
(counts) or a line (rates), with the largest value and the first and last moments labelled. Each chart
is an image with a text alternative that says what it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

__all__ = ["bars", "compact", "nice_max"]

WIDTH, HEIGHT = 640, 160
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 22


def nice_max(value: float) -> float:
    """The axis top: the value rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def compact(value: float, fmt: Callable[[float], str]) -> str:
    """An axis label that fits its margin: 1.5k, 20M (money keeps its sign: $2k)."""
    sign = "$" if fmt(1.0).startswith("$") else ""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{sign}{value / size:g}{suffix}"
    return fmt(value)


def bars(points: Sequence[tuple[str, float]], label: str, fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
         *, css: str = "bar", overlay: Sequence[float] | None = None, overlay_css: str = "bar-error") -> str:
    """A bar per moment (``overlay``, if given, drawn over the bars: the errors among the requests)."""
    total = sum(value for _, value in points)
    summary = f"{label}: {fmt(total)} in all over {len(points)} periods"
    if points:
        summary += f", from {points[0][0]} to {points[-1][0]}"
    top = nice_max(max((value for _, value in points), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(points))
    gap = 1.0 if step > 4 else 0.0
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(summary)}" '
           'xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(summary)}</title>"]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(compact(top * fraction, fmt))}</text>")
    for series, values in ((css, [v for _, v in points]), (overlay_css, list(overlay or ()))):
        for i, value in enumerate(values):
            if value <= 0:
                continue
            h = plot_h * min(value, top) / top
            x = LEFT + i * step
            width = max(step - gap, 0.5)
            out.append(f'<rect class="{series}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{width:.1f}" '
                       f'height="{h:.1f}"><title>{escape(points[i][0])}: {escape(fmt(value))}</title></rect>')
    if points:
        out.append(f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">{escape(points[0][0])}</text>')
        out.append(f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
                   f"{escape(points[-1][0])}</text>")
    out.append("</svg>")
    return "".join(out)
