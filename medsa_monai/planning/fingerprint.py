"""Fingerprint: what a data set is made of (spacings, shapes, foreground intensities, class frequencies).

Cases are loaded the way the bundles load them (MONAI ``LoadImage``, channel first, RAS orientation for volumes), so
spacings and shapes are in the axis order the pipeline sees.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, load_decathlon_datalist
from monai.transforms import LoadImage, Orientation

from ..evaluation.io import write_json

__all__ = ["case_fingerprint", "compute_fingerprint", "load_fingerprint"]

SAMPLES_PER_CASE = 10_000


def _load(path, orient: bool) -> MetaTensor:
    image = LoadImage(image_only=True, ensure_channel_first=True)(path)
    return Orientation(axcodes="RAS")(image) if orient else image


def case_fingerprint(image_path, label_path, labels: Sequence[int], rng: np.random.RandomState) -> dict:
    """Spacing, shape, foreground intensity samples per channel, voxel counts per label, non-zero extent."""
    label = _load(label_path, orient=True)
    orient = label.ndim == 4  # (C, X, Y, Z): a volume has an orientation; 2D images have none
    image = _load(image_path, orient=orient)
    if not orient:
        label = _load(label_path, orient=False)
    spacing = [float(s) for s in (image.pixdim if orient else [1.0] * (image.ndim - 1))]
    data = torch.as_tensor(image).float().numpy()
    seg = torch.as_tensor(label)[0].numpy()
    foreground = seg > 0
    samples = []
    for channel in data:
        values = channel[foreground] if foreground.any() else channel.ravel()
        take = rng.choice(values.size, size=min(SAMPLES_PER_CASE, values.size), replace=False)
        samples.append(values[take].astype(np.float32).tolist())
    nonzero = np.any(data != 0, axis=0)
    extent = np.argwhere(nonzero)
    bbox_fraction = float(np.prod(extent.max(0) - extent.min(0) + 1) / nonzero.size) if extent.size else 0.0
    return {
        "spacing": spacing,
        "shape": list(data.shape[1:]),
        "channels": int(data.shape[0]),
        "foreground_samples": samples,
        "class_voxels": {str(v): int(np.count_nonzero(seg == v)) for v in labels},
        "nonzero_bbox_fraction": bbox_fraction,
        "zero_fraction": float(1 - nonzero.mean()),
    }


def compute_fingerprint(dataset_json: str | Path, output: str | Path | None = None, seed: int = 0) -> dict:
    """Fingerprint the training cases of an ingested ``dataset.json``; write it to ``output`` if given.

    Keys: ``spacings`` / ``shapes`` per case, ``median_spacing``, ``median_shape``, per-channel foreground intensity
    statistics (``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``, ``min``, ``max``, from up to
    10 000 foreground voxels per case), ``class_voxel_fraction`` and ``cases_with_class``, ``modality``,
    ``median_nonzero_bbox_fraction``.
    """
    dataset_json = Path(dataset_json)
    description = json.loads(dataset_json.read_text())
    labels = sorted(int(v) for v in description["labels"])
    cases = load_decathlon_datalist(str(dataset_json), True, "training", str(dataset_json.parent))
    rng = np.random.RandomState(seed)
    per_case = [case_fingerprint(c["image"], c["label"], labels, rng) for c in cases]
    channels = per_case[0]["channels"]
    intensity = []
    for ch in range(channels):
        pooled = np.concatenate([np.asarray(c["foreground_samples"][ch], dtype=np.float64) for c in per_case])
        intensity.append({
            "mean": float(pooled.mean()), "std": float(pooled.std()),
            "percentile_00_5": float(np.percentile(pooled, 0.5)), "percentile_99_5": float(np.percentile(pooled, 99.5)),
            "min": float(pooled.min()), "max": float(pooled.max()),
        })
    total = {str(v): sum(c["class_voxels"][str(v)] for c in per_case) for v in labels}
    all_voxels = sum(total.values())
    fingerprint = {
        "dataset": description.get("name"),
        "num_cases": len(per_case),
        "cases": [Path(str(c["label"])).name for c in cases],
        "spatial_dims": len(per_case[0]["shape"]),
        "modality": {str(k): v for k, v in description.get("modality", {}).items()},
        "labels": description["labels"],
        "spacings": [c["spacing"] for c in per_case],
        "shapes": [c["shape"] for c in per_case],
        "median_spacing": np.median([c["spacing"] for c in per_case], axis=0).tolist(),
        "median_shape": np.median([c["shape"] for c in per_case], axis=0).tolist(),
        "channels": channels,
        "foreground_intensity": intensity,
        "class_voxel_fraction": {k: v / all_voxels for k, v in total.items()},
        "cases_with_class": {str(v): sum(c["class_voxels"][str(v)] > 0 for c in per_case) for v in labels},
        "classes_per_case": [[v for v in labels if c["class_voxels"][str(v)] > 0] for c in per_case],
        "median_nonzero_bbox_fraction": float(np.median([c["nonzero_bbox_fraction"] for c in per_case])),
        "median_zero_fraction": float(np.median([c["zero_fraction"] for c in per_case])),
    }
    if output is not None:
        write_json(output, fingerprint)
    return fingerprint


def load_fingerprint(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
