"""The frames of a corpus set: every 2D image, and every slice of a volume, as SAM's input frame.

Each case is loaded as its plan says (orientation, spacing, slicing axis, normalisation, the label as classes or
regions), a volume is padded in-plane to the plan's patch as the bundles pad it (so that a slice is seen at the zoom
a bundle trained on that data set sees it), and each frame is resized to ``image_size`` squared as MedSA resizes it
(bilinear with antialiasing; the label nearest). Frames are kept in memory, and in a cache file when one is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import monai.transforms as mt
import numpy as np
import torch
import torch.nn.functional as F

from ..data.atomic import atomic_path
from ..preprocessing.transforms import planned_loading, training_frame_size
from .corpus import CorpusSet

__all__ = ["Frames", "load_frames"]

logger = logging.getLogger(__name__)


@dataclass
class Frames:
    """The frames of one corpus set at one image size.

    Attributes:
        images: ``(N, C, S, S)`` float16, normalised by the set's plan.
        targets: ``(N, S, S)`` uint8: the class index, or for regions bit ``k`` set where region ``k`` is.
        structures: the number of classes or regions ``K``.
        regions: whether ``targets`` holds region bits.
        intensity: the plan's network input mapping (``unit``, ``uint8`` or ``zscore``).
    """

    images: np.ndarray
    targets: np.ndarray
    structures: int
    regions: bool
    intensity: str

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, index: int, structure: int) -> np.ndarray:
        """The binary mask ``(S, S)`` of structure ``structure`` (0-based) in frame ``index``."""
        target = self.targets[index]
        return ((target >> structure) & 1).astype(bool) if self.regions else target == structure + 1

    def present(self) -> np.ndarray:
        """``(N, K)`` whether each structure has foreground in each frame."""
        return np.stack([np.stack([self.mask(i, k).any() for k in range(self.structures)])
                         for i in range(len(self))]) if len(self) else np.zeros((0, self.structures), bool)


def _frames_of_case(item: dict, loading: mt.Compose, corpus_set: CorpusSet, image_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(F, C, S, S)`` images and ``(F, S, S)`` targets of one case (F = 1 for an image, the slices of a volume)."""
    data = loading(dict(item))
    image, label = torch.as_tensor(data["image"]).float(), torch.as_tensor(data["label"])
    regions = bool(corpus_set.plan.has_regions)
    if regions:
        target = sum(label[k].to(torch.int64) << k for k in range(label.shape[0]))[None]
    else:
        target = label.to(torch.int64)
    if corpus_set.plan.spatial_dims == 3:
        frame = training_frame_size(3, corpus_set.plan.patch_size)
        pad = mt.SpatialPad(frame + [-1])
        image, target = pad(image), pad(target)
        image = image.permute(3, 0, 1, 2)  # (D, C, H, W): one frame per slice
        target = target.permute(3, 0, 1, 2)
    else:
        image, target = image[None], target[None]
    image = F.interpolate(image, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    target = F.interpolate(target.float(), size=(image_size, image_size), mode="nearest-exact")
    return image.half().numpy(), target[:, 0].to(torch.uint8).numpy()


def _cache_key(corpus_set: CorpusSet, cases: Sequence[dict], image_size: int) -> str:
    text = json.dumps([corpus_set.plan.to_dict(), [dict(c) for c in cases], image_size, 1], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_frames(corpus_set: CorpusSet, cases: Sequence[dict], image_size: int, cache_dir: str | Path | None = None
                ) -> Frames:
    """The frames of ``cases`` of ``corpus_set`` at ``image_size``; read from (or written to) ``cache_dir`` when
    given, under a name that changes with the plan, the cases and the size."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{corpus_set.name}_{image_size}_{_cache_key(corpus_set, cases, image_size)}.npz"
        if cache.is_file():
            with np.load(cache) as stored:
                return Frames(stored["images"], stored["targets"], corpus_set.structures,
                              bool(corpus_set.plan.has_regions), corpus_set.plan.intensity)
    loading = mt.Compose(planned_loading(corpus_set.plan))
    images, targets = [], []
    for item in cases:
        case_images, case_targets = _frames_of_case(item, loading, corpus_set, image_size)
        images.append(case_images)
        targets.append(case_targets)
    channels = corpus_set.plan.in_channels
    frames = Frames(np.concatenate(images) if images else np.zeros((0, channels, image_size, image_size), np.float16),
                    np.concatenate(targets) if targets else np.zeros((0, image_size, image_size), np.uint8),
                    corpus_set.structures, bool(corpus_set.plan.has_regions), corpus_set.plan.intensity)
    logger.info("%s: %d frames of %d cases at %d px", corpus_set.name, len(frames), len(cases), image_size)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, images=frames.images, targets=frames.targets)
    return frames
