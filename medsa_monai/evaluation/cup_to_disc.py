"""The vertical cup-to-disc ratio (vCDR) of fundus images, REFUGE's glaucoma measurement, and its error."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["VCDR_COLUMNS", "case_vcdr", "cup_to_disc_outputs", "summarize_vcdr", "vcdr_errors",
           "vertical_cup_to_disc_ratio", "vertical_extent"]

VCDR_COLUMNS = ("vCDR", "vCDR_reference", "vCDR_abs_error")


def _plane(mask: np.ndarray, name: str) -> np.ndarray:
    """A 2D boolean mask from ``(H, W)`` or ``(1, H, W)``."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"the {name} mask must be 2D (H, W) or (1, H, W), got shape {array.shape}")
    return array.astype(bool)


def vertical_extent(mask: np.ndarray) -> int:
    """The number of rows a 2D mask spans, from its top row to its bottom row (0 when empty)."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def vertical_cup_to_disc_ratio(disc: np.ndarray, cup: np.ndarray) -> float:
    """The vertical cup-to-disc ratio: the cup's vertical diameter divided by the optic disc's.

    REFUGE defines the vCDR as the ratio of the vertical diameters of the optic cup and the optic disc, measured
    from each segmentation; the diameters here are the number of rows each mask spans (bottom row - top row + 1).

    Args:
        disc: boolean mask of the whole optic disc (the cup included), ``(H, W)`` with the rows (axis 0) running
            vertically, as an image is read (PIL, ``imageio``); ``(1, H, W)`` is accepted and squeezed.
        cup: boolean mask of the optic cup, of the same shape.

    Returns:
        The ratio, in [0, 1] when the cup lies within the disc; NaN when the disc is empty (whatever the cup),
        0.0 when the cup is empty.

    Raises:
        ValueError: for masks that are not 2D, naming the shape, or of different shapes.
    """
    disc, cup = _plane(disc, "disc"), _plane(cup, "cup")
    if disc.shape != cup.shape:
        raise ValueError(f"disc mask shape {disc.shape} differs from cup mask shape {cup.shape}")
    disc_height = vertical_extent(disc)
    return vertical_extent(cup) / disc_height if disc_height else math.nan


def vcdr_errors(pred_disc: np.ndarray, pred_cup: np.ndarray, ref_disc: np.ndarray, ref_cup: np.ndarray
                ) -> dict[str, float]:
    """The predicted and reference vCDR and their absolute difference (NaN when either is NaN):
    ``{"vCDR": ..., "vCDR_reference": ..., "vCDR_abs_error": ...}``."""
    predicted = vertical_cup_to_disc_ratio(pred_disc, pred_cup)
    reference = vertical_cup_to_disc_ratio(ref_disc, ref_cup)
    return dict(zip(VCDR_COLUMNS, (predicted, reference, abs(predicted - reference)), strict=True))


def cup_to_disc_outputs(names: Sequence[str], available: Sequence[str]) -> tuple[str, str]:
    """The ``(disc, cup)`` output names, checked against the outputs measured.

    Raises:
        ValueError: unless ``names`` are two different ones of ``available``, naming the bad ones and the
            available ones.
    """
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in available]
    if len(names) != 2 or names[0] == names[1] or unknown:
        problem = f"unknown output(s) {unknown}" if unknown else f"got {names}"
        raise ValueError(f"cup_to_disc: {problem}; expected the (disc, cup) names among the outputs "
                         f"{list(available)}")
    return names[0], names[1]


def _rows_first(mask: np.ndarray, rows_axis: int) -> np.ndarray:
    """A 2D mask with its rows on axis 0, from ``(a, b)`` or a single slice ``(a, b, 1)``."""
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"the vCDR needs 2D images, got spatial shape {mask.shape}")
    return mask if rows_axis == 0 else mask.T


def case_vcdr(pred_masks: Mapping[str, np.ndarray], ref_masks: Mapping[str, np.ndarray], outputs: tuple[str, str],
              rows_axis: int = 0, exclusive: bool = False) -> dict[str, float]:
    """:func:`vcdr_errors` of one case from its named output masks.

    Args:
        pred_masks, ref_masks: ``{output name: boolean mask}`` of the prediction and the reference, 2D (a trailing
            single slice is accepted).
        outputs: the ``(disc, cup)`` output names.
        rows_axis: the masks' vertical axis: 0 for images as PIL reads them ``(H, W)``, 1 for MONAI's and NIfTI's
            ``(x, y)`` order.
        exclusive: the outputs are mutually exclusive classes (one label value each), so the disc class is the
            rim only and the whole disc is the union of the disc and cup classes; regions (disc {1, 2} containing
            cup {2}) are not.

    Raises:
        ValueError: for masks that are not 2D, naming their shape.
    """
    disc, cup = outputs
    planes = []
    for masks in (pred_masks, ref_masks):
        disc_mask, cup_mask = (_rows_first(np.asarray(masks[n], dtype=bool), rows_axis) for n in (disc, cup))
        planes += [disc_mask | cup_mask if exclusive else disc_mask, cup_mask]
    return vcdr_errors(*planes)


def summarize_vcdr(cases: Sequence[Mapping[str, float]]) -> dict[str, float | int]:
    """Mean and std of the absolute vCDR error over cases: ``{"mae", "std", "count", "skipped"}``; cases whose
    error is NaN (an empty disc) are left out of the mean and counted in ``skipped``."""
    errors = np.array([c["vCDR_abs_error"] for c in cases], dtype=float)
    finite = errors[~np.isnan(errors)]
    return {"mae": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "count": int(finite.size), "skipped": int(errors.size - finite.size)}
