"""MONAI transforms that simulate prompts from the label of each sample."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from .sampling import jittered_box, sample_negative_clicks, sample_positive_clicks, simulated_previous_logits

__all__ = ["SamplePromptsd"]


class SamplePromptsd(Randomizable, MapTransform):
    """Simulate, per class, the clicks and box a user would give, from a label map (seedable).

    For each sample: with probability ``no_prompt_probability`` no prompt at all (automatic mode); otherwise each
    class present in the label gets a box with probability ``box_probability`` and clicks with probability
    ``point_probability`` (clicks whenever it gets no box): 1 to ``max_positive`` positive clicks inside the class,
    weighted by the distance to its border, and 0 to ``max_negative`` negative clicks outside it, near it.
    Boxes are the class's bounding box with each side jittered by up to ``jitter`` of its extent. With probability
    ``mask_probability`` a prompted sample also gets, per class, the logits of a simulated earlier prediction (see
    :func:`simulated_previous_logits`; empty where the class is absent), as interactive use feeds SAM its previous
    output.

    Writes, in MedSA's prompt format (array indices of the label's spatial axes):
    ``points_key`` ``(K, P, dims)`` float, ``point_labels_key`` ``(K, P)`` (1, 0, -1 padding) and ``boxes_key``
    ``(K, 2 * dims)`` with NaN rows where there is no box, and ``mask_key`` ``(K, *spatial)`` logits, NaN where
    there is no mask; ``K = num_classes``, ``P = max_positive + max_negative``.
    Run it after the spatial transforms, on the label the network will see: a class index map ``(1, *spatial)``
    (class ``k`` is value ``k``) or, for regions, one binary channel per region ``(K, *spatial)``.

    Args:
        keys: the label key (one key).
        num_classes: foreground classes (or regions) ``K``.
        automatic_key: a key of the data saying whether this sample may go unprompted (``None``: every sample may),
            e.g. for a structure that is only one of several in its image, which no automatic mode can name.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        num_classes: int = 1,
        max_positive: int = 3,
        max_negative: int = 1,
        box_probability: float = 0.5,
        point_probability: float = 1.0,
        no_prompt_probability: float = 0.25,
        mask_probability: float = 0.0,
        jitter: float = 0.1,
        margin: float = 0.25,
        points_key: str = "points",
        point_labels_key: str = "point_labels",
        boxes_key: str = "boxes",
        mask_key: str = "mask_inputs",
        automatic_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"SamplePromptsd samples from one label key, got {self.keys}")
        if num_classes < 1 or max_positive < 1 or max_negative < 0:
            raise ValueError("need num_classes >= 1, max_positive >= 1 and max_negative >= 0")
        self.num_classes = num_classes
        self.max_positive = max_positive
        self.max_negative = max_negative
        self.box_probability = box_probability
        self.point_probability = point_probability
        self.no_prompt_probability = no_prompt_probability
        self.mask_probability = mask_probability
        self.jitter = jitter
        self.margin = margin
        self.points_key = points_key
        self.point_labels_key = point_labels_key
        self.boxes_key = boxes_key
        self.mask_key = mask_key
        self.automatic_key = automatic_key

    def randomize(self, data=None) -> None:
        self._automatic = self.R.rand() < self.no_prompt_probability

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        label = np.asarray(torch.as_tensor(d[self.keys[0]]).detach().cpu())
        if label.ndim < 3 or label.shape[0] not in (1, self.num_classes):
            raise ValueError(f"SamplePromptsd expects a label map of shape (1, *spatial) or one binary channel per "
                             f"class ({self.num_classes}, *spatial), got shape {label.shape}")
        class_masks = [label[0] == k + 1 for k in range(self.num_classes)] if label.shape[0] == 1 else label > 0
        label = label[0]
        dims, slots = label.ndim, self.max_positive + self.max_negative
        points = np.zeros((self.num_classes, slots, dims), dtype=np.float32)
        labels = np.full((self.num_classes, slots), -1, dtype=np.int64)
        boxes = np.full((self.num_classes, 2 * dims), np.nan, dtype=np.float32)
        masks = np.full((self.num_classes, *label.shape), np.nan, dtype=np.float32)
        self.randomize()
        if self.automatic_key is not None and not bool(d[self.automatic_key]):
            self._automatic = False  # this sample's structure is not the whole label: a prompt must say which
        if not self._automatic:
            with_mask = self.R.rand() < self.mask_probability
            for k in range(self.num_classes):
                mask = class_masks[k]
                if with_mask:
                    masks[k] = simulated_previous_logits(mask, self.R)
                if not mask.any():
                    continue
                with_box = self.R.rand() < self.box_probability
                if with_box:
                    boxes[k] = jittered_box(mask, self.R, self.jitter)
                if not with_box or self.R.rand() < self.point_probability:
                    positive = sample_positive_clicks(mask, self.R.randint(1, self.max_positive + 1), self.R)
                    negative = sample_negative_clicks(mask, self.R.randint(0, self.max_negative + 1), self.R,
                                                      self.margin)
                    clicks = np.concatenate([positive, negative])
                    points[k, : len(clicks)] = clicks
                    labels[k, : len(clicks)] = [1] * len(positive) + [0] * len(negative)
        d[self.points_key] = torch.from_numpy(points)
        d[self.point_labels_key] = torch.from_numpy(labels)
        d[self.boxes_key] = torch.from_numpy(boxes)
        d[self.mask_key] = torch.from_numpy(masks)
        return d
