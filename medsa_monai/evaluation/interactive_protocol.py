"""The interactive-segmentation evaluation protocol of the CVPR 2025 challenge "Foundation Models for Interactive 3D
Biomedical Image Segmentation" (CVPR25-MedSegFMCompetition), so that results compare with nnInteractive,
SAM-Med3D and VISTA3D evaluated by the challenge's own script.

For every foreground class of the reference (class ``k`` is value ``k``):

* step 0 is a bounding-box prompt: the extent of the structure along the slicing axis (the last spatial axis, the
  challenge's ``z_min``/``z_max``) and its in-plane box on its middle slice (``z_mid``: the challenge's
  ``get_boxes.py`` takes the slice of the median voxel, ``z_indices[len(z_indices) // 2]``); in 2D, the
  structure's box;
* steps ``1..N`` (``N = 5`` in the challenge) each add one click to the previous prompts (the box is kept, clicks
  accumulate, the previous low-resolution logits are fed back as the mask prompt). The click goes to the maximum
  of the Euclidean distance transform inside the largest connected component (26-connectivity in 3D, 8 in 2D) of
  the class's error ``prediction != reference``; it is a foreground click where the reference has the class there
  (a missed region), a background click otherwise (a false positive). Ties (equally large components, equal
  maxima) are broken by a seeded random choice; no click is added for a class predicted perfectly.

After every step, Dice and normalized surface Dice (NSD, 2 mm tolerance) are measured per class. The challenge's
summary numbers are DSC_AUC and NSD_AUC, the trapezoid area (unit step) under the per-click curve, the final Dice
and the final NSD. As in the challenge script (``integrate.cumulative_trapezoid(dscs[-n_clicks:], ...)``, "AUC is
only over the point prompts since the bbox prompt is optional"), the AUC runs over the click steps ``1..N``, so
with 5 clicks it lies in ``[0, 4]``.

Differences from the challenge script, by design: metrics are kept per class (the challenge averages the classes
of a case before the AUC; the AUC being linear, the class mean of the per-class AUCs is the same number when all
classes are present); NSD is always computed (the challenge sets it to 0 when the case's Dice is <= 0.2); the
distance transform uses the image spacing (the challenge's is in voxels); the box is exact (the challenge's
published boxes widen the in-plane sides by a random 0-5 pixels per 256).

Reference: the challenge's scripts ``CVPR25_iter_eval.py`` and ``get_boxes.py``,
https://github.com/JunMa11/CVPR-MedSegFMCompetition.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import compute_surface_dice

from ..prompts.sampling import bounding_box, error_click
from .metrics import dice_score
from .output_masks import predicted_masks, reference_masks
from .session_clicks import SessionClicks

__all__ = ["ProtocolResult", "protocol_box", "protocol_click", "protocol_auc", "surface_dice", "run_protocol",
           "summarize_protocol"]

NSD_TOLERANCE_MM = 2.0
PROTOCOL_METRICS = ("dsc_auc", "nsd_auc", "final_dice", "final_nsd")


@dataclass
class ProtocolResult:
    """Outcome of the protocol on one case; class ``k`` (value ``k`` of the label map) is column ``k - 1``.

    Attributes:
        dice: ``(num_clicks + 1, K)`` Dice after each step (step 0: the box), NaN for classes absent from the case.
        nsd: ``(num_clicks + 1, K)`` normalized surface Dice (2 mm tolerance) after each step, NaN likewise.
        dsc_auc: ``(K,)`` trapezoid area under the Dice curve of the click steps ``1..num_clicks`` (unit step).
        nsd_auc: ``(K,)`` the same for NSD.
        final_dice: ``(K,)`` Dice after the last step.
        final_nsd: ``(K,)`` NSD after the last step.
        boxes: ``(K, 2 * spatial_dims)`` step-0 boxes ``(i0, j0[, k0], i1, j1[, k1])``, NaN rows for absent classes.
        clicks: per class, the ``(index, is_foreground)`` clicks in the order given (those that moved the shown
            boundary, :mod:`~medsa_monai.predictor.boundary_edits`, included).
    """

    dice: np.ndarray
    nsd: np.ndarray
    dsc_auc: np.ndarray
    nsd_auc: np.ndarray
    final_dice: np.ndarray
    final_nsd: np.ndarray
    boxes: np.ndarray
    clicks: list[list[tuple[np.ndarray, bool]]] = field(default_factory=list)

    @property
    def classes(self) -> tuple[int, ...]:
        """The label values ``1..K`` of the columns."""
        return tuple(range(1, self.dice.shape[1] + 1))


def protocol_box(mask: np.ndarray) -> np.ndarray:
    """The challenge's step-0 box of a non-empty boolean ``mask``.

    In 3D, ``(i0, j0, k0, i1, j1, k1)`` inclusive indices: ``k0..k1`` is the structure's extent along the last axis
    (the slicing axis), ``i0..i1`` and ``j0..j1`` its box on its middle slice, the slice of the median voxel
    (``sorted(k)[n // 2]`` over the ``n`` voxels, as the challenge's ``z_mid``; a slice of the structure even when
    it is not convex along ``k``). In 2D, the structure's box ``(i0, j0, i1, j1)``.

    Args:
        mask: ``(H, W)`` or ``(H, W, D)`` boolean mask of one structure.

    Returns:
        ``(2 * mask.ndim,)`` float32 box.
    """
    if not mask.any():
        raise ValueError("protocol_box needs a non-empty mask")
    low, high = bounding_box(mask)
    if mask.ndim == 3:
        depth_indices = np.sort(np.nonzero(mask)[2])
        middle = int(depth_indices[len(depth_indices) // 2])
        plane_low, plane_high = bounding_box(mask[..., middle])
        low = np.array([plane_low[0], plane_low[1], low[2]])
        high = np.array([plane_high[0], plane_high[1], high[2]])
    return np.concatenate([low, high]).astype(np.float32)


def protocol_click(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None,
                   seed: int = 0) -> tuple[np.ndarray, bool] | None:
    """The challenge's next click for one class (:func:`~medsa_monai.prompts.error_click` with full connectivity,
    26 in 3D and 8 in 2D, the distance transform in ``spacing`` units, ties chosen by ``RandomState(seed)``).

    Returns:
        ``(index, is_foreground)``, or ``None`` when the prediction is perfect.
    """
    return error_click(prediction, reference, spacing=spacing, seed=seed)


def protocol_auc(values: Sequence[float] | np.ndarray) -> float:
    """Trapezoid area under a per-step curve with unit step (the challenge's DSC_AUC / NSD_AUC).

    Args:
        values: ``(steps,)`` metric after each step; the challenge passes the click steps only.

    Returns:
        the area, ``0`` for a single value, NaN if any value is NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return 0.0 if values.size == 1 and np.isfinite(values).all() else math.nan
    return float(np.trapezoid(values, dx=1.0))


def surface_dice(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None,
                 tolerance: float = NSD_TOLERANCE_MM) -> float:
    """Normalized surface Dice of two boolean masks with MONAI's ``compute_surface_dice``.

    The fraction of both surfaces lying within ``tolerance`` (mm) of the other surface.

    Args:
        prediction: ``spatial`` boolean mask.
        reference: ``spatial`` boolean mask.
        spacing: voxel size per spatial axis (mm); ``None`` for 1.
        tolerance: the distance (mm) within which surface points count as matched.

    Returns:
        NSD in ``[0, 1]``; NaN when both masks are empty, 0 when exactly one is.
    """
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if not prediction.any() and not reference.any():
        return math.nan
    if not prediction.any() or not reference.any():
        return 0.0
    spacing = [1.0] * reference.ndim if spacing is None else [float(s) for s in spacing]
    pred, ref = (torch.from_numpy(np.ascontiguousarray(m))[None, None] for m in (prediction, reference))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument in get_mask_edges
        value = compute_surface_dice(pred, ref, class_thresholds=[float(tolerance)], include_background=True,
                                     spacing=spacing)
    return float(value.item())


@torch.no_grad()
def run_protocol(predictor, image: torch.Tensor, label: np.ndarray | torch.Tensor,
                 spacing: Sequence[float] | None = None, num_clicks: int = 5, seed: int = 0,
                 mask_feedback: bool = True, surface: bool = True) -> ProtocolResult:
    """Run the CVPR 2025 interactive protocol (box, then ``num_clicks`` corrective clicks) on one case.

    The image embedding is computed once; each step is one decoder pass prompting every class at once, each with
    its own box and clicks.

    Args:
        predictor: a :class:`~medsa_monai.predictor.MedSAPredictor`, or any object with ``encode``, ``decode``,
            ``postprocess``, ``num_classes`` and ``background_channel`` like it.
        image: ``(1, C, H, W[, D])`` pre-processed image.
        label: ``(H, W[, D])`` reference label map, class ``k`` is value ``k`` (``k = 1..predictor.num_classes``), or
            ``(K, H, W[, D])`` region channels (nested or overlapping outputs, each prompted and scored on its own).
        spacing: voxel size per spatial axis (mm), for the NSD and the click distance transform; ``None`` for 1.
        num_clicks: corrective clicks after the box (5 in the challenge).
        seed: seed of the tie-breaking choices of the click placement.
        mask_feedback: feed the previous low-resolution logits back as SAM's mask prompt.
        surface: also compute NSD (``False`` leaves it NaN: Dice alone is much faster for many classes).

    Returns:
        a :class:`ProtocolResult`; classes absent from ``label`` are NaN and are not prompted nor predicted.
    """
    if image.ndim < 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, *spatial), got {tuple(image.shape)}")
    spatial = tuple(image.shape[2:])
    if spacing is not None and len(spacing) != len(spatial):
        raise ValueError(f"spacing {tuple(spacing)} does not have {len(spatial)} entries")
    classes, dims, steps = predictor.num_classes, len(spatial), num_clicks + 1
    references = reference_masks(label, classes, spatial)
    present = np.array([bool(ref.any()) for ref in references])

    boxes = np.full((classes, 2 * dims), np.nan, dtype=np.float32)
    for k in np.flatnonzero(present):
        boxes[k] = protocol_box(references[k])
    dice = np.full((steps, classes), math.nan)
    nsd = np.full((steps, classes), math.nan)
    session = SessionClicks(predictor, image.shape, classes)
    if present.any():
        embeddings = predictor.encode(image)
        device = embeddings.device
        box_prompt = torch.as_tensor(boxes, device=device)[None]
        low_res = decoded = None
        predicted = [np.zeros(spatial, dtype=bool) for _ in range(classes)]
        for step in range(steps):
            points = point_labels = mask_inputs = None
            decode = session.edits is None or decoded is None  # else only when a click is left to the decoder
            if step:
                for k in np.flatnonzero(present):
                    click = protocol_click(predicted[k], references[k], spacing, seed)
                    if click is not None and session.add(k, predicted[k], click, step):
                        decode = True
                points, point_labels = session.prompts(device)
                if mask_feedback and low_res is not None:
                    mask_inputs = low_res.clone()
                    mask_inputs[:, torch.as_tensor(~present, device=mask_inputs.device)] = math.nan
            if decode:
                low_res = predictor.decode(embeddings, image.shape, points, point_labels, box_prompt, mask_inputs)
                decoded = predicted_masks(predictor, low_res, spatial, present)
            predicted = session.shown(decoded)
            for k in np.flatnonzero(present):
                dice[step, k] = dice_score(predicted[k], references[k])
                if surface:
                    nsd[step, k] = surface_dice(predicted[k], references[k], spacing)

    click_steps = slice(1, None) if num_clicks else slice(0, None)
    dsc_auc = np.array([protocol_auc(dice[click_steps, k]) for k in range(classes)])
    nsd_auc = np.array([protocol_auc(nsd[click_steps, k]) for k in range(classes)])
    clicks = [[(index, foreground) for _, index, foreground, _ in placed] for placed in session.placed]
    return ProtocolResult(dice=dice, nsd=nsd, dsc_auc=dsc_auc, nsd_auc=nsd_auc, final_dice=dice[-1].copy(),
                          final_nsd=nsd[-1].copy(), boxes=boxes, clicks=clicks)


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as wanted
        return np.nanmean(values, axis=axis)


def summarize_protocol(results: Sequence[ProtocolResult]) -> dict:
    """Means of :func:`run_protocol` results over cases, per class and over classes.

    Args:
        results: one :class:`ProtocolResult` per case, all with the same classes and number of clicks.

    Returns:
        ``{"cases": n, "classes": {k: {metric: mean over the cases where class k is present}}, "mean": {metric:
        mean over classes of the per-class means}, "case_mean": {metric: mean over cases of each case's class
        mean (the challenge's ranking average)}}``, the metrics being ``dsc_auc``, ``nsd_auc``, ``final_dice``,
        ``final_nsd``, plus the per-step curves ``dice`` and ``nsd`` as lists. NaN where no case has the class.
    """
    if not results:
        raise ValueError("summarize_protocol needs at least one result")
    shapes = {r.dice.shape for r in results}
    if len(shapes) != 1:
        raise ValueError(f"results differ in (steps, classes): {sorted(shapes)}")
    stacked = {name: np.stack([getattr(r, name) for r in results]) for name in PROTOCOL_METRICS + ("dice", "nsd")}
    per_class = {name: _nanmean(values, 0) for name, values in stacked.items()}  # (K,) or (steps, K)
    classes = results[0].classes
    summary: dict = {"cases": len(results), "classes": {}, "mean": {}, "case_mean": {}}
    for k, value in enumerate(classes):
        entry = {name: float(per_class[name][k]) for name in PROTOCOL_METRICS}
        entry.update({name: [float(v) for v in per_class[name][:, k]] for name in ("dice", "nsd")})
        summary["classes"][value] = entry
    for name in PROTOCOL_METRICS:
        summary["mean"][name] = float(_nanmean(per_class[name]))
        summary["case_mean"][name] = float(_nanmean(_nanmean(stacked[name], 1)))
    for name in ("dice", "nsd"):
        summary["mean"][name] = [float(v) for v in _nanmean(per_class[name], 1)]
        summary["case_mean"][name] = [float(v) for v in _nanmean(_nanmean(stacked[name], 2), 0)]
    return summary
