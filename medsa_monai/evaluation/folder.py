"""Evaluate a folder of predicted label maps against reference labels, into a summary laid out like nnU-Net's."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from .io import write_json
from .metrics import case_metrics

__all__ = ["evaluate_folder", "match_cases", "NNUNET_KEYS"]

# our metric name -> nnU-Net's summary.json name
NNUNET_KEYS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "tp": "TP", "fp": "FP", "fn": "FN", "tn": "TN",
               "pred_voxels": "n_pred", "ref_voxels": "n_ref"}
ENDING = ".nii.gz"


def _case(path: Path) -> str:
    name = path.name[: -len(ENDING)] if path.name.endswith(ENDING) else path.stem
    return name[: -len("_seg")] if name.endswith("_seg") else name


def match_cases(prediction_dir: Path, reference_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(case, prediction, reference)`` for every reference label; a reference without prediction is an error.

    Predictions may be named ``<case>.nii.gz`` or ``<case>_seg.nii.gz`` (the bundles' inference output).
    """
    predictions = {_case(p): p for p in sorted(Path(prediction_dir).glob(f"*{ENDING}")) if not p.name.startswith(".")}
    references = {_case(p): p for p in sorted(Path(reference_dir).glob(f"*{ENDING}")) if not p.name.startswith(".")}
    if not references:
        raise FileNotFoundError(f"no reference labels (*{ENDING}) in '{reference_dir}'")
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise FileNotFoundError(f"{len(missing)} case(s) of '{reference_dir}' have no prediction in "
                                f"'{prediction_dir}': {', '.join(missing[:10])}")
    return [(case, predictions[case], references[case]) for case in sorted(references)]


def evaluate_folder(prediction_dir: str | Path, reference_dir: str | Path, labels: Mapping[int, str],
                    output: str | Path | None = None) -> dict:
    """Dice, IoU, HD95 (mm) and TP / FP / FN / TN voxel counts per case and class, and their means.

    The summary has nnU-Net's layout: ``metric_per_case`` (``prediction_file``, ``reference_file``, ``metrics`` per
    class value), ``mean`` per class value, ``foreground_mean`` (the mean of the class means), plus ``class_names``
    and, per class, the ``std`` and ``median`` of each metric. NaN (a class absent from both) is left out of means.

    Raises:
        ValueError: for a prediction whose shape or affine differs from its reference, naming the case.
    """
    classes = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    per_case = []
    for case, pred_path, ref_path in match_cases(Path(prediction_dir), Path(reference_dir)):
        pred_img, ref_img = nib.load(pred_path), nib.load(ref_path)
        if pred_img.shape != ref_img.shape or not np.allclose(pred_img.affine, ref_img.affine, atol=1e-3):
            raise ValueError(f"case '{case}': prediction '{pred_path.name}' (shape {pred_img.shape}) is not in the "
                             f"geometry of reference '{ref_path.name}' (shape {ref_img.shape})")
        pred = np.asarray(pred_img.dataobj).astype(np.int64)
        ref = np.asarray(ref_img.dataobj).astype(np.int64)
        spacing = [float(z) for z in ref_img.header.get_zooms()[: ref.ndim]]
        metrics = case_metrics(pred, ref, {v: str(v) for v in classes}, spacing)
        for m in metrics.values():
            m["tn"] = int(ref.size - m["tp"] - m["fp"] - m["fn"])
        per_case.append({
            "prediction_file": str(pred_path),
            "reference_file": str(ref_path),
            "metrics": {v: {NNUNET_KEYS[k]: val for k, val in m.items()} for v, m in metrics.items()},
        })
    mean, spread = {}, {}
    for value in map(str, classes):
        mean[value], spread[value] = {}, {}
        for key in NNUNET_KEYS.values():
            values = np.array([c["metrics"][value][key] for c in per_case], dtype=float)
            finite = values[~np.isnan(values)]
            mean[value][key] = float(finite.mean()) if finite.size else math.nan
            spread[value][key] = {"std": float(finite.std()) if finite.size else math.nan,
                                  "median": float(np.median(finite)) if finite.size else math.nan}
    foreground_mean = {key: float(np.nanmean([mean[v][key] for v in mean])) if mean else math.nan
                       for key in NNUNET_KEYS.values()}
    summary = {"foreground_mean": foreground_mean, "mean": mean, "spread": spread,
               "class_names": {str(v): n for v, n in classes.items()}, "metric_per_case": per_case}
    if output is not None:
        write_json(output, summary)
    return summary
