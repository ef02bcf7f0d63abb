"""Ingest: MSD, nnU-Net v2 and plain-folder layouts; NIfTI, NRRD, MHA, DICOM series, 2D photographs (PNG, JPEG, BMP,
TIFF) and vector-pixel images; labels with gaps, regions; every problem reported with its case and file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.conversion import DatasetError, check_dataset, ingest, read_raw_dataset
from medsa_monai.data import make_synthetic_dataset
from medsa_monai.data.labels import LabelSpec

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
    root = make_synthetic_dataset(tmp_path / "bad", num_cases=7, shape=SHAPE, seed=0)
    images, labels = root / "imagesTr", root / "labelsTr"
    # 1: geometry mismatch (spacing), 2: undeclared label value, 3: corrupt image, 4: missing label, 5: size, 6: NaN
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
    nan = nib.load(images / "synth_006.nii.gz")
    values = np.asarray(nan.dataobj, dtype=np.float32).copy()
    values[1, 2, 3], values[2, 2, 2] = np.nan, np.inf
    nib.save(nib.Nifti1Image(values, nan.affine), images / "synth_006.nii.gz")

    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "out")
    problems = err.value.problems
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "synth_001: label 'synth_001.nii.gz' has spacing (1, 1, 1.5), the image (1, 1, 1)" in text
    assert "synth_002: label" in text and "values [5] not among the declared labels [0, 1, 2]" in text
    assert "synth_003: image" in text and "cannot be read" in text
    assert "synth_004: label file" in text and "is missing" in text
    assert "synth_005: label 'synth_005.nii.gz' has size (14, 20, 12), the image 'synth_005.nii.gz' (16, 20, " \
           "12)" in text
    assert "synth_006: image" in text and "synth_006.nii.gz' holds 1 NaN and 1 infinite value(s)" in text
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


# -- 2D images, vector pixels, labels and regions ------------------------------------------------------------------

LOAD = LoadImage(image_only=True, ensure_channel_first=True)


def _disc(height: int, width: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def _assert_loads(description: dict, channels: int) -> None:
    """Every training case loads with MONAI as (C, *spatial) with the label's spatial shape."""
    for item in description["training"]:
        image, label = LOAD(item["image"]), LOAD(item["label"])
        assert image.shape[0] == channels and label.shape[0] == 1, (item, image.shape, label.shape)
        assert image.shape[1:] == label.shape[1:], (item, image.shape, label.shape)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_png_grey_images_with_binary_masks_in_masks_folder(tmp_path, umask_022):
    root = tmp_path / "us"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.RandomState(0)
    for i in range(5):
        height, width = 30 + i, 40
        image = rng.randint(0, 256, (height, width)).astype(np.uint8)
        mask = _disc(height, width, (15, 20), 6) if i < 3 else np.zeros((height, width), bool)  # 2 empty masks
        Image.fromarray(image).save(root / "images" / f"case_{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"case_{i}.png")

    out = ingest(root, tmp_path / "out")
    description = json.loads(out.read_text())
    assert description["labels"] == {"0": "background", "255": "class_255"}  # the values found, not remapped
    assert description["regions"] == {} and description["regions_class_order"] == []
    assert description["spatial_dims"] == 2 and description["tensorImageSize"] == "2D"
    assert description["modality"] == {"0": "unknown"} and description["numTraining"] == 5
    assert description["medsa_ingest"]["image_format"] == "png" and description["medsa_ingest"]["layout"] == "folder"
    first = description["training"][0]
    assert first == {"image": str(root / "images" / "case_0.png"), "label": str(root / "masks" / "case_0.png"),
                     "case": "case_0"}
    assert not (tmp_path / "out" / "nifti").exists()  # photographs stay where they are
    _assert_loads(description, channels=1)
    assert LOAD(description["training"][1]["label"]).shape == (1, 40, 31)  # PILReader: (C, W, H)
    assert _mode(out) == 0o644  # follows the umask
    assert LabelSpec.from_description(description) == LabelSpec((0, 255), ("background", "class_255"))


def test_jpeg_rgb_images_with_png_masks_and_regions_from_the_command_line(tmp_path, capsys):
    root = tmp_path / "fundus"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.RandomState(1)
    for i in range(3):
        image = rng.randint(0, 256, (32, 48, 3)).astype(np.uint8)
        label = _disc(32, 48, (16, 24), 10).astype(np.uint8) + _disc(32, 48, (16, 24), 4)  # rim 1, cup 2
        Image.fromarray(image).save(root / "images" / f"eye_{i}.jpg")
        Image.fromarray(label).save(root / "labels" / f"eye_{i}.png")

    main(["ingest", str(root), str(tmp_path / "out"), "--regions", "disc=1,2;cup=2"])
    assert "3 training and 0 test cases, 2D" in capsys.readouterr().out
    description = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert description["labels"] == {"0": "background", "1": "class_1", "2": "class_2"}
    assert description["regions"] == {"disc": [1, 2], "cup": [2]} and description["regions_class_order"] == [1, 2]
    assert description["modality"] == {"0": "R", "1": "G", "2": "B"}
    assert description["medsa_ingest"]["image_format"] == "jpeg"
    spec = LabelSpec.from_description(description)
    assert spec == LabelSpec((0, 1, 2), ("background", "class_1", "class_2"), ((1, 2), (2,)), ("disc", "cup"),
                             (1, 2))
    assert spec.to_description() == {k: description[k] for k in ("labels", "regions", "regions_class_order")}
    _assert_loads(description, channels=3)
    label = LOAD(description["training"][0]["label"])
    assert torch.equal(spec.to_label_map(spec.to_target(label)), label.long())  # the regions paint back the labels

    main(["ingest", str(root), str(tmp_path / "named"), "--modality", "fundus", "--labels",
          '{"0": "background", "1": "rim", "2": "cup"}'])
    named = json.loads((tmp_path / "named" / "dataset.json").read_text())
    assert named["modality"] == {"0": "fundus", "1": "fundus", "2": "fundus"}
    assert named["labels"] == {"0": "background", "1": "rim", "2": "cup"}
    with pytest.raises(DatasetError, match=r"region 'cup' \[3\]: values \[3\] are not foreground label values"):
        ingest(root, tmp_path / "bad", regions="disc=1,2;cup=3")
    with pytest.raises(SystemExit):
        main(["ingest", str(root), str(tmp_path / "bad"), "--regions", "disc=1,2;cup=2", "--regions-class-order",
              "2,1"])
    assert "painting {'disc': 2, 'cup': 1} in order turns label value 1 into 2" in capsys.readouterr().err
    with pytest.raises(DatasetError, match=r"turns label value 2 into 1, which is in other regions"):
        ingest(root, tmp_path / "bad", regions="cup=2;disc=1,2")  # inner first: no order paints both back
    with pytest.raises(DatasetError, match=r"modality: 2 channel name\(s\) \['T1', 'T2'\] for images of 3"):
        ingest(root, tmp_path / "bad", modality="T1,T2")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("ending, shape", [(".nii.gz", (24, 18)), (".mha", (12, 10, 6))])
def test_vector_pixel_images_are_split_into_one_nifti_per_channel(tmp_path, umask_022, ending, shape):
    root = tmp_path / "rgb"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.RandomState(2)
    colours = []
    for i in range(2):
        colour = rng.randint(0, 256, (*shape[::-1], 3)).astype(np.uint8)  # SimpleITK arrays are ([z,] y, x, c)
        image = sitk.GetImageFromArray(colour, isVector=True)
        image.SetSpacing([0.5] * len(shape))
        label = sitk.GetImageFromArray((colour[..., 0] > 128).astype(np.uint8))
        label.CopyInformation(image)
        sitk.WriteImage(image, str(root / "images" / f"c{i}{ending}"))
        sitk.WriteImage(label, str(root / "labels" / f"c{i}{ending}"))
        colours.append(colour)

    description = json.loads(ingest(root, tmp_path / "out").read_text())
    assert description["spatial_dims"] == len(shape) and description["medsa_ingest"]["image_format"] == "nifti"
    assert description["modality"] == {"0": "unknown", "1": "unknown", "2": "unknown"}
    files = description["training"][1]["image"]
    assert [Path(f).name for f in files] == [f"c1_{c:04d}.nii.gz" for c in range(3)]
    assert all(Path(f).parent == tmp_path / "out" / "nifti" / "imagesTr" and _mode(Path(f)) == 0o644 for f in files)
    _assert_loads(description, channels=3)
    image = LOAD(files)
    assert image.shape == (3, *shape)
    expected = np.moveaxis(colours[1], -1, 0).transpose(0, *range(len(shape), 0, -1))  # (c, x, y[, z])
    assert np.array_equal(image.numpy(), expected)
    assert np.allclose(nib.load(files[0]).header.get_zooms()[: len(shape)], 0.5)


def test_2d_mha_converted_and_2d_nifti_kept(tmp_path):
    root = tmp_path / "xray"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    image, label = _volume(0, (20, 16, 1))
    mha = sitk.GetImageFromArray(image[..., 0].T.copy())
    mha.SetSpacing((0.2, 0.3))
    mha_label = sitk.GetImageFromArray(label[..., 0].T.copy())
    mha_label.CopyInformation(mha)
    sitk.WriteImage(mha, str(root / "images" / "a.mha"))
    sitk.WriteImage(mha_label, str(root / "labels" / "a.mha"))
    nib.save(nib.Nifti1Image(image[..., 0], np.diag([0.2, 0.3, 1, 1])), root / "images" / "b.nii.gz")
    nib.save(nib.Nifti1Image(label[..., 0], np.diag([0.2, 0.3, 1, 1])), root / "labels" / "b.nii.gz")

    description = json.loads(ingest(root, tmp_path / "out", modality="XR").read_text())
    assert description["spatial_dims"] == 2 and description["modality"] == {"0": "XR"}
    a, b = description["training"]
    assert a == {"image": str(tmp_path / "out" / "nifti" / "imagesTr" / "a_0000.nii.gz"),
                 "label": str(tmp_path / "out" / "nifti" / "labelsTr" / "a.nii.gz"), "case": "a"}
    assert b == {"image": str(root / "images" / "b.nii.gz"), "label": str(root / "labels" / "b.nii.gz"), "case": "b"}
    _assert_loads(description, channels=1)
    converted = nib.load(a["image"])
    assert converted.shape == (20, 16) and np.allclose(converted.header.get_zooms(), (0.2, 0.3))
    assert np.allclose(np.asarray(converted.dataobj), image[..., 0])

    Image.fromarray(image[..., 0].T.astype(np.uint8)).save(root / "images" / "c.png")  # a photograph among them
    Image.fromarray(label[..., 0].T.copy()).save(root / "labels" / "c.png")
    volume, volume_label = _volume(1)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "images" / "d.nii.gz")  # and a volume
    nib.save(nib.Nifti1Image(volume_label, np.eye(4)), root / "labels" / "d.nii.gz")
    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "mixed")
    assert err.value.problems == ["d: image(s) 'd.nii.gz' are 3D, 3 of 4 cases 2D",
                                  "c: image(s) 'c.png' are photographs, 3 of 4 cases volumes (PNG, JPEG, BMP, TIFF "
                                  "are scaled otherwise than volumes): convert them to one kind"]


def test_problems_of_2d_images_name_their_case_and_file(tmp_path):
    root = tmp_path / "bad2d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "lesion"}))
    rng = np.random.RandomState(3)
    mask = _disc(20, 30, (10, 15), 5).astype(np.uint8)
    for name in ("ok_a", "ok_b", "ok_c", "nan", "undeclared", "truncated", "alpha", "rgb_mask", "fraction", "small"):
        Image.fromarray(rng.randint(0, 256, (20, 30)).astype(np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    Image.fromarray(rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)).save(root / "images" / "colour.png")
    Image.fromarray(mask).save(root / "masks" / "colour.png")
    float_image = rng.rand(20, 30).astype(np.float32)
    float_image[3, 4] = np.nan
    (root / "images" / "nan.png").unlink()
    Image.fromarray(float_image).save(root / "images" / "nan.tif")  # a float TIFF (PIL mode F) with a NaN
    Image.fromarray(mask * 3).save(root / "masks" / "undeclared.png")
    data = (root / "images" / "truncated.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(rng.randint(0, 256, (20, 30, 4)).astype(np.uint8), "RGBA").save(root / "images" / "alpha.png")
    Image.fromarray(np.stack([mask] * 3, -1)).save(root / "masks" / "rgb_mask.png")
    Image.fromarray(mask.astype(np.float32) / 2).save(root / "masks" / "fraction.tif")
    (root / "masks" / "fraction.png").unlink()
    Image.fromarray(mask[:-2]).save(root / "masks" / "small.png")
    Image.fromarray(mask).save(root / "masks" / "orphan.png")

    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "out")
    problems = err.value.problems
    text = "\n".join(problems)
    expected = {
        "nan": "nan.tif' holds 1 NaN and 0 infinite value(s)",
        "undeclared": "undeclared.png' has values [3] not among the declared labels [0, 1]",
        "truncated": "truncated.png' cannot be read",
        "alpha": "alpha.png' cannot be read (the image has an alpha channel (PIL mode RGBA) that is not opaque",
        "rgb_mask": "rgb_mask.png' has several components (PIL mode RGB)",
        "fraction": "fraction.tif' has non-integer values (e.g. 0.5)",
        "small": "label 'small.png' has size (30, 18), the image 'small.png' (30, 20)",
        "colour": "image(s) 'colour.png' have 3 channel(s), 8 of 9 cases have 1",
        "orphan": "orphan.png' has no image in images/",
    }
    for case, message in expected.items():
        assert any(p.startswith(f"{case}: ") and message in p for p in problems), (case, text)
    assert len(problems) == len(expected), text
    assert ".save(" not in text  # never advice to overwrite the user's own files
    assert not (tmp_path / "out").exists()


def test_opaque_rgba_photographs_are_read_as_rgb(tmp_path, caplog, monkeypatch):
    """As the DSB2018 nuclei images are published: RGBA PNG whose alpha is 255 everywhere."""
    monkeypatch.setattr("medsa_monai.data.loading._told", False)  # said once per process
    root = tmp_path / "rgba"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.RandomState(4)
    pixels = {}
    for name in ("a", "b", "c"):
        pixels[name] = rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)
        rgba = np.concatenate([pixels[name], np.full((20, 30, 1), 255, np.uint8)], -1)
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"{name}.png")
        Image.fromarray(_disc(20, 30, (10, 15), 5).astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    with caplog.at_level("INFO"):
        description = json.loads(ingest(root, tmp_path / "out").read_text())
    assert description["modality"] == {"0": "R", "1": "G", "2": "B"}  # three channels: RGB photographs
    assert "opaque alpha channel" in caplog.text
    from medsa_monai.data import LoadImaged

    loaded = LoadImaged("image", image_only=True)({"image": str(root / "images" / "a.png")})["image"]
    assert tuple(loaded.shape) == (30, 20, 3)  # PILReader's (x, y, c): three channels, the alpha dropped
    np.testing.assert_array_equal(np.asarray(loaded).transpose(1, 0, 2), pixels["a"])
    from medsa_monai.planning import compute_fingerprint

    assert compute_fingerprint(tmp_path / "out" / "dataset.json")["channels"] == 3  # the plan reads them as RGB


def test_an_image_far_smaller_than_the_rest_is_named_in_a_warning(tmp_path, caplog):
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, (height, width) in {"a": (286, 382), "b": (280, 380), "c": (290, 384), "tiny": (1, 1)}.items():
        Image.fromarray(np.full((height, width), 90, np.uint8)).save(root / "images" / f"{name}.png")
        mask = np.zeros((height, width), np.uint8)
        mask[height // 3: max(height // 3 + 1, height // 2), width // 3: max(width // 3 + 1, width // 2)] = 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    with caplog.at_level("WARNING"):
        ingest(root, tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records if "far smaller" in r.getMessage()]
    assert lines == ["tiny: its image is 1 x 1, far smaller than the data set's median 381 x 283 (a thumbnail or a "
                     "damaged export?)"]


def test_a_header_claiming_too_much_is_refused_before_reading(tmp_path, monkeypatch):
    import gzip

    from medsa_monai.data import LoadImaged

    header = nib.Nifti1Header()
    header.set_data_shape((10000, 10000, 10000))
    header.set_data_dtype(np.float32)
    huge = tmp_path / "huge.nii.gz"
    with gzip.open(huge, "wb") as out:
        out.write(header.binaryblock + b"\0" * 4)
    assert huge.stat().st_size < 200
    with pytest.raises(ValueError, match=r"huge.nii.gz': its header claims 10000 x 10000 x 10000 voxels "
                                         r"\(1,000,000,000,000, 3,725.3 GiB\), more than the 2,147,483,648"):
        LoadImaged("image")({"image": str(huge)})
    small = nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4))
    truncated = tmp_path / "truncated.nii"
    nib.save(small, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated.nii' is truncated: its header claims 20 x 20 x 20 voxels of "
                                         r"float32 \(32,352 bytes with the header\), the file holds 1,000 bytes"):
        LoadImaged("image")({"image": str(truncated)})
    monkeypatch.setenv("MEDSA_MAX_VOXELS", "100")
    root = tmp_path / "data"
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
        nib.save(small, root / folder / "a.nii.gz")
    with pytest.raises(DatasetError, match=r"a.nii.gz': its header claims 20 x 20 x 20 voxels \(8,000"):
        ingest(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_transparency_is_refused_naming_the_file(tmp_path):
    """Dropping an alpha that is not opaque would change what the image shows; no other reader may take it either
    (ITK reads it as a fourth channel)."""
    root = tmp_path / "transparent"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, alpha in (("a", 255), ("b", 128)):
        rgba = np.full((20, 30, 4), alpha, np.uint8)
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"{name}.png")
        Image.fromarray(_disc(20, 30, (10, 15), 5).astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "out")
    problems = "\n".join(err.value.problems)
    assert "b.png" in problems and "not opaque" in problems and "a.png" not in problems
    from medsa_monai.data import LoadImaged

    with pytest.raises(ValueError, match=r"cannot read .*b\.png.*alpha from 128 to 128.*into another folder"):
        LoadImaged("image")({"image": str(root / "images" / "b.png")})


def test_why_no_training_case_was_found(tmp_path):
    def problems_of(root: Path) -> str:
        with pytest.raises(DatasetError) as err:
            ingest(root, tmp_path / "out")
        return "\n".join(err.value.problems)

    gifs = tmp_path / "gifs"
    (gifs / "images").mkdir(parents=True)
    (gifs / "masks").mkdir()
    for name in ("a.gif", "b.gif", "notes.txt"):
        (gifs / "images" / name).write_bytes(b"x")
    assert ("no training cases found: images/ holds 3 file(s) (.gif, .txt), none in a supported format (.nii.gz, "
            in problems_of(gifs))
    no_masks = tmp_path / "no_masks"
    (no_masks / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(no_masks / "images" / "a.png")
    assert "no training cases found: no labels/ or masks/ folder beside images/" in problems_of(no_masks)
    renamed = tmp_path / "renamed"
    shutil.copytree(no_masks, renamed)
    (renamed / "masks").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(renamed / "masks" / "a_mask.png")
    text = problems_of(renamed)
    assert "no training cases found: none of the 1 image(s) has a label of the same case name in masks/" in text
    assert "a: image 'a.png' has no label in masks/" in text and "a_mask: label" in text
    both = tmp_path / "both"
    shutil.copytree(renamed, both)
    (both / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(both / "labels" / "a.png")
    assert "both labels/ and masks/ hold files" in problems_of(both)


def test_labels_found_are_exactly_the_values_present(tmp_path):
    # Reading the values through a NumPy view of a freed SimpleITK image gave values that were never in the files
    root = tmp_path / "many"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.RandomState(4)
    present = set()
    for i in range(20):
        label = rng.randint(0, 8, (24, 24, 16)).astype(np.uint8)
        label[label == 5] = 6  # a gap: 5 is never present
        present |= set(np.unique(label).tolist())
        nib.save(nib.Nifti1Image(rng.rand(24, 24, 16).astype(np.float32), np.eye(4)), root / "images" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / f"c{i}.nii.gz")
    for _ in range(3):
        description = json.loads(ingest(root, tmp_path / "out").read_text())
        assert [int(v) for v in description["labels"]] == sorted(present) == [0, 1, 2, 3, 4, 6, 7]
    dataset = read_raw_dataset(root, labels={v: f"l{v}" for v in present})
    assert check_dataset(dataset) == []


def test_label_values_with_gaps_are_declared_as_they_are(tmp_path):
    root = tmp_path / "brats_like"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(2):
        image, label = _volume(i)
        label[label == 2] = 4
        label[2:4, 5:8, 3:5] = 2
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "images" / f"b{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / f"b{i}.nii.gz")
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "edema", "2": "necrosis", "4": "enhancing"}))
    description = json.loads(ingest(root, tmp_path / "out").read_text())
    assert description["labels"] == {"0": "background", "1": "edema", "2": "necrosis", "4": "enhancing"}
    assert description["training"][0]["label"] == str(root / "labels" / "b0.nii.gz")  # not remapped, not copied
    spec = LabelSpec.from_description(description)
    assert spec.values == (0, 1, 2, 4) and spec.num_outputs == 4


def _nnunet_regions(root: Path) -> dict:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(2):
        image, label = _volume(i)
        label[label == 2] = 4
        label[2:4, 5:8, 3:5] = 2
        for c in range(2):
            nib.save(nib.Nifti1Image(image + c, np.eye(4)), root / "imagesTr" / f"brats_{i:03d}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"brats_{i:03d}.nii.gz")
    description = {"channel_names": {"0": "T1", "1": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": 2,
                   "labels": {"background": 0, "whole": [1, 2, 4], "core": [2, 4], "enhancing": [4]},
                   "regions_class_order": [1, 2, 4]}
    (root / "dataset.json").write_text(json.dumps(description))
    return description


def test_nnunet_regions_are_accepted(tmp_path):
    source = _nnunet_regions(tmp_path / "Dataset137_Toy")
    description = json.loads(ingest(tmp_path / "Dataset137_Toy", tmp_path / "out").read_text())
    assert description["labels"] == {"0": "background", "1": "label_1", "2": "label_2", "4": "label_4"}
    assert description["regions"] == {"whole": [1, 2, 4], "core": [2, 4], "enhancing": [4]}
    assert description["regions_class_order"] == [1, 2, 4] and description["modality"] == {"0": "T1", "1": "FLAIR"}
    assert LabelSpec.from_description(description) == LabelSpec.from_description(source)
    assert description["training"][0]["image"][1].endswith("brats_000_0001.nii.gz")
    _assert_loads(description, channels=2)


def test_nnunet_2d_png_with_an_rgb_file_or_channel_files(tmp_path):
    root = tmp_path / "Dataset120_Roads"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.RandomState(5)
    for i in range(2):
        Image.fromarray(rng.randint(0, 256, (16, 20, 3)).astype(np.uint8)).save(root / "imagesTr" / f"r{i}_0000.png")
        Image.fromarray((rng.rand(16, 20) > 0.5).astype(np.uint8)).save(root / "labelsTr" / f"r{i}.png")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                   "labels": {"background": 0, "road": 1}, "file_ending": ".png"}))
    description = json.loads(ingest(root, tmp_path / "out").read_text())
    assert description["training"][0]["image"] == str(root / "imagesTr" / "r0_0000.png")  # one RGB file, 3 channels
    assert description["spatial_dims"] == 2 and description["labels"] == {"0": "background", "1": "road"}
    _assert_loads(description, channels=3)

    Image.fromarray(rng.randint(0, 256, (16, 20)).astype(np.uint8)).save(root / "imagesTr" / "r1_0000.png")
    with pytest.raises(DatasetError) as err:
        ingest(root, tmp_path / "out2")
    assert err.value.problems == ["r1: channel file(s) ['r1_0001.png', 'r1_0002.png'] missing"]
