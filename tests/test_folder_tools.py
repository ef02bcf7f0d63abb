"""Folder evaluation, ensembling and largest-component post-processing on hand-made label maps."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsa_monai.data import save_probabilities
from medsa_monai.evaluation.folder import evaluate_folder
from medsa_monai.prediction import ensemble_folders
from medsa_monai.prediction.postprocessing import apply_postprocessing, determine_postprocessing, largest_component

AFFINE = np.diag([2.0, 1.0, 1.0, 1.0])


def _save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)


def test_evaluate_folder_nnunet_layout(tmp_path):
    ref = np.zeros((10, 10, 4), dtype=np.uint8)
    ref[2:6, 2:6, :2] = 1  # 32 voxels
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, :1] = 1  # 16 voxels, all right
    _save(tmp_path / "ref" / "a.nii.gz", ref)
    _save(tmp_path / "pred" / "a_seg.nii.gz", pred)  # the bundles' naming is accepted
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", {0: "bg", 1: "one", 2: "two"},
                              tmp_path / "summary.json")
    case = summary["metric_per_case"][0]["metrics"]
    assert case["1"]["TP"] == 16 and case["1"]["FN"] == 16 and case["1"]["FP"] == 0 and case["1"]["TN"] == 400 - 32
    assert case["1"]["Dice"] == pytest.approx(32 / 48) and case["1"]["n_ref"] == 32
    assert np.isnan(case["2"]["Dice"])  # absent from both: not a zero
    assert summary["mean"]["1"]["Dice"] == pytest.approx(2 / 3)
    assert summary["foreground_mean"]["Dice"] == pytest.approx(2 / 3)  # the NaN class is left out
    assert json.loads((tmp_path / "summary.json").read_text())["class_names"] == {"1": "one", "2": "two"}


def test_evaluate_folder_errors_name_the_case(tmp_path):
    _save(tmp_path / "ref" / "a.nii.gz", np.zeros((4, 4, 4)))
    _save(tmp_path / "ref" / "b.nii.gz", np.zeros((4, 4, 4)))
    _save(tmp_path / "pred" / "a.nii.gz", np.zeros((4, 4, 3)))
    with pytest.raises(FileNotFoundError, match="have no prediction.*: b"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", {1: "x"})
    _save(tmp_path / "pred" / "b.nii.gz", np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="case 'a'.*shape \\(4, 4, 3\\)"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", {1: "x"})


def test_ensemble_averages_probabilities(tmp_path):
    rng = np.random.RandomState(0)
    probs = [rng.dirichlet([1, 1, 1], size=(4, 5, 3)).transpose(3, 0, 1, 2) for _ in range(3)]
    for i, p in enumerate(probs):
        save_probabilities(tmp_path / f"m{i}" / "case.npz", p, AFFINE)
    ensemble_folders([tmp_path / f"m{i}" for i in range(3)], tmp_path / "out")
    with np.load(tmp_path / "out" / "case.npz") as saved:
        assert np.allclose(saved["probabilities"], np.mean(probs, axis=0), atol=2e-3)
    labels = nib.load(tmp_path / "out" / "case.nii.gz")
    assert np.allclose(labels.affine, AFFINE)
    assert np.array_equal(np.asarray(labels.dataobj), np.mean(probs, axis=0).argmax(0))
    save_probabilities(tmp_path / "m3" / "other.npz", probs[0], AFFINE)
    with pytest.raises(FileNotFoundError, match="same cases"):
        ensemble_folders([tmp_path / "m0", tmp_path / "m3"], tmp_path / "bad")


def test_largest_component_rules_decided_from_cross_validation(tmp_path):
    reference = np.zeros((20, 20, 3), dtype=np.uint8)
    reference[2:8, 2:8] = 1
    reference[12:18, 12:14] = 2
    reference[12:18, 16:18] = 2  # class 2 is truly two pieces
    prediction = reference.copy()
    prediction[15:17, 2:4] = 1  # a false island of class 1: removing it helps
    for case in ("a", "b"):
        _save(tmp_path / "ref" / f"{case}.nii.gz", reference)
        _save(tmp_path / "cv" / f"{case}.nii.gz", prediction)
    rules = determine_postprocessing(tmp_path / "cv", tmp_path / "ref", {0: "bg", 1: "one", 2: "two"},
                                     tmp_path / "rules.json")
    assert rules["largest_component_classes"] == [1]
    assert rules["classes"]["1"]["dice_after"] == 1.0 > rules["classes"]["1"]["dice_before"]
    assert rules["classes"]["2"]["dice_after"] < rules["classes"]["2"]["dice_before"] == 1.0
    apply_postprocessing(tmp_path / "cv", tmp_path / "final", tmp_path / "rules.json")
    assert np.array_equal(np.asarray(nib.load(tmp_path / "final" / "a.nii.gz").dataobj), reference)
    assert np.array_equal(largest_component(prediction.astype(np.int64), []), prediction)
