"""Writers that never leave a partial file (see :mod:`.atomic`): label maps and class probabilities."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import NibabelWriter, PILWriter
from monai.transforms import MapTransform

from .atomic import atomic_path

__all__ = ["AtomicNibabelWriter", "AtomicPILWriter", "save_label_map", "save_probabilities", "load_probabilities",
           "SaveProbabilitiesd", "case_name"]

logger = logging.getLogger(__name__)

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def case_name(source) -> str:
    """The case name of an image path: its file name without the image extension."""
    name = Path(str(source)).name
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


class _AtomicWrite:
    """Mixin for MONAI image writers: the output appears whole or not at all."""

    def write(self, filename, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_path(filename) as tmp:
            super().write(str(tmp), verbose=False, **obj_kwargs)
        if verbose:
            logger.info("wrote %s", filename)


class AtomicNibabelWriter(_AtomicWrite, NibabelWriter):
    """MONAI's ``NibabelWriter``, atomic (for ``SaveImaged(writer=...)``)."""


class AtomicPILWriter(_AtomicWrite, PILWriter):
    """MONAI's ``PILWriter`` (PNG, JPEG...), atomic (for ``SaveImaged(writer=...)``)."""


def save_label_map(path: str | Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    """A uint8 label map as NIfTI with ``affine``, atomically."""
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(np.asarray(labels).astype(np.uint8), np.asarray(affine, dtype=np.float64)), tmp)
    return Path(path)


def save_probabilities(path: str | Path, probabilities, affine) -> Path:
    """Class probabilities ``(C, *spatial)`` (float16) and the image ``affine`` as a compressed ``.npz``,
    atomically. Kept beside label maps so that folds and configurations can be ensembled."""
    probs = torch.as_tensor(probabilities).detach().cpu().float().numpy().astype(np.float16)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, probabilities=probs, affine=np.asarray(torch.as_tensor(affine).cpu(),
                                                                        dtype=np.float64))
    return Path(path)


def load_probabilities(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["probabilities"].astype(np.float32), data["affine"]


class SaveProbabilitiesd(MapTransform):
    """Save ``pred`` probabilities (channel first, in the original geometry) as ``<output_dir>/<case>.npz``."""

    def __init__(self, keys: KeysCollection = "pred", output_dir: str | Path = ".", source_key: str = "image") -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            source = meta.get("filename_or_obj") or getattr(d.get(self.source_key), "meta", {}).get("filename_or_obj")
            save_probabilities(self.output_dir / f"{case_name(source)}.npz", d[key], d[key].affine)
        return d
