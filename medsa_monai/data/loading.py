"""MONAI's ``LoadImaged``, with errors that name the file, and photographs with an opaque alpha channel read as
RGB (or grey)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import monai.transforms
import torch
from monai.data import PILReader
from PIL import Image

__all__ = ["LoadImaged", "PHOTO_READER", "with_photo_reader", "without_opaque_alpha"]

logger = logging.getLogger(__name__)

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
        try:
            return super().__call__(data, reader)
        except Exception as err:
            files = {k: data[k] for k in self.keys if k in data}
            lines = str(err).strip().splitlines()
            raise ValueError(f"cannot read {files}: {type(err).__name__}: {lines[0] if lines else ''}") from err
