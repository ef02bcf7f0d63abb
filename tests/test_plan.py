"""Fingerprint, plan, normalisation, folds and the memory model, against hand computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, load_decathlon_datalist

from medsa_monai.data import make_synthetic_dataset
from medsa_monai.planning import (
    PlannedNormalized,
    assign_folds,
    compute_fingerprint,
    ingest,
    make_plan,
    memory_per_slice,
    saved_activation_bytes,
    target_spacing,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_TASK04 = ROOT.parent / "shared" / "data" / "Task04_Hippocampus"


def test_target_spacing_median_and_anisotropic_rule():
    # isotropic-ish: the median per axis
    assert target_spacing([[1, 1, 1], [1, 1, 2], [2, 1, 3]], [[100] * 3] * 3) == [1.0, 1.0, 2.0]
    # thick slices (5 mm vs 0.8 mm) and few of them (40 vs 512): the 10th percentile of the slice spacings
    spacings = [[0.8, 0.8, 5.0]] * 5 + [[0.8, 0.8, 2.5]] * 5
    shapes = [[512, 512, 40]] * 10
    expected = float(np.percentile([5.0] * 5 + [2.5] * 5, 10))
    assert target_spacing(spacings, shapes)[2] == pytest.approx(expected) == pytest.approx(2.5)
    # thick slices but many of them: the median stays
    assert target_spacing(spacings, [[64, 64, 200]] * 10)[2] == pytest.approx(3.75)


def _fingerprint(tmp_path, modality="MRI", shape=(16, 20, 12)):
    root = make_synthetic_dataset(tmp_path / "data", num_cases=5, shape=shape, seed=1)
    description = json.loads((root / "dataset.json").read_text())
    description["modality"] = {"0": modality}
    (root / "dataset.json").write_text(json.dumps(description))
    return compute_fingerprint(ingest(root, tmp_path / "ingested"), tmp_path / "fingerprint.json")


def test_fingerprint_matches_hand_computation(tmp_path):
    fp = _fingerprint(tmp_path)
    assert fp["num_cases"] == 5 and fp["spatial_dims"] == 3 and fp["channels"] == 1
    assert fp["median_spacing"] == [1.0, 1.0, 1.0] and fp["median_shape"] == [16.0, 20.0, 12.0]
    labels = [np.asarray(__import__("nibabel").load(p).dataobj) for p in
              sorted((tmp_path / "data" / "labelsTr").glob("*.nii.gz"))]
    counts = {v: sum(int((lab == v).sum()) for lab in labels) for v in (0, 1, 2)}
    assert fp["class_voxel_fraction"]["1"] == pytest.approx(counts[1] / sum(counts.values()))
    assert fp["cases_with_class"] == {"0": 5, "1": 5, "2": 5}
    stats = fp["foreground_intensity"][0]
    assert stats["percentile_00_5"] < stats["mean"] < stats["percentile_99_5"]
    assert json.loads((tmp_path / "fingerprint.json").read_text())["median_shape"] == [16.0, 20.0, 12.0]


def test_plan_values_and_normalisation(tmp_path):
    fp = _fingerprint(tmp_path)
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["pixdim"] == [1.0, 1.0, 1.0]
    assert plan["patch_size"] == [16, 24, 12]  # in-plane rounded up to multiples of 8, depth to 4
    assert plan["image_size"] == 96  # 4 x 24, a multiple of 16
    assert plan["batch_size"] == 2 and plan["num_classes"] == 3 and plan["class_names"] == ["head", "tail"]
    assert plan["normalization"] == [{"scheme": "zscore", "modality": "MRI", "nonzero": False}]
    ct = make_plan({**fp, "modality": {"0": "CT"}}, sam_variant="vit_tiny", memory_gb=8)
    stats = fp["foreground_intensity"][0]
    assert ct["normalization"][0] == {"scheme": "ct", "modality": "CT", "clip": [stats["percentile_00_5"],
                                      stats["percentile_99_5"]], "mean": stats["mean"], "std": stats["std"]}


def test_memory_budget_shapes_the_plan(tmp_path):
    fp = _fingerprint(tmp_path, shape=(64, 64, 48))
    roomy = make_plan(fp, sam_variant="vit_b", memory_gb=80)
    tight = make_plan(fp, sam_variant="vit_b", memory_gb=3)
    assert roomy["batch_size"] == 2 and roomy["patch_size"][2] == 48
    assert tight["batch_size"] * tight["patch_size"][2] < roomy["batch_size"] * roomy["patch_size"][2] or \
        tight["image_size"] < roomy["image_size"]
    assert tight["memory"]["planned_train_gib"] <= 3
    with pytest.raises(ValueError, match="cannot train vit_h"):
        make_plan(fp, sam_variant="vit_h", memory_gb=1)


def test_planned_normalisation_by_hand():
    image = MetaTensor(torch.tensor([[[0.0, 10.0, 200.0, -50.0]], [[0.0, 1.0, 2.0, 3.0]]]), affine=torch.eye(4))
    schemes = [{"scheme": "ct", "clip": [0.0, 100.0], "mean": 40.0, "std": 20.0},
               {"scheme": "zscore", "nonzero": True}]
    out = PlannedNormalized("image", schemes)({"image": image})["image"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
    assert torch.allclose(out[0], torch.tensor([[-2.0, -1.5, 3.0, -2.0]]))
    nonzero = torch.tensor([1.0, 2.0, 3.0])
    assert out[1, 0, 0] == 0 and torch.allclose(out[1, 0, 1:], (nonzero - nonzero.mean()) / nonzero.std(
        unbiased=False))
    with pytest.raises(ValueError, match="2 channel"):
        PlannedNormalized("image", schemes)({"image": image[:1]})


def test_folds_are_disjoint_complete_stratified_and_seeded():
    rng = np.random.RandomState(0)
    classes = [[1] + ([2] if rng.rand() < 0.5 else []) for _ in range(40)]
    for i in (3, 11, 17, 25, 33):
        classes[i] = classes[i] + [3]  # a rare class in exactly five cases
    folds = assign_folds(classes, 5, seed=4)
    assert folds == assign_folds(classes, 5, seed=4) and folds != assign_folds(classes, 5, seed=5)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and len(folds) == 40
    assert sorted(np.bincount(folds).tolist()) == [8, 8, 8, 8, 8]
    for c in (1, 2, 3):
        assert {f for f, cs in zip(folds, classes, strict=True) if c in cs} == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="num_folds"):
        assign_folds(classes[:3], 5)


def test_shipped_task04_datalist():
    path = ROOT / "datalists" / "msd_task04_hippocampus.json"
    training = load_decathlon_datalist(str(path), True, "training", "/data/Task04_Hippocampus")
    names = [Path(d["image"]).name for d in training]
    assert len(names) == len(set(names)) == 260
    assert sorted(np.bincount([d["fold"] for d in training]).tolist()) == [52] * 5
    tests = json.loads(path.read_text())["test"]
    assert len(tests) == 130 and not {Path(t).name for t in tests} & set(names)
    if SHARED_TASK04.is_dir():
        assert {p.name for p in (SHARED_TASK04 / "imagesTr").glob("*.nii.gz")} <= set(names)


def test_saved_activation_bytes_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8, requires_grad=True)
    # Linear saves its input (5x8), ReLU its output (5x16), the second Linear its input (the same 5x16 tensor)
    assert saved_activation_bytes(model, x) == 4 * (5 * 8 + 5 * 16)


def test_memory_per_slice_grows_with_size_and_width():
    tiny_64 = memory_per_slice("vit_tiny", 64, trainable_parameters=0, total_parameters=0)
    tiny_128 = memory_per_slice("vit_tiny", 128, trainable_parameters=0, total_parameters=0)
    b_64 = memory_per_slice("vit_b", 64, trainable_parameters=0, total_parameters=0)
    fp32 = memory_per_slice("vit_tiny", 64, amp=False, trainable_parameters=0, total_parameters=0)
    assert 3.5 < tiny_128["train_bytes_per_slice"] / tiny_64["train_bytes_per_slice"] < 4.5  # tokens x 4
    assert b_64["train_bytes_per_slice"] > 3 * tiny_64["train_bytes_per_slice"]
    assert fp32["train_bytes_per_slice"] == pytest.approx(2 * tiny_64["train_bytes_per_slice"], rel=0.01)


@pytest.mark.skipif(not SHARED_TASK04.is_dir(), reason="../shared/data/Task04_Hippocampus is not present")
def test_real_task04_ingest_fingerprint_plan(tmp_path):
    dataset = ingest(SHARED_TASK04, tmp_path / "ingested")
    fp = compute_fingerprint(dataset)
    assert fp["num_cases"] == 200 and fp["median_spacing"] == [1.0, 1.0, 1.0]
    assert fp["cases_with_class"]["1"] == fp["cases_with_class"]["2"] == 200
    plan = make_plan(fp, sam_variant="vit_b", memory_gb=24)
    shapes = np.array(fp["shapes"])
    assert plan["pixdim"] == [1.0, 1.0, 1.0]
    assert plan["patch_size"][:2] == [int(np.ceil(np.median(shapes[:, a]) / 8) * 8) for a in (0, 1)]
    assert plan["normalization"][0]["scheme"] == "zscore" and plan["num_classes"] == 3
