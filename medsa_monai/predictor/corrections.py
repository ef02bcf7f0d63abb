"""A corrective click changes the prediction where it was placed, not elsewhere on its slice.

SAM decodes a whole slice again for each new click, so a click can also move the boundary far from where it was
placed. In a session under way (the previous prediction fed back), the new logits of a clicked (slice, class) pair
are kept only in the regions of change that the click touches: the 8-connected regions where the new mask differs
from the previous one and that reach the click's low-resolution pixel or its 8 neighbours (the disk of
``click_radius`` 1 that the click is drawn as). A foreground click may only add to the prediction there and a
background click only remove from it. Everywhere else the previous mask stays (its pixels take the new logits only
where their sign, the mask, does not change). nnInteractive similarly updates only a region around each
interaction.

A session sends every click made so far (as SAM's predictor does), so a slice clicked before would be decoded again
at each later click and drift, though nothing new was asked of it. A click the previous prediction already shows
right, read where it was placed, is done (:func:`pending_clicks`): a slice is decoded again only for clicks still
pending, and only the regions those touch may change. A 2D session is corrected the same way, its image as a volume's
one slice (``MedSAPredictor(confine_corrections=True)``, the default; ``False`` decodes it whole at each click, as
``SamPredictor`` does). How far a background click may remove is chosen per model after training
(``removal_radius``, :func:`~medsa_monai.training.calibrate_propagation`). The measurements behind these choices are
in docs/interactive.md (``benchmarks/correction_variants.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["confine_to_clicked_regions", "obey_clicks", "pending_clicks"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def confine_to_clicked_regions(new: torch.Tensor, previous: torch.Tensor, coords: torch.Tensor,
                               labels: torch.Tensor, removal_radius: float | None = None) -> torch.Tensor:
    """The new logits of one (slice, class) pair, confined to the regions its clicks changed.

    Args:
        new: ``(m, m)`` low-resolution logits decoded with the clicks.
        previous: ``(m, m)`` the previous logits (the mask prompt fed back).
        coords: ``(P, 2)`` clicks ``(x, y)`` in SAM's ``image_size`` frame (``4 m``).
        labels: ``(P,)`` 1 foreground, 0 background, -1 padding; a later click wins where two touch one region.
        removal_radius: a background click removes only within this distance of its low-resolution pixel (in
            low-resolution pixels, 4 SAM pixels each); ``None``: anywhere in the regions it touches.

    Returns:
        ``(m, m)`` logits: ``new`` inside the touched regions (at least ``previous`` for a foreground click, at
        most for a background one) and where the mask keeps its sign, ``previous`` elsewhere.
    """
    side = new.shape[-1]
    changed = ((new > 0) != (previous > 0)).cpu().numpy()
    regions, _ = ndimage.label(changed, structure=_EIGHT_CONNECTED)
    regions = torch.as_tensor(regions, device=new.device)
    result = torch.where(torch.as_tensor(changed, device=new.device), previous, new)
    for (x, y), label in zip(coords.tolist(), labels.tolist(), strict=True):
        if label == -1:
            continue
        i, j = min(max(int(y // 4), 0), side - 1), min(max(int(x // 4), 0), side - 1)
        bounded = torch.maximum(new, previous) if label == 1 else torch.minimum(new, previous)
        reach = None  # a background click's disk of removal_radius, where it is bounded
        if label == 0 and removal_radius is not None:
            rows = torch.arange(side, device=new.device)[:, None]
            cols = torch.arange(side, device=new.device)[None, :]
            reach = (rows - i) ** 2 + (cols - j) ** 2 <= removal_radius ** 2
        for region in regions[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].unique().tolist():
            if region == 0:
                continue
            inside = regions == region if reach is None else (regions == region) & reach
            result = torch.where(inside, bounded, result)
    return result


def obey_clicks(logits: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, exclusive: bool,
                margin: float = 1.0) -> torch.Tensor:
    """Logits that show each click's label where it was placed, whatever the decoder made of it.

    The low-resolution pixels the click is read from (the 2 x 2 of its bilinear interpolation, as
    :func:`pending_clicks` reads it and :meth:`~medsa_monai.networks.MedSA.postprocess` shows it) of the clicked class
    are set to at least ``margin`` for a foreground click (with ``exclusive`` classes, at least ``margin`` above
    every other class there) and to at most ``-margin`` for a background click. The other classes and every other
    pixel keep their logits, and a pixel that already shows the click keeps its value within those bounds.

    Args:
        logits: ``(K, m, m)`` low-resolution logits of one row (image or slice), every class.
        coords: ``(K, P, 2)`` clicks ``(x, y)`` in SAM's ``image_size`` frame (``4 m``).
        labels: ``(K, P)`` 1 foreground, 0 background, -1 padding (a click not to enforce).
        exclusive: classes compete (a background channel) rather than overlap (regions).
        margin: how far from 0 the enforced logits are; small, so that the click shows about one voxel's worth of
            label at the image's resolution where the decoder disagreed.

    Returns:
        ``(K, m, m)`` logits.
    """
    result = logits.clone()
    side = logits.shape[-1]
    for cls, point in torch.nonzero(labels != -1).tolist():
        x, y = coords[cls, point].tolist()
        u, v = (x + 0.5) / 4 - 0.5, (y + 0.5) / 4 - 0.5  # the low-resolution position of the click
        cols = sorted({min(max(int(np.floor(u)) + d, 0), side - 1) for d in (0, 1)})
        rows = sorted({min(max(int(np.floor(v)) + d, 0), side - 1) for d in (0, 1)})
        block = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        if labels[cls, point] == 1:
            floor = torch.full_like(result[(cls, *block)], margin)
            others = [k for k in range(len(result)) if k != cls]
            if exclusive and others:  # above every other class there, whose logits stay as they are
                floor = torch.maximum(floor, result[(others, *block)].amax(0) + margin)
            result[(cls, *block)] = torch.maximum(result[(cls, *block)], floor)
        else:
            result[(cls, *block)] = result[(cls, *block)].clamp(max=-margin)
    return result


def pending_clicks(previous: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, exclusive: bool
                   ) -> torch.Tensor:
    """The clicks the previous prediction does not obey yet; the others, done, become padding (-1).

    The previous prediction at a click is read as it is shown: its low-resolution logits interpolated bilinearly at
    the click, as :meth:`~medsa_monai.networks.MedSA.postprocess` brings them to the image (a click at a voxel
    centre reads exactly the value that voxel is shown with). A foreground click of class ``k`` is done where ``k``
    is shown there (its logit positive and, for ``exclusive`` classes, the largest), a background click where it
    is not.

    Args:
        previous: ``(N, K, m, m)`` low-resolution logits of the previous prediction, every class (NaN: not shown).
        coords: ``(N, K, P, 2)`` clicks ``(x, y)`` in SAM's ``image_size`` frame (``4 m``).
        labels: ``(N, K, P)`` 1 foreground, 0 background, -1 padding.
        exclusive: classes compete (a background channel: the largest positive logit is shown) rather than
            overlap (regions: each positive logit is shown).

    Returns:
        ``labels`` with the done clicks set to -1.
    """
    n, classes, points = labels.shape
    side = previous.shape[-1]
    # SAM x -> low-resolution x (x + 0.5) / 4 - 0.5 -> grid_sample's [-1, 1] frame (align_corners=False)
    grid = (coords.nan_to_num(0.0).float() + 0.5) / (2 * side) - 1.0  # padding clicks may hold NaN
    logits = previous.float().nan_to_num(-1e4).clamp(-1e4, 1e4)
    values = torch.nn.functional.grid_sample(logits, grid.view(n, classes * points, 1, 2), mode="bilinear",
                                             padding_mode="border", align_corners=False)
    values = values.view(n, classes, classes, points)  # (N, class read, class clicked, P)
    own = values.diagonal(dim1=1, dim2=2).permute(0, 2, 1)  # (N, K, P): each click's own class
    shown = own > 0
    if exclusive:
        shown &= own >= values.amax(1)
    done = ((labels == 1) & shown) | ((labels == 0) & ~shown)
    return torch.where(done, torch.full_like(labels, -1), labels)
