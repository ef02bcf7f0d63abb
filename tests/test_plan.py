"""Fingerprint, plan, normalisation, folds and the memory model, against hand computation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, MetaTensor, PersistentDataset, load_decathlon_datalist
from monai.transforms import Transposed
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.conversion import ingest
from medsa_monai.data import make_synthetic_dataset, split_cases
from medsa_monai.planning import (
    PLAN_VERSION,
    assign_folds,
    case_identifier,
    compute_fingerprint,
    dataset_cache_estimate,
    load_plan,
    make_plan,
    memory_per_slice,
    saved_activation_bytes,
    slice_axis,
    slice_last_indices,
    target_spacing,
    write_fold_datalist,
)
from medsa_monai.planning.fingerprint import is_photographic_format
from medsa_monai.planning.memory import GIB
from medsa_monai.preprocessing import PlannedNormalized, make_dataset

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
    assert fp["photographic_8bit"] is False and fp["image_format"] in (None, "nifti")  # NIfTI, even 8-bit cases
    assert fp["labels"] == {"0": "background", "1": "head", "2": "tail"} and fp["regions"] == {}
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
    assert plan["label_values"] == [0, 1, 2] and plan["has_regions"] is False and plan["regions"] == {}
    assert plan["plan_version"] == PLAN_VERSION == 2 and plan["spatial_dims"] == 3
    assert plan["configuration"] == "3d" and plan["depth_attention"] is True
    assert plan["slice_axis"] == 2  # isotropic: the tie goes to the last axis
    assert plan["normalization"] == [{"scheme": "zscore", "modality": "MRI", "nonzero": False}]
    assert plan["intensity"] == "zscore" and plan["num_folds"] is None
    assert plan["dataset_cache"] == {"kind": "memory", "estimated_gib": 5 * 16 * 20 * 12 * (4 + 1) / GIB,
                                     "budget_gib": 8.0}
    ct = make_plan({**fp, "modality": {"0": "CT"}}, sam_variant="vit_tiny", memory_gb=8)
    stats = fp["foreground_intensity"][0]
    assert ct["normalization"][0] == {"scheme": "ct", "modality": "CT", "clip": [stats["percentile_00_5"],
                                      stats["percentile_99_5"]], "mean": stats["mean"], "std": stats["std"]}
    assert ct["intensity"] == "zscore"


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


def test_folds_follow_sorted_case_identifiers_not_the_listing_order():
    rng = np.random.RandomState(1)
    names = [f"benign_{i}" for i in range(1, 31)] + [f"malignant_{i}" for i in range(1, 11)]
    classes = {name: [0, 255] if rng.rand() < 0.8 else [0] for name in names}
    plain = sorted(names, key=lambda n: (n.split("_")[0], str(int(n.split("_")[1]))))  # benign_1, benign_10, ...
    nnunet = sorted(names, key=lambda n: f"{n}_0000")  # another listing of the same cases
    assert plain != nnunet
    folds = {}
    for listing in (plain, nnunet, list(reversed(names))):
        assigned = assign_folds([classes[n] for n in listing], 5, seed=0, case_ids=listing)
        folds[tuple(listing)] = dict(zip(listing, assigned, strict=True))
    first, *others = folds.values()
    assert all(other == first for other in others)
    assert sorted(np.bincount(list(first.values())).tolist()) == [8, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="name each of the 40 cases once"):
        assign_folds([classes[n] for n in names], 5, case_ids=names[:-1] + names[:1])
    items = [{"image": "/d/imagesTr/benign_3_0000.png", "label": "x", "case": "benign_3"},
             {"image": ["/d/a/case_7.nii.gz", "/d/a/case_7_b.nii.gz"], "label": "y"}]
    assert [case_identifier(item) for item in items] == ["benign_3", "case_7"]


def test_a_plain_folder_and_an_nnunet_folder_of_the_same_cases_get_the_same_folds(tmp_path):
    from medsa_monai.data import synthetic_case

    rng = np.random.RandomState(2)
    names = [f"case_{i}" for i in (1, 2, 10, 11, 100, 3, 20, 7)]  # listings differ: case_1, case_10, case_100, ...
    plain, nnunet = tmp_path / "plain", tmp_path / "nnunet"
    for folder in (plain / "images", plain / "labels", nnunet / "imagesTr", nnunet / "labelsTr"):
        folder.mkdir(parents=True)
    for name in names:
        image, label = synthetic_case((12, 12, 6), rng)
        for path, data in ((plain / "images" / f"{name}.nii.gz", image), (plain / "labels" / f"{name}.nii.gz", label),
                           (nnunet / "imagesTr" / f"{name}_0000.nii.gz", image),
                           (nnunet / "labelsTr" / f"{name}.nii.gz", label)):
            nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    (plain / "labels.json").write_text(json.dumps({"0": "background", "1": "head", "2": "tail"}))
    (nnunet / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "head": 1, "tail": 2}, "numTraining": len(names),
        "file_ending": ".nii.gz"}))
    folds = []
    for source in (plain, nnunet):
        ingested, plans = tmp_path / f"{source.name}_ingested", tmp_path / f"{source.name}_plans"
        main(["ingest", str(source), str(ingested)])
        main(["plan", str(ingested / "dataset.json"), "--output-dir", str(plans), "--sam-variant", "vit_tiny",
              "--memory-gb", "8", "--folds", "3"])
        items = json.loads((plans / "datalist.json").read_text())["training"]
        folds.append({item["case"]: item["fold"] for item in items})
    assert set(folds[0]) == set(names) and folds[0] == folds[1]


def test_exact_intensity_statistics_equal_numpy_over_every_voxel():
    from medsa_monai.planning.fingerprint import _exact_statistics, _foreground_counts

    rng = np.random.RandomState(3)
    cases = [rng.randint(-1024, 2000, size=(1, 30, 40)).astype(np.int16) for _ in range(3)]
    masks = [rng.rand(30, 40) < 0.3 for _ in range(3)]
    tables = [_foreground_counts(image, mask)[0] for image, mask in zip(cases, masks, strict=True)]
    pooled = np.concatenate([image[0][mask] for image, mask in zip(cases, masks, strict=True)]).astype(np.float64)
    exact = _exact_statistics(tables)
    for q, key in ((0.5, "percentile_00_5"), (99.5, "percentile_99_5")):
        assert exact[key] == pytest.approx(np.percentile(pooled, q), abs=1e-9)
    assert exact["mean"] == pytest.approx(pooled.mean()) and exact["std"] == pytest.approx(pooled.std())
    assert (exact["min"], exact["max"]) == (pooled.min(), pooled.max())
    assert _foreground_counts(np.full((1, 4, 4), 0.5, np.float32), np.ones((4, 4), bool)) == [None]  # not integers


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
    assert plan["pixdim"] == [1.0, 1.0, 1.0] and plan["slice_axis"] == 2
    assert plan["patch_size"][:2] == [int(np.ceil(np.median(shapes[:, a]) / 8) * 8) for a in (0, 1)]
    assert plan["normalization"][0]["scheme"] == "zscore" and plan["num_classes"] == 3


# -- data sets in the ingested dataset.json contract, built by hand ------------------------------------------------


def _dataset_json(root: Path, cases: list[tuple], labels: dict, **extra) -> Path:
    """``dataset.json`` of ``(image or [images], label)`` cases (relative paths) in ``root``."""
    description = {"name": "toy", "labels": labels, "training": [{"image": i, "label": lab} for i, lab in cases],
                   **extra}
    path = root / "dataset.json"
    path.write_text(json.dumps(description))
    return path


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name


def _nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0]) if affine is None else affine), path)
    return path.name


def _grey_png_dataset(root: Path) -> Path:
    """Three grey 8-bit PNGs (rows x cols) 30x40, 34x44, 30x50: 200 on a 10x10 lesion (mask 255), 50 elsewhere."""
    cases = []
    for i, (rows, cols) in enumerate([(30, 40), (34, 44), (30, 50)]):
        mask = np.zeros((rows, cols), np.uint8)
        mask[5:15, 10:20] = 255
        image = np.where(mask > 0, 200, 50).astype(np.uint8)
        cases.append((_png(root / f"img{i}.png", image), _png(root / f"mask{i}.png", mask)))
    return _dataset_json(root, cases, {"0": "background", "255": "lesion"}, spatial_dims=2, tensorImageSize="2D",
                         modality={"0": "photo"}, regions={}, medsa_ingest={"image_format": "png"})


def test_grey_png_dataset_fingerprint_and_plan(tmp_path):
    fp = compute_fingerprint(_grey_png_dataset(tmp_path))
    # PILReader gives (C, W, H): cols first
    assert fp["spatial_dims"] == 2 and fp["channels"] == 1 and fp["shapes"] == [[40, 30], [44, 34], [50, 30]]
    assert fp["spacings"] == [[1.0, 1.0]] * 3 and fp["median_shape"] == [44.0, 30.0]
    assert fp["photographic_8bit"] is True and fp["image_dtypes"] == ["uint8"]
    assert fp["class_voxel_fraction"] == {"0": pytest.approx(3896 / 4196), "255": pytest.approx(300 / 4196)}
    assert fp["cases_with_class"] == {"0": 3, "255": 3} and fp["classes_per_case"] == [[0, 255]] * 3
    stats = fp["foreground_intensity"][0]
    assert stats["mean"] == 200 and stats["std"] == 0 and stats["min"] == stats["max"] == 200

    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["configuration"] == "2d" and plan["spatial_dims"] == 2 and plan["slice_axis"] is None
    assert plan["depth_attention"] is False and plan["pixdim"] == [1.0, 1.0]
    # the median image's longer side 44 -> 48, a square patch the images are padded to, keeping their aspect
    assert plan["patch_size"] == [48, 48] and plan["keep_aspect"] is True and plan["image_size"] == 192  # 4 x 48
    assert 1 <= plan["batch_size"] <= 16
    assert plan["normalization"] == [{"scheme": "range", "modality": "photo", "range": [0, 255]}]
    assert plan["intensity"] == "unit"
    assert plan["label_values"] == [0, 255] and plan["num_classes"] == 2 and plan["class_names"] == ["lesion"]
    assert plan["labels"] == {"0": "background", "255": "lesion"} and plan["has_regions"] is False
    assert plan["dataset_cache"]["estimated_gib"] == pytest.approx(3 * 48 * 48 * 5 / GIB)
    squeezed = make_plan(fp, sam_variant="vit_tiny", memory_gb=8, keep_aspect=False)  # medsa plan --squeeze-2d
    assert squeezed["patch_size"] == [48, 32] and squeezed["keep_aspect"] is False  # 44 -> 48, 30 -> 32
    assert squeezed["image_size"] == 192
    with pytest.raises(ValueError, match="'3d' needs volumes"):
        make_plan(fp, sam_variant="vit_tiny", memory_gb=8, configuration="3d")


def test_rgb_photographs_get_the_range_scheme_and_unit_intensity(tmp_path):
    rng = np.random.RandomState(0)
    cases = []
    for i in range(2):
        mask = np.zeros((20, 24), np.uint8)
        mask[4:12, 6:14] = 1
        cases.append((_png(tmp_path / "rgb" / f"img{i}.png", rng.randint(0, 256, (20, 24, 3)).astype(np.uint8)),
                      _png(tmp_path / "rgb" / f"mask{i}.png", mask)))
    fp = compute_fingerprint(_dataset_json(tmp_path / "rgb", cases, {"0": "background", "1": "lesion"}))
    assert fp["spatial_dims"] == 2 and fp["channels"] == 3 and fp["photographic_8bit"] is True  # by the suffix
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["in_channels"] == 3 and plan["intensity"] == "unit"
    assert [s["scheme"] for s in plan["normalization"]] == ["range"] * 3
    assert all(s["range"] == [0, 255] for s in plan["normalization"])

    # 16-bit values are no 8-bit photograph: per-image z-score
    wide = [(_png(tmp_path / "wide" / "img.png", (rng.randint(0, 1000, (20, 24))).astype(np.uint16)),
             _png(tmp_path / "wide" / "mask.png", np.ones((20, 24), np.uint8)))]
    fp16 = compute_fingerprint(_dataset_json(tmp_path / "wide", wide, {"0": "background", "1": "lesion"}))
    assert fp16["photographic_8bit"] is False
    assert make_plan(fp16, sam_variant="vit_tiny", memory_gb=8)["intensity"] == "zscore"
    assert is_photographic_format(["a.PNG", "b.jpg"]) and not is_photographic_format("a.nii.gz")
    assert is_photographic_format("a.nii.gz", image_format="png") and not is_photographic_format("a.png", "nifti")
    assert is_photographic_format("a.png", "jpeg+png") and not is_photographic_format("a.png", "nifti+png")


def test_2d_nifti_spacing_from_the_file_and_no_photograph(tmp_path):
    label = np.zeros((20, 16), np.uint8)
    label[5:10, 5:10] = 1
    image = np.where(label > 0, 120, 30).astype(np.uint8)
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    cases = [(_nifti(tmp_path / "a.nii.gz", image, affine=affine), _nifti(tmp_path / "a_seg.nii.gz", label,
                                                                         affine=affine)),
             # nnU-Net stores 2D images as (X, Y, 1)
             (_nifti(tmp_path / "b.nii.gz", image[..., None], affine=affine),
              _nifti(tmp_path / "b_seg.nii.gz", label[..., None], affine=affine))]
    fp = compute_fingerprint(_dataset_json(tmp_path, cases, {"0": "background", "1": "x"}, spatial_dims=2,
                                           medsa_ingest={"image_format": "nifti"}))
    assert fp["spacings"] == [pytest.approx([0.5, 0.7])] * 2 and fp["shapes"] == [[20, 16]] * 2
    assert fp["photographic_8bit"] is False  # 8-bit values, but a NIfTI
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["pixdim"] == [0.5, 0.7] and plan["patch_size"] == [24, 24] and plan["intensity"] == "zscore"


def _four_channel_volumes(root: Path) -> Path:
    """Three 4D NIfTI (12, 10, 8, 4), channels last: channel c is 10 (c + 1) on a 4^3 cube (label 1), c elsewhere."""
    cases = []
    for i in range(3):
        label = np.zeros((12, 10, 8), np.uint8)
        label[2:6, 2:6, 2:6] = 1
        image = np.stack([np.where(label > 0, 10.0 * (c + 1), float(c)) for c in range(4)], -1).astype(np.float32)
        cases.append((_nifti(root / f"case{i}.nii.gz", image), _nifti(root / f"case{i}_seg.nii.gz", label)))
    return _dataset_json(root, cases, {"0": "background", "1": "tumour"}, tensorImageSize="4D",
                         modality={"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"})


def test_four_channel_volumes(tmp_path):
    fp = compute_fingerprint(_four_channel_volumes(tmp_path))
    assert fp["spatial_dims"] == 3 and fp["channels"] == 4 and fp["shapes"] == [[12, 10, 8]] * 3
    assert [s["mean"] for s in fp["foreground_intensity"]] == [10.0, 20.0, 30.0, 40.0]
    assert fp["class_voxel_fraction"]["1"] == pytest.approx(64 / 960)
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["in_channels"] == 4 and plan["slice_axis"] == 2 and plan["patch_size"] == [16, 16, 8]
    assert [s["modality"] for s in plan["normalization"]] == ["FLAIR", "T1w", "T1gd", "T2w"]
    assert {s["scheme"] for s in plan["normalization"]} == {"zscore"} and plan["intensity"] == "zscore"


def test_dataset_cache_in_memory_or_on_disk_by_budget(tmp_path):
    fp = compute_fingerprint(_four_channel_volumes(tmp_path))
    size = 3 * (12 * 10 * 8) * (4 * 4 + 1)  # cases x voxels x (4 float32 channels + a uint8 label)
    assert dataset_cache_estimate(3, [12, 10, 8], 4, size / GIB) == {"kind": "memory", "estimated_gib": size / GIB,
                                                                     "budget_gib": size / GIB}
    fits = make_plan(fp, sam_variant="vit_tiny", memory_gb=8, cache_memory_gb=size / GIB)["dataset_cache"]
    spills = make_plan(fp, sam_variant="vit_tiny", memory_gb=8, cache_memory_gb=0.99 * size / GIB)["dataset_cache"]
    assert fits["kind"] == "memory" and spills["kind"] == "disk"
    assert fits["estimated_gib"] == spills["estimated_gib"] == pytest.approx(size / GIB)


def test_make_dataset_memory_or_disk(tmp_path):
    from monai.transforms import Lambdad

    data = [{"x": 1}, {"x": 2}]
    double = Lambdad("x", lambda v: torch.tensor(v) * 2)
    memory = make_dataset(data, double, "memory")
    assert isinstance(memory, CacheDataset) and [int(memory[i]["x"]) for i in range(2)] == [2, 4]
    disk = make_dataset(data, double, "disk", cache_dir=tmp_path / "cache" / "plan1")
    assert isinstance(disk, PersistentDataset) and [int(disk[i]["x"]) for i in range(2)] == [2, 4]
    assert len(list((tmp_path / "cache" / "plan1").iterdir())) == 2
    with pytest.raises(ValueError, match="cache_dir"):
        make_dataset(data, double, "disk")
    with pytest.raises(ValueError, match="'memory', 'disk'"):
        make_dataset(data, double, "gpu")


def _task05_like(root: Path) -> Path:
    """Three two-channel volumes (5, 40, 24) at (3.6, 0.6, 0.6) mm, one file per channel: thick axis first."""
    cases = []
    for i in range(3):
        label = np.zeros((5, 40, 24), np.uint8)
        label[1:4, 10:30, 6:18] = 1
        label[2, 15:25, 8:16] = 2
        channels = [_nifti(root / f"p{i}_{c:04d}.nii.gz", (label * (c + 1) + 1.0).astype(np.float32),
                           (3.6, 0.6, 0.6)) for c in range(2)]
        cases.append((channels, _nifti(root / f"p{i}.nii.gz", label, (3.6, 0.6, 0.6))))
    return _dataset_json(root, cases, {"0": "background", "1": "PZ", "2": "TZ"}, tensorImageSize="3D",
                         modality={"0": "T2", "1": "ADC"})


def test_thick_first_axis_slices_along_it(tmp_path):
    # nnU-Net's rule on the thick axis at index 0: the 10th percentile of its spacings
    spacings = [[5.0, 0.8, 0.8]] * 5 + [[2.5, 0.8, 0.8]] * 5
    assert target_spacing(spacings, [[40, 512, 512]] * 10) == pytest.approx([2.5, 0.8, 0.8])
    assert slice_axis([2.5, 0.8, 0.8]) == 0

    fp = compute_fingerprint(_task05_like(tmp_path))
    assert fp["channels"] == 2 and fp["spacings"] == [pytest.approx([3.6, 0.6, 0.6])] * 3
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["pixdim"] == [3.6, 0.6, 0.6] and plan["slice_axis"] == 0  # pixdim stays in array order
    assert plan["patch_size"] == [40, 24, 8]  # network order: in-plane axes 1, 2, then depth 5 -> 8 from axis 0
    assert plan["image_size"] == 160 and plan["in_channels"] == 2
    # the bundle's transpose puts the slice axis last: the volume then has the patch's axis order
    volume = torch.zeros(2, 5, 40, 24)
    moved = Transposed("image", slice_last_indices(plan["slice_axis"]))({"image": volume})["image"]
    assert tuple(moved.shape[1:]) == (40, 24, 5)

    per_slice = make_plan(fp, sam_variant="vit_tiny", memory_gb=8, configuration="2d")
    assert per_slice["configuration"] == "2d" and per_slice["depth_attention"] is False
    assert per_slice["slice_axis"] == 0 and per_slice["patch_size"] == [40, 24, 1]
    assert 1 <= per_slice["batch_size"] <= 16 and per_slice["spatial_dims"] == 3


def test_slice_axis_and_slice_last_indices():
    assert slice_axis([1.0, 1.0, 1.0]) == 2 and slice_axis([0.7, 0.7, 5.0]) == 2
    assert slice_axis([0.7, 4.0, 0.7]) == 1 and slice_axis([1.0, 1.0, 0.999]) == 2  # within 1 %: a tie
    assert slice_last_indices(0) == [0, 2, 3, 1]
    assert slice_last_indices(1) == [0, 1, 3, 2]
    assert slice_last_indices(2) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="0, 1 or 2"):
        slice_last_indices(3)


def test_fingerprint_is_in_ras_array_order(tmp_path):
    # file axes (thick, x, y): the affine sends file axis 0 to S, 1 to R, 2 to A; RAS order is then (x, y, thick)
    affine = np.array([[0, 0.6, 0, 0], [0, 0, 0.6, 0], [3.6, 0, 0, 0], [0, 0, 0, 1]])
    label = np.zeros((5, 40, 24), np.uint8)
    label[2, 10:20, 5:10] = 1
    case = (_nifti(tmp_path / "img.nii.gz", label.astype(np.float32), affine=affine),
            _nifti(tmp_path / "seg.nii.gz", label, affine=affine))
    fp = compute_fingerprint(_dataset_json(tmp_path, [case], {"0": "background", "1": "x"}))
    assert fp["shapes"] == [[40, 24, 5]] and fp["spacings"] == [pytest.approx([0.6, 0.6, 3.6])]


def test_regions_set_the_network_outputs(tmp_path):
    cases = []
    for i, fill in enumerate([lambda lab: (lab.__setitem__(slice(0, 2), 1), lab.__setitem__(slice(2, 3), 2)),
                              lambda lab: lab.__setitem__(slice(0, 1), 1)]):
        label = np.zeros((8, 8, 8), np.uint8)
        fill(label)
        cases.append((_nifti(tmp_path / f"img{i}.nii.gz", label.astype(np.float32) + 1),
                      _nifti(tmp_path / f"seg{i}.nii.gz", label)))
    fp = compute_fingerprint(_dataset_json(tmp_path, cases, {"0": "background", "1": "edema", "2": "core"},
                                           regions={"whole": [1, 2], "core": [2]}, regions_class_order=[1, 2]))
    # case 0: 128 voxels of 1 and 64 of 2; case 1: 64 voxels of 1; 1024 voxels in all
    assert fp["region_voxel_fraction"] == {"whole": 256 / 1024, "core": 64 / 1024}
    assert fp["cases_with_region"] == {"whole": 2, "core": 1} and fp["cases_with_class"] == {"0": 2, "1": 2, "2": 1}
    plan = make_plan(fp, sam_variant="vit_tiny", memory_gb=8)
    assert plan["has_regions"] is True and plan["num_classes"] == 2 and plan["class_names"] == ["whole", "core"]
    assert plan["label_values"] == [0, 1, 2] and plan["regions"] == {"whole": [1, 2], "core": [2]}
    assert plan["regions_class_order"] == [1, 2] and plan["labels"]["2"] == "core"


def test_nan_in_an_image_names_the_file(tmp_path):
    label = np.zeros((6, 6, 6), np.uint8)
    label[2:4, 2:4, 2:4] = 1
    bad = np.ones((6, 6, 6), np.float32)
    bad[0, 0, 0] = np.nan
    cases = [(_nifti(tmp_path / "good.nii.gz", np.ones((6, 6, 6), np.float32)), _nifti(tmp_path / "s0.nii.gz", label)),
             (_nifti(tmp_path / "bad_image.nii.gz", bad), _nifti(tmp_path / "s1.nii.gz", label))]
    with pytest.raises(ValueError, match="bad_image.nii.gz.*NaN or infinite"):
        compute_fingerprint(_dataset_json(tmp_path, cases, {"0": "background", "1": "x"}))
    inf = np.ones((6, 6, 6), np.float32)
    inf[1, 1, 1] = np.inf
    per_channel = [([_nifti(tmp_path / "c0.nii.gz", np.ones((6, 6, 6), np.float32)),
                     _nifti(tmp_path / "c1_inf.nii.gz", inf)], "s0.nii.gz")]
    with pytest.raises(ValueError, match="c1_inf.nii.gz.*channel 1"):
        compute_fingerprint(_dataset_json(tmp_path, per_channel, {"0": "background", "1": "x"}))


def test_split_cases_refuses_a_fold_the_datalist_does_not_have(caplog):
    data = [{"image": f"c{i}.nii.gz", "label": f"s{i}.nii.gz", "fold": i % 3} for i in range(6)]
    train, val = split_cases(data, fold=1)
    assert [d["image"] for d in val] == ["c1.nii.gz", "c4.nii.gz"] and len(train) == 4
    with pytest.raises(ValueError, match=r"fold 5 is not in this datalist: it has folds 0\.\.2"):
        split_cases(data, fold=5)
    with pytest.raises(ValueError, match="fold must be 0 or more, got -1"):
        split_cases(data, fold=-1)
    with pytest.raises(ValueError, match="1 of the datalist's 7 items have no 'fold' key"):
        split_cases([*data, {"image": "c6.nii.gz", "label": "s6.nii.gz"}], fold=0)
    unfolded = [{k: v for k, v in d.items() if k != "fold"} for d in data]
    with caplog.at_level(logging.WARNING, logger="medsa_monai.data.datalist"):
        assert split_cases(unfolded, 0.5, seed=3, fold=2) == split_cases(unfolded, 0.5, seed=3)
    assert "fold 2 is ignored" in caplog.text


def test_an_empty_list_in_a_datalist_is_named(tmp_path):
    from medsa_monai.data import find_datalist

    root = make_synthetic_dataset(tmp_path / "data", num_cases=2, shape=(8, 8, 6))  # its "test" list is empty
    assert len(find_datalist(root, None, "training")) == 2
    with pytest.raises(ValueError, match=r"lists no 'test' cases .*--input_pattern 'imagesTs/\*\.nii\.gz'"):
        find_datalist(root, None, "test", ["image"])


def test_plan_records_the_datalist_folds(tmp_path):
    fp = compute_fingerprint(_four_channel_volumes(tmp_path / "data"))
    training = [{"image": f"c{i}.nii.gz", "label": f"s{i}.nii.gz"} for i in range(3)]
    recorded = write_fold_datalist(tmp_path / "with.json", training, [0, 1, 2], num_folds=3)
    counted = write_fold_datalist(tmp_path / "without.json", training, [0, 1, 0])
    assert make_plan(fp, sam_variant="vit_tiny", memory_gb=8, datalist_file=str(recorded))["num_folds"] == 3
    assert make_plan(fp, sam_variant="vit_tiny", memory_gb=8, datalist_file=str(counted))["num_folds"] == 2


def test_version_1_plan_is_refused(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"plan_version": 1, "patch_size": [40, 56, 40]}))
    with pytest.raises(ValueError, match="plan_version 1, this medsa-monai reads version 2; run `medsa plan` again"):
        load_plan(path)
    assert load_plan(None) == {}


def test_planned_range_normalisation_by_hand():
    image = torch.tensor([[[-10.0, 0.0, 51.0, 127.5, 255.0, 300.0]]])
    out = PlannedNormalized("image", [{"scheme": "range", "range": [0, 255]}])({"image": image})["image"]
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0, 0.2, 0.5, 1.0, 1.0]]]))
    shifted = PlannedNormalized("image", [{"scheme": "range", "range": [-10, 30]}])({"image": image})["image"]
    assert torch.allclose(shifted[0, 0, :3], torch.tensor([0.0, 0.25, 1.0]))
    with pytest.raises(ValueError, match="low < high"):
        PlannedNormalized("image", [{"scheme": "range", "range": [5, 5]}])({"image": image})


def test_plan_command_line(tmp_path, capsys):
    dataset = _task05_like(tmp_path / "data")
    main(["plan", str(dataset), "--output-dir", str(tmp_path / "plan"), "--sam-variant", "vit_tiny", "--memory-gb",
          "8", "--folds", "3", "--configuration", "2d", "--cache-memory-gb", "0.000001"])
    printed = capsys.readouterr().out
    for text in ('"configuration": "2d"', '"slice_axis": 0', '"intensity": "zscore"', '"kind": "disk"',
                 '"num_folds": 3'):
        assert text in printed
    plan = load_plan(tmp_path / "plan" / "plan.json")
    assert plan["patch_size"] == [40, 24, 1] and plan["num_folds"] == 3 and plan["dataset_cache"]["budget_gib"] == 1e-6
    datalist = json.loads((tmp_path / "plan" / "datalist.json").read_text())
    assert sorted(item["fold"] for item in datalist["training"]) == [0, 1, 2]


def test_the_typed_plan_round_trips_and_holds_the_defaults(tmp_path):
    from medsa_monai.planning import Plan

    plan = make_plan(compute_fingerprint(_four_channel_volumes(tmp_path / "data")), sam_variant="vit_tiny",
                     memory_gb=8)
    assert isinstance(plan, Plan) and plan["patch_size"] == list(plan.patch_size)  # reads like its JSON too
    path = plan.save(tmp_path / "plan.json")
    again = Plan.load(path)
    assert again == plan and again.to_dict() == json.loads(path.read_text())
    assert again.record["notes"] == plan.record["notes"] and "memory" in again.record
    # what a bundle's own plan leaves out comes from the one place the defaults live
    bundled = Plan.from_dict({"labels": {"0": "background", "1": "a"}})
    assert (bundled.spatial_dims, bundled.patch_size, bundled.image_size, bundled.sam_variant) == (
        3, (40, 56, 40), 256, "vit_b")
    flat = Plan.from_dict({"labels": {"0": "background", "1": "a"}, "spatial_dims": 2, "image_size": 64})
    assert flat.patch_size == (64, 64) and flat.slice_axis is None and flat.configuration == "2d"
    assert flat.network_depth_attention is False and bundled.network_depth_attention is None


def test_a_plan_written_by_the_former_planner_loads(tmp_path):
    from medsa_monai.planning import Plan

    former = {"plan_version": 2, "dataset": "x", "configuration": "3d", "spatial_dims": 3, "slice_axis": 2,
              "depth_attention": True, "in_channels": 1, "labels": {"0": "background", "1": "a", "2": "b"},
              "regions": {}, "regions_class_order": [], "num_classes": 3, "label_values": [0, 1, 2],
              "class_names": ["a", "b"], "has_regions": False, "sam_variant": "vit_b", "image_size": 256,
              "pixdim": [1.0, 1.0, 1.0], "patch_size": [40, 56, 40], "batch_size": 2, "sw_batch_size": 1,
              "sw_overlap": 0.5, "intensity": "zscore", "normalization": [{"scheme": "zscore", "nonzero": False}],
              "dataset_cache": {"kind": "memory"}, "num_folds": None, "memory": {"budget_gib": 8},
              "median_shape_at_target_spacing": [35.0, 50.0, 35.0], "notes": []}
    (tmp_path / "plan.json").write_text(json.dumps(former))
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.class_names == ["a", "b"] and plan.num_outputs == 3 and plan.record["memory"] == {"budget_gib": 8}
    assert plan.keep_aspect is False  # 2D images of a plan written before the key are resized whole, as then


@pytest.mark.parametrize(("change", "message"), [
    ({"patch_size": [40, 56]}, r"key 'patch_size' is \[40, 56\]; it must hold 3 positive integers"),
    ({"image_size": 100}, "key 'image_size' is 100; it must be a positive multiple of 16"),
    ({"spatial_dims": 4}, "key 'spatial_dims' is 4; it must be 2 or 3"),
    ({"intensity": "hu"}, "key 'intensity' is 'hu'"),
    ({"normalization": [{"scheme": "zscore"}] * 2}, "key 'normalization' has 2 schemes for 1 channel"),
    ({"dataset_cache": {"kind": "cloud"}}, "key 'dataset_cache' has kind 'cloud'"),
    ({"patch_sise": [1, 2, 3]}, "unknown key 'patch_sise'"),
    ({"spatial_dims": 2, "patch_size": [64, 48], "keep_aspect": True},
     r"key 'keep_aspect' is true with patch_size \[64, 48\]; keeping the aspect pads 2D images to a square patch "
     r"\(e.g. \[64, 64\]\)"),
    ({"keep_aspect": True}, "volumes keep theirs by cropping patches: set it false"),
    ({"spatial_dims": 2, "keep_aspect": "yes"}, "key 'keep_aspect' is 'yes'; it must be true or false"),
])
def test_a_plan_that_does_not_fit_names_its_file_and_key(tmp_path, change, message):
    from medsa_monai.planning import Plan, PlanError

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "a"}, **change}))
    with pytest.raises(PlanError, match=message) as raised:
        Plan.load(path)
    assert str(path) in str(raised.value)


def test_a_truncated_plan_names_line_and_column(tmp_path):
    from medsa_monai.planning import Plan, PlanError

    path = tmp_path / "plan.json"
    path.write_text('{\n  "labels": {"0": "background", "1": "a"},\n  "patch_size": [40, 5')
    with pytest.raises(PlanError, match=rf"plan file '{path}' is not valid JSON: .* at line 3 column"):
        Plan.load(path)


def test_a_run_overrides_the_planned_values_and_is_checked_again(tmp_path):
    from medsa_monai.planning import OVERRIDABLE, Plan, PlanError

    bundled = {"labels": {"0": "background", "1": "a"}, "image_size": 256}
    plan = Plan.for_bundle(None, bundled, image_size=96, patch_size=[32, 40, 28], sam_variant=None)
    assert plan.image_size == 96 and plan.patch_size == [32, 40, 28] and plan.sam_variant == "vit_b"
    path = Plan.from_dict({**bundled, "batch_size": 4}).save(tmp_path / "plan.json")
    assert Plan.for_bundle(str(path), bundled).batch_size == 4  # a plan file replaces the bundled plan
    assert Plan.for_bundle("None", bundled).batch_size == 2
    with pytest.raises(PlanError, match="image_size=100"):
        Plan.for_bundle(None, bundled, image_size=100)
    with pytest.raises(PlanError, match="'labels' cannot override a plan"):
        Plan.for_bundle(None, bundled, labels={"0": "x"})
    assert set(OVERRIDABLE) >= {"image_size", "patch_size", "batch_size", "sam_variant"}


def test_a_bundle_checks_the_plan_its_model_was_trained_with(tmp_path):
    from medsa_monai.planning import Plan, PlanError, model_plan_file, record_trained_plan

    bundled = {"labels": {"0": "background", "1": "a"}, "image_size": 64}
    models = tmp_path / "models"
    model = models / "model.pt"
    models.mkdir()
    model.write_bytes(b"weights")
    assert model_plan_file(model) is None  # a model of an earlier version: nothing to check against
    assert Plan.for_bundle(None, bundled, model_file=str(model)).image_size == 64
    trained = record_trained_plan(Plan.for_bundle(None, bundled, image_size=96), models)
    assert trained == models / "plan.json" and model_plan_file(model) == trained
    assert model_plan_file(models / "checkpoint_epoch=3.pt") == trained
    assert Plan.for_bundle(None, bundled, model_file=str(model), image_size=96).image_size == 96
    with pytest.raises(PlanError) as refused:  # the bundle's own plan, without the size it was trained at
        Plan.for_bundle(None, bundled, model_file=str(model))
    assert str(refused.value) == (
        f"model '{model}' was trained with the plan '{trained}', whose image_size is 96; the bundle's bundle_plan "
        f"has 64: give --plan_file '{trained}' to run with the plan it was trained with")
    assert Plan.for_bundle(str(trained), bundled, model_file=str(model)).image_size == 96
    other = Plan.from_dict({**bundled, "labels": {"0": "background", "2": "a"}}).save(tmp_path / "other.json")
    with pytest.raises(PlanError, match=f"whose labels is .*; plan file '{other}' with image_size=96 has "):
        Plan.for_bundle(str(other), bundled, model_file=str(model), image_size=96)

    # a model trained by an earlier `medsa train`: the plan beside its models/ folder, written before the run's --set
    # values (training_overrides.json beside it) were applied
    Plan.from_dict(bundled).save(tmp_path / "plan.json")
    trained.unlink()
    (tmp_path / "training_overrides.json").write_text(json.dumps({"image_size": 96, "max_epochs": 3}))
    assert model_plan_file(model) == tmp_path / "plan.json"
    assert Plan.for_bundle(str(tmp_path / "plan.json"), bundled, model_file=str(model), image_size=96).image_size == 96
    with pytest.raises(PlanError, match="whose image_size is 96; plan file .* has 64"):
        Plan.for_bundle(str(tmp_path / "plan.json"), bundled, model_file=str(model))


def test_training_records_its_plan_and_resumes_only_with_it(tmp_path):
    from medsa_monai.planning import Plan, PlanError, record_trained_plan

    plan = Plan.from_dict({"labels": {"0": "background", "1": "a"}})
    record_trained_plan(plan, tmp_path)
    assert Plan.load(tmp_path / "plan.json").to_dict() == plan.to_dict()
    other = Plan.from_dict({"labels": {"0": "background", "1": "a"}, "pixdim": [2.0, 2.0, 2.0]})
    with pytest.raises(PlanError, match=r"whose pixdim is \[1.0, 1.0, 1.0\]; resuming with a plan whose pixdim is "
                                        r"\[2.0, 2.0, 2.0\] would mix them"):
        record_trained_plan(other, tmp_path, resume=True)
    assert Plan.load(tmp_path / "plan.json").to_dict() == plan.to_dict()
    record_trained_plan(plan.__class__.from_dict({**plan.to_dict(), "batch_size": 8}), tmp_path, resume=True)
    record_trained_plan(other, tmp_path)  # a new training into the folder: its plan
    assert Plan.load(tmp_path / "plan.json").pixdim == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("bundle", ["medsa_hippocampus_mri", "medsa_fundus_disc_cup", "samda_skin_lesion",
                                    "medsa_btcv_ct"])
def test_every_shipped_bundle_holds_a_valid_plan(bundle):
    from medsa_monai.planning import Plan

    train = json.loads((ROOT / "bundles" / bundle / "configs" / "train.json").read_text())
    plan = Plan.from_dict(train["bundle_plan"], source=bundle)
    assert plan.num_outputs >= 2 and len(plan.patch_size) == plan.spatial_dims
