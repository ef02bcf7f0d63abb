"""A transform that rejects inconsistent image/label pairs with the name of the case."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

import torch
from monai.transforms import MapTransform

__all__ = ["CheckImageLabeld", "CheckImageChannelsd"]


def _source(tensor, fallback: str = "?") -> str:
    return Path(str(getattr(tensor, "meta", {}).get("filename_or_obj", fallback))).name


def check_finite(image) -> None:
    """Raise ``ValueError`` naming the file when ``image`` holds NaN or infinite values."""
    values = torch.as_tensor(image)
    if values.is_floating_point() and not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"case '{_source(image)}': the image has {bad} NaN or infinite value(s)")


def check_channels(image, channels: int | None) -> None:
    """Raise ``ValueError`` naming the file when ``image`` (channel first) does not have ``channels`` channels."""
    if channels is not None and image.shape[0] != channels:
        raise ValueError(f"case '{_source(image)}': the image has {image.shape[0]} channel(s), this bundle expects "
                         f"{channels}")


class CheckImageChannelsd(MapTransform):
    """Check that each image (channel first, after ``EnsureChannelFirstd``) has ``channels`` channels (``None``:
    any), e.g. that an RGB bundle gets no grey image, and that it holds no NaN or infinite value; the error names
    the file."""

    def __init__(self, keys="image", channels: int | None = 3) -> None:
        super().__init__(keys)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            check_channels(d[key], self.channels)
            check_finite(d[key])
        return d


class CheckImageLabeld(MapTransform):
    """Check, after loading, that a label fits its image: same spatial shape, one channel, declared values only.

    Args:
        image_key, label_key: the keys of the pair.
        labels: the label values the data set declares (e.g. ``{0: background, 1: ..., 2: ...}`` or ``[0, 1, 2]``).
        image_channels: the channels the image must have (3 for an RGB bundle); ``None`` for any.

    Raises:
        ValueError: naming the case file, for a shape mismatch, a wrong channel count or undeclared label values.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label",
                 labels: Mapping | Iterable[int] = (0, 1), image_channels: int | None = None) -> None:
        super().__init__([image_key, label_key])
        self.image_key = image_key
        self.label_key = label_key
        self.allowed = sorted(int(v) for v in labels)
        self.image_channels = image_channels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        image, label = d[self.image_key], d[self.label_key]
        case = _source(label, _source(image))
        check_channels(image, self.image_channels)
        check_finite(image)
        if label.shape[0] != 1:
            raise ValueError(f"case '{case}': the label has {label.shape[0]} channels, expected 1 (a label map)")
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(f"case '{case}': label spatial shape {tuple(label.shape[1:])} differs from image "
                             f"spatial shape {tuple(image.shape[1:])}")
        values = torch.unique(torch.as_tensor(label))
        bad = [int(v) if float(v).is_integer() else v for v in values.tolist() if v not in self.allowed]
        if bad:
            raise ValueError(f"case '{case}': label values {bad} are not among the declared labels {self.allowed}")
        return d
