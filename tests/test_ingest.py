"""Ingest: MSD, nnU-Net v2 and plain-folder layouts (NIfTI, NRRD, MHA, DICOM series); every problem reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist

from medsa_monai.data import make_synthetic_dataset
from medsa_monai.planning import DatasetError, ingest, read_raw_dataset

SHAPE = (16, 20, 12)


def _volume(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    label = np.zeros(shape, dtype=np.uint8)
    label[4:10, 5:12, 3:8] = 1
    label[10:13, 5:12, 3:8] = 2
    image = (100 + 20 * rng.standard_normal(shape) + 40 * (label > 0)).astype(np.float32)
    return image, label


def _sitk(array_xyz: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.transpose(array_xyz, (2, 1, 0)).copy())  # sitk arrays are (z, y, x)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _write_dicom_series(volume_xyz: np.ndarray, folder: Path, spacing=(1.0, 1.0, 2.0)) -> None:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(volume_xyz.shape[2]):
        slice_ = sitk.GetImageFromArray(volume_xyz[:, :, k].T.astype(np.int16)[None])[:, :, 0]
        slice_.SetSpacing(spacing[:2])  # the writer takes pixel spacing from the image geometry
        for tag, value in [("0008|0060", "MR"), ("0020|000e", series), ("0020|000d", series + ".1"),
                           ("0020|0013", str(k + 1)), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", f"0\\0\\{k * spacing[2]}"), ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
                           ("0018|0050", str(spacing[2])), ("0008|0018", f"{series}.{k + 1}")]:
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_)


def test_msd_layout_with_4d_multimodal_images(tmp_path):
    root = tmp_path / "Task99"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(3):
        image, label = _volume(i)
        four_d = np.stack([image, image * 0.5], axis=-1)  # two modalities, channels last (MSD)
        nib.save(nib.Nifti1Image(four_d, np.eye(4)), root / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"case_{i}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "T99", "modality": {"0": "T1", "1": "T2"},
                                                   "labels": {"0": "bg", "1": "a", "2": "b"},
                                                   "training": training, "test": []}))
    out = ingest(root, tmp_path / "out")
    data = load_decathlon_datalist(str(out), True, "training")
    assert len(data) == 3 and Path(data[0]["image"]).is_absolute()
    description = json.loads(out.read_text())
    assert description["modality"] == {"0": "T1", "1": "T2"} and description["labels"]["2"] == "b"


def test_nnunet_layout_with_channel_files(tmp_path):
    root = tmp_path / "Dataset042_Toy"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTs").mkdir()
    for i in range(3):
        image, label = _volume(i)
        for c in range(2):
            nib.save(nib.Nifti1Image(image + c, np.eye(4)), root / "imagesTr" / f"toy_{i:03d}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"toy_{i:03d}.nii.gz")
    for c in range(2):
        nib.save(nib.Nifti1Image(_volume(9)[0], np.eye(4)), root / "imagesTs" / f"toy_900_{c:04d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"},
                                                   "labels": {"background": 0, "a": 1, "b": 2},
                                                   "numTraining": 3, "file_ending": ".nii.gz"}))
    dataset = read_raw_dataset(root)
    assert dataset.layout == "nnunet" and dataset.labels == {0: "background", 1: "a", 2: "b"}
    assert [len(c.images) for c in dataset.training] == [2, 2, 2]
    description = json.loads(ingest(root, tmp_path / "out").read_text())
    assert isinstance(description["training"][0]["image"], list) and len(description["training"][0]["image"]) == 2
    assert len(description["test"]) == 1 and description["modality"] == {"0": "CT", "1": "PET"}


def test_plain_folder_nrrd_mha_and_dicom(tmp_path):
    root = tmp_path / "plain"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    spacing = (0.8, 0.8, 2.0)
    for i, ending in enumerate([".nrrd", ".mha"]):
        image, label = _volume(i)
        sitk.WriteImage(_sitk(image, spacing), str(root / "images" / f"case_{i}{ending}"))
        sitk.WriteImage(_sitk(label, spacing), str(root / "labels" / f"case_{i}{ending}"))
    image, label = _volume(5)
    _write_dicom_series(np.round(image).astype(np.int16), root / "images" / "case_dicom", spacing)
    sitk.WriteImage(_sitk(label, spacing), str(root / "labels" / "case_dicom.nii.gz"))
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "a", "2": "b"}))

    out = ingest(root, tmp_path / "out", modality="MRI")
    description = json.loads(out.read_text())
    assert description["modality"] == {"0": "MRI"} and len(description["training"]) == 3
    for item in description["training"]:
        converted = nib.load(item["image"])  # every format becomes NIfTI with its geometry
        assert converted.shape == SHAPE
        assert np.allclose(converted.header.get_zooms()[:3], spacing, atol=1e-4)
    dicom = next(i for i in description["training"] if "case_dicom" in i["image"])
    assert np.allclose(np.asarray(nib.load(dicom["image"]).dataobj), np.round(_volume(5)[0]), atol=0.5)


def test_every_problem_is_reported_with_its_case(tmp_path):
    root = make_synthetic_dataset(tmp_path / "bad", num_cases=6, shape=SHAPE, seed=0)
    images, labels = root / "imagesTr", root / "labelsTr"
    # 1: geometry mismatch (spacing), 2: undeclared label value, 3: corrupt image, 4: missing label, 5: size
    label = nib.load(labels / "synth_001.nii.gz")
    stretched = label.affine.copy()
    stretched[2, 2] = 1.5  # same origin and direction, another slice spacing
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), stretched), labels / "synth_001.nii.gz")
    values = np.asarray(nib.load(labels / "synth_002.nii.gz").dataobj).copy()
    values[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(values, nib.load(labels / "synth_002.nii.gz").affine), labels / "synth_002.nii.gz")
    data = (images / "synth_003.nii.gz").read_bytes()
    (images / "synth_003.nii.gz").write_bytes(data[: len(data) // 2])
    (labels / "synth_004.nii.gz").unlink()
    small = np.asarray(nib.load(labels / "synth_005.nii.gz").dataobj)[:-2]
    nib.save(nib.Nifti1Image(small, nib.load(labels / "synth_005.nii.gz").affine), labels / "synth_005.nii.gz")

    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "out")
    problems = err.value.problems
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "synth_001: label 'synth_001.nii.gz' has spacing (1, 1, 1.5), the image (1, 1, 1)" in text
    assert "synth_002: label" in text and "values [5] not among the declared labels [0, 1, 2]" in text
    assert "synth_003: image" in text and "cannot be read" in text
    assert "synth_004: label file" in text and "is missing" in text
    assert "synth_005: label 'synth_005.nii.gz' has size (14, 20, 12), the image 'synth_005.nii.gz' (16, 20, " \
           "12)" in text
    assert not (tmp_path / "out" / "dataset.json").exists()  # nothing written before the data set is sound


def test_unknown_layouts_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_raw_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json"):
        read_raw_dataset(tmp_path / "empty")
    shutil.copytree(tmp_path / "empty", tmp_path / "odd")
    (tmp_path / "odd" / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(DatasetError, match="neither the MSD layout"):
        read_raw_dataset(tmp_path / "odd")
