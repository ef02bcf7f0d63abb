"""DICOM image series: check one before reading it, read it as a volume, write a volume as one.

A series is read as SimpleITK (and the pipeline's ingest) reads it, after checks that name what is wrong instead of
giving a silently wrong volume: one series in the folder, one orientation, slices evenly spaced (a missing slice
shows as a gap), one size. :func:`write_series` goes the other way, so that a NIfTI or MSD case can be loaded into a
PACS: one file per slice, with the volume's orientation, position, spacing and intensities (integers as they are,
other values through ``RescaleSlope`` / ``RescaleIntercept``), and new study, series, instance and frame-of-reference
UIDs.

Geometry: DICOM positions are in LPS millimetres, NIfTI's in RAS; a slice's pixel ``(row r, column c)`` lies at
``ImagePositionPatient + c * PixelSpacing[1] * X + r * PixelSpacing[0] * Y``, ``X, Y`` the two direction cosines
of ``ImageOrientationPatient``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..data.atomic import atomic_path

__all__ = ["SeriesInfo", "DicomSeriesError", "check_series", "read_series", "series_to_nifti", "write_series",
           "lps_to_ras", "IMAGE_STORAGE", "is_dicom_file", "modality_fits"]

IMAGE_STORAGE = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
                 "OT": "1.2.840.10008.5.1.4.1.1.7"}
"""SOP classes of the slices :func:`write_series` writes, by modality (``OT``: secondary capture)."""

_ORIENTATION_TOLERANCE = 1e-4  # direction cosines
_SPACING_TOLERANCE = 0.05  # a gap beyond 5% of the median step between slices is a missing slice
lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomSeriesError(ValueError):
    """A folder that does not hold one complete, consistent DICOM image series."""


@dataclass(frozen=True)
class SeriesInfo:
    """What :func:`check_series` found: the slice files in the order of their positions along the slices' normal,
    and the series' identity."""

    files: tuple[Path, ...]
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    orientation: tuple[float, ...]
    slice_step: float


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` starts as a DICOM file does (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


_MR_NAMES = ("MR", "MRI", "T1", "T1W", "T1C", "T1GD", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD", "SWI")


def modality_fits(planned: str, dicom_modality: str) -> bool:
    """Whether a series of ``dicom_modality`` (its Modality attribute, e.g. ``CT``, ``MR``) is what a data set
    whose channel is named ``planned`` (``dataset.json``'s modality, e.g. ``CT``, ``MRI``, ``T2``) holds; a name
    that says neither CT nor MR fits anything."""
    name, modality = planned.strip().upper(), dicom_modality.strip().upper()
    if name == "CT":
        return modality == "CT"
    if name in _MR_NAMES or name.startswith(("T1", "T2")):
        return modality == "MR"
    return True


def _headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            found.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except (pydicom.errors.InvalidDicomError, OSError):
            continue  # not DICOM (a README, a DICOMDIR's companions...)
    return found


def check_series(folder: str | Path) -> SeriesInfo:
    """The image series in ``folder`` (searched recursively), checked.

    Raises:
        DicomSeriesError: no DICOM image in the folder; several series; slices of different orientations or
            sizes; a gap between slice positions (a missing slice); two slices at one position. Each message names
            the folder and the files or positions at fault.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomSeriesError(f"DICOM series folder '{folder}' does not exist")
    images = [(p, d) for p, d in _headers(folder) if "ImagePositionPatient" in d and "ImageOrientationPatient" in d]
    if not images:
        raise DicomSeriesError(f"'{folder}' holds no DICOM image with a position and orientation "
                               f"(ImagePositionPatient, ImageOrientationPatient)")
    series = sorted({str(d.SeriesInstanceUID) for _, d in images})
    if len(series) > 1:
        counts = {uid: sum(str(d.SeriesInstanceUID) == uid for _, d in images) for uid in series}
        listed = ", ".join(f"{uid}: {n} files" for uid, n in counts.items())
        raise DicomSeriesError(f"'{folder}' holds {len(series)} series ({listed}); give one series per folder")
    orientations: dict[tuple, list[Path]] = {}
    for path, header in images:
        key = tuple(np.round(np.asarray(header.ImageOrientationPatient, dtype=float) / _ORIENTATION_TOLERANCE)
                    * _ORIENTATION_TOLERANCE)
        orientations.setdefault(key, []).append(path)
    if len(orientations) > 1:
        described = "; ".join(f"{len(paths)} file(s) {[round(float(v), 4) + 0.0 for v in key]} (e.g. "
                              f"'{paths[0].name}')"
                              for key, paths in orientations.items())
        raise DicomSeriesError(f"'{folder}' mixes slice orientations (ImageOrientationPatient): {described}; a series "
                               f"must be one stack of parallel slices")
    sizes = {(int(d.Rows), int(d.Columns)) for _, d in images}
    if len(sizes) > 1:
        raise DicomSeriesError(f"'{folder}' mixes slice sizes (Rows x Columns): {sorted(sizes)}")
    orientation = np.asarray(images[0][1].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))) for _, d in images])
    order = np.argsort(positions, kind="stable")
    files = tuple(images[i][0] for i in order)
    steps = np.diff(positions[order])
    step = float(np.median(steps)) if len(steps) else 0.0
    if len(steps):
        same = np.flatnonzero(steps < 1e-3)
        if same.size:
            i = int(same[0])
            raise DicomSeriesError(f"'{folder}': '{files[i].name}' and '{files[i + 1].name}' lie at the same position "
                                   f"({positions[order][i]:.3f} mm along the slices' normal); a series holds one "
                                   f"slice per position")
        gaps = np.flatnonzero(np.abs(steps - step) > _SPACING_TOLERANCE * step)
        if gaps.size:
            i = int(gaps[0])
            missing = int(round(steps[i] / step)) - 1
            what = f"about {missing} slice(s) missing" if missing > 0 else "uneven spacing"
            raise DicomSeriesError(
                f"'{folder}': slices are {step:.3f} mm apart but '{files[i].name}' and '{files[i + 1].name}' are "
                f"{steps[i]:.3f} mm apart ({what}, {gaps.size} such gap(s)); fetch the complete series")
    first = images[order[0]][1]
    return SeriesInfo(files, str(first.SeriesInstanceUID), str(first.get("StudyInstanceUID", "")),
                      str(first.get("Modality", "")), tuple(float(v) for v in orientation), step)


def read_series(folder: str | Path, info: SeriesInfo | None = None) -> sitk.Image:
    """The series in ``folder`` as a SimpleITK volume (checked by :func:`check_series` first)."""
    info = info or check_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in info.files])
    return reader.Execute()


def series_to_nifti(folder: str | Path, output: str | Path) -> Path:
    """Write the checked series of ``folder`` as a NIfTI volume (whole or not at all)."""
    output = Path(output)
    image = read_series(folder)
    with atomic_path(output, suffix=".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp))
    return output


def _pixel_values(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored integers and ``(slope, intercept)`` so that ``stored * slope + intercept`` gives the volume back:
    integers that fit 16 bits as they are, anything else scaled to ``uint16``."""
    if np.issubdtype(volume.dtype, np.integer) or np.array_equal(volume, np.round(volume)):
        low, high = float(volume.min()), float(volume.max())
        if low >= -32768 and high <= 32767:
            return volume.astype(np.int16), 1.0, 0.0
        if low >= 0 and high <= 65535:
            return volume.astype(np.uint16), 1.0, 0.0
    low, high = float(np.min(volume)), float(np.max(volume))
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = np.round((volume.astype(np.float64) - low) / slope).astype(np.uint16)
    return stored, slope, low


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def write_series(
    volume_file: str | Path,
    output_dir: str | Path,
    modality: str = "MR",
    patient_id: str = "anonymous",
    patient_name: str = "Anonymous^",
    study_instance_uid: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
) -> list[Path]:
    """Write a 3D NIfTI (or any file nibabel reads) as a DICOM series: ``slice_0000.dcm``, ... one per slice of its
    third array axis, with its geometry (orientation, positions, spacing) and intensities.

    Args:
        volume_file: the volume (``(X, Y, Z)``; a 4D file with one channel is accepted).
        output_dir: a new or empty folder for the slices.
        modality: ``MR``, ``CT`` or ``OT``: the slices' Modality and SOP class.
        patient_id, patient_name, study_instance_uid: the patient and study the series belongs to (a new study
            UID by default).
        series_description, series_number: the series' own description (default: the file's name) and number.

    Raises:
        ValueError: a volume that is not 3D, a modality not in :data:`IMAGE_STORAGE`, an output folder that holds
            files, or an affine whose axes are not orthogonal (DICOM slices are rectangular).
    """
    volume_file, output_dir = Path(volume_file), Path(output_dir)
    if modality not in IMAGE_STORAGE:
        raise ValueError(f"modality {modality!r} is not one of {sorted(IMAGE_STORAGE)}")
    image = nib.load(volume_file)
    volume = np.asarray(image.dataobj)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise ValueError(f"'{volume_file}' has shape {volume.shape}; a DICOM series is written from a 3D volume")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"'{output_dir}' is not empty; write the series into a new folder")
    affine = lps_to_ras @ image.affine  # the same matrix maps RAS to LPS
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    cosines = axes / spacing
    if np.abs(cosines.T @ cosines - np.eye(3)).max() > 1e-4:
        raise ValueError(f"'{volume_file}' has oblique, non-orthogonal axes (affine {image.affine.tolist()}); "
                         f"resample it to an orthogonal grid first")
    stored, slope, intercept = _pixel_values(volume)
    now = datetime.datetime.now()
    shared = {"PatientName": patient_name, "PatientID": patient_id, "PatientBirthDate": "", "PatientSex": "",
              "StudyInstanceUID": study_instance_uid or generate_uid(), "SeriesInstanceUID": generate_uid(),
              "FrameOfReferenceUID": generate_uid(), "StudyID": "1", "AccessionNumber": "",
              "ReferringPhysicianName": "", "StudyDate": now.strftime("%Y%m%d"), "SeriesDate": now.strftime("%Y%m%d"),
              "ContentDate": now.strftime("%Y%m%d"), "StudyTime": now.strftime("%H%M%S"),
              "SeriesTime": now.strftime("%H%M%S"), "ContentTime": now.strftime("%H%M%S"), "Modality": modality,
              "SeriesNumber": series_number, "SeriesDescription": series_description or volume_file.name.split(".")[0],
              "Manufacturer": "medsa-monai", "PositionReferenceIndicator": "",
              "ImageOrientationPatient": [_ds(v) for v in (*cosines[:, 0], *cosines[:, 1])],
              "PixelSpacing": [_ds(spacing[1]), _ds(spacing[0])],  # rows follow the second axis, columns the first
              "SliceThickness": _ds(spacing[2]), "SpacingBetweenSlices": _ds(spacing[2]), "SamplesPerPixel": 1,
              "PhotometricInterpretation": "MONOCHROME2", "Rows": volume.shape[1], "Columns": volume.shape[0],
              "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
              "PixelRepresentation": 1 if stored.dtype == np.int16 else 0, "RescaleSlope": _ds(slope),
              "RescaleIntercept": _ds(intercept), **({"RescaleType": "HU"} if modality == "CT" else {})}
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(volume.shape[2]):
        position = [_ds(v) for v in (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        written.append(_write_slice(output_dir / f"slice_{k:04d}.dcm", shared, k + 1, position, stored[:, :, k].T))
    return written


def _write_slice(path: Path, shared: dict, number: int, position: list[str], pixels: np.ndarray) -> Path:
    """One slice file: the series' ``shared`` attributes, its instance number, position and pixels (rows, columns)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = IMAGE_STORAGE[shared["Modality"]]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for keyword, value in shared.items():
        setattr(ds, keyword, value)
    ds.InstanceNumber, ds.ImagePositionPatient = number, position
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True) if _pydicom_3() else ds.save_as(tmp, write_like_original=False)
    return path


def _pydicom_3() -> bool:
    return int(pydicom.__version__.split(".")[0]) >= 3


def frame_geometry(header: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(origin, axes)`` of one slice in LPS millimetres: pixel ``(r, c)`` lies at ``origin + axes @ [r, c]``."""
    cosines = np.asarray(header.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    axes = np.stack([cosines[3:] * row_spacing, cosines[:3] * column_spacing], axis=1)  # (3, 2): r, c
    return np.asarray(header.ImagePositionPatient, dtype=float), axes


def voxel_indices(headers: Sequence[pydicom.Dataset], affine: np.ndarray, tolerance: float = 0.05
                  ) -> np.ndarray:
    """Index ``(F, R, C, 3)`` into a volume with ``affine`` (voxel -> RAS) of every pixel of each slice.

    Raises:
        ValueError: a pixel that lies more than ``tolerance`` voxels off the volume's grid (another geometry).
    """
    to_voxel = np.linalg.inv(affine) @ lps_to_ras
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"), axis=-1).reshape(-1, 2)
    indices = []
    for header in headers:
        origin, axes = frame_geometry(header)
        world = origin[None] + grid @ axes.T
        voxel = (to_voxel @ np.c_[world, np.ones(len(world))].T)[:3].T
        rounded = np.round(voxel)
        off = float(np.abs(voxel - rounded).max())
        if off > tolerance:
            raise ValueError(f"slice {header.get('InstanceNumber', '?')} (SOP instance {header.SOPInstanceUID}) lies "
                             f"{off:.2f} voxels off the label map's grid: the label map is not in this series' "
                             f"geometry")
        indices.append(rounded.astype(int).reshape(rows, columns, 3))
    return np.stack(indices)
