"""Old names that still work after the package's redesign, with a warning that says where they moved."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved_names"]


def moved_names(module: str, moved: Mapping[str, str], removed: Mapping[str, str] | None = None
                ) -> Callable[[str], object]:
    """A module ``__getattr__`` for names that left ``module``.

    Args:
        module: the module's ``__name__`` (for messages).
        moved: ``{old name: "package.module:new name"}``; the new object is returned with a ``FutureWarning``.
        removed: ``{old name: what to use instead}``; asking for one raises ``AttributeError`` saying so.
    """
    removed = dict(removed or {})

    def __getattr__(name: str) -> object:
        if name in moved:
            target_module, _, target_name = moved[name].partition(":")
            new = f"{target_module}.{target_name or name}"
            warnings.warn(f"{module}.{name} moved to {new}; the old name will be removed in a later version",
                          FutureWarning, stacklevel=2)
            return getattr(importlib.import_module(target_module), target_name or name)
        if name in removed:
            raise AttributeError(f"{module}.{name} was removed in the redesign: {removed[name]}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
