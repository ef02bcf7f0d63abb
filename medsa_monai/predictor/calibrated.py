"""The settings of a predictor chosen for a trained model after training, read back from ``propagation.json``.

:func:`~medsa_monai.training.calibrate_propagation` writes the file beside the model (the bundles' ``models/``);
inference and evaluation read it back here, so that a model is always used with the settings chosen for it.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CALIBRATION_FILE", "calibrated_correction_depth", "calibrated_propagation_weight",
           "calibrated_removal_radius"]

CALIBRATION_FILE = "propagation.json"


def _read(ckpt_dir: str | Path) -> tuple[Path, dict | None]:
    path = Path(ckpt_dir) / CALIBRATION_FILE
    if not path.is_file():
        return path, None
    try:
        found = json.loads(path.read_text())
        if not isinstance(found, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a propagation calibration ({error}); delete it or run the bundle's "
                         f"'calibrating' again") from error
    return path, found


def calibrated_propagation_weight(ckpt_dir: str | Path, default: float = 0.0) -> float:
    """The ``propagation_automatic_weight`` chosen for the models in ``ckpt_dir``, or ``default`` if none was."""
    path, found = _read(ckpt_dir)
    if found is None:
        return float(default)
    try:
        weight = float(found["propagation_automatic_weight"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a propagation calibration ({error}); delete it or run the bundle's "
                         f"'calibrating' again") from error
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{path}: propagation_automatic_weight {weight} does not lie in [0, 1]")
    return weight


def calibrated_removal_radius(ckpt_dir: str | Path, default: float | None = None) -> float | None:
    """The ``removal_radius`` chosen for the models in ``ckpt_dir``, or ``default`` if none was (no file, or a file
    written before the radius was calibrated)."""
    path, found = _read(ckpt_dir)
    if found is None or "removal_radius" not in found:
        return default
    radius = found["removal_radius"]
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0):
        raise ValueError(f"{path}: removal_radius {radius!r} is neither null nor a positive number")
    return None if radius is None else float(radius)


def calibrated_correction_depth(ckpt_dir: str | Path, default: int = 0) -> int:
    """The ``correction_depth_radius`` chosen for the models in ``ckpt_dir``, or ``default`` if none was (no file, or
    a file written before the depth was calibrated)."""
    path, found = _read(ckpt_dir)
    if found is None or "correction_depth_radius" not in found:
        return int(default)
    depth = found["correction_depth_radius"]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"{path}: correction_depth_radius {depth!r} is not a whole number of slices >= 0")
    return depth
