"""Evaluate a folder of predicted label maps against reference labels, into a summary laid out like nnU-Net's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from ..data.io import write_json
from ..data.labels import LabelSpec
from ..data.writers import case_name
from .cup_to_disc import case_vcdr, cup_to_disc_outputs, summarize_vcdr
from .metrics import mask_metrics

__all__ = ["evaluate_folder", "match_cases", "NNUNET_KEYS"]

# our metric name -> nnU-Net's summary.json name
NNUNET_KEYS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "tp": "TP", "fp": "FP", "fn": "FN", "tn": "TN",
               "pred_voxels": "n_pred", "ref_voxels": "n_ref"}
ENDINGS = (".nii.gz", ".png")


def _case(path: Path) -> str:
    name = case_name(path)
    return name[: -len("_seg")] if name.endswith("_seg") else name


def _label_files(folder: Path) -> dict[str, Path]:
    return {_case(p): p for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")
            and p.name.lower().endswith(ENDINGS)} if Path(folder).is_dir() else {}


def match_cases(prediction_dir: Path, reference_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(case, prediction, reference)`` for every reference label; a reference without prediction is an error.

    Label maps are NIfTI (``.nii.gz``) or PNG; predictions may be named ``<case>`` or ``<case>_seg`` (the bundles'
    inference output).
    """
    predictions, references = _label_files(prediction_dir), _label_files(reference_dir)
    if not references:
        raise FileNotFoundError(f"no reference labels ({', '.join('*' + e for e in ENDINGS)}) in '{reference_dir}'")
    missing = sorted(set(references) - set(predictions))
    if missing:
        raise FileNotFoundError(f"{len(missing)} case(s) of '{reference_dir}' have no prediction in "
                                f"'{prediction_dir}': {', '.join(missing[:10])}")
    return [(case, predictions[case], references[case]) for case in sorted(references)]


def read_label_map(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
    """A label map, its affine (``None`` for PNG) and its spacing (1 per pixel for PNG)."""
    if path.name.lower().endswith(".png"):
        array = np.asarray(Image.open(path))
        if array.ndim != 2:
            raise ValueError(f"label map '{path}' is not a single-channel image (shape {array.shape})")
        return array.astype(np.int64), None, [1.0, 1.0]
    image = nib.load(path)
    array = np.asarray(image.dataobj).astype(np.int64)
    return array, image.affine, [float(z) for z in image.header.get_zooms()[: array.ndim]]


def _vcdr_keys(cup_to_disc: Sequence[str], keys: Mapping[str, str]) -> tuple[str, str]:
    """The keys of the (disc, cup) outputs named by ``cup_to_disc``."""
    key_of = {name: key for key, name in keys.items()}
    disc, cup = cup_to_disc_outputs(cup_to_disc, list(key_of))
    return key_of[disc], key_of[cup]


def _case_vcdr(case: str, pred_masks: Mapping[str, np.ndarray], ref_masks: Mapping[str, np.ndarray],
               outputs: tuple[str, str], png: bool, regions: bool) -> dict[str, float]:
    """The vCDR errors of a case; its vertical axis is a PNG's rows (axis 0), a NIfTI's y (axis 1)."""
    try:
        return case_vcdr(pred_masks, ref_masks, outputs, rows_axis=0 if png else 1, exclusive=not regions)
    except ValueError as err:
        raise ValueError(f"case '{case}': {err}") from None


def evaluate_folder(prediction_dir: str | Path, reference_dir: str | Path, labels: Mapping[int, str] | LabelSpec,
                    output: str | Path | None = None, cup_to_disc: Sequence[str] | None = None) -> dict:
    """Dice, IoU, HD95 (mm; pixels for PNG) and TP / FP / FN / TN voxel counts per case and class (or region),
    and their means.

    ``labels`` is ``{value: name}`` or a :class:`~medsa_monai.data.LabelSpec`; with regions (e.g. optic disc
    {1, 2} and cup {2}) each region is measured, keyed by its name, as nnU-Net's region-based summaries are.
    The summary has nnU-Net's layout: ``metric_per_case`` (``prediction_file``, ``reference_file``, ``metrics`` per
    class value or region name), ``mean`` per class, ``foreground_mean`` (the mean of the class means), plus
    ``class_names`` and, per class, the ``std`` and ``median`` of each metric. NaN (a class absent from both) is
    left out of means.

    ``cup_to_disc`` names the optic disc and cup outputs (class or region names) of 2D fundus images to also
    measure the vertical cup-to-disc ratio (:func:`~.cup_to_disc.vertical_cup_to_disc_ratio`; the vertical axis is
    a PNG's rows, a NIfTI's second axis): each case then has a ``vcdr`` entry (``vCDR``, ``vCDR_reference``,
    ``vCDR_abs_error``) and the summary a ``vcdr`` entry, the mean absolute error (``mae``, ``std``, ``count``;
    ``skipped``: cases with an empty disc). With classes rather than regions, the whole disc is the union of the disc
    (rim) and cup classes.

    Raises:
        ValueError: for a prediction whose shape or affine differs from its reference, naming the case; for
            ``cup_to_disc`` names that are not among the outputs, or 3D images.
    """
    spec = labels if isinstance(labels, LabelSpec) else None
    if spec is not None and spec.has_regions:
        keys = {name: name for name in spec.region_names}
    else:
        classes = dict(zip(spec.values[1:], spec.names[1:], strict=True)) if spec is not None else {
            int(k): str(v) for k, v in labels.items() if int(k) != 0}
        keys = {str(v): name for v, name in classes.items()}
    regions = spec is not None and spec.has_regions
    vcdr_keys = _vcdr_keys(cup_to_disc, keys) if cup_to_disc else None
    per_case = []
    for case, pred_path, ref_path in match_cases(Path(prediction_dir), Path(reference_dir)):
        pred, pred_affine, _ = read_label_map(pred_path)
        ref, ref_affine, spacing = read_label_map(ref_path)
        same_affine = pred_affine is None or ref_affine is None or np.allclose(pred_affine, ref_affine, atol=1e-3)
        if pred.shape != ref.shape or not same_affine:
            raise ValueError(f"case '{case}': prediction '{pred_path.name}' (shape {pred.shape}) is not in the "
                             f"geometry of reference '{ref_path.name}' (shape {ref.shape})")
        if regions:
            pred_masks, ref_masks = spec.output_masks(pred), spec.output_masks(ref)
        else:
            pred_masks = {key: pred == int(key) for key in keys}
            ref_masks = {key: ref == int(key) for key in keys}
        vcdr = _case_vcdr(case, pred_masks, ref_masks, vcdr_keys, ref_affine is None, regions) if vcdr_keys else None
        metrics = mask_metrics(pred_masks, ref_masks, spacing)
        for m in metrics.values():
            m["tn"] = int(ref.size - m["tp"] - m["fp"] - m["fn"])
        per_case.append({
            "prediction_file": str(pred_path),
            "reference_file": str(ref_path),
            "metrics": {k: {NNUNET_KEYS[name]: val for name, val in m.items()} for k, m in metrics.items()},
        })
        if vcdr is not None:
            per_case[-1]["vcdr"] = vcdr
    mean, spread = {}, {}
    for key in keys:
        mean[key], spread[key] = {}, {}
        for metric in NNUNET_KEYS.values():
            values = np.array([c["metrics"][key][metric] for c in per_case], dtype=float)
            finite = values[~np.isnan(values)]
            mean[key][metric] = float(finite.mean()) if finite.size else math.nan
            spread[key][metric] = {"std": float(finite.std()) if finite.size else math.nan,
                                   "median": float(np.median(finite)) if finite.size else math.nan}
    foreground_mean = {metric: float(np.nanmean([mean[k][metric] for k in mean])) if mean else math.nan
                       for metric in NNUNET_KEYS.values()}
    summary = {"foreground_mean": foreground_mean, "mean": mean, "spread": spread, "class_names": keys,
               "metric_per_case": per_case}
    if vcdr_keys is not None:
        summary["vcdr"] = summarize_vcdr([c["vcdr"] for c in per_case])
    if output is not None:
        write_json(output, summary)
    return summary
