"""The prompt protocols of the Med-SA paper, so that figures compare with its tables (BTCV, Table 1 and after).

Med-SA evaluates each organ with one kind of prompt given at once (no correction rounds):

* ``"points_1"`` / ``"points_3"`` ("1-point" / "3-points"): positive clicks on every slice that holds the
  organ (2D: on the image). The first is the centre of the slice's largest connected part (the maximum of the
  distance to the background, as the other protocols place clicks); the others are distinct voxels of the organ on
  that slice drawn by a seeded generator (the paper samples its points at random inside the organ).
* ``"box_0.75"`` / ``"box_0.5"`` ("BBox 0.75" / "BBox 0.5"): a box whose intersection over union with the organ's
  tight box is 0.75 or 0.5, i.e. a loose box a hurried user draws. It contains the tight box and is larger by
  ``1 / IoU`` in volume; how the growth is shared between the axes and between the two sides of each axis is drawn
  by the seeded generator. Where the image border cuts the box, its IoU ends higher: the achieved IoU is reported.
  In 3D this is one 3D box (it prompts its in-plane box on the slices of its depth range; prompts propagate to the
  organ's other slices as for any box), where the paper's 2D pipeline boxes each slice.

Per organ, Dice and HD95 (mm) of the whole 2D or 3D prediction against the reference; the summary gives the mean
over cases of each organ and the mean over organs, the layout of the paper's tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..prompts.sampling import bounding_box, error_click
from .metrics import dice_score, hd95
from .output_masks import predicted_masks, reference_masks

__all__ = ["PAPER_PROTOCOLS", "PaperProtocolResult", "parse_paper_protocol", "slice_points", "box_with_iou",
           "run_paper_protocol", "summarize_paper_protocols", "paper_table"]

PAPER_PROTOCOLS = ("points_1", "points_3", "box_0.75", "box_0.5")
_PROTOCOL = re.compile(r"^(points)_([1-9]\d*)$|^(box)_(0?\.\d+|1(?:\.0*)?)$")


@dataclass
class PaperProtocolResult:
    """One case under one protocol; class ``k`` (value ``k``) is entry ``k - 1``, NaN where the case lacks it.

    Attributes:
        dice, hd95: ``(K,)`` per class.
        box_iou: ``(K,)`` the IoU of the given box with the tight box (box protocols; else NaN).
    """

    dice: np.ndarray
    hd95: np.ndarray
    box_iou: np.ndarray


def parse_paper_protocol(name: str) -> tuple[str, float]:
    """``"points_3"`` -> ``("points", 3)``; ``"box_0.5"`` -> ``("box", 0.5)``.

    Raises:
        ValueError: for another name, listing the valid forms.
    """
    match = _PROTOCOL.match(str(name))
    if match is None:
        raise ValueError(f"unknown prompt protocol {name!r}: use 'points_<n>' (n clicks per slice) or "
                         f"'box_<iou>' (0 < iou <= 1), e.g. {', '.join(PAPER_PROTOCOLS)}")
    if match.group(1):
        return "points", int(match.group(2))
    iou = float(match.group(4))
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"prompt protocol {name!r}: the box IoU must be in (0, 1]")
    return "box", iou


def _plane_points(plane: np.ndarray, count: int, rng: np.random.RandomState) -> list[tuple[int, ...]]:
    centre = tuple(int(v) for v in error_click(np.zeros_like(plane), plane, connectivity=1)[0])
    others = [tuple(int(v) for v in p) for p in np.argwhere(plane) if tuple(p) != centre]
    chosen = rng.choice(len(others), size=min(count - 1, len(others)), replace=False) if count > 1 else []
    return [centre] + [others[i] for i in sorted(chosen)]


def slice_points(mask: np.ndarray, count: int, rng: np.random.RandomState) -> np.ndarray:
    """``count`` positive clicks on every slice (last axis) of a 3D ``mask`` that holds it, or on a 2D ``mask``:
    the centre of the largest connected part first, then distinct random voxels of the structure (fewer where the
    slice has fewer voxels). Returns ``(n, mask.ndim)`` indices."""
    if mask.ndim == 2:
        return np.array(_plane_points(mask, count, rng), dtype=np.int64).reshape(-1, 2)
    points = [(*p, k) for k in np.flatnonzero(mask.any(axis=(0, 1)))
              for p in _plane_points(mask[..., k], count, rng)]
    return np.array(points, dtype=np.int64).reshape(-1, 3)


def _grown_extents(extent: np.ndarray, size: np.ndarray, factor: float, shares: np.ndarray) -> np.ndarray:
    """Extents whose product is ``factor`` times that of ``extent``, each at most ``size``: the growth is shared in
    log space by ``shares``, and what an axis cannot take (the image ends) goes to the others."""
    grown = extent.astype(float).copy()
    free = grown < size
    while free.any():
        remaining = math.log(factor * np.prod(extent) / np.prod(grown))
        if remaining <= 1e-12:
            break
        weights = np.where(free, shares, 0.0)
        grown = np.where(free, grown * np.exp(weights / weights.sum() * remaining), grown)
        full = grown >= size
        grown = np.minimum(grown, size)
        if not (full & free).any():
            break
        free &= ~full
    return grown


def box_with_iou(mask: np.ndarray, iou: float, rng: np.random.RandomState) -> tuple[np.ndarray, float]:
    """A box around ``mask`` whose IoU with the tight box is ``iou`` (higher only when the image cannot hold it).

    Boxes are inclusive index ranges ``(low..., high...)`` covering ``[low, high + 1)`` per axis. The tight box's
    extents grow by ``1 / iou`` in product, shared between the axes at random in log space (an axis that reaches
    the image's size passes the rest to the others); each axis' growth is split at random between its two sides
    within the image.

    Returns:
        ``(2 * ndim,)`` float box and its achieved IoU with the tight box.
    """
    low, high = (v.astype(float) for v in bounding_box(mask))
    extent, size = high - low + 1.0, np.array(mask.shape, dtype=float)
    grown = _grown_extents(extent, size, 1.0 / iou, rng.dirichlet(np.ones(mask.ndim)))
    growth = grown - extent
    room_below, room_above = low, size - 1.0 - high
    least, most = np.maximum(growth - room_above, 0.0), np.minimum(growth, room_below)
    below = least + rng.uniform(0.0, 1.0, size=mask.ndim) * (most - least)
    box = np.concatenate([low - below, high + growth - below]).astype(np.float32)
    return box, float(np.prod(extent) / np.prod(grown))


@torch.no_grad()
def run_paper_protocol(predictor, image: torch.Tensor, label: np.ndarray | torch.Tensor, protocol: str,
                       spacing: Sequence[float] | None = None, seed: int = 0,
                       embeddings: torch.Tensor | None = None) -> PaperProtocolResult:
    """Prompt every class of one case as ``protocol`` says (see the module) and score the prediction.

    Args:
        predictor: a :class:`~medsa_monai.predictor.MedSAPredictor` (``encode``, ``decode``, ``postprocess``,
            ``num_classes``).
        image: ``(1, C, *spatial)`` pre-processed image.
        label: a ``spatial`` label map (class ``k`` is value ``k``) or ``(K, *spatial)`` region channels.
        protocol: ``"points_<n>"`` or ``"box_<iou>"`` (:data:`PAPER_PROTOCOLS`).
        spacing: voxel size (mm) for HD95; ``None`` for 1.
        seed: seed of the random points or box.
        embeddings: ``predictor.encode(image)``, when already computed (one encoder pass serves every protocol).
    """
    kind, value = parse_paper_protocol(protocol)
    classes, spatial = predictor.num_classes, tuple(image.shape[2:])
    dims = len(spatial)
    spacing = [1.0] * dims if spacing is None else [float(s) for s in spacing]
    references = reference_masks(label, classes, spatial)
    present = np.array([bool(ref.any()) for ref in references])
    dice, distance, box_iou = (np.full(classes, math.nan) for _ in range(3))
    if not present.any():
        return PaperProtocolResult(dice, distance, box_iou)
    rng = np.random.RandomState(seed)
    embeddings = predictor.encode(image) if embeddings is None else embeddings
    device = embeddings.device
    points = point_labels = boxes = None
    if kind == "points":
        clicks = [slice_points(ref, int(value), rng) if ref.any() else np.empty((0, dims), np.int64)
                  for ref in references]
        slots = max(len(c) for c in clicks)
        points = torch.zeros(1, classes, slots, dims, device=device)
        point_labels = torch.full((1, classes, slots), -1, dtype=torch.long, device=device)
        for k, class_clicks in enumerate(clicks):
            points[0, k, : len(class_clicks)] = torch.as_tensor(class_clicks, dtype=torch.float32)
            point_labels[0, k, : len(class_clicks)] = 1
    else:
        boxes = torch.full((1, classes, 2 * dims), math.nan, device=device)
        for k in np.flatnonzero(present):
            box, box_iou[k] = box_with_iou(references[k], value, rng)
            boxes[0, k] = torch.as_tensor(box, device=device)
    predicted = predicted_masks(predictor, predictor.decode(embeddings, image.shape, points, point_labels, boxes),
                                spatial, present)
    for k in np.flatnonzero(present):
        dice[k] = dice_score(predicted[k], references[k])
        distance[k] = hd95(predicted[k], references[k], spacing)
    return PaperProtocolResult(dice, distance, box_iou)


def _nanmean(values: np.ndarray, axis: int | None = None):
    with np.errstate(all="ignore"):
        finite = ~np.isnan(values)
        total = np.where(finite, values, 0.0).sum(axis=axis)
        count = finite.sum(axis=axis)
        return np.where(count > 0, total / np.maximum(count, 1), math.nan)


def summarize_paper_protocols(results: Mapping[str, Sequence[PaperProtocolResult]], class_names: Sequence[str]
                              ) -> dict:
    """``{protocol: {"cases": n, "classes": {name: {"dice", "hd95"}}, "mean": {"dice", "hd95"}[, "box_iou"]}}``:
    per class the mean over the cases that have it, and the mean over classes of those (the paper's "Avg")."""
    summary = {}
    for protocol, cases in results.items():
        if not cases:
            continue
        entry: dict = {"cases": len(cases), "classes": {}, "mean": {}}
        for metric in ("dice", "hd95"):
            per_class = _nanmean(np.stack([getattr(r, metric) for r in cases]), 0)
            for name, v in zip(class_names, per_class, strict=True):
                entry["classes"].setdefault(name, {})[metric] = float(v)
            entry["mean"][metric] = float(_nanmean(per_class))
        if parse_paper_protocol(protocol)[0] == "box":
            entry["mean"]["box_iou"] = float(_nanmean(np.stack([r.box_iou for r in cases])))
        summary[protocol] = entry
    return summary


def paper_table(summary: Mapping[str, Mapping], class_names: Sequence[str]) -> str:
    """A Markdown table in the layout of the paper's: one row per protocol, Dice (%) per organ and their mean, then
    the mean HD95 (mm)."""
    header = "| prompt | " + " | ".join(class_names) + " | mean Dice | mean HD95 (mm) |"
    lines = [header, "|" + "---|" * (len(class_names) + 3)]
    for protocol, entry in summary.items():
        dice = [entry["classes"][name]["dice"] for name in class_names]
        cells = ["-" if math.isnan(v) else f"{100 * v:.1f}" for v in dice]
        mean_hd = entry["mean"]["hd95"]
        lines.append(f"| {protocol} | " + " | ".join(cells) + f" | {100 * entry['mean']['dice']:.1f} | "
                     + ("-" if math.isnan(mean_hd) else f"{mean_hd:.1f}") + " |")
    return "\n".join(lines) + "\n"
