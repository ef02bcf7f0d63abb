"""Inspection: read every file of a data set once and check each case, then the cases against each other.

See :mod:`medsa_monai.conversion.ingest` for the list of checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .image_files import _IMAGE_MODES, FileInfo, load_file
from .layouts import Case, RawDataset

__all__ = ["Inspection", "check_dataset", "inspect_dataset"]


@dataclass
class Inspection:
    """What checking a data set found: its problems, every file's :class:`FileInfo`, the label values present,
    each readable case's channel count and spatial dims (keyed by the case's first image file)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not errors, said once when ingesting
    files: dict[Path, FileInfo] = field(default_factory=dict)
    label_values: set[int] = field(default_factory=set)
    channels: dict[Path, int] = field(default_factory=dict)
    spatial_dims: dict[Path, int] = field(default_factory=dict)


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 160 else text[:157] + "..."


def _join(values) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def _fmt(values) -> str:
    return f"({_join(values)})"


def _image_problems(case: str, path: Path, info: FileInfo, array: np.ndarray) -> list[str]:
    """Photograph modes the pipeline would misread, NaN / inf values."""
    out = []
    if info.mode == "P":
        out.append(f"{case}: image '{path}' is a palette image (PIL mode P): the pipeline would read colour "
                   f"indices; export the images as RGB or grey into another folder and use that one")
    elif info.mode is not None and info.mode not in _IMAGE_MODES:
        out.append(f"{case}: image '{path}' has PIL mode {info.mode}; export the images as RGB or grey into "
                   f"another folder and use that one")
    if np.issubdtype(array.dtype, np.floating):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        if nan or inf:
            out.append(f"{case}: image '{path}' holds {nan} NaN and {inf} infinite value(s)")
    return out


def _label_values(case: str, path: Path, info: FileInfo, array: np.ndarray) -> tuple[set[int], list[str]]:
    """The label values of a label file, and its problems (several components, non-integer or negative values)."""
    if info.channels != 1:
        what = f"PIL mode {info.mode}" if info.mode else f"{info.channels} values per voxel"
        return set(), [f"{case}: label '{path}' has several components ({what}); save it with one value per pixel "
                       f"(grey, 1-bit or palette image, or a scalar volume)"]
    values = np.unique(array)
    problems = []
    if np.issubdtype(values.dtype, np.floating):
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        if bad.size:
            problems.append(f"{case}: label '{path}' has non-integer values (e.g. {_join(bad[:5])})")
            values = values[np.isfinite(values) & (values == np.round(values))]
    if values.size and values.min() < 0:
        problems.append(f"{case}: label '{path}' has negative values {sorted(int(v) for v in values if v < 0)}")
        values = values[values >= 0]
    return {int(v) for v in values}, problems


def _compare_geometry(case: str, files: list[tuple[str, Path, FileInfo]], tolerance: float) -> list[str]:
    """Each channel file and the label against the first image file: size, and for volumes spacing, origin and
    direction (within ``tolerance``)."""
    if len(files) < 2:
        return []
    _, ref_path, ref = files[0]
    out = []
    for what, path, info in files[1:]:
        if info.size != ref.size:
            out.append(f"{case}: {what} '{path.name}' has size {info.size}, the image '{ref_path.name}' {ref.size}")
            continue
        if info.geometry is None or ref.geometry is None:  # photographs have no geometry: the size is all
            continue
        (spacing, origin, direction), (sp, o, d) = ref.geometry, info.geometry
        if not np.allclose(sp, spacing, rtol=tolerance, atol=tolerance):
            out.append(f"{case}: {what} '{path.name}' has spacing {_fmt(sp)}, the image {_fmt(spacing)}")
        if not np.allclose(o, origin, rtol=tolerance, atol=tolerance * max(1.0, float(np.max(spacing)))):
            out.append(f"{case}: {what} '{path.name}' has origin {_fmt(o)}, the image {_fmt(origin)}")
        if not np.allclose(d, direction, atol=tolerance):
            out.append(f"{case}: {what} '{path.name}' has direction {_fmt(d)}, the image {_fmt(direction)}")
    return out


def _inspect_case(case: Case, labelled: bool, declared: set[int], tolerance: float, found: Inspection) -> None:
    """Check one case's files; add its problems, file infos, label values, channels and dims to ``found``."""
    problems = found.problems
    files: list[tuple[str, Path, FileInfo]] = []
    readable = True
    for path in case.images:
        try:
            info, array = load_file(path)
        except Exception as err:  # SimpleITK, nibabel and PIL raise various errors for unreadable or truncated files
            problems.append(f"{case.name}: image '{path}' cannot be read ({_short(err)})")
            readable = False
            continue
        found.files[path] = info
        problems += _image_problems(case.name, path, info, array)
        files.append(("channel" if files else "image", path, info))
    if readable and files:
        found.channels[case.images[0]] = sum(info.channels for _, _, info in files)
        found.spatial_dims[case.images[0]] = len(files[0][2].size)
    if not labelled:
        problems += _compare_geometry(case.name, files, tolerance)
        return
    if case.label is None or not case.label.exists():
        problems.append(f"{case.name}: label file '{case.label}' is missing")
        return
    try:
        info, array = load_file(case.label)
    except Exception as err:
        problems.append(f"{case.name}: label '{case.label}' cannot be read ({_short(err)})")
        return
    found.files[case.label] = info
    values, label_problems = _label_values(case.name, case.label, info, array)
    problems += label_problems
    found.label_values |= values
    extra = sorted(values - declared) if declared else []
    if extra:
        hint = " (JPEG is lossy: save masks as PNG)" if info.format == "jpeg" else ""
        problems.append(f"{case.name}: label '{case.label}' has values {extra} not among the declared labels "
                        f"{sorted(declared)}{hint}")
    elif not declared and info.format == "jpeg":
        problems.append(f"{case.name}: label '{case.label}' is a JPEG, lossy: its values around edges are not "
                        f"label values; save masks as PNG, or declare the labels")
    problems += _compare_geometry(case.name, [*files, ("label", case.label, info)], tolerance)


def _names(case: Case) -> str:
    return ", ".join(f"'{p.name}'" for p in case.images)


def _consistency_problems(dataset: RawDataset, cases: list[Case], found: Inspection) -> list[str]:
    """Channel counts (against ``dataset.json``'s, else the most common), spatial dims and image kinds that differ
    between cases."""
    out = []
    declared = len(dataset.channels)
    counts = Counter(found.channels.values())
    expected, expected_cases = (declared, None) if declared else (counts.most_common(1) or [(None, 0)])[0]
    for case in cases:
        channels = found.channels.get(case.images[0])
        if channels is None or channels == expected:
            continue
        if case.missing_channels:
            out.append(f"{case.name}: channel file(s) {case.missing_channels} missing")
        elif declared:
            out.append(f"{case.name}: image(s) {_names(case)} have {channels} channel(s), dataset.json declares "
                       f"{declared} ({', '.join(dataset.channels.values())})")
        else:
            out.append(f"{case.name}: image(s) {_names(case)} have {channels} channel(s), {expected_cases} of "
                       f"{len(found.channels)} cases have {expected}")
    dims = Counter(found.spatial_dims.values())
    if len(dims) > 1:
        common, count = dims.most_common(1)[0]
        out += [f"{case.name}: image(s) {_names(case)} are {found.spatial_dims[case.images[0]]}D, {count} of "
                f"{len(found.spatial_dims)} cases {common}D" for case in cases
                if found.spatial_dims.get(case.images[0], common) != common]
    kinds = {case.images[0]: _is_photo_case(case, found) for case in cases if case.images[0] in found.channels}
    if len(set(kinds.values())) > 1:
        common, count = Counter(kinds.values()).most_common(1)[0]
        out += [f"{case.name}: image(s) {_names(case)} are {'photographs' if kinds[case.images[0]] else 'volumes'}, "
                f"{count} of {len(kinds)} cases {'photographs' if common else 'volumes'} (PNG, JPEG, BMP, TIFF "
                f"are scaled otherwise than volumes): convert them to one kind" for case in cases
                if kinds.get(case.images[0], common) != common]
    return out


def _is_photo_case(case: Case, found: Inspection) -> bool:
    return any(found.files[p].photographic for p in case.images if p in found.files)


def inspect_dataset(dataset: RawDataset, tolerance: float = 1e-3, check_test: bool = True) -> Inspection:
    """Read every file of ``dataset`` once and check it (see :func:`check_dataset`)."""
    found = Inspection(problems=list(dataset.problems))
    if not dataset.training:
        found.problems.append(f"no training cases found: {dataset.empty_reason or 'the layout lists none'}")
    declared = set(dataset.labels)
    cases = [(c, True) for c in dataset.training] + ([(c, False) for c in dataset.test] if check_test else [])
    for case, labelled in cases:
        _inspect_case(case, labelled, declared, tolerance, found)
    found.problems += _consistency_problems(dataset, [c for c, _ in cases], found)
    found.warnings += _size_outliers([c for c, _ in cases], found)
    return found


def _size_outliers(cases: list[Case], found: Inspection, factor: float = 8.0) -> list[str]:
    """Cases whose image is more than ``factor`` times smaller than the median along an axis (a thumbnail, a
    placeholder or a damaged export among real images): trained on, they are mostly resizing artefacts."""
    sizes = {c.name: found.files[c.images[0]].size for c in cases if c.images and c.images[0] in found.files}
    if len(sizes) < 3 or len({len(size) for size in sizes.values()}) != 1:
        return []
    median = [float(np.median([size[a] for size in sizes.values()])) for a in range(len(next(iter(sizes.values()))))]
    text = " x ".join(f"{m:g}" for m in median)
    return [f"{name}: its image is {' x '.join(map(str, size))}, far smaller than the data set's median {text} "
            f"(a thumbnail or a damaged export?)" for name, size in sizes.items()
            if any(s * factor < m for s, m in zip(size, median, strict=True))]


def check_dataset(dataset: RawDataset, tolerance: float = 1e-3, check_test: bool = True) -> list[str]:
    """Every problem of every case (see :mod:`medsa_monai.conversion.ingest` for the list of checks).

    Geometry (size, spacing, origin, direction) of each channel and of the label must match the first channel's,
    spacing and origin within ``tolerance`` relative (and absolute) difference, direction within ``tolerance``;
    photographs have a size only. Returns readable lines, each naming its case and file; empty when the data set is
    sound.
    """
    return inspect_dataset(dataset, tolerance, check_test).problems
