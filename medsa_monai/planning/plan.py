"""Plan: from a fingerprint and a memory budget to the settings a bundle trains with, without hand-tuning.

The plan decides, nnU-Net style: the target spacing (median, with nnU-Net's rule for an anisotropic axis), the
intensity normalisation per channel, the patch (in-plane size and, for SD-Trans, the slab depth), SAM's input size,
the batch size and the sliding-window batch for a GPU memory budget (see :mod:`.memory`). A bundle reads the plan
with ``--plan_file``; every planned value can still be overridden on the command line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .memory import GIB, memory_per_slice

__all__ = ["target_spacing", "make_plan", "load_plan", "PLAN_VERSION"]

PLAN_VERSION = 1
ANISOTROPY = 3.0


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


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


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
) -> dict:
    """The training and inference settings of a data set for a SAM variant and a GPU memory budget (GiB).

    - ``pixdim``: :func:`target_spacing`; ``patch_size``: the median image size at that spacing, in-plane rounded
      up to a multiple of 8 (at most ``max_patch``), depth (3D) rounded up to a multiple of 4;
    - ``image_size``: four times the larger in-plane patch side, so the decoder's quarter-resolution mask is at least
      as fine as the patch, rounded up to a multiple of 16 within ``[min_image_size, max_image_size]``;
    - ``batch_size`` and the slab depth: two full-depth patches if they fit the budget, else one, else one shorter
      slab (at least ``min_slab`` slices), else a smaller ``image_size``;
    - ``normalization``: CT channels clipped to the foreground's 0.5 / 99.5 percentiles and z-scored with its global
      mean and std; other channels z-scored per image, on non-zero voxels when the images are cropped (their
      non-zero bounding box is under three quarters of the image);
    - ``sw_batch_size``: sliding-window patches per forward pass within the budget.
    """
    dims = int(fingerprint["spatial_dims"])
    spacing = target_spacing(fingerprint["spacings"], fingerprint["shapes"])
    resampled = np.median([np.asarray(s) * np.asarray(sp) / np.asarray(spacing) for s, sp in
                           zip(fingerprint["shapes"], fingerprint["spacings"], strict=True)], axis=0)
    in_plane = [min(_round_up(v, 8), max_patch) for v in resampled[:2]]
    full_depth = min(_round_up(resampled[2], 4), 128) if dims == 3 else 1
    image_size = min(max(_round_up(4 * max(in_plane), 16), min_image_size), max_image_size)

    budget = memory_gb * GIB
    notes = []
    while True:
        memory = memory_per_slice(sam_variant, image_size, spatial_dims=dims, amp=amp)
        slices = int((budget - memory["fixed_bytes"]) // memory["train_bytes_per_slice"])
        if dims == 2:
            batch, depth = min(max(slices, 0), 16), 1
            fits = batch >= 1
        elif slices >= 2 * full_depth:
            batch, depth, fits = 2, full_depth, True
        elif slices >= min(full_depth, min_slab):
            batch, depth, fits = 1, min(full_depth, slices), True
        else:
            fits = False
        if fits:
            break
        if image_size - 16 < min_image_size:
            raise ValueError(f"{memory_gb} GiB cannot train {sam_variant} even at image_size {image_size} "
                             f"({memory!r}); give more memory or a smaller variant")
        notes.append(f"image_size {image_size} does not fit {memory_gb} GiB; trying {image_size - 16}")
        image_size -= 16
    if dims == 3 and depth < full_depth:
        notes.append(f"slab depth {depth} < median depth {full_depth}: sliding windows cover the rest")
    patch = in_plane + ([depth] if dims == 3 else [])

    infer_free = budget - memory["weights_bytes"] - GIB  # inference holds the weights, no optimizer state
    sw_batch = int(min(max(infer_free // (depth * memory["infer_bytes_per_slice"]), 1), 8))

    normalization = []
    for c in range(int(fingerprint["channels"])):
        modality = str(fingerprint.get("modality", {}).get(str(c), "unknown"))
        stats = fingerprint["foreground_intensity"][c]
        if modality.strip().upper() == "CT":
            normalization.append({"scheme": "ct", "modality": modality,
                                  "clip": [stats["percentile_00_5"], stats["percentile_99_5"]],
                                  "mean": stats["mean"], "std": stats["std"]})
        else:
            cropped = fingerprint.get("median_nonzero_bbox_fraction", 1.0) < 0.75
            normalization.append({"scheme": "zscore", "modality": modality, "nonzero": bool(cropped)})

    labels = {int(k): v for k, v in fingerprint["labels"].items()}
    plan = {
        "plan_version": PLAN_VERSION,
        "dataset": fingerprint.get("dataset"),
        "spatial_dims": dims,
        "in_channels": int(fingerprint["channels"]),
        "num_classes": len(labels),
        "label_values": sorted(labels),
        "class_names": [labels[v] for v in sorted(labels) if v != 0],
        "sam_variant": sam_variant,
        "image_size": image_size,
        "pixdim": [round(float(s), 6) for s in spacing],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch),
        "sw_batch_size": sw_batch,
        "sw_overlap": sw_overlap,
        "normalization": normalization,
        "memory": {
            "budget_gib": memory_gb,
            "amp": amp,
            "train_gib_per_slice": memory["train_bytes_per_slice"] / GIB,
            "infer_gib_per_slice": memory["infer_bytes_per_slice"] / GIB,
            "fixed_gib": memory["fixed_bytes"] / GIB,
            "planned_train_gib": (memory["fixed_bytes"] + batch * depth * memory["train_bytes_per_slice"]) / GIB,
        },
        "median_shape_at_target_spacing": [float(v) for v in resampled],
        "notes": notes,
    }
    if datalist_file is not None:
        plan["datalist_file"] = str(datalist_file)
    return plan


def load_plan(path: str | Path | None) -> dict:
    """The plan in ``path``, or ``{}`` for ``None`` (bundles then use their own defaults)."""
    if path is None or str(path).strip().lower() in ("", "none", "null"):
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plan file '{path}' does not exist (create it with `medsa plan`)")
    plan = json.loads(path.read_text())
    if plan.get("plan_version") != PLAN_VERSION:
        raise ValueError(f"plan file '{path}' has plan_version {plan.get('plan_version')}, this medsa-monai reads "
                         f"version {PLAN_VERSION}; run `medsa plan` again")
    return plan
