"""Bundle settings given on a command line as ``KEY=VALUE`` (``medsa train --set``, the benchmarks' ``--set``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["override_value", "parse_overrides"]


PYTHON_CONSTANTS = {"True": True, "False": False, "None": None}


def override_value(text: str):
    """A command-line override value: JSON when it parses (numbers, lists, true/false/null), Python's
    ``True``/``False``/``None`` (as ``python -m monai.bundle run`` takes them), else the string."""
    if text in PYTHON_CONSTANTS:
        return PYTHON_CONSTANTS[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: Iterable[str]) -> dict:
    """``["KEY=VALUE", ...]`` -> ``{KEY: value}``, each value read by :func:`override_value`."""
    overrides = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator:
            raise ValueError(f"a setting is KEY=VALUE, got '{item}'")
        overrides[key] = override_value(value)
    return overrides
