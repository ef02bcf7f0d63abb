"""MONAI's ``LoadImaged``, with errors that name the file, and photographs with an opaque alpha channel read as
RGB (or grey)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import monai.transforms
import nibabel as nib
import torch
from monai.data import PILReader
from PIL import Image

__all__ = ["LoadImaged", "MAX_VOXELS", "PHOTO_READER", "check_image_header", "with_photo_reader",
           "without_opaque_alpha"]

logger = logging.getLogger(__name__)

MAX_VOXELS = 2**31
"""The most voxels (times channels) an image may claim in its header before its data is read, about 8.6 GB as
float32; the environment variable ``MEDSA_MAX_VOXELS`` sets another bound."""

_ALPHA_MODES = {"RGBA": "RGB", "LA": "L", "PA": "P", "RGBa": "RGB", "La": "L"}
_told = False


def without_opaque_alpha(image: Image.Image) -> Image.Image:
    """A PIL image with an alpha channel that is opaque everywhere (as the DSB2018 nuclei PNGs are published) as
    RGB or grey; an alpha that carries transparency is an error: dropping it would change what the image shows.
    Other images are returned as they are."""
    global _told
    if image.mode not in _ALPHA_MODES:
        return image
    low, high = image.getchannel("A").getextrema()
    if (low, high) != (255, 255):
        raise ValueError(f"the image has an alpha channel (PIL mode {image.mode}) that is not opaque (alpha from "
                         f"{low} to {high}): transparency cannot be read as {_ALPHA_MODES[image.mode]}; export the "
                         f"images without transparency into another folder and use that one")
    if not _told:
        logger.info("reading images with an opaque alpha channel (PIL mode %s) as %s, without the alpha",
                    image.mode, _ALPHA_MODES[image.mode])
        _told = True
    return image.convert(_ALPHA_MODES[image.mode])


def check_image_header(path: str | Path) -> None:
    """Refuse a NIfTI file whose header claims more voxels than :data:`MAX_VOXELS` (or ``MEDSA_MAX_VOXELS``), or
    more data than an uncompressed file holds, before any voxel is read: naming the file and the header's numbers,
    instead of reserving memory for them. Other files, and headers that cannot be parsed (the reader says why), pass.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")) or not path.is_file():
        return
    try:
        image = nib.load(path)
        shape = tuple(int(s) for s in image.header.get_data_shape())
        itemsize = image.header.get_data_dtype().itemsize
        offset = int(image.dataobj.offset)
    except Exception:  # not a NIfTI header: the reader's own error names the problem
        return
    voxels = math.prod(shape)
    bound = int(os.environ.get("MEDSA_MAX_VOXELS", MAX_VOXELS))
    claimed = " x ".join(map(str, shape))
    if voxels > bound:
        raise ValueError(f"'{path}': its header claims {claimed} voxels ({voxels:,}, {voxels * itemsize / 2**30:,.1f} "
                         f"GiB), more than the {bound:,} read at most (MEDSA_MAX_VOXELS sets the bound); a damaged "
                         f"header, or an image to crop or resample first")
    expected = offset + voxels * itemsize
    if name.endswith(".nii") and path.stat().st_size < expected:
        raise ValueError(f"'{path}' is truncated: its header claims {claimed} voxels of "
                         f"{image.header.get_data_dtype()} ({expected:,} bytes with the header), the file holds "
                         f"{path.stat().st_size:,} bytes")


PHOTO_READER = PILReader(converter=without_opaque_alpha)
"""MONAI's reader of PNG, JPEG and BMP files, with an opaque alpha channel dropped."""


def with_photo_reader(loader: monai.transforms.LoadImage) -> monai.transforms.LoadImage:
    """``loader`` (built with ``reader=None``: each file goes to the reader its suffix names, with no fallback) with
    :data:`PHOTO_READER` in place of MONAI's plain ``PILReader``."""
    loader.readers = [PHOTO_READER if isinstance(r, PILReader) else r for r in loader.readers]
    return loader


class LoadImaged(monai.transforms.LoadImaged):
    """:class:`monai.transforms.LoadImaged`, except that a file that cannot be read (truncated, corrupt, not an
    image) raises ``ValueError`` naming the key and the file and the reader's own reason in one line; MONAI's readers
    often name neither (a truncated ``.nii.gz`` fails deep inside ``gzip`` with ``EOFError``). Without a ``reader``,
    PNG, JPEG and BMP files are read by :data:`PHOTO_READER` (an opaque alpha channel dropped, another refused) and
    by no other reader."""

    def __init__(self, keys, reader=None, *args, **kwargs) -> None:
        super().__init__(keys, reader, *args, **kwargs)
        if reader is None:
            with_photo_reader(self._loader)

    def __call__(self, data: Mapping[Hashable, str], reader=None) -> dict[Hashable, torch.Tensor]:
        for key in self.keys:
            files = data.get(key) if isinstance(data, Mapping) else None
            for file in (files if isinstance(files, (list, tuple)) else [files]):
                if isinstance(file, (str, Path)):
                    check_image_header(file)
        try:
            return super().__call__(data, reader)
        except Exception as err:
            files = {k: data[k] for k in self.keys if k in data}
            lines = str(err).strip().splitlines()
            raise ValueError(f"cannot read {files}: {type(err).__name__}: {lines[0] if lines else ''}") from err
