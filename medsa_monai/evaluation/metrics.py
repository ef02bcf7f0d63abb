"""Per-case, per-class segmentation metrics on label maps, and their summary across cases."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

__all__ = ["confusion_counts", "dice_score", "hd95", "case_metrics", "mask_metrics", "summarize"]

METRICS = ("dice", "iou", "hd95", "tp", "fp", "fn", "ref_voxels", "pred_voxels")


def confusion_counts(prediction: np.ndarray, reference: np.ndarray) -> tuple[int, int, int]:
    """True positive, false positive and false negative voxel counts of two boolean masks."""
    tp = int(np.count_nonzero(prediction & reference))
    return tp, int(np.count_nonzero(prediction)) - tp, int(np.count_nonzero(reference)) - tp


def _dice(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


def _iou(tp: int, fp: int, fn: int) -> float:
    return tp / (tp + fp + fn) if tp + fp + fn else math.nan


def dice_score(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (nothing to find, nothing found)."""
    return _dice(*confusion_counts(prediction, reference))


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in the units of ``spacing`` (mm).

    NaN when both masks are empty; when exactly one is empty, the diagonal of the image (the largest distance
    possible), so that a missed or hallucinated structure is penalised rather than dropped from the mean.
    """
    if not prediction.any() and not reference.any():
        return math.nan
    if not prediction.any() or not reference.any():
        return float(np.linalg.norm(np.array(reference.shape) * np.asarray(spacing, dtype=float)))
    pred, ref = (torch.from_numpy(np.ascontiguousarray(m))[None, None] for m in (prediction, reference))
    distance = compute_hausdorff_distance(pred, ref, include_background=True, percentile=95,
                                          spacing=[float(s) for s in spacing])
    return float(distance.item())


def case_metrics(
    prediction: np.ndarray, reference: np.ndarray, classes: Mapping[int, str], spacing: Sequence[float]
) -> dict[str, dict[str, float]]:
    """Metrics of each class of two label maps of the same shape: ``{class_name: {metric: value}}``."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    return mask_metrics({name: prediction == value for value, name in classes.items()},
                        {name: reference == value for value, name in classes.items()}, spacing)


def mask_metrics(predictions: Mapping[str, np.ndarray], references: Mapping[str, np.ndarray],
                 spacing: Sequence[float]) -> dict[str, dict[str, float]]:
    """Metrics of each named pair of boolean masks (a class, or a region such as the optic disc {1, 2}):
    ``{name: {metric: value}}``."""
    out = {}
    for name, ref in references.items():
        pred = predictions[name]
        if pred.shape != ref.shape:
            raise ValueError(f"'{name}': prediction shape {pred.shape} differs from reference shape {ref.shape}")
        tp, fp, fn = confusion_counts(pred, ref)
        out[name] = {
            "dice": _dice(tp, fp, fn),
            "iou": _iou(tp, fp, fn),
            "hd95": hd95(pred, ref, spacing),
            "tp": tp, "fp": fp, "fn": fn, "ref_voxels": tp + fn, "pred_voxels": tp + fp,
        }
    return out


def summarize(cases: Sequence[Mapping[str, Mapping[str, float]]], metrics: Sequence[str] = ("dice", "iou", "hd95")
              ) -> dict[str, dict[str, dict[str, float]]]:
    """Mean, std, median and count of each metric of each class over cases, NaN values left out.

    Also a ``"mean"`` entry: the per-case average over classes, summarised the same way.
    """
    if not cases:
        return {}
    classes = list(cases[0])
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in classes + ["mean"]:
        summary[name] = {}
        for metric in metrics:
            if name == "mean":
                values = [np.nanmean([c[k][metric] for k in classes]) if any(
                    not math.isnan(c[k][metric]) for k in classes) else math.nan for c in cases]
            else:
                values = [c[name][metric] for c in cases]
            finite = np.array([v for v in values if not math.isnan(v)], dtype=float)
            summary[name][metric] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std()) if finite.size else math.nan,
                "median": float(np.median(finite)) if finite.size else math.nan,
                "count": int(finite.size),
            }
    return summary
