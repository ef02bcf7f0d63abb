"""The pipeline on every kind of data set users bring: ``medsa ingest -> plan -> train (one epoch, vit_tiny) ->
predict -> evaluate``, each on a small synthetic data set of its kind.

- Task01-like: 4 modalities in 4D NIfTI, labels 0 / 1 / 2 / 4, trained as nested regions (whole, core, enhancing);
- Task05-like: 2 modalities, 0.6 x 0.6 x 3.6 mm with the thick axis first in the array;
- CT in Hounsfield units (CT normalisation), a plain folder of NIfTI files;
- 2D grey PNG with 0 / 255 masks in ``masks/``, some of them empty;
- 2D RGB PNG with nested regions (optic disc {1, 2} around the cup {2});
- nnU-Net v2 raw with two channel files per case.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.data import synthetic_case

TRAIN_SET = ["trainable=full", "sam_checkpoint=none", "max_epochs=1", "val_interval=1", "num_workers=0",
             "progress_bar=false", "calibration_cases=2"]
NUM_CASES = 6


def _volumes(shape, seed):
    rng = np.random.RandomState(seed)
    return [synthetic_case(shape, rng) for _ in range(NUM_CASES)]


def _msd(root: Path, cases, affine, modality: dict, labels: dict) -> None:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    training = []
    for i, (image, label) in enumerate(cases):
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": root.name, "modality": modality, "labels": labels,
                                                   "training": training, "test": []}))


def task01_like(root: Path) -> dict:
    cases = []
    for image, label in _volumes((16, 20, 12), 1):
        label = label.copy()
        label[(label == 2) & (np.arange(16)[:, None, None] < 8)] = 4  # enhancing part of the core
        channels = [image * (1 + 0.2 * c) + 10 * c for c in range(4)]
        cases.append((np.stack(channels, -1).astype(np.float32), label))
    _msd(root, cases, np.eye(4), {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"},
         {"0": "background", "1": "edema", "2": "non-enhancing", "4": "enhancing"})
    return {"source": root, "ingest": ["--regions", "whole=1,2,4;core=2,4;enhancing=4"], "images": root / "imagesTr",
            "labels": root / "labelsTr", "channels": 4, "outputs": ["whole", "core", "enhancing"],
            "values": {0, 1, 2, 4}}


def task05_like(root: Path) -> dict:
    cases = [(np.stack([image, 0.5 * image + 3], -1).astype(np.float32), label)
             for image, label in _volumes((8, 24, 20), 2)]
    _msd(root, cases, np.diag([3.6, 0.6, 0.6, 1.0]), {"0": "T2", "1": "ADC"},
         {"0": "background", "1": "PZ", "2": "TZ"})
    return {"source": root, "ingest": [], "images": root / "imagesTr", "labels": root / "labelsTr", "channels": 2,
            "outputs": ["1", "2"], "values": {0, 1, 2}, "slice_axis": 0}


def ct_folder(root: Path) -> dict:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for i, (image, label) in enumerate(_volumes((20, 20, 10), 3)):
        hounsfield = np.full(image.shape, -1000.0, dtype=np.float32)
        hounsfield[2:-2, 2:-2] = 40 + 0.3 * (image[2:-2, 2:-2] - 100)
        hounsfield[label == 1] += 120
        hounsfield[label == 2] -= 60
        nib.save(nib.Nifti1Image(hounsfield.astype(np.int16), affine), root / "images" / f"ct_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labels" / f"ct_{i}.nii.gz")
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "liver", "2": "spleen"}))
    return {"source": root, "ingest": ["--modality", "CT"], "images": root / "images", "labels": root / "labels",
            "channels": 1, "outputs": ["1", "2"], "values": {0, 1, 2}, "scheme": "ct"}


def _discs(h: int, w: int, rng: np.random.RandomState, count: int = 1):
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    radius = rng.uniform(0.2, 0.3) * min(h, w)
    distance = np.hypot(yy - cy, xx - cx)
    return distance < radius, distance < 0.5 * radius


def grey_png(root: Path) -> dict:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.RandomState(4)
    for i in range(NUM_CASES):
        h, w = 40 + 4 * i, 56  # sizes differ, as in BUSI
        lesion, _ = _discs(h, w, rng)
        if i % 3 == 2:  # a normal image: nothing to segment
            lesion[:] = False
        image = 120 + 20 * rng.standard_normal((h, w)) - 70 * lesion
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"us_{i}.png")
        Image.fromarray((lesion * 255).astype(np.uint8)).save(root / "masks" / f"us_{i}.png")
    return {"source": root, "ingest": [], "images": root / "images", "labels": root / "masks", "channels": 1,
            "outputs": ["255"], "values": {0, 255}, "png": True}


def rgb_nested(root: Path) -> dict:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.RandomState(5)
    for i in range(NUM_CASES):
        h, w = 48, 48 + 8 * (i % 2)
        disc, cup = _discs(h, w, rng)
        label = disc.astype(np.uint8) + cup.astype(np.uint8)  # 1 rim, 2 cup: the disc is {1, 2}
        image = np.stack([150 + 60 * disc + 30 * cup, 60 + 50 * disc + 60 * cup, 40 + 20 * disc], -1)
        image = image + 10 * rng.standard_normal(image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"fundus_{i}.png")
        Image.fromarray(label).save(root / "labels" / f"fundus_{i}.png")
    return {"source": root, "ingest": ["--regions", "disc=1,2;cup=2"], "images": root / "images",
            "labels": root / "labels", "channels": 3, "outputs": ["disc", "cup"], "values": {0, 1, 2}, "png": True,
            "scheme": "range"}


def nnunet_raw(root: Path) -> dict:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    for i, (image, label) in enumerate(_volumes((16, 16, 12), 6)):
        for c, channel in enumerate((image, np.sqrt(image))):
            path = root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz"
            nib.save(nib.Nifti1Image(channel.astype(np.float32), affine), path)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "sqrtT2"}, "labels": {"background": 0, "head": 1, "tail": 2},
        "numTraining": NUM_CASES, "file_ending": ".nii.gz"}))
    return {"source": root, "ingest": [], "images": root / "imagesTr", "labels": root / "labelsTr", "channels": 2,
            "outputs": ["1", "2"], "values": {0, 1, 2}}


KINDS = {"task01_like": task01_like, "task05_like": task05_like, "ct_folder": ct_folder, "grey_png": grey_png,
         "rgb_nested": rgb_nested, "nnunet_raw": nnunet_raw}


@pytest.mark.parametrize("kind", list(KINDS))
def test_ingest_plan_train_predict_evaluate(kind, tmp_path):
    data = KINDS[kind](tmp_path / "raw")
    ingested, plans = tmp_path / "ingested", tmp_path / "plans"
    main(["ingest", str(data["source"]), str(ingested), *data["ingest"]])
    main(["plan", str(ingested / "dataset.json"), "--output-dir", str(plans), "--sam-variant", "vit_tiny",
          "--memory-gb", "8", "--folds", "2"])
    plan = json.loads((plans / "plan.json").read_text())
    assert plan["in_channels"] == data["channels"]
    assert plan["spatial_dims"] == (2 if data.get("png") else 3)
    if "slice_axis" in data:
        assert plan["slice_axis"] == data["slice_axis"]
        assert plan["patch_size"][-1] == 8  # the thick axis (8 slices) is the network's depth
    if "scheme" in data:
        assert plan["normalization"][0]["scheme"] == data["scheme"]
    main(["train", "--plan", str(plans / "plan.json"), "--fold", "0", "--output", str(tmp_path / "runs"), "--set",
          *TRAIN_SET])
    model = tmp_path / "runs" / "fold_0" / "models" / "model.pt"
    assert model.is_file()

    predictions = tmp_path / "pred"
    main(["predict", "--model", str(model), "--input", str(data["images"]), "--output", str(predictions), "--plan",
          str(plans / "plan.json")])
    references = sorted(p for p in data["labels"].iterdir())
    for reference in references:
        predicted = predictions / reference.name  # named by case, in the reference's format
        assert predicted.is_file(), sorted(p.name for p in predictions.iterdir())
        if data.get("png"):
            pred, ref = np.asarray(Image.open(predicted)), np.asarray(Image.open(reference))
        else:
            pred_img, ref_img = nib.load(predicted), nib.load(reference)
            assert np.allclose(pred_img.affine, ref_img.affine)
            pred, ref = np.asarray(pred_img.dataobj), np.asarray(ref_img.dataobj)
        assert pred.shape == ref.shape
        assert set(np.unique(pred).tolist()) <= data["values"]

    main(["evaluate", "--pred", str(predictions), "--ref", str(data["labels"]), "--labels",
          str(ingested / "dataset.json")])
    summary = json.loads((predictions / "summary.json").read_text())
    assert sorted(summary["mean"]) == sorted(data["outputs"])
    assert len(summary["metric_per_case"]) == NUM_CASES
    for metrics in summary["mean"].values():
        assert metrics["Dice"] is None or 0.0 <= metrics["Dice"] <= 1.0
