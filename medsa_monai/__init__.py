"""medsa-monai: adapt a frozen Segment Anything Model to medical images with MONAI."""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.2.0"

_SUBPACKAGES = ("bundle", "conversion", "data", "evaluation", "networks", "planning", "prediction", "predictor",
                "preprocessing", "prompts", "training", "engines", "inferers")


def __getattr__(name: str) -> ModuleType:
    # Sub-packages load on first use, so bundle configs need only `$import medsa_monai`.
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'medsa_monai' has no attribute {name!r}")
