"""DICOM series in and out: a volume written as a series reads back with its voxels and geometry; incomplete or
mixed series are refused naming the files; a label map becomes a DICOM SEG whose frames, read back with highdicom,
hold the label map's voxels wherever they lie in the patient (flipped axes and reversed slice order included)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medsa_monai.cli import main
from medsa_monai.conversion.dicom_series import (
    DicomSeriesError,
    check_series,
    modality_fits,
    series_to_nifti,
    write_series,
)

TASK04 = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task04_Hippocampus"
# anisotropic voxels, the first axis running right-to-left and the second posterior: orientation matters
AFFINE = np.array([[-0.8, 0, 0, 30.0], [0, -1.2, 0, 12.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])
LABELS = {"labels": {"0": "background", "1": "anterior", "2": "posterior"}}


def _volume(tmp_path: Path, affine=AFFINE, dtype=np.float32) -> tuple[Path, np.ndarray]:
    rng = np.random.RandomState(0)
    data = (rng.rand(12, 9, 7) * 400 - 100).astype(dtype)
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path, data


def _label(tmp_path: Path, name: str = "label.nii.gz", affine=AFFINE) -> tuple[Path, np.ndarray]:
    label = np.zeros((12, 9, 7), np.uint8)
    label[2:6, 1:4, 1:3] = 1
    label[7:11, 5:8, 4:6] = 2
    path = tmp_path / name
    nib.save(nib.Nifti1Image(label, affine), path)
    return path, label


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_volume_written_as_a_series_reads_back_with_its_voxels_and_geometry(tmp_path, dtype):
    volume, data = _volume(tmp_path, dtype=dtype)
    files = write_series(volume, tmp_path / "series", modality="MR", patient_id="p1")
    assert len(files) == 7 and all(pydicom.dcmread(f).Modality == "MR" for f in files)
    info = check_series(tmp_path / "series")
    assert info.modality == "MR" and info.slice_step == pytest.approx(2.5) and len(info.files) == 7
    back = nib.load(series_to_nifti(tmp_path / "series", tmp_path / "back.nii.gz"))
    assert np.allclose(back.affine, AFFINE, atol=1e-4)
    tolerance = 0 if dtype == np.int16 else (data.max() - data.min()) / 65535  # 16-bit storage with a slope
    assert np.abs(np.asarray(back.dataobj, np.float64) - data).max() <= tolerance
    header = pydicom.dcmread(files[0])
    assert header.StudyInstanceUID != header.SeriesInstanceUID and header.FrameOfReferenceUID
    assert [float(v) for v in header.PixelSpacing] == pytest.approx([1.2, 0.8])  # rows follow the second axis
    assert [float(v) for v in header.ImageOrientationPatient] == pytest.approx([1, 0, 0, 0, 1, 0])  # LPS


@pytest.mark.skipif(not TASK04.is_dir(), reason="../shared/data/Task04_Hippocampus not present")
def test_a_real_task04_volume_round_trips(tmp_path):
    source = TASK04 / "imagesTr" / "hippocampus_001.nii.gz"
    write_series(source, tmp_path / "series", modality="MR")
    back = nib.load(series_to_nifti(tmp_path / "series", tmp_path / "back.nii.gz"))
    original = nib.load(source)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
    assert np.allclose(back.affine, original.affine, atol=1e-4)


def _series(tmp_path: Path) -> Path:
    volume, _ = _volume(tmp_path)
    write_series(volume, tmp_path / "series")
    return tmp_path / "series"


def test_an_incomplete_or_mixed_series_is_refused_naming_the_files(tmp_path):
    series = _series(tmp_path)
    gap = tmp_path / "gap"
    shutil.copytree(series, gap)
    (gap / "slice_0003.dcm").unlink()
    with pytest.raises(DicomSeriesError, match=r"slices are 2.500 mm apart but 'slice_0002.dcm' and 'slice_0004.dcm' "
                                               r"are 5.000 mm apart \(about 1 slice\(s\) missing, 1 such gap\(s\)\)"):
        check_series(gap)

    mixed = tmp_path / "mixed"
    shutil.copytree(series, mixed)
    tilted = pydicom.dcmread(mixed / "slice_0005.dcm")
    tilted.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    tilted.save_as(mixed / "slice_0005.dcm")
    with pytest.raises(DicomSeriesError, match=r"mixes slice orientations .*: 6 file\(s\) \[1.0, 0.0, 0.0, 0.0, 1.0, "
                                               r"0.0\] .*; 1 file\(s\) \[0.0, 1.0, 0.0, 1.0, 0.0, 0.0\] \(e.g. "
                                               r"'slice_0005.dcm'\)"):
        check_series(mixed)

    two = tmp_path / "two"
    shutil.copytree(series, two / "a")
    (tmp_path / "other").mkdir()
    write_series(_volume(tmp_path / "other")[0], two / "b")  # another series of the same volume
    with pytest.raises(DicomSeriesError, match=r"holds 2 series .*7 files.*7 files.*give one series per folder"):
        check_series(two)

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(DicomSeriesError, match="holds no DICOM image"):
        check_series(tmp_path / "empty")
    with pytest.raises(DicomSeriesError, match="does not exist"):
        check_series(tmp_path / "nowhere")


def test_the_command_line_checks_and_refuses_in_one_line(tmp_path, capsys):
    series = _series(tmp_path)
    main(["dicom", "check", str(series)])
    assert "one MR series of 7 slices 2.500 mm apart" in capsys.readouterr().out
    (series / "slice_0000.dcm").unlink()
    (series / "slice_0001.dcm").unlink()
    main(["dicom", "check", str(series)])  # the first slices gone: still evenly spaced
    (series / "slice_0004.dcm").unlink()
    with pytest.raises(SystemExit):
        main(["dicom", "check", str(series)])
    error = capsys.readouterr().err
    assert "'slice_0003.dcm' and 'slice_0005.dcm' are 5.000 mm apart" in error and len(error.splitlines()) <= 2


def test_modality_names_and_dicom_modalities():
    assert modality_fits("CT", "CT") and not modality_fits("CT", "MR")
    assert modality_fits("MRI", "MR") and modality_fits("T2", "MR") and modality_fits("FLAIR", "MR")
    assert not modality_fits("MRI", "CT") and modality_fits("ultrasound", "US")


@pytest.fixture
def seg_tools():
    pytest.importorskip("pydicom_seg", reason="pydicom-seg comes with MONAI Label (bash scripts/setup_env.sh)")
    pytest.importorskip("highdicom", reason="highdicom is in the [test] extra")
    from medsa_monai.prediction.dicom_seg import read_dicom_seg, write_dicom_seg

    return write_dicom_seg, read_dicom_seg


def test_a_label_map_becomes_a_seg_whose_frames_hold_its_voxels(tmp_path, seg_tools):
    write_dicom_seg, read_dicom_seg = seg_tools
    series = _series(tmp_path)
    label_file, label = _label(tmp_path)
    write_dicom_seg(label_file, series, tmp_path / "seg.dcm", LABELS)
    masks, names = read_dicom_seg(tmp_path / "seg.dcm", series)
    assert names == ["anterior", "posterior"] and masks.shape == (7, 9, 12, 2)  # frames, rows, columns, segments
    expected = np.stack([label == 1, label == 2], axis=-1).transpose(2, 1, 0, 3)  # slice k, row j, column i
    assert np.array_equal(masks.astype(bool), expected)
    seg, source = pydicom.dcmread(tmp_path / "seg.dcm"), pydicom.dcmread(series / "slice_0000.dcm")
    assert seg.Modality == "SEG" and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = {str(item.ReferencedSOPInstanceUID)
                  for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced <= {str(pydicom.dcmread(f).SOPInstanceUID) for f in series.iterdir()}
    assert len(seg.SegmentSequence) == 2 and all("RecommendedDisplayCIELabValue" in s for s in seg.SegmentSequence)

    # the same label map stored with its axes reversed (data and affine): the same voxels in the patient
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[0, 3], flip[2, 3] = label.shape[0] - 1, label.shape[2] - 1
    flipped = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(label[::-1, :, ::-1].copy(), AFFINE @ flip), flipped)
    write_dicom_seg(flipped, series, tmp_path / "seg_flipped.dcm", LABELS)
    assert np.array_equal(read_dicom_seg(tmp_path / "seg_flipped.dcm", series)[0], masks)


def test_an_empty_prediction_and_a_label_map_off_the_grid(tmp_path, seg_tools):
    write_dicom_seg, read_dicom_seg = seg_tools
    series = _series(tmp_path)
    only_first, label = _label(tmp_path, "first.nii.gz")
    nib.save(nib.Nifti1Image((label == 1).astype(np.uint8), AFFINE), only_first)  # no posterior voxel
    write_dicom_seg(only_first, series, tmp_path / "first.dcm", LABELS)
    masks, names = read_dicom_seg(tmp_path / "first.dcm", series)
    assert names == ["anterior", "posterior"] and masks[..., 0].sum() == (label == 1).sum() and not masks[..., 1].any()
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 9, 7), np.uint8), AFFINE), empty)
    assert write_dicom_seg(empty, series, tmp_path / "empty.dcm", LABELS) is None  # nothing to store: no object
    assert not (tmp_path / "empty.dcm").exists()
    shifted = tmp_path / "shifted.nii.gz"
    moved = AFFINE.copy()
    moved[0, 3] += 0.4  # half a voxel: another grid
    nib.save(nib.Nifti1Image(np.zeros((12, 9, 7), np.uint8), moved), shifted)
    with pytest.raises(ValueError, match=r"shifted.nii.gz': slice 1 .* lies 0.50 voxels off the label map's grid"):
        write_dicom_seg(shifted, series, tmp_path / "shifted.dcm", LABELS)
    assert not (tmp_path / "shifted.dcm").exists()
