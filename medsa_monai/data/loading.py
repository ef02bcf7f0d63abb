"""MONAI's ``LoadImaged``, with errors that name the file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import monai.transforms
import torch

__all__ = ["LoadImaged"]


class LoadImaged(monai.transforms.LoadImaged):
    """:class:`monai.transforms.LoadImaged`, except that a file that cannot be read (truncated, corrupt, not an
    image) raises ``ValueError`` naming the key and the file; MONAI's readers often name neither (a truncated
    ``.nii.gz`` fails deep inside ``gzip`` with ``EOFError``)."""

    def __call__(self, data: Mapping[Hashable, str], reader=None) -> dict[Hashable, torch.Tensor]:
        try:
            return super().__call__(data, reader)
        except Exception as err:
            files = {k: data[k] for k in self.keys if k in data}
            raise ValueError(f"cannot read {files}: {type(err).__name__}: {err}") from err
