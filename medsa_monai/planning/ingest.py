"""Ingest: read a data set in the MSD, nnU-Net v2 or plain-folder layout, check every image/label pair, and write a
decathlon-format ``dataset.json`` with absolute paths that the bundles read.

Layouts:

- **MSD**: ``dataset.json`` (``modality``, ``labels`` as ``{value: name}``, ``training`` / ``test`` lists),
  ``imagesTr/``, ``labelsTr/``, ``imagesTs/``; multi-modal images are 4D files (channels last).
- **nnU-Net v2 raw**: ``dataset.json`` with ``channel_names``, ``labels`` as ``{name: value}`` and ``file_ending``;
  images ``imagesTr/<case>_<XXXX><ending>``, one file per channel; labels ``labelsTr/<case><ending>``.
- **Plain folder**: ``images/`` and ``labels/`` with files of the same case name in NIfTI, NRRD or MHA/MHD, or one
  folder per case holding a DICOM series; optional ``labels.json`` (``{value: name}``).

Everything is read with SimpleITK. Non-NIfTI files (and DICOM series) are converted to NIfTI under the output
folder, so that the pipeline reads one format. All problems of all cases are collected and reported together,
with file names, before any work starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

__all__ = ["Case", "RawDataset", "DatasetError", "read_raw_dataset", "check_dataset", "ingest", "read_image",
           "IMAGE_ENDINGS"]

logger = logging.getLogger(__name__)

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass
class Case:
    """One case: its image files (one per channel, or one multi-channel file; a folder is a DICOM series)."""

    name: str
    images: list[Path]
    label: Path | None = None


@dataclass
class RawDataset:
    """A data set as found on disk, before any check."""

    root: Path
    layout: str
    name: str
    channels: dict[int, str]
    labels: dict[int, str]
    training: list[Case]
    test: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # found while reading the layout


class DatasetError(ValueError):
    """A data set with problems; ``problems`` lists them all, each naming its case and file."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the data set '{root}':\n  " + "\n  ".join(problems))


def _strip_ending(name: str) -> str:
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def read_image(path: Path) -> sitk.Image:
    """Read an image file, or the DICOM series in a folder, with SimpleITK.

    A NIfTI file is also decoded in full by nibabel, which the pipeline reads it with: SimpleITK fills a truncated
    ``.nii.gz`` with zeros without an error, nibabel raises.
    """
    if path.is_file() and path.name.endswith((".nii.gz", ".nii")):
        np.asarray(nib.load(path).dataobj)
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise RuntimeError("no DICOM series in this folder")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _read_msd(root: Path, description: dict) -> RawDataset:
    channels = {int(k): str(v) for k, v in description.get("modality", {"0": "unknown"}).items()}
    labels = {int(k): str(v) for k, v in description["labels"].items()}
    training = [Case(_strip_ending(Path(item["image"]).name), [root / item["image"]], root / item["label"])
                for item in description.get("training", [])]
    test = [Case(_strip_ending(Path(item if isinstance(item, str) else item["image"]).name),
                 [root / (item if isinstance(item, str) else item["image"])]) for item in description.get("test", [])]
    return RawDataset(root, "msd", description.get("name", root.name), channels, labels, training, test)


def _read_nnunet(root: Path, description: dict) -> RawDataset:
    ending = description.get("file_ending", ".nii.gz")
    channels = {int(k): str(v) for k, v in description["channel_names"].items()}
    problems = []
    labels = {}
    for name, value in description["labels"].items():
        if not isinstance(value, int):
            problems.append(f"dataset.json: label '{name}' is a region ({value}); region-based labels are not "
                            f"supported")
            continue
        labels[int(value)] = str(name)
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")

    def cases(image_dir: Path, label_dir: Path | None) -> list[Case]:
        grouped: dict[str, dict[int, Path]] = {}
        for path in sorted(image_dir.glob(f"*{ending}")) if image_dir.is_dir() else []:
            match = pattern.match(path.name)
            if match is None:
                problems.append(f"{path.name}: not named <case>_<XXXX>{ending}")
                continue
            grouped.setdefault(match.group(1), {})[int(match.group(2))] = path
        found = []
        for name, files in grouped.items():
            missing = [c for c in channels if c not in files]
            if missing:
                problems.append(f"{name}: channel file(s) {[f'{name}_{c:04d}{ending}' for c in missing]} missing")
            label = label_dir / f"{name}{ending}" if label_dir is not None else None
            found.append(Case(name, [files[c] for c in sorted(files)], label))
        return found

    training = cases(root / "imagesTr", root / "labelsTr")
    test = cases(root / "imagesTs", None)
    return RawDataset(root, "nnunet", description.get("name", root.name), channels, labels, training, test, problems)


def _read_folder(root: Path, labels: Mapping | None, modality: str) -> RawDataset:
    def entries(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            return {}
        return {_strip_ending(p.name): p for p in sorted(folder.iterdir())
                if not p.name.startswith(".") and (p.is_dir() or p.name.endswith(IMAGE_ENDINGS))}

    images, label_files = entries(root / "images"), entries(root / "labels")
    problems = [f"{name}: label without an image ('{path}')" for name, path in label_files.items() if name not in
                images]
    training = [Case(name, [path], label_files.get(name, root / "labels" / f"{name}.nii.gz"))
                for name, path in images.items()]
    if labels is None and (root / "labels.json").is_file():
        labels = json.loads((root / "labels.json").read_text())
    declared = {int(k): str(v) for k, v in labels.items()} if labels is not None else {}
    return RawDataset(root, "folder", root.name, {0: modality}, declared, training, [], problems)


def read_raw_dataset(root: str | Path, labels: Mapping | None = None, modality: str = "unknown") -> RawDataset:
    """Read the layout of the data set at ``root`` (MSD, nnU-Net v2 or plain folder), without checking images.

    ``labels`` (``{value: name}``) and ``modality`` apply to plain folders, which declare neither.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder '{root}' does not exist")
    description_file = root / "dataset.json"
    if description_file.is_file():
        try:
            description = json.loads(description_file.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(root, [f"dataset.json: not valid JSON ({err})"]) from err
        if "channel_names" in description:
            return _read_nnunet(root, description)
        if "training" in description and "labels" in description:
            return _read_msd(root, description)
        raise DatasetError(root, ["dataset.json: neither the MSD layout ('training', 'labels') nor nnU-Net v2's "
                                  "('channel_names', 'labels', 'file_ending')"])
    if (root / "images").is_dir():
        return _read_folder(root, labels, modality)
    raise DatasetError(root, ["no dataset.json (MSD or nnU-Net v2 layout) and no images/ folder (plain layout)"])


def _geometry(image: sitk.Image) -> tuple[tuple, tuple, tuple, tuple]:
    """Spatial size, spacing, origin and direction (first three axes of a multi-channel image)."""
    dims = min(image.GetDimension(), 3)
    direction = np.array(image.GetDirection()).reshape(image.GetDimension(), -1)[:dims, :dims]
    return (image.GetSize()[:dims], image.GetSpacing()[:dims], image.GetOrigin()[:dims],
            tuple(direction.ravel()))


def check_dataset(dataset: RawDataset, tolerance: float = 1e-3, check_test: bool = True) -> list[str]:
    """Every problem of every case: unreadable files, missing labels, geometry mismatches, undeclared label values.

    Geometry (size, spacing, origin, direction) of each channel and of the label must match the first channel's,
    spacing and origin within ``tolerance`` relative (and absolute) difference, direction within ``tolerance``.
    Returns readable lines, each naming its case and file; empty when the data set is sound.
    """
    problems = list(dataset.problems)
    if not dataset.training:
        problems.append("no training cases found")
    declared = set(dataset.labels)
    cases = [(c, True) for c in dataset.training] + ([(c, False) for c in dataset.test] if check_test else [])
    for case, labelled in cases:
        geometries = []
        for path in case.images:
            try:
                geometries.append((path, _geometry(read_image(path))))
            except Exception as err:  # SimpleITK raises RuntimeError for any unreadable or truncated file
                problems.append(f"{case.name}: image '{path}' cannot be read ({_short(err)})")
        if not labelled:
            continue
        if case.label is None or not case.label.exists():
            problems.append(f"{case.name}: label file '{case.label}' is missing")
            continue
        try:
            label = read_image(case.label)
            values = np.unique(sitk.GetArrayViewFromImage(label))
            geometries.append((case.label, _geometry(label)))
        except Exception as err:
            problems.append(f"{case.name}: label '{case.label}' cannot be read ({_short(err)})")
            continue
        if label.GetNumberOfComponentsPerPixel() != 1:
            problems.append(f"{case.name}: label '{case.label}' has several components per voxel")
        if declared:
            extra = sorted(int(v) for v in values if int(v) not in declared or v != int(v))
            if extra:
                problems.append(f"{case.name}: label '{case.label}' has values {extra} not among the declared "
                                f"labels {sorted(declared)}")
        problems += _compare_geometry(case.name, geometries, tolerance)
    return problems


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 160 else text[:157] + "..."


def _compare_geometry(case: str, geometries: list, tolerance: float) -> list[str]:
    if len(geometries) < 2:
        return []
    (ref_path, (size, spacing, origin, direction)) = geometries[0]
    out = []
    for path, (s, sp, o, d) in geometries[1:]:
        what = "label" if path == geometries[-1][0] else "channel"
        if s != size:
            out.append(f"{case}: {what} '{path.name}' has size {s}, the image '{ref_path.name}' {size}")
            continue
        if not np.allclose(sp, spacing, rtol=tolerance, atol=tolerance):
            out.append(f"{case}: {what} '{path.name}' has spacing {_fmt(sp)}, the image {_fmt(spacing)}")
        if not np.allclose(o, origin, rtol=tolerance, atol=tolerance * max(1.0, float(np.max(spacing)))):
            out.append(f"{case}: {what} '{path.name}' has origin {_fmt(o)}, the image {_fmt(origin)}")
        if not np.allclose(d, direction, atol=tolerance):
            out.append(f"{case}: {what} '{path.name}' has direction {_fmt(d)}, the image {_fmt(direction)}")
    return out


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _as_nifti(path: Path, target: Path) -> Path:
    """``path`` if it is NIfTI already, else a NIfTI copy at ``target`` (written whole or not at all)."""
    if path.is_file() and path.name.endswith((".nii.gz", ".nii")):
        return path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".nii.gz", dir=target.parent)
    os.close(fd)
    try:
        sitk.WriteImage(read_image(path), tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target.resolve()


def ingest(root: str | Path, output_dir: str | Path, labels: Mapping | None = None, modality: str = "unknown",
           tolerance: float = 1e-3) -> Path:
    """Read and check the data set at ``root``; write ``<output_dir>/dataset.json`` (decathlon format, absolute
    paths, NIfTI files; other formats converted under ``<output_dir>/nifti/``).

    Raises:
        DatasetError: listing every problem found, before anything is written.
    """
    dataset = read_raw_dataset(root, labels, modality)
    problems = check_dataset(dataset, tolerance)
    if problems:
        raise DatasetError(dataset.root, problems)
    output_dir = Path(output_dir)
    converted = output_dir / "nifti"

    def files(case: Case, folder: str) -> list[str]:
        return [str(_as_nifti(p, converted / folder / f"{case.name}_{i:04d}.nii.gz")) for i, p in
                enumerate(case.images)]

    def image_entry(paths: list[str]) -> str | list[str]:
        return paths[0] if len(paths) == 1 else paths

    training = [{"image": image_entry(files(c, "imagesTr")),
                 "label": str(_as_nifti(c.label, converted / "labelsTr" / f"{c.name}.nii.gz"))}
                for c in dataset.training]
    test = [image_entry(files(c, "imagesTs")) for c in dataset.test]
    labels_out = dataset.labels or _labels_found(dataset)
    description = {
        "name": dataset.name,
        "description": f"ingested by medsa ingest from '{dataset.root}' ({dataset.layout} layout)",
        "tensorImageSize": f"{read_image(dataset.training[0].label).GetDimension()}D",
        "modality": {str(k): v for k, v in sorted(dataset.channels.items())},
        "labels": {str(k): v for k, v in sorted(labels_out.items())},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "medsa_ingest": {"source": str(dataset.root.resolve()), "layout": dataset.layout},
    }
    path = output_dir / "dataset.json"
    output_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dataset.json.", dir=output_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(description, f, indent=2)
    os.replace(tmp, path)
    logger.info("ingested %d training and %d test cases of '%s' into %s", len(training), len(test), dataset.root,
                path)
    return path


def _labels_found(dataset: RawDataset) -> dict[int, str]:
    """Label values present in the data, for plain folders that declare none."""
    values: set[int] = set()
    for case in dataset.training:
        values |= {int(v) for v in np.unique(sitk.GetArrayViewFromImage(read_image(case.label)))}
    logger.warning("no labels declared (labels.json or --labels): using the values found, %s", sorted(values))
    return {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values)}
