"""The window a prompt-centred zoom decodes in, and the training transform that shows the network such windows.

:class:`~medsa_monai.predictor.ZoomPredictor` decodes a prompted structure in a window around it, resized to the
encoder's input size; :class:`RandPromptZoomd` crops training samples the same way, so that the network learns at
the scale it is used at.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandPromptZoomd", "ZoomWindow", "zoom_window"]


@dataclass(frozen=True)
class ZoomWindow:
    """An in-plane window ``rows[0]:rows[1]``, ``cols[0]:cols[1]`` of an image ``height x width``."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    height: int
    width: int

    @property
    def factor(self) -> float:
        """How much larger the window's content appears than the whole slice's (1: no zoom)."""
        return max(self.height / (self.rows[1] - self.rows[0]), self.width / (self.cols[1] - self.cols[0]))

    @property
    def whole(self) -> bool:
        return self.rows == (0, self.height) and self.cols == (0, self.width)


def _span(low: float, high: float, size: int, length: int) -> tuple[int, int]:
    """``size`` consecutive indices of ``0..length - 1`` centred on ``[low, high]``, shifted inside."""
    size = min(max(int(math.ceil(size)), 1), length)
    start = int(round((low + high + 1) / 2 - size / 2))
    start = min(max(start, 0), length - size)
    return start, start + size


def zoom_window(region: tuple[float, float, float, float], height: int, width: int, margin: float,
                min_fraction: float) -> ZoomWindow:
    """The window around ``region`` ``(i0, j0, i1, j1)`` (inclusive indices) grown by ``margin`` times its size on
    each side, with the slice's aspect ratio, at least ``min_fraction`` of the slice and at most all of it.

    Args:
        region: the in-plane extent to show.
        height, width: the slice's size.
        margin: how much room around the region, as a fraction of its size per side.
        min_fraction: the smallest window, as a fraction of the slice's sides (the largest zoom is its inverse).
    """
    i0, j0, i1, j1 = region
    need_rows = (i1 - i0 + 1) * (1 + 2 * margin)
    need_cols = (j1 - j0 + 1) * (1 + 2 * margin)
    fraction = min(max(need_rows / height, need_cols / width, min_fraction), 1.0)
    return ZoomWindow(_span(i0, i1, fraction * height, height), _span(j0, j1, fraction * width, width),
                      height, width)



class RandPromptZoomd(RandomizableTransform, MapTransform):
    """With probability ``prob``, crop a sample in-plane to the window :class:`~medsa_monai.predictor.ZoomPredictor`
    would decode one of its structures in, and resize it back to the sample's size, so that training sees
    structures at the zoom prompts will show them at.

    The structure is a class (or region) drawn among those present; the window is its in-plane extent over every
    slice grown by a margin drawn from ``margin`` (as :func:`zoom_window`, with the slice's aspect ratio and at
    least ``min_fraction`` of it). Every key is cropped to the same window over the whole depth, then resized back
    in-plane (images bilinear, the label nearest), so samples keep their shape and batch as before. Run it after the
    patch is cropped and before prompts are sampled from the label.

    Args:
        keys: the image and label keys.
        label_key: the label: a class index map ``(1, *spatial)`` or one binary channel per region.
        prob: the probability of zooming a sample.
        margin: ``(low, high)``, the range the margin is drawn from.
        min_fraction: the smallest window as a fraction of the slice.
        nearest_keys: keys resized by nearest neighbour (default: the label).
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", prob: float = 0.5,
                 margin: Sequence[float] = (0.25, 1.0), min_fraction: float = 0.25,
                 nearest_keys: Sequence[str] | None = None, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(margin) != 2 or not 0 <= margin[0] <= margin[1]:
            raise ValueError(f"margin must be a range (low, high) with 0 <= low <= high, got {margin}")
        self.label_key = label_key
        self.margin = (float(margin[0]), float(margin[1]))
        self.min_fraction = float(min_fraction)
        self.nearest_keys = {label_key} if nearest_keys is None else set(nearest_keys)

    @staticmethod
    def _structures(label: torch.Tensor) -> list[torch.Tensor]:
        """In-plane masks ``(H, W)`` of each class or region present (on any slice)."""
        label = torch.as_tensor(label)

        def in_plane(mask: torch.Tensor) -> torch.Tensor:
            return mask.any(-1) if mask.ndim == 3 else mask

        if label.shape[0] == 1:
            return [in_plane(label[0] == v) for v in torch.unique(label).tolist() if v > 0]
        return [in_plane(channel > 0) for channel in label if bool((channel > 0).any())]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        structures = self._structures(d[self.label_key])
        if not structures:
            return d
        chosen = structures[self.R.randint(len(structures))]
        margin = self.R.uniform(*self.margin)
        rows, cols = np.nonzero(chosen.cpu().numpy())
        height, width = chosen.shape
        window = zoom_window((rows.min(), cols.min(), rows.max(), cols.max()), height, width, margin,
                             self.min_fraction)
        if window.whole:
            return d
        for key in self.key_iterator(d):
            value = d[key]
            crop = value[:, window.rows[0]:window.rows[1], window.cols[0]:window.cols[1]]
            plain = crop.as_tensor() if hasattr(crop, "as_tensor") else torch.as_tensor(crop)
            d[key] = _resize_in_plane(plain, (height, width), key in self.nearest_keys)  # no longer the file's grid
        return d


def _resize_in_plane(tensor: torch.Tensor, size: tuple[int, int], nearest: bool) -> torch.Tensor:
    """``(C, h, w[, D])`` -> ``(C, *size[, D])``."""
    dtype = tensor.dtype
    work = tensor.float()
    volume = work.ndim == 4
    work = work.permute(3, 0, 1, 2) if volume else work[None]  # (D or 1, C, h, w)
    mode = {"mode": "nearest-exact"} if nearest else {"mode": "bilinear", "align_corners": False}
    work = F.interpolate(work, size=size, **mode)
    work = work.permute(1, 2, 3, 0) if volume else work[0]
    return work.to(dtype)
