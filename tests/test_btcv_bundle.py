"""The BTCV abdominal-CT bundle through ``python -m monai.bundle`` on synthetic CT in Hounsfield units: the paper's
settings, training, evaluation with every prompt protocol, inference on a volume larger than the patch, and a
smoke run on the real CT of ``../shared/data/CT_example`` (TotalSegmentator labels mapped to BTCV's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from medsa_monai.bundle import sync_bundle
from medsa_monai.data import BTCV_LABELS, TOTALSEGMENTATOR_TO_BTCV, make_synthetic_ct_dataset, totalsegmentator_to_btcv
from medsa_monai.evaluation.paper_protocols import PAPER_PROTOCOLS

from .conftest import run_monai_bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "medsa_btcv_ct"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
CT_EXAMPLE = ROOT.parent / "shared" / "data" / "CT_example"
TINY = {"sam_variant": "vit_tiny", "trainable": "full", "image_size": "32", "num_workers": "0",
        "patch_size": "[32,32,8]", "batch_size": "1", "sw_batch_size": "2", "progress_bar": "False"}
ORGANS = (6, 1, 2, 3, 8)  # liver, spleen, kidneys, aorta


def _fast(training: bool = True, **changes: str) -> list[str]:
    """Command-line overrides of a tiny, fast run (``training`` adds the training-only ones)."""
    values = {**TINY, **({"interactive_max_rounds": "2", "calibration_cases": "2"} if training else {}), **changes}
    return [item for key, value in values.items() for item in (f"--{key}", value)]


def _resampled(shape, spacing, resampled) -> bool:
    """Whether ``resampled`` is ``shape`` at ``spacing`` (mm) brought to 1.5 x 1.5 x 2 mm: the same extent from the
    first to the last voxel centre, to a voxel."""
    expected = [(n - 1) * s / t + 1 for n, s, t in zip(shape, spacing, (1.5, 1.5, 2.0), strict=True)]
    return all(abs(int(r) - e) <= 1 for r, e in zip(resampled, expected, strict=True))


def bundle_cli(*args: str, timeout: int = 600):
    return run_monai_bundle(BUNDLE, *args, timeout=timeout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = make_synthetic_ct_dataset(tmp_path_factory.mktemp("ct"), num_cases=5, shape=(40, 40, 12),
                                     spacing=(3.0, 3.0, 5.0), seed=1, organs=ORGANS)
    big = make_synthetic_ct_dataset(tmp_path_factory.mktemp("ct_big"), num_cases=1, shape=(64, 56, 18),
                                     spacing=(2.5, 2.5, 4.0), seed=2, organs=ORGANS)
    (root / "imagesTs").mkdir()
    shutil.copy(big / "imagesTr" / "ct_000.nii.gz", root / "imagesTs" / "big_000.nii.gz")
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("btcv_trained")
    bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), "--bundle_root", str(out),
               "--sam_checkpoint", "None", "--max_epochs", "1", "--val_interval", "1", *_fast())
    return out


def test_bundle_has_the_papers_settings_and_follows_the_template():
    train = json.loads((CONFIGS / "train.json").read_text())
    plan = train["bundle_plan"]
    assert plan["pixdim"] == [1.5, 1.5, 2.0] and plan["intensity"] == "unit"
    assert plan["normalization"] == [{"scheme": "range", "modality": "CT", "range": [-175.0, 250.0]}]
    assert plan["depth_attention"] is True and plan["spatial_dims"] == 3 and plan["sam_variant"] == "vit_b"
    assert {int(k): v for k, v in plan["labels"].items()} == BTCV_LABELS
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "CT"} and fmt["inputs"]["image"]["format"] == "hounsfield"
    assert fmt["outputs"]["pred"]["channel_def"] == {str(k): v for k, v in BTCV_LABELS.items()}
    assert sync_bundle(BUNDLE, check=True) == []
    card = (BUNDLE / "docs" / "README.md").read_text()
    for needed in ("Synapse", "-175", "1.5 x 1.5 x 2", "BBox 0.5", "TotalSegmentator"):
        assert needed in card, needed


def test_totalsegmentator_classes_map_to_btcv():
    assert sorted(TOTALSEGMENTATOR_TO_BTCV.values()) == list(range(1, 14))
    source = np.array([[0, 1, 5, 52], [63, 64, 15, 117], [7, 8, 9, 20]])
    assert totalsegmentator_to_btcv(source).tolist() == [[0, 1, 6, 8], [9, 10, 5, 0], [11, 12, 13, 0]]
    with pytest.raises(ValueError, match="0-117"):
        totalsegmentator_to_btcv(np.array([118]))


def test_windowing_and_geometry_of_the_loading(dataset):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(dataset), "sam_checkpoint": None})
    case = parser.get_parsed_content("split")[1][0]
    item = Compose(parser.get_parsed_content("loading"))(dict(case))
    image = item["image"]
    assert image.min() >= 0.0 and image.max() <= 1.0 and 0.3 < float((image == 0).float().mean()) < 0.9  # air
    assert _resampled((40, 40, 12), (3.0, 3.0, 5.0), image.shape[1:]) and image.shape == item["label"].shape
    assert np.allclose(np.abs(np.diag(image.affine.numpy())[:3]), [1.5, 1.5, 2.0])
    # validation (and the interactive evaluation) decode the volume whole: padded in-plane to the 256 x 256 patch
    padded = parser.get_parsed_content("validate#preprocessing")(dict(case))
    assert padded["image"].shape == (1, 256, 256, image.shape[-1]) == padded["label"].shape


@pytest.mark.slow
def test_training_evaluation_with_every_prompt_protocol(dataset, trained):
    assert sorted(p.name for p in (trained / "models").iterdir()) == ["checkpoint_epoch=1.pt", "model.pt", "plan.json",
                                                                      "propagation.json"]
    bundle_cli("run", "evaluating", "--config_file", f"['{TRAIN}','{CONFIGS / 'evaluate.json'}']", "--dataset_dir",
               str(dataset), "--bundle_root", str(trained), "--interactive_clicks", "2", "--protocol_clicks", "2",
               *_fast())
    summary = json.loads((trained / "eval" / "summary.json").read_text())
    present = [BTCV_LABELS[v] for v in ORGANS]
    assert set(present) <= set(summary["classes"])
    protocols = summary["prompt_protocols"]
    assert list(protocols) == list(PAPER_PROTOCOLS)
    for name, entry in protocols.items():
        for organ in present:
            dice, distance = entry["classes"][organ]["dice"], entry["classes"][organ]["hd95"]
            assert 0.0 <= dice <= 1.0 and distance >= 0.0, (name, organ)
        assert entry["classes"]["pancreas"] == {"dice": None, "hd95": None}  # absent from every case
        assert 0.0 <= entry["mean"]["dice"] <= 1.0
    assert protocols["box_0.5"]["mean"]["box_iou"] == pytest.approx(0.5, abs=0.05)
    table = (trained / "eval" / "paper_table.md").read_text().splitlines()
    assert table[0].startswith("| prompt | spleen | right_kidney |") and len(table) == 2 + len(PAPER_PROTOCOLS)
    interactive = json.loads((trained / "eval" / "interactive_summary.json").read_text())
    assert set(interactive) >= {"cvpr2025", "medsa_paper"}


@pytest.mark.slow
def test_inference_on_a_volume_larger_than_the_patch_keeps_its_geometry(dataset, trained):
    bundle_cli("run", "inferring", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir", str(dataset),
               "--input_pattern", "imagesTs/*.nii.gz", "--bundle_root", str(trained), *_fast(training=False))
    out = nib.load(trained / "eval" / "inference" / "big_000_seg.nii.gz")
    source = nib.load(dataset / "imagesTs" / "big_000.nii.gz")
    assert out.shape == source.shape == (64, 56, 18) and np.allclose(out.affine, source.affine)
    assert out.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(out.dataobj))) <= set(range(14))


@pytest.mark.slow
@pytest.mark.skipif(not CT_EXAMPLE.is_dir(), reason="../shared/data/CT_example is absent")
def test_real_ct_loads_windows_and_trains(tmp_path):
    data = tmp_path / "ct_example"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    image = nib.load(CT_EXAMPLE / "example_ct_sm.nii.gz")
    seg = nib.load(CT_EXAMPLE / "example_seg.nii.gz")
    btcv = totalsegmentator_to_btcv(np.asarray(seg.dataobj))
    assert set(np.unique(btcv)) == set(range(14)) - {5}  # no esophagus in this abdominal crop
    training = []
    for name in ("example_a", "example_b"):  # the one case twice: one trains, one validates (a smoke test only)
        nib.save(image, data / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(btcv, seg.affine), data / "labelsTr" / f"{name}.nii.gz")
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (data / "dataset.json").write_text(json.dumps({"name": "CT_example", "modality": {"0": "CT"}, "labels": {
        str(k): v for k, v in BTCV_LABELS.items()}, "training": training}))

    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(data), "sam_checkpoint": None, "val_fraction": 0.5})
    item = Compose(parser.get_parsed_content("loading"))(dict(parser.get_parsed_content("split")[1][0]))
    hu = np.asarray(image.dataobj).astype(float)
    assert _resampled((122, 101, 30), (3.0, 3.0, 3.0), item["image"].shape[1:])
    expected_air = float(np.mean(hu <= -175))
    assert float((item["image"] == 0).float().mean()) == pytest.approx(expected_air, abs=0.05)
    assert float(item["image"].max()) == 1.0 and torch.equal(torch.unique(item["label"]), torch.tensor(
        [float(v) for v in sorted(set(range(14)) - {5})]))

    out = tmp_path / "run"
    bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(data), "--bundle_root", str(out),
               "--sam_checkpoint", "None", "--max_epochs", "1", "--val_interval", "1", "--val_fraction", "0.5",
               *_fast(patch_size="[64,64,8]", batch_size="2"))
    assert (out / "models" / "model.pt").is_file()
