"""Prompts in MONAI's array-index order, checked and mapped to SAM's per-slice ``(x, y)`` prompts.

MedSA takes clicks and boxes as array indices of the input's spatial dims, ``(i, j)`` in 2D and ``(i, j, k)`` in 3D
with ``k`` the slice. SAM wants ``(x, y) = (column, row)`` in the resized ``image_size`` frame. The official Med-SA
code passes row/column pairs straight through, transposing every click; the mapping here is the one place where
the order changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["SamPrompts", "to_sam_prompts", "index_to_sam_xy"]


@dataclass
class SamPrompts:
    """SAM prompts for every (row, class) pair, a row being one image or one slice (``B * D`` rows).

    Attributes:
        coords: ``(N, K, P, 2)`` point ``(x, y)`` in the resized frame, or ``None``.
        labels: ``(N, K, P)``: 1 positive, 0 negative, -1 padding (SAM's convention), or ``None``.
        depth_offsets: ``(N, K, P)`` slices between a 3D click and the row's slice (0 on its own slice), or ``None``.
        boxes: ``(N, K, 4)`` ``(x0, y0, x1, y1)``, NaN where the pair has no box, or ``None``.
        masks: ``(N, K, 1, m, m)`` low-resolution mask logits fed back to SAM (NaN for pairs without one), or
            ``None``.
        active: ``(N, K)`` which pairs to decode (``None``: all); the others are left out (NaN logits).
        class_token: ``(N, K)`` whether a prompted pair gets its class's prompt token beside its prompts, with a
            network built with ``prompt_class_token`` (``None``: all do); a pair without gets SAM's
            padding token in its place. Interactive training leaves it out of some sessions, so that boxes
            and clicks carry the segmentation on their own and are not ignored beside the token.
        derived_boxes: ``(N, K)`` pairs whose box propagation derived from a neighbouring slice's prediction, not
            drawn by a user (``None``: none); with ``dense_prompts`` only a user's box is drawn into the mask prompt.
    """

    coords: torch.Tensor | None
    labels: torch.Tensor | None
    boxes: torch.Tensor | None
    masks: torch.Tensor | None
    depth_offsets: torch.Tensor | None = None
    active: torch.Tensor | None = None
    class_token: torch.Tensor | None = None
    derived_boxes: torch.Tensor | None = None

    def groups(self, rows: int, classes: int, device: torch.device) -> Iterator[tuple[bool, bool, torch.Tensor,
                                                                                     torch.Tensor]]:
        """Yield ``(has_points, has_box, row_index, class_index)`` for each non-empty kind of prompt.

        SAM's decoder needs the same number of prompt tokens in a batch, so pairs are decoded by kind: no prompt
        (the class's learned prompt), points, a box, points and a box.
        """
        has_points = (self.labels != -1).any(-1) if self.labels is not None else None
        has_box = torch.isfinite(self.boxes).all(-1) if self.boxes is not None else None
        if has_points is None and has_box is None and self.active is None:
            grid = torch.arange(rows * classes, device=device)
            yield False, False, grid // classes, grid % classes
            return
        none = torch.zeros(rows, classes, dtype=torch.bool, device=device)
        has_points = none if has_points is None else has_points
        has_box = none if has_box is None else has_box
        active = ~none if self.active is None else self.active.to(device)
        for points_wanted, box_wanted in ((False, False), (True, False), (False, True), (True, True)):
            wanted = (has_points == points_wanted) & (has_box == box_wanted) & active
            row_index, class_index = wanted.nonzero(as_tuple=True)
            if row_index.numel():
                yield points_wanted, box_wanted, row_index, class_index


def to_sam_prompts(
    points: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_inputs: torch.Tensor | None,
    *,
    spatial_shape: tuple[int, ...],
    image_size: int,
    num_classes: int,
    batch: int,
    click_depth_radius: int = 0,
) -> SamPrompts:
    """Check MONAI-order prompts and map them to SAM prompts per row (image or slice) and class.

    Args:
        points: ``(B, K, P, spatial_dims)`` click positions as array indices (``(B, P, spatial_dims)`` when
            ``K = 1``). In 3D the last index is the slice: a click prompts the slices within ``click_depth_radius``
            of ``round(k)``, at the same in-plane position.
        point_labels: ``(B, K, P)`` (or ``(B, P)``): 1 foreground, 0 background, -1 padding.
        boxes: ``(B, K, 2 * spatial_dims)``, ``(i0, j0[, k0], i1, j1[, k1])`` inclusive corner indices, a row of NaN
            for a class without a box. In 3D the box prompts the slices ``k0..k1``.
        mask_inputs: logits of a previous prediction, either low-resolution ``(B, K, m, m[, D])`` with
            ``m = image_size / 4`` (what :meth:`MedSA.predict` returns), or at the image's resolution
            ``(B, K, H, W[, D])`` (resized here). A (batch, class) plane of NaN means no mask for that class.
        spatial_shape: ``(H, W)`` or ``(H, W, D)`` of the input image.
        image_size: side of SAM's input frame.
        num_classes: ``K``, the foreground classes.
        batch: ``B``.
        click_depth_radius: how many slices away from its own a 3D click still prompts.

    Raises:
        ValueError: for shapes that do not fit, labels other than -1/0/1, and points or boxes outside the image.
    """
    dims = len(spatial_shape)
    depth = spatial_shape[2] if dims == 3 else 1
    size = torch.tensor(spatial_shape, dtype=torch.float32)
    scale = image_size / size[:2]

    coords = labels = offsets = None
    if (points is None) != (point_labels is None):
        raise ValueError("points and point_labels must be given together")
    if points is not None:
        points, labels = _class_axis(points, point_labels, num_classes)
        _expect_shape("points", points, (batch, num_classes, None, dims))
        _expect_shape("point_labels", labels, tuple(points.shape[:3]))
        labels = labels.long()
        if not torch.isin(labels, torch.tensor([-1, 0, 1], device=labels.device)).all():
            raise ValueError(f"point_labels must be 1 (foreground), 0 (background) or -1 (padding), got values "
                             f"{sorted(set(labels.unique().tolist()))}")
        used = labels != -1
        points = points.float()
        _check_inside("points", points[used], size, spatial_shape)
        coords, labels, offsets = _points_per_row(points, labels, scale.to(points.device), depth, click_depth_radius)

    sam_boxes = None
    if boxes is not None:
        _expect_shape("boxes", boxes, (batch, num_classes, 2 * dims))
        boxes = boxes.float()
        given = torch.isfinite(boxes).all(-1)
        low, high = boxes[given][:, :dims], boxes[given][:, dims:]
        if (low > high).any():
            raise ValueError("boxes must be (min corner, max corner): some have a max index below the min index")
        _check_inside("box corners", torch.cat([low, high]), size, spatial_shape)
        sam_boxes = _boxes_per_row(boxes, given, scale.to(boxes.device), depth)

    masks = None
    if mask_inputs is not None:
        side = image_size // 4
        low_res = (batch, num_classes, side, side) + ((depth,) if dims == 3 else ())
        full = (batch, num_classes, *spatial_shape)
        if tuple(mask_inputs.shape) not in (low_res, full):
            raise ValueError(f"mask_inputs must have shape {low_res} (low resolution) or {full} (the image's), got "
                             f"{tuple(mask_inputs.shape)}")
        rows = mask_inputs.permute(0, 4, 1, 2, 3) if dims == 3 else mask_inputs[:, None]  # (B, D, K, h, w)
        rows = rows.reshape(batch * depth, num_classes, *rows.shape[-2:]).float()
        if tuple(rows.shape[-2:]) != (side, side):
            rows = F.interpolate(rows, size=(side, side), mode="bilinear", align_corners=False)
        masks = rows[:, :, None]
    return SamPrompts(coords, labels, sam_boxes, masks, offsets)


def _class_axis(points: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept ``(B, P, dims)`` points for single-class networks by adding the class axis."""
    if points.ndim == 3 and labels.ndim == 2 and num_classes == 1:
        return points[:, None], labels[:, None]
    return points, labels


def _expect_shape(name: str, tensor: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    fits = tensor.ndim == len(shape) and all(
        want is None or got == want for got, want in zip(tensor.shape, shape, strict=True))
    if not fits:
        wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {tuple(tensor.shape)}")


def _check_inside(name: str, coords: torch.Tensor, size: torch.Tensor, spatial_shape: tuple[int, ...]) -> None:
    """Raise if any ``(M, dims)`` coordinate is not finite or lies outside ``[0, size - 1]``."""
    size = size.to(coords.device)
    bad = ~torch.isfinite(coords).all(-1) | (coords < 0).any(-1) | (coords > size - 1).any(-1)
    if bad.any():
        first = [round(c, 2) for c in coords[bad][0].tolist()]
        raise ValueError(f"{int(bad.sum())} {name} lie outside the image of spatial shape {tuple(spatial_shape)} "
                         f"(array indices must be in [0, size - 1]); first: {first}")


def index_to_sam_xy(ij: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Index ``(..., (i, j))`` -> SAM ``(..., (x, y))`` in the resized frame, ``scale = image_size / (H, W)``; pixel
    centres map to pixel centres."""
    return ((ij + 0.5) * scale - 0.5).flip(-1)



def _points_per_row(points: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor, depth: int, radius: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(B, K, P, dims)`` -> coords ``(B * D, K, P, 2)``, labels and slice offsets ``(B * D, K, P)``.

    In 3D a click reaches the rows (slices) within ``radius`` of its own; elsewhere its label becomes padding.
    """
    xy = index_to_sam_xy(points[..., :2], scale)
    xy = torch.where(labels[..., None] == -1, torch.zeros_like(xy), xy)  # padding may hold anything, even NaN
    if points.shape[-1] == 2:
        return xy, labels, None
    b, k, p, _ = points.shape
    slices = torch.arange(depth, device=points.device)[None, :, None, None]
    offset = (points[..., 2].round().long()[:, None] - slices).abs()  # (B, D, K, P)
    reached = offset <= radius
    row_labels = torch.where(reached, labels[:, None], torch.full_like(labels[:, None], -1))
    row_offsets = torch.where(reached & (row_labels != -1), offset, torch.zeros_like(offset))
    return (xy[:, None].expand(b, depth, k, p, 2).reshape(b * depth, k, p, 2), row_labels.reshape(b * depth, k, p),
            row_offsets.reshape(b * depth, k, p))


def _boxes_per_row(boxes: torch.Tensor, given: torch.Tensor, scale: torch.Tensor, depth: int) -> torch.Tensor:
    """``(B, K, 2 dims)`` -> ``(B * D, K, 4)`` SAM boxes, NaN on slices outside a 3D box or where none is given."""
    dims = boxes.shape[-1] // 2
    low, high = index_to_sam_xy(boxes[..., 0:2], scale), index_to_sam_xy(boxes[..., dims:dims + 2], scale)
    xyxy = torch.cat([low, high], dim=-1)
    xyxy = torch.where(given[..., None], xyxy, torch.full_like(xyxy, float("nan")))
    if dims == 2:
        return xyxy
    b, k, _ = boxes.shape
    slices = torch.arange(depth, device=boxes.device)[None, :, None]
    inside = (slices >= boxes[:, None, :, 2].round()) & (slices <= boxes[:, None, :, 5].round())  # (B, D, K)
    per_row = torch.where(inside[..., None], xyxy[:, None], torch.full_like(xyxy[:, None], float("nan")))
    return per_row.reshape(b * depth, k, 4)
