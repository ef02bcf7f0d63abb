"""Ingest, fingerprint and plan on subsets of the real development data in ``../shared/data`` (skipped without it):
BUSI (grey PNG, 0/255 masks, empty masks), Drishti-GS (RGB PNG, nested disc / cup regions), one CT with 117-class
labels (plain folder, no declared labels) and Task04 (MSD layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from medsa_monai.conversion import ingest
from medsa_monai.data.labels import LabelSpec
from medsa_monai.planning import compute_fingerprint, make_plan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LOAD = LoadImage(image_only=True, ensure_channel_first=True)


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real data '{path}' not available")
    return path


def _link_subset(source: Path, target: Path, names: list[str], labels: str) -> Path:
    """``target/images`` and ``target/<labels>`` with links to ``names`` of ``source``'s images and labels."""
    for folder in ("images", labels):
        (target / folder).mkdir(parents=True)
        for name in names:
            os.symlink(source / folder / name, target / folder / name)
    return target


def _assert_loads(description: dict, channels: int) -> list:
    """Every training case loads as (C, *spatial) with the label's spatial shape; returns the labels."""
    labels = []
    for item in description["training"]:
        image, label = LOAD(item["image"]), LOAD(item["label"])
        assert image.shape[0] == channels and label.shape[0] == 1 and image.shape[1:] == label.shape[1:], item
        labels.append(label)
    return labels


def test_busi_grey_png_with_empty_masks(tmp_path):
    source = _shared("BUSI")
    names = sorted(os.listdir(source / "images"))
    subset = [n for group in ("normal", "benign", "malignant") for n in [m for m in names if m.startswith(group)][:4]]
    root = _link_subset(source, tmp_path / "busi", subset, "masks")
    out = ingest(root, tmp_path / "out")
    description = json.loads(out.read_text())
    assert description["labels"] == {"0": "background", "255": "class_255"} and description["regions"] == {}
    assert description["spatial_dims"] == 2 and description["modality"] == {"0": "unknown"}
    assert description["medsa_ingest"]["image_format"] == "png" and description["numTraining"] == 12
    labels = _assert_loads(description, channels=1)
    empty = [Path(item["label"]).name for item, label in zip(description["training"], labels, strict=True)
             if not label.any()]
    assert empty and all(name.startswith("normal_") for name in empty)

    # fingerprint and plan: modules another engineer is changing for 2D data (issue 10); asserts on their keys
    fingerprint = compute_fingerprint(out)
    assert fingerprint["spatial_dims"] == 2 and fingerprint["channels"] == 1 and fingerprint["photographic_8bit"]
    plan = make_plan(fingerprint, sam_variant="vit_b", memory_gb=24)
    assert plan["configuration"] == "2d" and plan["in_channels"] == 1 and plan["num_classes"] == 2
    assert plan["normalization"][0]["scheme"] == "range"


def test_drishti_rgb_png_with_disc_and_cup_regions(tmp_path):
    source = _shared("Fundus/DrishtiGS")
    names = sorted(os.listdir(source / "images"))[:6]
    root = _link_subset(source, tmp_path / "drishti", names, "labels")
    out = ingest(root, tmp_path / "out", labels={0: "background", 1: "rim", 2: "cup"}, regions="disc=1,2;cup=2")
    description = json.loads(out.read_text())
    assert description["labels"] == {"0": "background", "1": "rim", "2": "cup"}
    assert description["regions"] == {"disc": [1, 2], "cup": [2]} and description["regions_class_order"] == [1, 2]
    assert description["modality"] == {"0": "R", "1": "G", "2": "B"} and description["spatial_dims"] == 2
    spec = LabelSpec.from_description(description)
    assert spec.region_names == ("disc", "cup") and spec.regions == ((1, 2), (2,))
    labels = _assert_loads(description, channels=3)
    assert set(np.unique(np.concatenate([label.numpy().ravel() for label in labels]))) == {0, 1, 2}

    # fingerprint and plan: modules another engineer is changing for 2D data (issue 10); asserts on their keys
    fingerprint = compute_fingerprint(out)
    assert fingerprint["channels"] == 3 and fingerprint["cases_with_region"] == {"disc": 6, "cup": 6}
    plan = make_plan(fingerprint, sam_variant="vit_b", memory_gb=24)
    assert plan["has_regions"] and plan["class_names"] == ["disc", "cup"] and plan["in_channels"] == 3


def test_ct_plain_folder_declares_exactly_the_label_values_present(tmp_path):
    source = _shared("CT_example")
    root = tmp_path / "ct"
    for folder, name in (("images", "example_ct_sm.nii.gz"), ("labels", "example_seg.nii.gz")):
        (root / folder).mkdir(parents=True)
        os.symlink(source / name, root / folder / "abdomen.nii.gz")
    out = ingest(root, tmp_path / "out", modality="CT")
    description = json.loads(out.read_text())
    present = np.unique(np.asarray(nib.load(source / "example_seg.nii.gz").dataobj)).astype(int).tolist()
    assert [int(v) for v in description["labels"]] == present
    assert description["labels"]["0"] == "background" and description["labels"][str(present[-1])] == \
        f"class_{present[-1]}"
    assert description["spatial_dims"] == 3 and description["modality"] == {"0": "CT"}
    assert description["training"] == [{"image": str(root / "images" / "abdomen.nii.gz"),
                                         "label": str(root / "labels" / "abdomen.nii.gz"), "case": "abdomen"}]
    _assert_loads(description, channels=1)

    fingerprint = compute_fingerprint(out)
    assert fingerprint["spatial_dims"] == 3 and fingerprint["median_spacing"] == [3.0, 3.0, 3.0]
    plan = make_plan(fingerprint, sam_variant="vit_b", memory_gb=24)
    assert plan["num_classes"] == len(present) and plan["normalization"][0]["scheme"] == "ct"
    # CT's window from every foreground voxel (110,225 here), not from a sample: nnU-Net's [-995, 389]
    image = np.asarray(nib.load(source / "example_ct_sm.nii.gz").dataobj).astype(np.float64)
    foreground = image[np.asarray(nib.load(source / "example_seg.nii.gz").dataobj) > 0]
    statistics = fingerprint["foreground_intensity"][0]
    assert statistics["exact"] and foreground.size == 110_225
    assert statistics["percentile_00_5"] == np.percentile(foreground, 0.5) == -995.0
    assert statistics["percentile_99_5"] == pytest.approx(np.percentile(foreground, 99.5), abs=1e-9)
    assert round(statistics["percentile_99_5"]) == 390 and statistics["mean"] == pytest.approx(foreground.mean())


def test_task04_msd_subset(tmp_path):
    source = _shared("Task04_Hippocampus")
    original = json.loads((source / "dataset.json").read_text())
    root = tmp_path / "Task04"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    training = original["training"][:8]
    for item in training:
        for key in ("image", "label"):
            os.symlink(source / item[key], root / item[key])
    (root / "dataset.json").write_text(json.dumps({**original, "training": training, "numTraining": 8}))
    out = ingest(root, tmp_path / "out")
    description = json.loads(out.read_text())
    assert description["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert description["modality"] == {"0": "MRI"} and description["spatial_dims"] == 3
    assert description["medsa_ingest"] == {"source": str(root), "layout": "msd", "image_format": "nifti"}
    _assert_loads(description, channels=1)

    fingerprint = compute_fingerprint(out)
    assert fingerprint["num_cases"] == 8 and fingerprint["median_spacing"] == [1.0, 1.0, 1.0]
    plan = make_plan(fingerprint, sam_variant="vit_b", memory_gb=24)
    assert plan["spatial_dims"] == 3 and plan["num_classes"] == 3 and plan["normalization"][0]["scheme"] == "zscore"
