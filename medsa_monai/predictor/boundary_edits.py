"""A click placed next to the shown boundary moves that boundary by one voxel around itself, at the image's resolution.

Where SAM's decoder predicts on a grid coarser than the voxels (Task04's slices: a low-resolution pixel spans 1.75
voxels), the errors left after a few clicks are bands one voxel thick along the boundary. A click decoded again
cannot place the boundary that finely: it moves it by a pixel of that grid, and from the tenth click on it fixes
about as many voxels as it breaks (``benchmarks/click_steps.py``, docs/interactive.md). A click next to the boundary
(one of its four in-plane neighbours shows the label the click asks for) says where the boundary is: it is not
decoded; instead the voxels just across the shown boundary within ``radius`` voxels of it on its slice (the first
ring outside the mask for a foreground click, inside it for a background one, the click included) take its label,
and keep it whatever later decodes show (:class:`BoundaryEdits`). Clicks farther from the boundary are decoded as
before.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["BoundaryEdits", "boundary_ring", "is_boundary_click"]

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _plane(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The click's slice (last axis) of a 3D array; a 2D array is its own slice."""
    return array[..., int(index[-1])] if array.ndim == 3 else array


def is_boundary_click(mask: np.ndarray, index: np.ndarray, foreground: bool) -> bool:
    """Whether a click at ``index`` of ``mask`` (its class's shown mask, ``(H, W[, D])``) lies next to the shown
    boundary: one of its four in-plane neighbours already shows the label it asks for (``foreground``: in the mask)."""
    plane = _plane(mask, index)
    i, j = int(index[0]), int(index[1])
    neighbours = [(i + di, j + dj) for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return any(0 <= a < plane.shape[0] and 0 <= b < plane.shape[1] and bool(plane[a, b]) == bool(foreground)
               for a, b in neighbours)


def boundary_ring(mask: np.ndarray, index: np.ndarray, foreground: bool, radius: float) -> np.ndarray:
    """The voxels a boundary click sets: on its slice, within ``radius`` voxels of it, those just across the shown
    boundary (outside ``mask`` with a four-connected neighbour inside for a ``foreground`` click; inside with one
    outside for a background click), and the click's own voxel. A boolean array of ``mask``'s shape."""
    ring = np.zeros(mask.shape, dtype=bool)
    if mask.ndim == 3:
        ring[..., int(index[-1])] = _ring_on_slice(mask, index, foreground, radius)
    else:
        ring[:] = _ring_on_slice(mask, index, foreground, radius)
    return ring


def _ring_on_slice(mask: np.ndarray, index: np.ndarray, foreground: bool, radius: float) -> np.ndarray:
    """:func:`boundary_ring` on the click's slice alone, ``(H, W)``."""
    plane = _plane(mask, index).astype(bool)
    if foreground:
        across = ~plane & ndimage.binary_dilation(plane, _FOUR_CONNECTED)
    else:
        across = plane & ndimage.binary_dilation(~plane, _FOUR_CONNECTED)
    rows, cols = np.ogrid[: plane.shape[0], : plane.shape[1]]
    across &= (rows - int(index[0])) ** 2 + (cols - int(index[1])) ** 2 <= radius ** 2
    across[int(index[0]), int(index[1])] = True
    return across


class BoundaryEdits:
    """The boundary clicks of one session: which voxels each class is set to show, whatever the decoder shows.

    The edits are kept per (class, slice) that a click moved, so that a session on a large volume holds a few
    slices rather than a volume per class.

    Args:
        classes: number of outputs (classes or regions).
        spatial: the image's spatial shape ``(H, W[, D])``.
        radius: how far along the boundary a click moves it, in voxels of its slice.
        exclusive: classes compete (a background channel): a voxel set to one class shows no other.
        first_click: a class's clicks before this one (counting from 1) are all decoded, next to the boundary or
            not: the first clicks land in thicker errors, where the decoder's corrections reach further.
    """

    def __init__(self, classes: int, spatial: tuple[int, ...], radius: float, exclusive: bool,
                 first_click: int = 1) -> None:
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0 voxels, got {radius}")
        if int(first_click) != first_click or first_click < 1:
            raise ValueError(f"first_click must be a click number >= 1, got {first_click}")
        self.classes, self.spatial = int(classes), tuple(spatial)
        self.radius = float(radius)
        self.first_click = int(first_click)
        self.exclusive = bool(exclusive)
        self.clicks = np.zeros(classes, dtype=np.int64)  # the clicks each class was given so far
        # (class, slice or None in 2D) -> (H, W) int8: 1 set to show, -1 set not to show, 0 free
        self.slices: dict[tuple[int, int | None], np.ndarray] = {}

    def take(self, k: int, shown: np.ndarray, index: np.ndarray, foreground: bool) -> bool:
        """Take a click of class ``k`` placed on the prediction ``shown`` (its mask of class ``k``) when it lies next
        to the boundary (and is not one of its first clicks), setting the voxels it moves; ``False`` (nothing set)
        for a click to decode. Call it once for each click of the session, in order."""
        self.clicks[k] += 1
        if self.clicks[k] < self.first_click or not is_boundary_click(shown, index, foreground):
            return False
        ring = _ring_on_slice(shown, index, foreground, self.radius)
        z = int(index[-1]) if len(self.spatial) == 3 else None
        self._slice(k, z)[ring] = 1 if foreground else -1
        if foreground and self.exclusive:
            for j in range(self.classes):
                if j != k and (j, z) in self.slices:
                    other = self.slices[(j, z)]
                    other[ring & (other == 1)] = 0
        return True

    def _slice(self, k: int, z: int | None) -> np.ndarray:
        if (k, z) not in self.slices:
            self.slices[(k, z)] = np.zeros(self.spatial[:2], dtype=np.int8)
        return self.slices[(k, z)]

    def apply(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        """The decoded ``masks`` (one per class) with the edits shown."""
        if not self.slices:
            return masks
        shown = [mask.copy() for mask in masks]

        def on_slice(mask: np.ndarray, z: int | None) -> np.ndarray:  # a view
            return mask if z is None else mask[..., z]

        for (k, z), edits in self.slices.items():
            on_slice(shown[k], z)[edits == 1] = True
            on_slice(shown[k], z)[edits == -1] = False
        if self.exclusive:
            for (k, z), edits in self.slices.items():
                for j in range(self.classes):
                    if j != k:
                        on_slice(shown[j], z)[edits == 1] = False
        return shown
