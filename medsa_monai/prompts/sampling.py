"""Simulated user prompts from a label mask: clicks away from borders, jittered boxes, next-click placement.

All functions work on numpy boolean masks of any dimension (2D images, 3D volumes) and return array indices in
the mask's axis order (MONAI order), the convention of :class:`~medsa_monai.networks.MedSA`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["sample_positive_clicks", "sample_negative_clicks", "jittered_box", "bounding_box", "error_click",
           "simulated_previous_logits"]


def _weighted_choice(weights: np.ndarray, count: int, rng: np.random.RandomState) -> np.ndarray:
    """``count`` flat indices drawn with probability proportional to ``weights`` (without replacement if possible)."""
    flat = weights.ravel().astype(np.float64)
    candidates = np.flatnonzero(flat > 0)
    if candidates.size == 0 or count == 0:
        return np.empty(0, dtype=np.int64)
    p = flat[candidates] / flat[candidates].sum()
    replace = candidates.size < count
    return rng.choice(candidates, size=count, replace=replace, p=p)


def sample_positive_clicks(mask: np.ndarray, count: int, rng: np.random.RandomState, power: float = 1.0
                           ) -> np.ndarray:
    """``count`` clicks inside ``mask``, drawn with weight ``(distance to the background - 1) ** power``.

    Voxels on the object's border (distance 1) get no weight, unless the object is so thin that all its voxels are
    border voxels. Returns ``(count, ndim)`` indices, or ``(0, ndim)`` for an empty mask.
    """
    if not mask.any():
        return np.empty((0, mask.ndim), dtype=np.int64)
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    interior = np.clip(distance - 1, 0, None)
    picks = _weighted_choice((interior if interior.any() else distance) ** power, count, rng)
    return np.stack(np.unravel_index(picks, mask.shape), axis=-1)


def sample_negative_clicks(mask: np.ndarray, count: int, rng: np.random.RandomState, margin: float = 0.25
                           ) -> np.ndarray:
    """``count`` clicks outside ``mask`` but near it: in its bounding box grown by ``margin`` of its extent on each
    side, weighted by the distance to the object (so not on its border). ``(count, ndim)`` indices.
    """
    if not mask.any() or count == 0:
        return np.empty((0, mask.ndim), dtype=np.int64)
    low, high = bounding_box(mask)
    grow = np.ceil((high - low + 1) * margin).astype(int)
    region = np.zeros_like(mask)
    region[tuple(slice(max(lo - g, 0), hi + g + 1) for lo, hi, g in zip(low, high, grow, strict=True))] = True
    region &= ~mask
    if not region.any():
        region = ~mask
    weights = ndimage.distance_transform_edt(~mask) * region
    picks = _weighted_choice(weights, count, rng)
    return np.stack(np.unravel_index(picks, mask.shape), axis=-1)


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive min and max indices of the non-zero voxels of ``mask`` (which must not be empty)."""
    coords = np.argwhere(mask)
    return coords.min(0), coords.max(0)


def jittered_box(mask: np.ndarray, rng: np.random.RandomState, jitter: float = 0.1) -> np.ndarray:
    """The bounding box of ``mask`` with each side moved by up to ``jitter`` of the box's extent, inside the image.

    Returns ``(2 * ndim,)``: ``(min corner, max corner)`` inclusive indices, as float.
    """
    low, high = bounding_box(mask)
    extent = high - low + 1
    last = np.array(mask.shape) - 1
    low = np.clip(np.round(low + rng.uniform(-jitter, jitter, size=mask.ndim) * extent), 0, last)
    high = np.clip(np.round(high + rng.uniform(-jitter, jitter, size=mask.ndim) * extent), 0, last)
    low, high = np.minimum(low, high), np.maximum(low, high)
    return np.concatenate([low, high]).astype(np.float32)


def error_click(prediction: np.ndarray, reference: np.ndarray, connectivity: int | None = None, *,
                spacing: Sequence[float] | None = None, seed: int | None = None,
                draw: np.random.RandomState | None = None, power: float = 1.0) -> tuple[np.ndarray, bool] | None:
    """Where a user clicks to correct ``prediction``: in the largest connected component of the error
    ``prediction != reference``; a foreground click where the reference is set there (a missed region), a
    background click otherwise (a false positive).

    Within the component the click goes to the maximum of the Euclidean distance transform (in the units of
    ``spacing``, the image border counted as outside): the point farthest from the component's border, the usual
    protocol of interactive-segmentation benchmarks. With ``draw`` (a random generator) it is drawn instead with
    weight ``distance ** power``, towards the interior, as training simulates a user (RITM and SAM draw around the
    maximum). Equally large components and equal maxima go to the first in array order, or, with ``seed``, are
    chosen by ``np.random.RandomState(seed)`` (one fresh generator per click, the CVPR 2025 challenge's rule), so the
    same inputs always give the same click.

    Args:
        prediction: boolean prediction of one class or region, any dimension.
        reference: boolean reference of the same shape.
        connectivity: which neighbours join a component, as ``scipy.ndimage.generate_binary_structure``'s: 1 (faces)
            to ``ndim`` (faces, edges and corners; the default).
        spacing: voxel size per axis for the distance transform; ``None`` for 1.
        seed: break ties at random with this seed (else: the first).
        draw: draw the click from the component with this generator (else: its maximum).
        power: with ``draw``, how strongly the draw favours the interior (0: uniform over the component).

    Returns:
        ``(index, is_foreground)``, ``index`` the ``(ndim,)`` array index of the click, or ``None`` when the
        prediction is perfect.
    """
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    error = prediction != reference
    if not error.any():
        return None
    rng = None if seed is None else np.random.RandomState(seed)
    structure = ndimage.generate_binary_structure(error.ndim, error.ndim if connectivity is None else connectivity)
    components, count = ndimage.label(error, structure=structure)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    chosen = largest[0] if largest.size == 1 or rng is None else rng.choice(largest)
    # the transform within the component's bounding box, padded by one outside voxel, equals the whole image's:
    # an inside voxel's nearest outside voxel is never farther than that box's border
    box = ndimage.find_objects(components, max_label=chosen)[chosen - 1]
    region = components[box] == chosen
    sampling = None if spacing is None else [float(s) for s in spacing]
    distance = ndimage.distance_transform_edt(np.pad(region, 1), sampling=sampling)[(slice(1, -1),) * region.ndim]
    distance = distance * region
    if draw is not None:
        index = np.array(np.unravel_index(int(_weighted_choice(distance**power * region, 1, draw)[0]), region.shape))
    else:
        maxima = np.argwhere(np.isclose(distance, distance.max(), rtol=1e-9, atol=0.0) & region)
        index = maxima[0] if len(maxima) == 1 or rng is None else maxima[rng.choice(len(maxima))]
    index = index + np.array([axis.start for axis in box])
    return index.astype(np.int64), bool(reference[tuple(index)])


def simulated_previous_logits(mask: np.ndarray, rng: np.random.RandomState, max_shift: int = 1,
                              max_radius: int = 1, hole_probability: float = 0.3, scale: float = 8.0) -> np.ndarray:
    """Logits of a plausible earlier, imperfect prediction of ``mask``, to train SAM's mask prompt.

    The reference is shifted by up to ``max_shift`` voxels per axis, eroded or dilated by up to ``max_radius``,
    loses a ball of up to a quarter of its extent with probability ``hole_probability`` (never all of it), and is
    smoothed into logits in ``[-scale, scale]`` (positive inside).
    """
    shifted = ndimage.shift(mask.astype(np.float32), rng.randint(-max_shift, max_shift + 1, size=mask.ndim),
                            order=0) > 0.5
    radius = rng.randint(-max_radius, max_radius + 1)
    if radius:
        op = ndimage.binary_dilation if radius > 0 else ndimage.binary_erosion
        shifted = op(shifted, structure=ndimage.generate_binary_structure(mask.ndim, 1), iterations=abs(radius))
    if shifted.any() and rng.rand() < hole_probability:
        centre = np.argwhere(shifted)[rng.randint(int(shifted.sum()))]
        grid = np.ogrid[tuple(slice(0, s) for s in mask.shape)]
        hole_radius = rng.uniform(1.0, max(1.5, 0.25 * max(np.ptp(np.argwhere(mask), axis=0))))
        holed = shifted & (sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) > hole_radius**2)
        shifted = holed if holed.sum() >= 0.5 * shifted.sum() else shifted
    soft = ndimage.gaussian_filter(shifted.astype(np.float32), sigma=1.0)
    return (2 * scale * (soft - 0.5)).astype(np.float32)
