"""MONAI's ``Spacingd`` for MONAI Label: it leaves the data's other ``<key>_*`` entries alone."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import monai.transforms
import torch

__all__ = ["Spacingd"]


class Spacingd(monai.transforms.Spacingd):
    """:class:`monai.transforms.Spacingd`, except that entries named ``<key>_*`` that are not metadata dicts stay as
    they are.

    MONAI 1.6's ``Spacingd`` updates every ``<key>_*`` entry of a NIfTI image with the image's metadata, as if each
    were a meta dict; MONAI Label puts the image's file name in ``image_path`` (a string), so the stock transform
    fails there (``'str' object has no attribute 'update'``). Those entries are set aside during the call. Inverting
    (``Invertd``) works as for MONAI's.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        prefixes = tuple(f"{key}_" for key in self.keys)
        aside = {k: d.pop(k) for k in list(d) if isinstance(k, str) and k.startswith(prefixes)
                 and not isinstance(d[k], dict)}
        d = super().__call__(d, lazy=lazy)
        d.update(aside)
        return d
