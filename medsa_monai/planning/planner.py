"""Plan: from a fingerprint and a memory budget to the settings a bundle trains with, without hand-tuning.

The plan decides, nnU-Net style: the configuration (SD-Trans on slabs of a volume, or independent slices), the
target spacing (median, with nnU-Net's rule for an anisotropic axis) and the axis the network slices along, the
intensity normalisation per channel, the patch (in-plane size and, for SD-Trans, the slab depth), SAM's input size,
the batch size and the sliding-window batch for a GPU memory budget (see :mod:`.memory`), the labels the network
outputs (classes or regions), whether the preprocessed data set is cached in memory or on disk, and the folds. A
bundle reads the plan with ``--plan_file``; the values :data:`~medsa_monai.planning.OVERRIDABLE` names can still be
overridden on the command line.

How :func:`make_plan` decides each value (array axes of volumes in RAS order, as ``Orientationd`` / ``Spacingd``
leave them):

- ``configuration``: ``"3d"``: SD-Trans on slabs (``depth_attention`` true); ``"2d"``: each slice on its own
  (2D images, or the same volume network with ``depth_attention`` false);
- ``slice_axis``: volumes: the axis of the coarsest target spacing (:func:`slice_axis`), which the bundle
  transposes last (:func:`~medsa_monai.planning.slice_last_indices`); ``pixdim``: :func:`target_spacing`;
- ``patch_size``: volumes: the median image at ``pixdim``, the two in-plane axes rounded up to a multiple of 8
  (at most ``max_patch``), then the slab depth along ``slice_axis`` rounded up to a multiple of 4 (at most 128;
  1 for ``"2d"``); 2D: a square ``[p, p]``, ``p`` the longer side of the median image as loaded, rounded up
  to a multiple of 8 (at most ``max_patch``): each image is resized so that its longer side is ``p`` and padded
  to the square (``keep_aspect``), so its aspect ratio is kept, as SAM's ``ResizeLongestSide`` keeps it;
- ``image_size``: four times the larger in-plane patch side, so the decoder's quarter-resolution mask is at least
  as fine as the patch, rounded up to a multiple of 16 within ``[min_image_size, max_image_size]``;
- ``batch_size`` and the slab depth: SD-Trans: two full-depth slabs if they fit the budget, else one, else one
  shorter slab (at least ``min_slab`` slices); per slice: as many slices as fit, up to 16; else a smaller
  ``image_size``; ``sw_batch_size``: sliding-window patches per forward pass within the budget;
- ``normalization``: one scheme per channel: 8-bit photographs ``range`` ``[0, 255]`` (to ``[0, 1]``, network
  ``intensity`` ``"unit"``); CT clipped to the foreground's 0.5 / 99.5 percentiles and z-scored with its global
  mean and std; others z-scored per image, on non-zero voxels when the images are cropped (``"zscore"``);
- ``dataset_cache``: :func:`dataset_cache_estimate` of the training cases against ``cache_memory_gb``;
- ``num_folds``: the folds of ``datalist_file``; the planner's ``record``: the memory model's numbers (GiB), the
  median shape at the target spacing, notes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..data.labels import LabelSpec
from .folds import datalist_num_folds
from .memory import GIB, MemoryEstimate, memory_per_slice
from .plan import CONFIGURATIONS, Plan

__all__ = ["target_spacing", "slice_axis", "dataset_cache_estimate", "make_plan"]

ANISOTROPY = 3.0
PHOTO_RANGE = [0, 255]
SLICE_AXIS_TOLERANCE = 0.01  # spacings within 1 % of the coarsest tie (no meaningful through-plane axis among them)


def target_spacing(spacings, shapes, anisotropy: float = ANISOTROPY) -> list[float]:
    """Median spacing; for an axis coarser than ``anisotropy`` times the others, and with fewer voxels than a third of
    theirs, the 10th percentile of its spacings instead (nnU-Net v2's rule: do not interpolate many thin slices
    out of few thick ones), but never finer than the other axes."""
    spacings, shapes = np.asarray(spacings, dtype=float), np.asarray(shapes, dtype=float)
    target = np.median(spacings, axis=0)
    if len(target) < 3:
        return target.tolist()
    sizes = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    if target[worst] > anisotropy * max(target[others]) and sizes[worst] * anisotropy < min(sizes[others]):
        low = float(np.percentile(spacings[:, worst], 10))
        if low < max(target[others]):
            low = max(max(target[others]), low) + 1e-5
        target[worst] = low
    return target.tolist()


def slice_axis(spacing: Sequence[float], tolerance: float = SLICE_AXIS_TOLERANCE) -> int:
    """The axis (0, 1 or 2, in RAS array order) of the coarsest spacing: the acquisition's through-plane axis.

    Axes within ``tolerance`` (relative) of the coarsest tie, and ties go to the last of them: axis 2 for isotropic
    data, as MONAI's RAS arrays of axial acquisitions have it.
    """
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,):
        raise ValueError(f"slice_axis needs the spacing of a volume (3 values), got {spacing.tolist()}")
    tied = np.flatnonzero(spacing >= spacing.max() * (1 - tolerance))
    return int(tied[-1])


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _median_resampled_shape(fingerprint: Mapping, spacing: Sequence[float]) -> np.ndarray:
    return np.median([np.asarray(s) * np.asarray(sp) / np.asarray(spacing) for s, sp in
                      zip(fingerprint["shapes"], fingerprint["spacings"], strict=True)], axis=0)


def _geometry(fingerprint: Mapping, dims: int, configuration: str, max_patch: int, keep_aspect: bool) -> dict:
    """Target spacing, slice axis, in-plane patch (network order) and full slab depth (1 for per-slice training)."""
    spacing = target_spacing(fingerprint["spacings"], fingerprint["shapes"])
    resampled = _median_resampled_shape(fingerprint, spacing)
    if dims == 2:  # 2D images are resized, longer side first, and padded to a square patch (keep_aspect)
        median = np.median(np.asarray(fingerprint["shapes"], dtype=float), axis=0)
        side = min(_round_up(float(max(median)), 8), max_patch)
        in_plane = [side, side] if keep_aspect else [min(_round_up(v, 8), max_patch) for v in median]
        return {"spacing": spacing, "resampled": resampled, "axis": None, "cached_shape": in_plane,
                "in_plane": in_plane, "full_depth": 1}
    axis = slice_axis(spacing)
    in_plane = [min(_round_up(resampled[a], 8), max_patch) for a in (0, 1, 2) if a != axis]
    full_depth = min(_round_up(resampled[axis], 4), 128) if configuration == "3d" else 1
    return {"spacing": spacing, "resampled": resampled, "axis": axis, "cached_shape": resampled,
            "in_plane": in_plane, "full_depth": full_depth}


def _fit_memory(sam_variant: str, memory_gb: float, amp: bool, dims: int, depth_attention: bool, image_size: int,
                full_depth: int, min_slab: int, min_image_size: int) -> tuple[int, int, int, MemoryEstimate, list[str]]:
    """``(image_size, batch_size, depth, memory, notes)``: per-slice training (2D, or a volume without SD-Trans)
    takes up to 16 slices a batch; SD-Trans two full-depth slabs, else one, else one shorter slab (at least
    ``min_slab`` slices); failing all, a smaller ``image_size``."""
    budget = memory_gb * GIB
    notes = []
    while True:
        memory = memory_per_slice(sam_variant, image_size, spatial_dims=dims, amp=amp, depth_attention=depth_attention)
        slices = int((budget - memory["fixed_bytes"]) // memory["train_bytes_per_slice"])
        fits = True
        if not depth_attention:
            batch, depth = min(max(slices, 0), 16), 1
            fits = batch >= 1
        elif slices >= 2 * full_depth:
            batch, depth = 2, full_depth
        elif slices >= min(full_depth, min_slab):
            batch, depth = 1, min(full_depth, slices)
        else:
            fits = False
        if fits:
            return image_size, batch, depth, memory, notes
        if image_size - 16 < min_image_size:
            raise ValueError(f"{memory_gb} GiB cannot train {sam_variant} even at image_size {image_size} "
                             f"({memory!r}); give more memory or a smaller variant")
        notes.append(f"image_size {image_size} does not fit {memory_gb} GiB; trying {image_size - 16}")
        image_size -= 16


def _normalization(fingerprint: Mapping, dims: int) -> tuple[list[dict], str]:
    """Per-channel schemes (see :class:`~medsa_monai.preprocessing.PlannedNormalized`) and the network's
    ``intensity``."""
    modalities = [str(fingerprint.get("modality", {}).get(str(c), "unknown")) for c in range(fingerprint["channels"])]
    if dims == 2 and fingerprint.get("photographic_8bit", False):
        return [{"scheme": "range", "modality": m, "range": list(PHOTO_RANGE)} for m in modalities], "unit"
    cropped = fingerprint.get("median_nonzero_bbox_fraction", 1.0) < 0.75
    schemes = []
    for modality, stats in zip(modalities, fingerprint["foreground_intensity"], strict=True):
        if modality.strip().upper() == "CT":
            schemes.append({"scheme": "ct", "modality": modality,
                            "clip": [stats["percentile_00_5"], stats["percentile_99_5"]],
                            "mean": stats["mean"], "std": stats["std"]})
        else:
            schemes.append({"scheme": "zscore", "modality": modality, "nonzero": bool(cropped)})
    return schemes, "zscore"


def dataset_cache_estimate(num_cases: int, shape: Sequence[float], channels: int, budget_gib: float) -> dict:
    """``{"kind", "estimated_gib", "budget_gib"}``: the cached data set, ``num_cases`` images of ``shape`` with
    ``channels`` float32 channels and a uint8 label, is kept in ``"memory"`` if it fits ``budget_gib``, else on
    ``"disk"`` (see :func:`~medsa_monai.preprocessing.make_dataset`)."""
    size = num_cases * float(np.prod(shape)) * (4 * channels + 1)
    return {"kind": "memory" if size <= budget_gib * GIB else "disk", "estimated_gib": size / GIB,
            "budget_gib": float(budget_gib)}


def make_plan(
    fingerprint: Mapping,
    sam_variant: str = "vit_b",
    memory_gb: float = 24.0,
    amp: bool = True,
    datalist_file: str | None = None,
    max_image_size: int = 1024,
    min_image_size: int = 64,
    min_slab: int = 8,
    max_patch: int = 512,
    sw_overlap: float = 0.5,
    configuration: str | None = None,
    cache_memory_gb: float = 8.0,
    keep_aspect: bool = True,
) -> Plan:
    """The training and inference settings of a data set for a SAM variant and a GPU memory budget (GiB), decided
    as the module says.

    Args:
        fingerprint: from :func:`~medsa_monai.planning.compute_fingerprint`.
        sam_variant, memory_gb, amp: the network and the GPU memory of one training process.
        datalist_file: the fold datalist the bundles read (its folds give ``num_folds``).
        configuration: ``"3d"`` or ``"2d"`` for volumes (default ``"3d"``); 2D data are always ``"2d"``.
        cache_memory_gb: host memory budget for caching the preprocessed training cases.
        keep_aspect: 2D: pad each image to a square patch, keeping its aspect ratio; ``False``: the patch is the
            median image (``[h, w]``) and each image is resized whole to it, so SAM's square frame squeezes it.

    Returns:
        The :class:`~medsa_monai.planning.Plan`.
    """
    dims = int(fingerprint["spatial_dims"])
    configuration = configuration or ("3d" if dims == 3 else "2d")
    if configuration not in CONFIGURATIONS:
        raise ValueError(f"configuration must be one of {CONFIGURATIONS}, got {configuration!r}")
    if dims == 2 and configuration == "3d":
        raise ValueError("configuration '3d' needs volumes; this data set has 2D images")
    depth_attention = configuration == "3d"
    geometry = _geometry(fingerprint, dims, configuration, max_patch, keep_aspect)
    image_size = min(max(_round_up(4 * max(geometry["in_plane"]), 16), min_image_size), max_image_size)
    image_size, batch, depth, memory, notes = _fit_memory(sam_variant, memory_gb, amp, dims, depth_attention,
                                                          image_size, geometry["full_depth"], min_slab, min_image_size)
    if depth_attention and depth < geometry["full_depth"]:
        notes.append(f"slab depth {depth} < median depth {geometry['full_depth']}: sliding windows cover the rest")
    infer_free = memory_gb * GIB - memory["weights_bytes"] - GIB  # inference holds the weights, no optimizer state
    normalization, intensity = _normalization(fingerprint, dims)
    channels = int(fingerprint["channels"])
    return Plan.from_dict({
        "dataset": fingerprint.get("dataset"),
        "dataset_json": fingerprint.get("dataset_json"),
        "configuration": configuration,
        "spatial_dims": dims,
        "slice_axis": geometry["axis"],
        "depth_attention": depth_attention,
        "in_channels": channels,
        "modality": dict(fingerprint.get("modality") or {}) or None,
        **LabelSpec.from_description(fingerprint).to_description(),
        "sam_variant": sam_variant,
        "image_size": image_size,
        "pixdim": [round(float(s), 6) for s in geometry["spacing"]],
        "patch_size": [int(p) for p in geometry["in_plane"] + ([depth] if dims == 3 else [])],
        "keep_aspect": dims == 2 and keep_aspect,
        "batch_size": int(batch),
        "sw_batch_size": int(min(max(infer_free // (depth * memory["infer_bytes_per_slice"]), 1), 8)),
        "sw_overlap": sw_overlap,
        "intensity": intensity,
        "normalization": normalization,
        "dataset_cache": dataset_cache_estimate(int(fingerprint.get("num_cases", len(fingerprint["shapes"]))),
                                                geometry["cached_shape"], channels, cache_memory_gb),
        "num_folds": datalist_num_folds(datalist_file) if datalist_file is not None else None,
        "datalist_file": None if datalist_file is None else str(datalist_file),
        "memory": _memory_record(memory, memory_gb, amp, batch, depth),
        "median_shape_at_target_spacing": [float(v) for v in geometry["resampled"]],
        "notes": notes,
    }, source="the planner")


def _memory_record(memory: MemoryEstimate, memory_gb: float, amp: bool, batch: int, depth: int) -> dict:
    return {
        "budget_gib": memory_gb,
        "amp": amp,
        "train_gib_per_slice": memory["train_bytes_per_slice"] / GIB,
        "infer_gib_per_slice": memory["infer_bytes_per_slice"] / GIB,
        "fixed_gib": memory["fixed_bytes"] / GIB,
        "planned_train_gib": (memory["fixed_bytes"] + batch * depth * memory["train_bytes_per_slice"]) / GIB,
    }
