"""A label map as a DICOM Segmentation (SEG) object that references the series it was predicted from.

Each label value of the data set but background is one segment, named by the data set's label name, with a
recommended display colour; a class the prediction does not contain keeps its segment description (and no
frames). The label map is first mapped onto the series' frames pixel by pixel through both geometries
(:func:`label_map_on_series`), never by assuming an axis order, so a label map stored with flipped axes or reversed
slices gives the same SEG. The SEG is then written by ``pydicom-seg`` (the writer MONAI Label 0.8.5 itself uses
for DICOM SEG, installed with it: highdicom's writer needs pydicom 3, which MONAI Label 0.8.5 cannot import) on the
series' own grid; the tests read it back with highdicom.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk

from ..conversion.dicom_series import check_series, read_series, voxel_indices
from ..data.atomic import atomic_path
from ..data.labels import LabelSpec

__all__ = ["write_dicom_seg", "read_dicom_seg", "SEGMENT_COLOURS", "label_map_on_series", "itkimage2segimage"]

SEGMENT_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
                   (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))
"""Display colours (sRGB) of segments 1, 2, ... in turn (Sasha Trubetskoy's distinct colours)."""

logger = logging.getLogger(__name__)

_TISSUE = {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Tissue"}


def _segments(label_spec: LabelSpec) -> list[tuple[int, str]]:
    """``(label value, name)`` of each segment: every label value of the label map but background."""
    return [(int(value), str(name)) for value, name in zip(label_spec.values[1:], label_spec.names[1:], strict=True)]


def label_map_on_series(label_file: str | Path, headers: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The label map's values at every pixel of the series' frames: ``(F, rows, columns)``, frames in the order
    of ``headers``.

    Raises:
        ValueError: the label map does not lie on the series' grid, naming the file.
    """
    image = nib.load(label_file)
    labels = np.asarray(image.dataobj)
    while labels.ndim > 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    try:
        index = voxel_indices(headers, image.affine)
    except ValueError as error:
        raise ValueError(f"'{label_file}': {error}") from None
    inside = np.all((index >= 0) & (index < np.array(labels.shape)), axis=-1)
    if not inside.all():
        raise ValueError(f"'{label_file}' (shape {labels.shape}) does not cover the series: {int((~inside).sum())} "
                         f"pixels of its frames lie outside it")
    return labels[index[..., 0], index[..., 1], index[..., 2]]


def write_dicom_seg(
    label_file: str | Path,
    series_dir: str | Path,
    output: str | Path,
    label_spec: LabelSpec | Mapping,
    algorithm: str = "medsa-monai",
    series_description: str = "medsa-monai segmentation",
    colours: Sequence[Sequence[int]] | None = None,
) -> Path | None:
    """Write ``output`` (a binary DICOM SEG, one segment per label value) from a label map of the series in
    ``series_dir``, in the data set's label values (``label_spec``: a :class:`~medsa_monai.data.LabelSpec` or a
    ``dataset.json`` / plan mapping with ``labels``). Returns ``output``, written whole or not at all, or ``None``
    for a label map that segments nothing (no SEG is written: a SEG holds at least one frame). ``colours``: sRGB of
    each segment in turn (default :data:`SEGMENT_COLOURS`).

    Raises:
        DicomSeriesError: the series is incomplete or inconsistent (see
            :func:`~medsa_monai.conversion.dicom_series.check_series`).
        ValueError: the label map is not on the series' grid, or holds values the labels do not declare.
        ImportError: pydicom-seg is not installed.
    """
    try:
        import pydicom_seg
    except ImportError:
        raise ImportError("DICOM SEG output needs pydicom-seg, installed with MONAI Label (bash scripts/setup_env.sh; "
                          "or pip install --no-deps pydicom-seg==0.4.1)") from None
    spec = label_spec if isinstance(label_spec, LabelSpec) else LabelSpec.from_description(label_spec)
    info = check_series(series_dir)
    sources = [pydicom.dcmread(path) for path in info.files]
    values = label_map_on_series(label_file, sources)  # (frames, rows, columns) in the series' own order
    unknown = sorted(set(np.unique(values).tolist()) - set(spec.accepted_values))
    if unknown:
        declared = dict(zip(spec.values, spec.names, strict=True))
        raise ValueError(f"'{label_file}' holds label values {unknown} that the labels ({declared}) do not declare")
    segments = _segments(spec)
    palette = list(colours) if colours else list(SEGMENT_COLOURS)
    canonical = np.vectorize(spec.canonical, otypes=[np.int64])(values) if spec.aliases else values
    numbers = np.zeros(values.shape, np.uint8)  # segment numbers 1..K in place of the data set's values
    for number, (value, _) in enumerate(segments, 1):
        numbers[canonical == value] = number
    numbered = sitk.GetImageFromArray(numbers)  # ITK's array order is (slice, row, column): the series' frames
    numbered.CopyInformation(read_series(series_dir, info))
    attributes = [{"labelID": number, "SegmentLabel": name, "SegmentAlgorithmType": "AUTOMATIC",
                   "SegmentAlgorithmName": algorithm, "SegmentedPropertyCategoryCodeSequence": _TISSUE,
                   "SegmentedPropertyTypeCodeSequence": _TISSUE,
                   "recommendedDisplayRGBValue": [int(c) for c in palette[(number - 1) % len(palette)]]}
                  for number, (_, name) in enumerate(segments, 1)]
    template = pydicom_seg.template.from_dcmqi_metainfo({
        "ContentCreatorName": algorithm, "ClinicalTrialSeriesID": "", "ClinicalTrialTimePointID": "",
        "SeriesDescription": series_description, "SeriesNumber": "900", "InstanceNumber": "1",
        "segmentAttributes": [attributes], "ContentLabel": "SEGMENTATION", "ContentDescription": series_description,
        "BodyPartExamined": ""})
    if not numbers.any():
        logger.warning("'%s' segments nothing: no DICOM SEG written for it (a SEG holds at least one frame)",
                       label_file)
        return None
    writer = pydicom_seg.MultiClassWriter(template=template, inplane_cropping=False, skip_empty_slices=True,
                                          skip_missing_segment=False)
    # pydicom-seg shares data elements with the source it copies them from, then sets new values on some
    # (FrameOfReferenceUID): it gets copies, and the SEG the series' frame of reference, where its frames lie
    seg = writer.write(numbered, copy.deepcopy(sources))
    seg.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
    present = {int(item.SegmentNumber) for item in seg.SegmentSequence}
    absent = [item for item in template.SegmentSequence if int(item.SegmentNumber) not in present]
    if absent:  # every class keeps its segment, so a viewer lists it (with no frames)
        seg.SegmentSequence = pydicom.Sequence(sorted([*seg.SegmentSequence, *absent],
                                                      key=lambda item: int(item.SegmentNumber)))
    output = Path(output)
    with atomic_path(output) as tmp:
        seg.save_as(tmp)
    return output


def read_dicom_seg(seg_file: str | Path, series_dir: str | Path) -> tuple[np.ndarray, list[str]]:
    """A SEG's masks on the frames of the series it references: ``(F, rows, columns, segments)`` in the order of
    :func:`~medsa_monai.conversion.dicom_series.check_series`, and the segment labels."""
    import highdicom as hd

    seg = hd.seg.segread(str(seg_file))
    info = check_series(series_dir)
    sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in info.files]
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(d.SOPInstanceUID) for d in sources], segment_numbers=numbers,
        ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    return np.asarray(masks), [str(d.SegmentLabel) for d in seg.SegmentSequence]


def itkimage2segimage(argv: Sequence[str] | None = None) -> int:
    """dcmqi's ``itkimage2segimage`` command line (``--inputImageList``, ``--inputDICOMDirectory``,
    ``--outputDICOM``, ``--inputMetadata``: dcmqi's JSON with ``segmentAttributes``), written by
    :func:`write_dicom_seg`: MONAI Label 0.8.5 writes DICOM SEG through this command (its inference with
    ``output=dicom_seg`` and labels saved to a DICOMweb PACS) and otherwise downloads dcmqi from GitHub when it
    starts, which a machine without internet access cannot. ``scripts/dicom_stack.py`` puts it in the app's ``bin``.
    Returns the exit status (1 for a label map that segments nothing, as dcmqi)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="itkimage2segimage", description=itkimage2segimage.__doc__)
    parser.add_argument("--inputImageList", required=True, help="the label map (the first of a comma list)")
    parser.add_argument("--inputDICOMDirectory", required=True)
    parser.add_argument("--outputDICOM", required=True)
    parser.add_argument("--inputMetadata", required=True)
    args, _ = parser.parse_known_args(argv)
    metadata = json.loads(Path(args.inputMetadata).read_text())
    attributes = [a for group in metadata.get("segmentAttributes", []) for a in group]
    labels = {"0": "background", **{str(int(a["labelID"])): str(a.get("SegmentLabel", f"segment {a['labelID']}"))
                                   for a in attributes}}
    colours = [a.get("recommendedDisplayRGBValue") or SEGMENT_COLOURS[i % len(SEGMENT_COLOURS)]
               for i, a in enumerate(sorted(attributes, key=lambda a: int(a["labelID"])))]
    written = write_dicom_seg(args.inputImageList.split(",")[0], args.inputDICOMDirectory, args.outputDICOM,
                              {"labels": labels}, algorithm=str(metadata.get("ContentCreatorName", "medsa-monai")),
                              series_description=str(metadata.get("SeriesDescription", "segmentation")),
                              colours=colours)
    return 0 if written is not None else 1


if __name__ == "__main__":
    raise SystemExit(itkimage2segimage())
