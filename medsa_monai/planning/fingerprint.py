"""Fingerprint: what a data set is made of (spacings, shapes, channels, foreground intensities, label frequencies).

Cases are loaded the way the bundles load them (MONAI ``LoadImage`` with the channel first; RAS orientation for
volumes only), so spacings and shapes are in the axis order the pipeline sees: RAS array order for volumes, the
reader's order for 2D images (``PILReader`` gives ``(C, W, H)``). Images are PNG / JPEG / BMP / TIFF photographs,
2D NIfTI, or NIfTI volumes; multi-channel images are one file with the channels (4D NIfTI: channels last, RGB) or a
list of one file per channel, which ``LoadImage`` stacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor, load_decathlon_datalist
from monai.transforms import LoadImage, Orientation

from ..data.io import write_json
from ..data.labels import LabelSpec
from ..data.loading import with_photo_reader

__all__ = ["case_fingerprint", "compute_fingerprint", "load_fingerprint", "declared_spatial_dims",
           "is_photographic_format", "PHOTO_FORMATS"]

SAMPLES_PER_CASE = 10_000
PHOTO_FORMATS = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _file_list(path) -> list[str]:
    return [str(p) for p in path] if isinstance(path, (list, tuple)) else [str(path)]


def _format(path: str) -> str:
    """``nifti`` for ``.nii`` / ``.nii.gz``, else the lower-case suffix without the dot."""
    name = path.lower()
    return "nifti" if name.endswith((".nii", ".nii.gz")) else Path(name).suffix.lstrip(".")


def is_photographic_format(paths, image_format: str | None = None) -> bool:
    """Whether the files are photographs (PNG, JPEG, BMP, TIFF): by ``image_format`` (``dataset.json``'s
    ``medsa_ingest.image_format``, ``+``-joined for mixed formats, e.g. ``jpeg+png``) when given, else by the files'
    suffixes."""
    if image_format:
        return all(part.strip() in PHOTO_FORMATS for part in image_format.lower().split("+"))
    return all(_format(p) in PHOTO_FORMATS for p in _file_list(paths))


def declared_spatial_dims(description: Mapping) -> int | None:
    """The spatial dims a ``dataset.json`` declares (``spatial_dims``, else ``tensorImageSize`` "2D" / "3D"), or
    ``None`` when it declares none."""
    if description.get("spatial_dims") is not None:
        dims = int(description["spatial_dims"])
    elif str(description.get("tensorImageSize", "")).upper() in ("2D", "3D"):
        dims = int(str(description["tensorImageSize"])[0])
    else:
        return None
    if dims not in (2, 3):
        raise ValueError(f"dataset.json declares spatial_dims {dims}; medsa-monai reads 2D images and 3D volumes")
    return dims


def _load(path, orient: bool) -> MetaTensor:
    # dtype=None keeps the file's dtype (for the 8-bit check); the values are those the bundles' float32 load gives
    image = with_photo_reader(LoadImage(image_only=True, ensure_channel_first=True, dtype=None))(path)
    return Orientation(axcodes="RAS", labels=RAS_LABELS)(image) if orient else image


def _as_2d(array: np.ndarray, path) -> np.ndarray:
    """A 2D image ``(C, X, Y)``; a 2D NIfTI stored as ``(X, Y, 1)`` loses its singleton axis."""
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"'{path}' has spatial shape {list(array.shape[1:])}, not a 2D image (the data set "
                         f"declares spatial_dims 2)")
    return array


def _spacing(image: MetaTensor, path, dims: int) -> list[float]:
    if dims == 2 and _format(_file_list(path)[0]) != "nifti":
        return [1.0, 1.0]
    return [float(s) for s in image.pixdim[:dims]]


def _check_finite(data: np.ndarray, path) -> None:
    """Raise ``ValueError`` naming the file (the channel's file for per-channel lists) holding NaN or inf."""
    bad = [c for c in range(data.shape[0]) if not np.isfinite(data[c]).all()]
    if bad:
        files = _file_list(path)
        named = files[bad[0]] if len(files) == data.shape[0] else files[0]
        raise ValueError(f"image '{named}' holds NaN or infinite values (channel {bad[0]}); fix or drop the case "
                         f"before planning")


def _is_8bit(values: np.ndarray) -> bool:
    """Integer values within [0, 255] (uint8, or a wider integer type holding 8-bit values)."""
    return bool(np.issubdtype(values.dtype, np.integer) and values.min() >= 0 and values.max() <= 255)


def load_case(image_path, label_path, spatial_dims: int | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Load a case as the bundles do: ``(info, image (C, *spatial) float32, label (*spatial))``.

    ``info`` holds the ``spacing``, the file's ``dtype`` and ``is_8bit``. ``spatial_dims`` ``None`` takes it from
    the label file. Raises ``ValueError`` naming the file for NaN / inf or a label that does not fit the image.
    """
    label = _load(label_path, orient=False)
    dims = spatial_dims if spatial_dims is not None else label.ndim - 1
    orient = dims == 3  # a volume has an orientation; 2D images have none
    image = _load(image_path, orient=orient)
    if orient:
        label = Orientation(axcodes="RAS", labels=RAS_LABELS)(label)
    raw = np.asarray(image.array)
    _check_finite(raw, image_path)
    info = {"spacing": _spacing(image, image_path, dims), "dtype": str(raw.dtype), "is_8bit": _is_8bit(raw)}
    data = raw.astype(np.float32)
    seg = np.asarray(label.array)
    if dims == 2:
        data, seg = _as_2d(data, image_path), _as_2d(seg, label_path)
    if seg.shape[0] != 1:
        raise ValueError(f"label '{label_path}' has {seg.shape[0]} channels; a label map has one")
    if data.shape[1:] != seg.shape[1:]:
        raise ValueError(f"image '{_file_list(image_path)[0]}' has spatial shape {list(data.shape[1:])}, its label "
                         f"'{label_path}' {list(seg.shape[1:])}")
    return info, data, seg[0]


def _foreground_samples(data: np.ndarray, foreground: np.ndarray, rng: np.random.RandomState) -> list[list[float]]:
    """Up to :data:`SAMPLES_PER_CASE` values per channel from the foreground (the whole image when it has none)."""
    samples = []
    for channel in data:
        values = channel[foreground] if foreground.any() else channel.ravel()
        take = rng.choice(values.size, size=min(SAMPLES_PER_CASE, values.size), replace=False)
        samples.append(values[take].astype(np.float32).tolist())
    return samples


MAX_DISTINCT_VALUES = 65_536
"""Integer-valued channels (CT in HU, 8 / 16-bit images) with at most this many distinct foreground values keep a
table of value counts, from which the data set's percentiles, mean and standard deviation are exact."""


def _foreground_counts(data: np.ndarray, foreground: np.ndarray) -> list[dict | None]:
    """Per channel, ``{"values": [...], "counts": [...]}`` of every foreground value (the whole image when it has no
    foreground) when the values are integers with few enough distinct ones; else ``None`` (the samples are used)."""
    tables = []
    for channel in data:
        values = channel[foreground] if foreground.any() else channel.ravel()
        if values.size == 0 or not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            tables.append(None)
            continue
        distinct, counts = np.unique(values.astype(np.int64), return_counts=True)
        tables.append({"values": distinct.tolist(), "counts": counts.tolist()}
                      if distinct.size <= MAX_DISTINCT_VALUES else None)
    return tables


def _exact_statistics(tables: Sequence[dict]) -> dict:
    """Mean, std, min, max and the 0.5 / 99.5 percentiles (NumPy's linear interpolation) of all the voxels the
    value-count tables describe, as ``np.percentile`` of the voxels themselves would give them."""
    values = np.concatenate([np.asarray(t["values"], dtype=np.int64) for t in tables])
    counts = np.concatenate([np.asarray(t["counts"], dtype=np.int64) for t in tables])
    distinct, inverse = np.unique(values, return_inverse=True)
    merged = np.bincount(inverse, weights=counts).astype(np.int64)
    total = int(merged.sum())
    cumulative = np.cumsum(merged)

    def percentile(q: float) -> float:
        position = q / 100 * (total - 1)
        low, high = int(np.floor(position)), int(np.ceil(position))
        at_low = distinct[np.searchsorted(cumulative, low + 1)]
        at_high = distinct[np.searchsorted(cumulative, high + 1)]
        return float(at_low + (at_high - at_low) * (position - low))

    mean = float((distinct * merged).sum() / total)
    return {"mean": mean, "std": float(np.sqrt((merged * (distinct - mean) ** 2).sum() / total)),
            "percentile_00_5": percentile(0.5), "percentile_99_5": percentile(99.5),
            "min": float(distinct[0]), "max": float(distinct[-1]), "exact": True}


def case_fingerprint(image_path, label_path, spec: LabelSpec, rng: np.random.RandomState,
                     spatial_dims: int | None = None, image_format: str | None = None) -> dict:
    """Spacing, shape, channels, foreground intensity samples per channel, voxels per label value (and per region),
    non-zero extent, and whether the image is an 8-bit photograph (integer values in [0, 255], photographic
    format)."""
    info, data, seg = load_case(image_path, label_path, spatial_dims)
    foreground = seg > 0
    nonzero = np.any(data != 0, axis=0)
    extent = np.argwhere(nonzero)
    bbox_fraction = float(np.prod(extent.max(0) - extent.min(0) + 1) / nonzero.size) if extent.size else 0.0
    masks = dict(zip(spec.region_names, (np.isin(seg, r) for r in spec.regions), strict=True))
    return {
        "spacing": info["spacing"],
        "shape": list(data.shape[1:]),
        "channels": int(data.shape[0]),
        "dtype": info["dtype"],
        "photographic_8bit": info["is_8bit"] and is_photographic_format(image_path, image_format),
        "foreground_samples": _foreground_samples(data, foreground, rng),
        "foreground_counts": _foreground_counts(data, foreground),
        "class_voxels": {str(v): int(np.count_nonzero(seg == v)) for v in spec.values},
        "region_voxels": {name: int(np.count_nonzero(mask)) for name, mask in masks.items()},
        "nonzero_bbox_fraction": bbox_fraction,
        "zero_fraction": float(1 - nonzero.mean()),
    }


def _intensity_statistics(per_case: Sequence[dict], channel: int) -> dict:
    """Exact statistics over every foreground voxel when each case kept a value-count table of the channel; else
    from the pooled samples (up to :data:`SAMPLES_PER_CASE` per case)."""
    tables = [(c.get("foreground_counts") or [None] * (channel + 1))[channel] for c in per_case]
    if all(t is not None for t in tables):
        return _exact_statistics(tables)
    pooled = np.concatenate([np.asarray(c["foreground_samples"][channel], dtype=np.float64) for c in per_case])
    return {
        "mean": float(pooled.mean()), "std": float(pooled.std()),
        "percentile_00_5": float(np.percentile(pooled, 0.5)), "percentile_99_5": float(np.percentile(pooled, 99.5)),
        "min": float(pooled.min()), "max": float(pooled.max()), "exact": False,
    }


def _check_consistent(per_case: Sequence[dict], names: Sequence[str]) -> None:
    """All cases need the same channel count and spatial dims; the error names a case that differs."""
    first = per_case[0]
    for case, name in zip(per_case, names, strict=True):
        if case["channels"] != first["channels"] or len(case["shape"]) != len(first["shape"]):
            raise ValueError(f"case '{name}' has {case['channels']} channel(s) and {len(case['shape'])} spatial "
                             f"dims, case '{names[0]}' {first['channels']} and {len(first['shape'])}: all cases of "
                             f"a data set need the same")


def compute_fingerprint(dataset_json: str | Path, output: str | Path | None = None, seed: int = 0) -> dict:
    """Fingerprint the training cases of an ingested ``dataset.json``; write it to ``output`` if given.

    Keys: ``spatial_dims`` (declared, else from the label files), ``channels``, ``modality``, ``image_format``
    (``medsa_ingest.image_format``, or ``None``), ``photographic_8bit`` (every image an 8-bit photograph),
    ``image_dtypes``; ``spacings`` / ``shapes`` per case (2D photographs: spacing ``[1, 1]``), ``median_spacing``,
    ``median_shape``; per-channel ``foreground_intensity`` statistics (``mean``, ``std``, ``percentile_00_5``,
    ``percentile_99_5``, ``min``, ``max``, ``exact``: over every foreground voxel for integer-valued channels such as
    CT, else from up to 10 000 foreground voxels per case; foreground: label > 0);
    ``labels`` / ``regions`` / ``regions_class_order`` (:meth:`LabelSpec.to_description`); per declared value
    ``class_voxel_fraction`` and ``cases_with_class``; per region ``region_voxel_fraction`` and
    ``cases_with_region`` (empty without regions); ``classes_per_case`` (the values present, for the folds);
    ``median_nonzero_bbox_fraction``, ``median_zero_fraction``.

    Raises:
        ValueError: naming the file, for an image with NaN / inf, a label that does not fit its image, or cases
            with different channel counts.
    """
    dataset_json = Path(dataset_json)
    description = json.loads(dataset_json.read_text())
    spec = LabelSpec.from_description(description)
    dims = declared_spatial_dims(description)
    image_format = (description.get("medsa_ingest") or {}).get("image_format")
    cases = load_decathlon_datalist(str(dataset_json), True, "training", str(dataset_json.parent))
    if not cases:
        raise ValueError(f"'{dataset_json}' lists no training cases")
    rng = np.random.RandomState(seed)
    per_case = [case_fingerprint(c["image"], c["label"], spec, rng, dims, image_format) for c in cases]
    names = [Path(str(c["label"])).name for c in cases]
    _check_consistent(per_case, names)
    total = {str(v): sum(c["class_voxels"][str(v)] for c in per_case) for v in spec.values}
    all_voxels = sum(total.values())
    region_total = {n: sum(c["region_voxels"][n] for c in per_case) for n in spec.region_names}
    fingerprint = {
        "dataset": description.get("name"),
        "dataset_json": str(dataset_json.resolve()),
        "num_cases": len(per_case),
        "cases": names,
        "spatial_dims": len(per_case[0]["shape"]),
        "channels": per_case[0]["channels"],
        "modality": {str(k): v for k, v in description.get("modality", {}).items()},
        "image_format": image_format,
        "photographic_8bit": all(c["photographic_8bit"] for c in per_case),
        "image_dtypes": sorted({c["dtype"] for c in per_case}),
        **spec.to_description(),
        "spacings": [c["spacing"] for c in per_case],
        "shapes": [c["shape"] for c in per_case],
        "median_spacing": np.median([c["spacing"] for c in per_case], axis=0).tolist(),
        "median_shape": np.median([c["shape"] for c in per_case], axis=0).tolist(),
        "foreground_intensity": [_intensity_statistics(per_case, ch) for ch in range(per_case[0]["channels"])],
        "class_voxel_fraction": {k: v / all_voxels for k, v in total.items()},
        "cases_with_class": {str(v): sum(c["class_voxels"][str(v)] > 0 for c in per_case) for v in spec.values},
        "region_voxel_fraction": {n: v / all_voxels for n, v in region_total.items()},
        "cases_with_region": {n: sum(c["region_voxels"][n] > 0 for c in per_case) for n in spec.region_names},
        "classes_per_case": [[v for v in spec.values if c["class_voxels"][str(v)] > 0] for c in per_case],
        "median_nonzero_bbox_fraction": float(np.median([c["nonzero_bbox_fraction"] for c in per_case])),
        "median_zero_fraction": float(np.median([c["zero_fraction"] for c in per_case])),
    }
    if output is not None:
        write_json(output, fingerprint)
    return fingerprint


def load_fingerprint(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
