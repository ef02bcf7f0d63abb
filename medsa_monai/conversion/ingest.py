"""Ingest: read a data set, check every image/label pair, and write a decathlon-format ``dataset.json`` with
absolute paths that the bundles read.

Layouts:

- **MSD**: ``dataset.json`` (``modality``, ``labels`` as ``{value: name}``, ``training`` / ``test`` lists),
  ``imagesTr/``, ``labelsTr/``, ``imagesTs/``; multi-modal images are 4D files (channels last). A ``dataset.json``
  written by ingest (with ``regions``) is read as MSD too.
- **nnU-Net v2 raw**: ``dataset.json`` with ``channel_names``, ``labels`` as ``{name: value}`` or, for regions,
  ``{name: [values]}`` with ``regions_class_order``, and ``file_ending``; images ``imagesTr/<case>_<XXXX><ending>``,
  one file per channel (or one RGB photograph ``<case>_0000.png`` holding all three, as nnU-Net reads them); labels
  ``labelsTr/<case><ending>``. A case is named without its ``_XXXX``.
- **Plain folder**: ``images/`` and ``labels/`` *or* ``masks/`` with files of the same case name; a label may have
  another format than its image (``case.jpg`` with ``case.png``). A case image may also be a folder holding a DICOM
  series. Labels are declared by ``labels.json`` or ``labels=`` / ``--labels`` (``{value: name}``), regions by
  ``regions=`` / ``--regions`` (``"disc=1,2;cup=2"``; for any layout, replacing declared ones) with an optional
  ``regions_class_order``; without declared labels, the values found are declared, named ``class_<v>``
  (0: ``background``), with a warning. Declared values are kept as they are (gaps, 0 / 255): no remapping.

Formats (file endings are matched without regard to case):

- **Volumes and 2D images read by SimpleITK**: NIfTI (``.nii.gz``, ``.nii``), NRRD, MHA/MHD, DICOM series; 2D or
  3D; scalar pixels, or vector pixels (an RGB NIfTI / MHA: several components per pixel).
- **2D photographs read by PIL** (as the pipeline's ``PILReader`` does): PNG, JPEG, BMP, single-page TIFF; grey
  (8 / 16 bit, 1-bit, float) or RGB. Images with an alpha channel (RGBA, LA) or palette colours (P) are refused
  with the fix to apply (save them as RGB or grey); a mask may be a palette image, whose indices are the label
  values. JPEG masks are lossy: their stray edge values are named with that hint.

Values are read as the pipeline reads them: photographs with PIL, NIfTI with nibabel (SimpleITK reads NaN as 0).

Storage: photographs and scalar NIfTI files stay where they are (the datalist points at them, by absolute paths
that keep symbolic links, so case names stay the user's). Other formats are
converted to NIfTI under ``<output>/nifti/{imagesTr,imagesTs,labelsTr}/``; a vector-pixel image is split into one
scalar NIfTI per component there (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ...), listed as the case's image
files, which MONAI's ``LoadImage`` stacks into channels.

Checks, each problem naming its case and file, all collected and reported together before anything is written:
unreadable or truncated files, NaN or inf in an image, channel counts that differ between cases (or from the
channels ``dataset.json`` declares) and spatial dims that differ, photographs mixed with volumes, labels with
several components, non-integer or negative label values, values not declared, image/label size (and for volumes
spacing, origin, direction) mismatches, labels and regions that :class:`~medsa_monai.data.labels.LabelSpec` refuses,
regions whose ``regions_class_order`` would paint a label value into another region's.

``dataset.json`` written: ``name``, ``description``, ``tensorImageSize`` (``"2D"`` / ``"3D"``), ``spatial_dims``,
``modality`` (``{"0": name, ...}``, one per channel), ``labels`` (``{"<value>": name}``, background ``"0"`` first),
``regions`` (``{name: [values]}``) and ``regions_class_order`` (``LabelSpec.to_description()``, so that
``LabelSpec.from_description`` of the file gives the spec back), ``numTraining``, ``numTest``, ``training``
(``[{"image": path or [path per channel], "label": path}]``, absolute paths), ``test`` (image entries) and
``medsa_ingest`` (``source``, ``layout``, ``image_format``: ``nifti``, ``png``, ``jpeg``, ``bmp`` or ``tiff``, or
several joined by ``+``, sorted, for a data set of mixed photograph formats).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import SimpleITK as sitk

from ..data.atomic import atomic_path
from ..data.io import write_json
from ..data.labels import LabelSpec, parse_regions
from .image_files import IMAGE_ENDINGS, PHOTO_ENDINGS, VOLUME_ENDINGS, FileInfo, load_file, read_image
from .inspection import Inspection, _is_photo_case, check_dataset, inspect_dataset
from .layouts import Case, DatasetError, RawDataset, read_raw_dataset

__all__ = ["Case", "RawDataset", "DatasetError", "FileInfo", "Inspection", "read_raw_dataset", "check_dataset",
           "inspect_dataset", "ingest", "label_spec", "load_file", "read_image", "IMAGE_ENDINGS", "VOLUME_ENDINGS",
           "PHOTO_ENDINGS"]

logger = logging.getLogger(__name__)

_RGB_MODALITY = {0: "R", 1: "G", 2: "B"}


def _absolute(path: Path) -> str:
    """The absolute path, symbolic links kept (the datalist names the files the user gave)."""
    return os.path.abspath(path)


# -- labels, regions and channel names ----------------------------------------------------------------------------


def _painting_problems(spec: LabelSpec) -> list[str]:
    """Label values that painting the regions in ``regions_class_order`` would turn into a value of other regions
    (a label map written from predictions must give back the regions it was painted from)."""
    def member(value: int) -> tuple[bool, ...]:
        return tuple(value in region for region in spec.regions)

    out = []
    for value in spec.values[1:]:
        painted = [order for order, inside in zip(spec.regions_class_order, member(value), strict=True) if inside]
        if painted and member(painted[-1]) != member(value):
            out.append(f"regions: painting {dict(zip(spec.region_names, spec.regions_class_order, strict=True))} "
                       f"in order turns label value {value} into {painted[-1]}, which is in other regions: list "
                       f"the regions outer first, or give regions_class_order")
    return out


def label_spec(dataset: RawDataset, values_found: Iterable[int] = ()) -> LabelSpec:
    """The data set's :class:`LabelSpec`: its declared labels (else the values found, named ``class_<v>``), its
    regions and their painting order (default: :class:`LabelSpec`'s, each region's smallest value that no later
    region covers, else its largest).

    Raises:
        ValueError: a spec that :class:`LabelSpec` refuses (the message names the region).
    """
    labels = dataset.labels or {v: ("background" if v == 0 else f"class_{v}") for v in sorted(values_found)}
    return LabelSpec.from_description({"labels": {str(k): v for k, v in labels.items()},
                                       "regions": dataset.regions, "regions_class_order": dataset.regions_class_order})


def _channel_names(modality: str | Sequence[str] | Mapping | None, channels: int,
                   photographic: bool) -> tuple[dict[int, str], list[str]]:
    """A plain folder's ``{channel: name}`` from ``modality``: ``None`` (RGB photographs: R, G, B; else
    ``unknown``), one name for every channel, ``"T1,T2"``, a list or a ``{channel: name}`` mapping."""
    if modality is None:
        if photographic and channels == 3:
            return dict(_RGB_MODALITY), []
        return dict.fromkeys(range(channels), "unknown"), []
    if isinstance(modality, str):
        modality = [m.strip() for m in modality.split(",")] if "," in modality else [modality] * channels
    names = ({int(k): str(v) for k, v in modality.items()} if isinstance(modality, Mapping)
             else dict(enumerate(str(m) for m in modality)))
    if sorted(names) != list(range(channels)):
        return names, [f"modality: {len(names)} channel name(s) {list(names.values())} for images of {channels} "
                       f"channel(s)"]
    return names, []


# -- writing ------------------------------------------------------------------------------------------------------


def _to_nifti(image: sitk.Image, target: Path) -> str:
    with atomic_path(target, suffix=".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp))
    return _absolute(target)


def _store_images(case: Case, files: Mapping[Path, FileInfo], folder: Path) -> list[str]:
    """The case's image files as the datalist lists them: photographs and scalar NIfTI in place, other formats
    converted and vector pixels split into one scalar NIfTI per component under ``folder``, named by channel."""
    paths, channel = [], 0
    for path in case.images:
        info = files[path]
        if info.photographic or (info.format == "nifti" and info.components == 1):
            paths.append(_absolute(path))
        elif info.components > 1:
            image = read_image(path)
            paths += [_to_nifti(sitk.VectorIndexSelectionCast(image, c), folder / f"{case.name}_{channel + c:04d}"
                                ".nii.gz") for c in range(info.components)]
        else:
            paths.append(_to_nifti(read_image(path), folder / f"{case.name}_{channel:04d}.nii.gz"))
        channel += info.channels
    return paths


def _store_label(case: Case, info: FileInfo, folder: Path) -> str:
    if info.photographic or info.format == "nifti":
        return _absolute(case.label)
    return _to_nifti(read_image(case.label), folder / f"{case.name}.nii.gz")


def _image_format(cases: Iterable[Case], files: Mapping[Path, FileInfo]) -> str:
    """The format of the images the datalist points at: ``nifti`` or a photograph's (``+``-joined when mixed)."""
    formats = {files[p].format if files[p].photographic else "nifti" for c in cases for p in c.images}
    return "+".join(sorted(formats))


def _entry(paths: list[str]) -> str | list[str]:
    return paths[0] if len(paths) == 1 else paths


def ingest(root: str | Path, output_dir: str | Path, labels: Mapping | None = None,
           modality: str | Sequence[str] | Mapping | None = None, tolerance: float = 1e-3,
           regions: str | Mapping | None = None, regions_class_order: Sequence[int] | None = None) -> Path:
    """Read and check the data set at ``root``; write ``<output_dir>/dataset.json`` (see the module's docstring for
    its keys and for where images are stored).

    Args:
        root: the data set (MSD, nnU-Net v2 raw or plain folder).
        output_dir: where ``dataset.json`` and converted NIfTI files (``nifti/``) go.
        labels: ``{value: name}`` of a plain folder (else its ``labels.json``, else the values found).
        modality: a plain folder's channel names: one name for all channels, ``"T1,T2"``, a list or ``{channel:
            name}``; ``None``: ``R``, ``G``, ``B`` for RGB photographs, else ``unknown``. MSD and nnU-Net data sets
            declare their own.
        tolerance: geometry tolerance (relative and absolute) between an image's channels and its label.
        regions: ``"disc=1,2;cup=2"``, JSON or ``{name: [values]}`` (for a plain folder; for MSD / nnU-Net they
            replace those ``dataset.json`` declares).
        regions_class_order: the label value each region paints, in order (default: each region's smallest value
            no later region covers).

    Raises:
        DatasetError: listing every problem found, before anything is written.
    """
    dataset = read_raw_dataset(root, labels)
    if regions:
        try:
            dataset.regions = parse_regions(regions)
        except ValueError as err:
            dataset.problems.append(f"regions: {err}")
        dataset.regions_class_order = None
    if regions_class_order is not None:
        dataset.regions_class_order = list(regions_class_order)
    found = inspect_dataset(dataset, tolerance)
    problems = found.problems
    for warning in found.warnings:
        logger.warning(warning)
    spec = None
    try:
        spec = label_spec(dataset, found.label_values)
        problems += _painting_problems(spec)
    except ValueError as err:
        problems.append(f"labels / regions: {err}")
    channels = next(iter(found.channels.values()), 1)
    photographic = _is_photo_case(dataset.training[0], found) if dataset.training else False
    modality_names, modality_problems = ((dataset.channels, []) if dataset.channels else
                                         _channel_names(modality, channels, photographic))
    problems += modality_problems
    if problems:
        raise DatasetError(dataset.root, problems)
    if not dataset.labels:
        logger.warning("no labels declared (labels.json or --labels): using the values found, %s",
                       list(spec.values))
    return _write(dataset, found, spec, modality_names, Path(output_dir))


def _write(dataset: RawDataset, found: Inspection, spec: LabelSpec, modality: Mapping[int, str],
           output_dir: Path) -> Path:
    """Convert what needs converting and write ``dataset.json``, last."""
    converted = output_dir / "nifti"
    training = [{"image": _entry(_store_images(c, found.files, converted / "imagesTr")),
                 "label": _store_label(c, found.files[c.label], converted / "labelsTr"), "case": c.name}
                for c in dataset.training]
    test = [_entry(_store_images(c, found.files, converted / "imagesTs")) for c in dataset.test]
    dims = next(iter(found.spatial_dims.values()))
    description = {
        "name": dataset.name,
        "description": f"ingested by medsa ingest from '{_absolute(dataset.root)}' ({dataset.layout} layout)",
        "tensorImageSize": f"{dims}D",
        "spatial_dims": dims,
        "modality": {str(k): v for k, v in sorted(modality.items())},
        **spec.to_description(),
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "medsa_ingest": {"source": _absolute(dataset.root), "layout": dataset.layout,
                         "image_format": _image_format(dataset.training + dataset.test, found.files)},
    }
    path = write_json(output_dir / "dataset.json", description)
    logger.info("ingested %d training and %d test cases of '%s' into %s", len(training), len(test), dataset.root,
                path)
    return path
