"""MONAI's ``LoadImaged``, with errors that name the file, and photographs with an opaque alpha channel read as
RGB (or grey)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import monai.transforms
import torch
from monai.data import PILReader
from PIL import Image

__all__ = ["LoadImaged", "PHOTO_READER", "without_opaque_alpha"]

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


class LoadImaged(monai.transforms.LoadImaged):
    """:class:`monai.transforms.LoadImaged`, except that a file that cannot be read (truncated, corrupt, not an
    image) raises ``ValueError`` naming the key and the file; MONAI's readers often name neither (a truncated
    ``.nii.gz`` fails deep inside ``gzip`` with ``EOFError``). PNG, JPEG and BMP files are read by MONAI's
    ``PILReader`` with an opaque alpha channel dropped (:func:`without_opaque_alpha`)."""

    def __init__(self, keys, reader=None, *args, **kwargs) -> None:
        super().__init__(keys, PHOTO_READER if reader is None else reader, *args, **kwargs)

    def __call__(self, data: Mapping[Hashable, str], reader=None) -> dict[Hashable, torch.Tensor]:
        try:
            return super().__call__(data, reader)
        except Exception as err:
            files = {k: data[k] for k in self.keys if k in data}
            raise ValueError(f"cannot read {files}: {_reason(err, files.values())}") from err


def _reason(err: Exception, filenames) -> str:
    """One line on why reading failed. When no reader could read a photograph, MONAI's message lists every
    reader with its traceback; PIL's own error says what is wrong with the file."""
    for filename in filenames:
        if isinstance(filename, str) and PHOTO_READER.verify_suffix(filename):
            try:
                PHOTO_READER.read(filename)
            except Exception as photo_err:  # noqa: BLE001 - reported, not handled
                err = photo_err
            break
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
