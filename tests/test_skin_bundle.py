"""The SAM-DA skin-lesion bundle through ``python -m monai.bundle`` on a tiny synthetic image folder: the package's
template with the skin's settings (0 / 255 masks, also 0 / 1; rotations, contrast and noise; ``trainable="samda"``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from medsa_monai.data import image_mask_pairs, make_synthetic_lesion_folder

from .conftest import run_monai_bundle

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "samda_skin_lesion"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
TTA = f"['{TRAIN}','{CONFIGS / 'tta.json'}']"  # test-time adaptation runs with the training config
FAST = ["--sam_variant", "vit_tiny", "--image_size", "64", "--num_workers", "0"]


def bundle_cli(*args: str) -> str:
    result = run_monai_bundle(BUNDLE, *args)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return make_synthetic_lesion_folder(tmp_path_factory.mktemp("lesions"), num_images=8, seed=2)


@pytest.fixture(scope="module")
def trained(lesions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("skin")
    bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(lesions), "--bundle_root", str(out),
               "--sam_checkpoint", "None", "--max_epochs", "2", "--val_interval", "1", "--batch_size", "2",
               "--progress_bar", "False", *FAST)
    return out


def test_configs_parse_with_standard_ids(lesions, tmp_path):
    small = {"dataset_dir": str(lesions), "bundle_root": str(tmp_path), "sam_variant": "vit_tiny", "image_size": 64,
             "sam_checkpoint": "none", "num_workers": 0}
    for workflow_type, config in (("train", TRAIN), ("infer", str(CONFIGS / "inference.json"))):
        workflow = ConfigWorkflow(config_file=config, meta_file=str(CONFIGS / "metadata.json"),
                                  workflow_type=workflow_type, **small)
        workflow.initialize()
        assert not workflow.check_properties(), config
    tta = ConfigParser()
    tta.read_config([TRAIN, str(CONFIGS / "tta.json")])
    for key in ("network_def", "tta#evaluator", "tta_steps", "tta_views", "tta_learning_rate", "tta_mode",
                "adapting"):
        assert key in tta, key
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lesion"}
    for doc in ("docs/README.md", "LICENSE", "configs/multi_gpu_train.json", "configs/evaluate.json"):
        assert (BUNDLE / doc).is_file(), doc


def test_one_config_value_switches_samda_and_medsa(lesions, tmp_path):
    for trainable, cached in (("samda", True), ("medsa", False)):
        parser = ConfigParser()
        parser.read_config(TRAIN)
        parser.update({"dataset_dir": str(lesions), "bundle_root": str(tmp_path), "sam_variant": "vit_tiny",
                       "image_size": 64, "sam_checkpoint": "none", "trainable": trainable})
        net = parser.get_parsed_content("network_def")
        has_encoder_adapters = net.image_encoder.blocks[0].Space_Adapter is not None
        has_decoder_adapter = net.mask_decoder.transformer.layers[0].samda_adapter is not None
        assert (has_decoder_adapter, has_encoder_adapters) == ((True, False) if trainable == "samda" else (False, True))
        trainer_cache = parser.get_parsed_content("train#trainer").predictor.embedding_cache
        assert (trainer_cache is not None) == cached and net.encoder_is_frozen() == cached


def test_train_evaluate_infer_adapt(lesions, trained):
    assert (trained / "models" / "model.pt").is_file()
    bundle_cli("run", "evaluating", "--config_file", f"['{TRAIN}','{CONFIGS / 'evaluate.json'}']", "--dataset_dir",
               str(lesions), "--bundle_root", str(trained), "--interactive_clicks", "2", *FAST)
    summary = json.loads((trained / "eval" / "summary.json").read_text())
    assert summary["num_cases"] == 2 and set(summary["classes"]) == {"lesion", "mean"}
    assert len(list((trained / "eval" / "predictions").glob("*.png"))) == 2

    bundle_cli("run", "inferring", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir", str(lesions),
               "--bundle_root", str(trained), *FAST)
    for source in sorted((lesions / "images").glob("*.png")):
        mask = np.asarray(Image.open(trained / "eval" / "inference" / f"{source.stem}_seg.png"))
        assert mask.shape == np.asarray(Image.open(source)).shape[:2] and set(np.unique(mask)) <= {0, 255}

    log = bundle_cli("run", "adapting", "--config_file", TTA, "--dataset_dir", str(lesions),
                     "--bundle_root", str(trained), "--tta_steps", "2", "--tta_views", "4", *FAST)
    assert "lesion: Dice" in log  # masks exist here, so adaptation is also measured
    assert len(list((trained / "eval" / "tta" / "predictions").glob("*.png"))) == 8


def _parsed(key: str, **overrides):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"num_workers": 0, **overrides})
    return parser.get_parsed_content(key)


def test_augmentation_rotations_contrast_and_noise(lesions):
    """The skin's augmentation, from template settings: flips, quarter turns when the patch is square, gamma
    contrast and weak noise (only without the embedding cache), no intensity scaling or shift."""
    def steps(**overrides) -> dict[str, object]:
        transforms = _parsed("train#preprocessing", dataset_dir=str(lesions), image_size=64, **overrides).transforms
        return {type(t).__name__: t for t in transforms}

    cached = steps()
    assert "RandRotate90d" in cached and "RandFlipd" in cached
    assert cached["RandAdjustContrastd"].prob == cached["RandGaussianNoised"].prob == 0.0  # each draw: a new entry
    medsa = steps(trainable="medsa")
    assert medsa["RandAdjustContrastd"].prob == 0.3 and medsa["RandGaussianNoised"].prob == 0.3
    assert medsa["RandGaussianNoised"].rand_gaussian_noise.std == 0.02
    assert not {"RandScaleIntensityd", "RandShiftIntensityd"} & set(medsa)
    assert "RandRotate90d" not in steps(patch_size=[64, 48])  # turns would change a non-square patch's shape


def test_masks_saved_0_1_or_0_255_are_the_same_lesion(lesions, tmp_path):
    load = _parsed("validate#preprocessing", dataset_dir=str(lesions))
    item = {"image": str(lesions / "images" / "lesion_000.png"), "label": str(lesions / "masks" / "lesion_000.png")}
    binary = tmp_path / "lesion_000.png"
    Image.fromarray((np.asarray(Image.open(item["label"])) > 0).astype(np.uint8)).save(binary)
    target = load(dict(item))["label"]
    assert set(torch.unique(target).tolist()) == {0, 1}
    assert torch.equal(load({**item, "label": str(binary)})["label"], target)


def _dataset_error(folder: Path) -> str:
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(folder), "num_workers": 0, "val_fraction": 0.0})
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("train#dataset")
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    return "\n".join(chain)


@pytest.mark.parametrize("problem", ["grey", "mask_size", "no_mask"])
def test_bad_input_is_reported_with_the_file_name(lesions, tmp_path, problem):
    folder = tmp_path / "bad"
    shutil.copytree(lesions, folder)
    image_file, mask_file = folder / "images" / "lesion_003.png", folder / "masks" / "lesion_003.png"
    if problem == "grey":
        Image.open(image_file).convert("L").save(image_file)
        match = r"case 'lesion_003.png': the image has 1 channel\(s\), this bundle expects 3"
    elif problem == "mask_size":
        Image.open(mask_file).resize((50, 40)).save(mask_file)
        match = r"case 'lesion_003.png': label spatial shape \(50, 40\) differs from image spatial shape \(96, 72\)"
    else:
        mask_file.unlink()
        with pytest.raises(FileNotFoundError, match=r"lesion_003.png: no mask in"):
            image_mask_pairs(folder)  # the datalist itself refuses
        return
    assert re.search(match, _dataset_error(folder))


@pytest.mark.slow
def test_medsa_trains_and_continual_adaptation_runs(lesions, trained, tmp_path):
    out = tmp_path / "medsa"
    log = bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(lesions), "--bundle_root",
                     str(out), "--sam_checkpoint", "None", "--trainable", "medsa", "--max_epochs", "1",
                     "--val_interval", "1", "--batch_size", "2", "--progress_bar", "False", *FAST)
    assert "val_mean_dice" in log and (out / "models" / "model.pt").is_file()
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert any("Space_Adapter" in k for k in state) and not any("samda_adapter" in k for k in state)

    unlabelled = tmp_path / "unlabelled"  # a new dermatoscope's images, no masks: adapted and predicted only
    shutil.copytree(lesions / "images", unlabelled / "images")
    bundle_cli("run", "adapting", "--config_file", TTA, "--dataset_dir", str(unlabelled),
               "--bundle_root", str(trained), "--tta_steps", "1", "--tta_views", "2", "--tta_mode", "continual",
               "--tta_output_dir", str(tmp_path / "continual"), *FAST)
    assert len(list((tmp_path / "continual" / "predictions").glob("*.png"))) == 8
    assert not (tmp_path / "continual" / "summary.json").exists()


def test_training_without_validation_data_saves_the_last_model(lesions, tmp_path):
    # MONAI Label's val_split of a few labelled images leaves no validation image
    log = bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(lesions), "--bundle_root",
                     str(tmp_path), "--sam_checkpoint", "None", "--max_epochs", "3", "--val_interval", "1",
                     "--val_fraction", "0.0", "--batch_size", "4", "--progress_bar", "False", *FAST)
    assert "no validation data" in log  # more epochs than val_interval: the skipped validation runs each epoch
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    last = torch.load(tmp_path / "models" / "checkpoint_epoch=3.pt", weights_only=True)["model"]
    assert model.keys() == last.keys() and all(torch.equal(model[k], last[k]) for k in model)
