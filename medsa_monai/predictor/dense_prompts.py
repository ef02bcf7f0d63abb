"""Boxes and clicks drawn into SAM's mask prompt, so that the decoder also sees them as maps.

SAM gives boxes and clicks to its decoder as sparse tokens: a Fourier encoding of their coordinates, from which the
decoder must learn where in the image they are. A small network trained from scratch on a few hundred medical
volumes learns that mapping slowly; nnInteractive and RITM give prompts as dense maps instead, aligned with the
image (docs/interactive.md gives the figures that led here). Here the maps go through SAM's own dense pathway, the
mask prompt (its ``mask_downscaling`` convolutions), beside the sparse tokens, which stay as SAM's:

- a box sets the map to :data:`OUTSIDE_LOGIT` outside it, "nothing of the structure lies outside": over ``0``
  for the first prompt of a session, over the previous prediction fed back afterwards (the box is kept through
  the corrections, as the CVPR 2025 protocol keeps it); boxes that propagation derives from a neighbouring slice's
  prediction are only tokens (``SamPrompts.derived_boxes``): the structure may grow beyond them;
- each click is a disk of radius ``click_radius`` low-resolution pixels set to ``+CLICK_LOGIT`` (foreground) or
  ``-CLICK_LOGIT`` (background) in the mask prompt, over the previous prediction fed back, or over the box map, or
  over ``0``: the click changes the prompt exactly where it was placed, as the user meant.

A 3D click marks only its own slice's map (on neighbouring slices, through ``click_depth_radius``, it stays a token).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..networks.prompt_mapping import SamPrompts

__all__ = ["OUTSIDE_LOGIT", "CLICK_LOGIT", "draw_prompt_maps", "with_prompt_maps"]

OUTSIDE_LOGIT = -20.0
"""Mask-prompt logit outside a box: certain background."""

CLICK_LOGIT = 20.0
"""Mask-prompt logit magnitude of a click's disk: certain foreground (positive click) or background (negative)."""


def draw_prompt_maps(masks: torch.Tensor | None, side: int, coords: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None, depth_offsets: torch.Tensor | None = None,
                     boxes: torch.Tensor | None = None, click_radius: float = 1.0) -> torch.Tensor:
    """Mask prompts with the boxes and clicks of their (row, class) pairs drawn in.

    Args:
        masks: ``(M, 1, m, m)`` low-resolution mask prompts, a NaN plane where a pair has none; ``None``: none has.
        side: ``m``, the side of the low-resolution frame (SAM's ``image_size / 4``).
        coords: ``(M, P, 2)`` clicks ``(x, y)`` in SAM's ``image_size`` frame, or ``None``.
        labels: ``(M, P)`` 1 foreground, 0 background, -1 padding.
        depth_offsets: ``(M, P)`` slices between a 3D click and the row's slice; only clicks at 0 are drawn.
        boxes: ``(M, 4)`` ``(x0, y0, x1, y1)`` in the same frame, NaN rows without a box (or whose box is not to
            be drawn), or ``None``.
        click_radius: radius of a click's disk in low-resolution pixels (4 pixels of the ``image_size`` frame).

    Returns:
        ``(M, 1, m, m)`` finite mask prompts.
    """
    given_tensor = next(t for t in (coords, boxes, masks) if t is not None)
    rows, device = given_tensor.shape[0], given_tensor.device
    # centre of low-resolution pixel (i, j) in the image_size frame: each covers 4 x 4 pixels
    centres = torch.arange(side, device=device, dtype=torch.float32) * 4 + 1.5
    maps = torch.zeros(rows, side, side, device=device)
    if masks is not None:
        given = torch.isfinite(masks[:, 0]).flatten(1).all(1)[:, None, None]
        maps = torch.where(given, masks[:, 0].float().nan_to_num(0.0), maps)
    if boxes is not None:
        x0, y0, x1, y1 = (boxes[:, i, None].float() for i in range(4))
        # a low-resolution pixel is inside when any of its 4 x 4 pixels is
        inside_x = (centres[None] + 2 >= x0) & (centres[None] - 2 <= x1)  # (M, m) over columns
        inside_y = (centres[None] + 2 >= y0) & (centres[None] - 2 <= y1)  # (M, m) over rows
        outside = ~(inside_y[:, :, None] & inside_x[:, None, :]) & torch.isfinite(boxes).all(-1)[:, None, None]
        maps = torch.where(outside, maps.clamp(max=OUTSIDE_LOGIT), maps)
    if coords is not None and labels is not None:
        drawn = labels != -1
        if depth_offsets is not None:
            drawn = drawn & (depth_offsets == 0)
        dy = (centres[None, :, None, None] - coords[:, None, None, :, 1].float()) / 4  # (M, m, 1, P)
        dx = (centres[None, None, :, None] - coords[:, None, None, :, 0].float()) / 4  # (M, 1, m, P)
        disk = (dx.square() + dy.square() <= click_radius ** 2) & drawn[:, None, None, :]  # (M, m, m, P)
        positive = (disk & (labels == 1)[:, None, None, :]).any(-1)
        negative = (disk & (labels == 0)[:, None, None, :]).any(-1)
        maps = torch.where(positive, maps.clamp(min=CLICK_LOGIT), maps)
        maps = torch.where(negative, maps.clamp(max=-CLICK_LOGIT), maps)  # overlapping disks: background wins
    return maps[:, None].to(masks.dtype if masks is not None else maps.dtype)


def with_prompt_maps(prompts: SamPrompts, side: int, click_radius: float = 1.0) -> SamPrompts:
    """``prompts`` whose prompted (row, class) pairs (a click or a box, among the ``active`` ones) have their clicks
    and user-drawn boxes drawn into their mask prompt (:func:`draw_prompt_maps`); the other pairs keep theirs.

    Args:
        prompts: SAM-frame prompts per (row, class).
        side: the side of the low-resolution frame (SAM's ``image_size / 4``).
        click_radius: radius of a click's disk in low-resolution pixels.
    """
    given = prompts.coords if prompts.coords is not None else prompts.boxes
    if given is None:
        return prompts
    rows, classes = given.shape[:2]
    device = given.device
    has_points = (prompts.labels != -1).any(-1) if prompts.labels is not None else None
    has_box = torch.isfinite(prompts.boxes).all(-1) if prompts.boxes is not None else None
    prompted = torch.zeros(rows, classes, dtype=torch.bool, device=device)
    for has in (has_points, has_box):
        if has is not None:
            prompted |= has.to(device)
    if prompts.active is not None:
        prompted &= prompts.active.to(device)
    row, cls = prompted.nonzero(as_tuple=True)
    masks = prompts.masks
    if masks is None:
        masks = torch.full((rows, classes, 1, side, side), float("nan"), device=device)
    if not row.numel():
        return prompts
    drawn = draw_prompt_maps(
        masks[row, cls] if prompts.masks is not None else None, side,
        prompts.coords[row, cls] if has_points is not None else None,
        prompts.labels[row, cls] if has_points is not None else None,
        prompts.depth_offsets[row, cls] if has_points is not None and prompts.depth_offsets is not None else None,
        _user_boxes(prompts)[row, cls] if has_box is not None else None, click_radius)
    return replace(prompts, masks=masks.index_put((row, cls), drawn.to(masks.dtype)))


def _user_boxes(prompts: SamPrompts) -> torch.Tensor:
    """The boxes of ``prompts`` a user drew: those propagation derived from a neighbour's prediction are NaN."""
    if prompts.derived_boxes is None:
        return prompts.boxes
    derived = prompts.derived_boxes.to(prompts.boxes.device)[..., None]
    return torch.where(derived, torch.full_like(prompts.boxes, float("nan")), prompts.boxes)
