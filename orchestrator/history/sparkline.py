"""A tiny inline SVG line of a series of numbers (a "sparkline"), for the report's trend cells.

Only numbers go into the markup (coordinates, sizes), so the result is safe to embed as is; the title,
written by the caller, is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 80, 18, 2


def sparkline(values: Sequence[float], *, title: str = "", width: int = WIDTH, height: int = HEIGHT) -> str:
    """SVG markup: a polyline through `values` (oldest first) and a dot on the last one. Empty for fewer
    than two finite values: one point is no trend."""
    points = [v for v in values if math.isfinite(v)]
    if len(points) < 2:
        return ""
    low, high = min(points), max(points)
    span = high - low or 1.0  # a flat series is drawn as a flat line in the middle
    step = (width - 2 * PAD) / (len(points) - 1)

    def y(value: float) -> float:
        if high == low:
            return height / 2
        return PAD + (height - 2 * PAD) * (1 - (value - low) / span)

    coords = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(points))
    last_x, last_y = PAD + (len(points) - 1) * step, y(points[-1])
    label = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">{label}'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.2" points="{coords}"/>'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="1.8" fill="currentColor"/></svg>'
    )
