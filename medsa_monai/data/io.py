"""Writing result files atomically: a reader never sees half a file, an interrupted run leaves none."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

__all__ = ["atomic_write_text", "write_json", "write_csv"]


def _json_safe(value: Any) -> Any:
    """NaN / inf become ``null`` (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join("" if isinstance(v, float) and math.isnan(v) else
                              (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in row))
    return atomic_write_text(path, "\n".join(lines) + "\n")
