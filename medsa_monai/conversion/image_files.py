"""Image files: the endings ingest reads, and reading one file (or DICOM series folder) as the pipeline sees it.

Volumes and 2D images are read by SimpleITK (NIfTI values by nibabel, as the pipeline reads them), 2D photographs
by PIL (as ``PILReader`` does). See :mod:`medsa_monai.conversion.ingest` for the formats and the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..data.loading import check_image_header, without_opaque_alpha

__all__ = ["FileInfo", "IMAGE_ENDINGS", "PHOTO_ENDINGS", "VOLUME_ENDINGS", "load_file", "read_image"]

VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
PHOTO_ENDINGS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff"}
IMAGE_ENDINGS = VOLUME_ENDINGS + tuple(PHOTO_ENDINGS)
_IMAGE_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "F", "RGB"}  # PIL modes an image may have


@dataclass(frozen=True)
class FileInfo:
    """One image or label file as the pipeline sees it.

    ``size`` is the spatial size in ``(x, y[, z])`` order (a photograph's ``(width, height)``, as ``PILReader``
    gives it); ``channels`` counts all values per pixel (vector components times a 4th dimension);
    ``geometry`` is ``(spacing, origin, direction)`` of a SimpleITK image, ``None`` for a photograph.
    """

    format: str
    size: tuple[int, ...]
    channels: int
    components: int
    dtype: str
    geometry: tuple | None
    mode: str | None = None  # PIL mode of a photograph

    @property
    def photographic(self) -> bool:
        return self.mode is not None


def _ending(name: str) -> str | None:
    lower = name.lower()
    return next((e for e in IMAGE_ENDINGS if lower.endswith(e)), None)


def _strip_ending(name: str) -> str:
    ending = _ending(name)
    return name[: -len(ending)] if ending else name


def _file_format(path: Path) -> str:
    """``dicom`` (a folder), ``nifti``, ``nrrd``, ``mha``, ``mhd``, or a photograph's ``png``, ``jpeg``, ..."""
    if path.is_dir():
        return "dicom"
    ending = _ending(path.name) or path.suffix.lower()
    if ending in PHOTO_ENDINGS:
        return PHOTO_ENDINGS[ending]
    return "nifti" if ending in (".nii.gz", ".nii") else ending.lstrip(".")


def read_image(path: Path) -> sitk.Image:
    """Read an image file, or the DICOM series in a folder, with SimpleITK.

    A NIfTI file is also decoded in full by nibabel, which the pipeline reads it with: SimpleITK fills a truncated
    ``.nii.gz`` with zeros without an error, nibabel raises.
    """
    path = Path(path)
    if path.is_file() and _file_format(path) == "nifti":
        np.asarray(nib.load(path).dataobj)
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise RuntimeError("no DICOM series in this folder")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _read_photo(path: Path) -> tuple[np.ndarray, str]:
    """Pixels ``(x, y[, c])`` and PIL mode of a 2D photograph, as ``PILReader`` reads it (palette: the indices)."""
    with Image.open(path) as image:
        pages = getattr(image, "n_frames", 1)
        if pages > 1:
            raise ValueError(f"{pages} pages; a photograph must be one 2D image (save a 3D stack as NIfTI)")
        opaque = without_opaque_alpha(image)  # as the pipeline's reader: an opaque alpha is dropped
        mode = opaque.mode
        array = np.asarray(opaque)
    return np.swapaxes(array, 0, 1), mode


def _geometry(image: sitk.Image | sitk.ImageFileReader) -> tuple[tuple, tuple, tuple]:
    """Spacing, origin and direction of the first (up to) three axes."""
    dims = min(image.GetDimension(), 3)
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)[:dims, :dims]
    return image.GetSpacing()[:dims], image.GetOrigin()[:dims], tuple(direction.ravel())


def _volume_info(file_format: str, image: sitk.Image | sitk.ImageFileReader, components: int,
                 array: np.ndarray) -> FileInfo:
    size = image.GetSize()
    channels = components * int(np.prod(size[3:], dtype=int))
    return FileInfo(file_format, tuple(size[:3]), channels, components, str(array.dtype), _geometry(image))


def load_file(path: Path) -> tuple[FileInfo, np.ndarray]:
    """Read an image or label file (or DICOM folder): what the checks need, and the values the pipeline will see."""
    path = Path(path)
    file_format = _file_format(path)
    if file_format in PHOTO_ENDINGS.values():
        array, mode = _read_photo(path)
        channels = array.shape[2] if array.ndim == 3 else 1
        return FileInfo(file_format, tuple(array.shape[:2]), channels, channels, str(array.dtype), None, mode), array
    if file_format == "nifti":
        check_image_header(path)
        # values as the pipeline's NibabelReader reads them (SimpleITK reads NaN as 0); geometry from the header
        array = np.asarray(nib.load(path).dataobj)
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        return _volume_info(file_format, header, header.GetNumberOfComponents(), array), array
    image = read_image(path)
    # GetArrayFromImage copies: a view of an image that is freed afterwards reads garbage
    array = sitk.GetArrayFromImage(image)
    return _volume_info(file_format, image, image.GetNumberOfComponentsPerPixel(), array), array
