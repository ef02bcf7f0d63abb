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
from monai.transforms import MapTransform, SaveImaged
from PIL import Image

from .atomic import atomic_path

__all__ = ["AtomicNibabelWriter", "AtomicPILWriter", "save_label_map", "save_probabilities", "load_probabilities",
           "SaveProbabilitiesd", "SaveLabelMapd", "case_name", "PHOTO_ENDINGS"]

logger = logging.getLogger(__name__)

PHOTO_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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


def save_label_map(path: str | Path, labels: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """A label map, atomically: NIfTI with ``affine`` (uint8, or int16 for values over 255), or, for a ``.png``
    path, an 8-bit PNG of ``labels`` in image order (rows first, as PIL reads it)."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.int16
    with atomic_path(path) as tmp:
        if str(path).lower().endswith(".png"):
            if dtype != np.uint8:
                raise ValueError(f"'{path}': label values up to {int(labels.max())} do not fit an 8-bit PNG")
            Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG")
        else:
            nib.save(nib.Nifti1Image(labels.astype(dtype), np.asarray(affine, dtype=np.float64)), tmp)
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


def _source_file(item: Mapping, key: str, source_key: str) -> str:
    for k in (key, source_key):
        source = getattr(item.get(k), "meta", {}).get("filename_or_obj")
        if source:
            return str(source[0] if isinstance(source, (list, tuple)) else source)
    return "case"


class SaveLabelMapd(SaveImaged):
    """Write each label map ``(1, *spatial)`` (in the geometry of its input, e.g. after ``Invertd``) as
    ``<output_dir>/<case><postfix><ext>``, whole or not at all: a PNG for a photographic 2D input (PNG, JPEG, BMP,
    TIFF), else NIfTI with the input's affine.

    With ``label_spec`` (a :class:`~medsa_monai.data.LabelSpec`) the item holds the network's discrete output (class
    indices or binary regions), written in the data set's own label values; the item itself is left as it is.

    The case name is ``item[case_key]`` when present (e.g. an nnU-Net case whose channels are ``<case>_0000``,
    ``<case>_0001``...), else the input file's name without extension. MONAI's ``SaveImaged`` writes one format per
    instance and names files after the first input file only, hence this transform. It is a ``SaveImaged`` so that
    MONAI Label, which writes results itself and drops ``SaveImaged`` from a bundle's post-processing, drops it.
    """

    def __init__(self, keys: KeysCollection = "pred", output_dir: str | Path = ".", output_postfix: str = "seg",
                 case_key: str = "case", source_key: str = "image", print_log: bool = False,
                 label_spec=None) -> None:
        super().__init__(keys, output_dir=output_dir, output_postfix=output_postfix, print_log=print_log)
        self.label_spec = label_spec
        self.output_dir = Path(output_dir)
        self.output_postfix = output_postfix
        self.case_key = case_key
        self.source_key = source_key
        self.print_log = print_log

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            source = _source_file(d, key, self.source_key)
            case = str(d.get(self.case_key) or case_name(source))
            photo = source.lower().endswith(PHOTO_ENDINGS)
            labels = torch.as_tensor(d[key]).detach().cpu()
            if self.label_spec is not None:  # class indices or region channels -> the data set's own values
                labels = self.label_spec.to_label_map(labels)
            if labels.shape[0] != 1:
                raise ValueError(f"case '{case}': a label map has one channel, got shape {tuple(labels.shape)}")
            postfix = f"_{self.output_postfix}" if self.output_postfix else ""
            path = self.output_dir / f"{case}{postfix}{'.png' if photo else '.nii.gz'}"
            array = labels[0].numpy()
            # MONAI reads a 2D photograph with its columns first: back to rows first for PIL
            save_label_map(path, array.T if photo else array, None if photo else np.asarray(d[key].affine))
            if self.print_log:
                logger.info("wrote %s", path)
        return d
