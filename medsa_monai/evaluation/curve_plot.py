"""A line plot of per-class curves (Dice against clicks) as a PNG, drawn with Pillow.

matplotlib is not a dependency; a few axes and polylines are all the interactive report needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..data.atomic import atomic_path

__all__ = ["plot_curves"]

COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def plot_curves(path: str | Path, curves: Mapping[str, Sequence[float]], title: str = "",
                y_label: str = "Dice", x_label: str = "clicks", size: tuple[int, int] = (640, 420),
                x_ticks: Sequence[object] | None = None) -> Path:
    """Write a PNG plotting each named curve against its step (1, 2, ...) with the y axis from 0 to 1.

    Args:
        path: the PNG to write (atomically).
        curves: name -> values, one per step; NaN values are left out.
        title: text above the plot.
        y_label: name of the y axis.
        x_label: name of the x axis.
        size: width and height in pixels.
        x_ticks: what to write under each step (default: 1, 2, ...), e.g. the numbers of labelled cases.
    """
    width, height = size
    left, top, bottom = 60, 40, 50
    right = max(150, 46 + 7 * max((len(str(name)) for name in curves), default=0))  # room for the legend
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    steps = max((len(v) for v in curves.values()), default=1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_xy(step: int, value: float) -> tuple[float, float]:
        x = left + (step - 1) / max(steps - 1, 1) * plot_w
        return x, top + (1.0 - value) * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in range(0, 11, 2):
        y = top + (1 - tick / 10) * plot_h
        draw.line([left - 4, y, left, y], fill="black")
        draw.line([left, y, left + plot_w, y], fill=(230, 230, 230))
        draw.text((left - 30, y - 6), f"{tick / 10:.1f}", fill="black")
    for step in range(1, steps + 1):
        x, _ = to_xy(step, 0.0)
        draw.line([x, top + plot_h, x, top + plot_h + 4], fill="black")
        if x_ticks is not None and step <= len(x_ticks):
            draw.text((x - 4, top + plot_h + 8), str(x_ticks[step - 1]), fill="black")
        elif x_ticks is None and (steps <= 10 or step % 5 == 0 or step == 1):
            draw.text((x - 4, top + plot_h + 8), str(step), fill="black")
    draw.text((left + plot_w / 2 - 20, height - 20), x_label, fill="black")
    draw.text((8, top - 20), y_label, fill="black")
    draw.text((left, 10), title, fill="black")
    for index, (name, values) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = [to_xy(step + 1, float(v)) for step, v in enumerate(values) if not math.isnan(float(v))]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        legend_y = top + 10 + 18 * index
        draw.line([width - right + 10, legend_y + 6, width - right + 30, legend_y + 6], fill=colour, width=3)
        draw.text((width - right + 36, legend_y), str(name), fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
