"""Shared weights through a bundle, as a user runs it: training on a base checkpoint saves only what trained;
evaluating, inferring, ``medsa predict``, export and pack / unpack load them onto that base; another base is
refused with both hashes, a missing one with the file to fetch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medsa_monai.bundle.packaging import pack_bundle, unpack_bundle
from medsa_monai.data import make_synthetic_lesion_folder
from medsa_monai.data.hashing import file_sha256
from medsa_monai.networks import read_weights_record

from .conftest import TINY, randomise, reference_sam, run_monai_bundle

SKIN = Path(__file__).resolve().parents[1] / "bundles" / "samda_skin_lesion"
FAST = ["--sam_variant", "vit_tiny", "--image_size", "64", "--num_workers", "0", "--progress_bar", "False"]
BASE = "base_vit_tiny.pth"


def _configs(bundle: Path, *names: str) -> str:
    files = [str(bundle / "configs" / n) for n in names]
    return files[0] if len(files) == 1 else repr(files)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return make_synthetic_lesion_folder(tmp_path_factory.mktemp("lesions"), num_images=6, seed=3)


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, lesions, tmp_path_factory) -> Path:
    """The skin bundle trained 1 epoch (SAM-DA) on a tiny base checkpoint kept in its models/."""
    root = tmp_path_factory.mktemp("shared") / "samda_skin_lesion"
    shutil.copytree(SKIN, root, ignore=shutil.ignore_patterns("*.pth", "*.pt", "eval", "__pycache__"))
    (root / "models").mkdir(exist_ok=True)
    shutil.copy(tiny_checkpoint, root / "models" / BASE)
    run_monai_bundle(root, "run", "training", "--config_file", _configs(root, "train.json"), "--dataset_dir",
                     str(lesions), "--bundle_root", str(root), "--sam_checkpoint", str(root / "models" / BASE),
                     "--max_epochs", "1", "--val_interval", "1", "--batch_size", "2", *FAST)
    return root


def test_training_saves_only_what_trained(bundle, tiny_checkpoint):
    model = bundle / "models" / "model.pt"
    record = read_weights_record(model)
    assert record["trainable"] == "samda" and record["base"]["sha256"] == file_sha256(tiny_checkpoint)
    assert record["base"]["file"] == BASE and record["image_size"] == 64
    assert model.stat().st_size < 0.3 * tiny_checkpoint.stat().st_size  # vit_tiny: the decoder is most of SAM
    resumable = torch.load(bundle / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert "optimizer" in resumable and len(resumable["model"]) > len(torch.load(model)) - 1


def test_evaluate_infer_and_predict_load_them_onto_the_base(bundle, lesions, tmp_path):
    base = str(bundle / "models" / BASE)
    run_monai_bundle(bundle, "run", "evaluating", "--config_file", _configs(bundle, "train.json", "evaluate.json"),
                     "--dataset_dir", str(lesions), "--bundle_root", str(bundle), "--sam_checkpoint", base,
                     "--interactive_clicks", "1", *FAST)
    summary = json.loads((bundle / "eval" / "summary.json").read_text())
    assert summary["num_cases"] >= 1 and "lesion" in summary["classes"]

    out = tmp_path / "inferred"
    run_monai_bundle(bundle, "run", "inferring", "--config_file", _configs(bundle, "inference.json"),
                     "--dataset_dir", str(lesions), "--bundle_root", str(bundle), "--output_dir", str(out),
                     "--sam_checkpoint", base, *FAST)
    assert len(list(out.glob("*_seg.png"))) == 6

    predicted = tmp_path / "predicted"
    subprocess.run([sys.executable, "-m", "medsa_monai", "predict", "--input", str(lesions / "images"), "--output",
                    str(predicted), "--model", str(bundle / "models" / "model.pt"), "--bundle", str(bundle),
                    "--set", f"sam_checkpoint={base}", "sam_variant=vit_tiny", "image_size=64"],
                   check=True, capture_output=True, timeout=300)
    for source in sorted((lesions / "images").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(predicted / source.name)) > 0,
                              np.asarray(Image.open(out / f"{source.stem}_seg.png")) > 0)


def test_another_base_is_refused_naming_both_hashes(bundle, lesions, tmp_path):
    other = tmp_path / "other.pth"
    torch.save(randomise(reference_sam(1024, **TINY), seed=11).state_dict(), other)
    result = run_monai_bundle(bundle, "run", "inferring", "--config_file", _configs(bundle, "inference.json"),
                              "--dataset_dir", str(lesions), "--bundle_root", str(bundle), "--output_dir",
                              str(tmp_path / "out"), "--sam_checkpoint", str(other), *FAST, check=False)
    assert result.returncode != 0
    assert file_sha256(other) in result.stderr and file_sha256(bundle / "models" / BASE) in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*_seg.png"))

    missing = run_monai_bundle(bundle, "run", "inferring", "--config_file", _configs(bundle, "inference.json"),
                               "--dataset_dir", str(lesions), "--bundle_root", str(bundle), "--output_dir",
                               str(tmp_path / "out"), "--sam_checkpoint", str(tmp_path / "absent.pth"), *FAST,
                               check=False)
    assert missing.returncode != 0 and f"needs its base checkpoint '{BASE}'" in missing.stderr


def test_pack_holds_the_small_file_and_asks_for_the_base_in_large_files(bundle, lesions, tmp_path):
    with pytest.raises(ValueError, match=f"'{BASE}'.*does not list"):
        pack_bundle(bundle, tmp_path)
    listed = bundle / "large_files.yml"
    original = listed.read_text()
    try:
        listed.write_text(original + f'  - path: "models/{BASE}"\n    url: "https://example.org/{BASE}"\n'
                          f'    hash_val: "{file_sha256(bundle / "models" / BASE)}"\n    hash_type: "sha256"\n')
        archive = pack_bundle(bundle, tmp_path)
    finally:
        listed.write_text(original)
    names = zipfile.ZipFile(archive).namelist()
    assert "samda_skin_lesion/models/model.pt" in names and not any(n.endswith(".pth") for n in names)
    assert not any("checkpoint_epoch" in n for n in names)

    unpacked = unpack_bundle(archive, tmp_path / "unpacked")
    shutil.copy(bundle / "models" / BASE, unpacked / "models" / BASE)  # as `medsa bundle fetch` would
    out = tmp_path / "from_zip"
    run_monai_bundle(unpacked, "run", "inferring", "--config_file", _configs(unpacked, "inference.json"),
                     "--dataset_dir", str(lesions), "--bundle_root", str(unpacked), "--output_dir", str(out),
                     "--sam_checkpoint", str(unpacked / "models" / BASE), *FAST)
    assert len(list(out.glob("*_seg.png"))) == 6

    from monai.bundle import load  # copies tensors by key: the shared ones, onto the base that inference.json loads

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"bundle_root": str(unpacked), "sam_checkpoint": str(unpacked / "models" / BASE),
                                    "sam_variant": "vit_tiny", "image_size": 64}))
    network = load(name=unpacked.name, bundle_dir=str(unpacked.parent), workflow_type="inference", device="cpu",
                   args_file=str(settings))
    saved = torch.load(unpacked / "models" / "model.pt", weights_only=True)
    record = saved.pop("medsa_weights")
    assert network.base_checkpoint.sha256 == record["base"]["sha256"]
    assert all(torch.equal(network.state_dict()[k], v) for k, v in saved.items())


def test_export_loads_them_onto_the_base(bundle, tmp_path):
    from medsa_monai.bundle.export import export_torchscript

    path = export_torchscript(str(bundle / "configs" / "inference.json"), bundle / "models" / "model.pt",
                              tmp_path / "model.ts", str(bundle / "configs" / "metadata.json"),
                              input_shape=(1, 3, 40, 52), bundle_root=str(bundle), sam_variant="vit_tiny",
                              image_size=64, sam_checkpoint=str(bundle / "models" / BASE))
    assert path.is_file()
