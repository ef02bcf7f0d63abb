"""Shared weights through a bundle, as a user runs it: training on a base checkpoint saves only what trained;
evaluating, inferring, ``medsa predict``, export and pack / unpack load them onto that base; another base is
refused with both hashes, a missing one with the file to fetch; a packed model passes the MONAI model zoo's checks."""

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

from .conftest import TINY, local_env, randomise, reference_sam, run_monai_bundle, serving

SKIN = Path(__file__).resolve().parents[1] / "bundles" / "samda_skin_lesion"
SCHEMA = Path(__file__).parent / "data" / "bundle_metadata_schema.json"
ZOO_FILE_LIMIT = 25 * 2**20  # the model zoo's limit per file kept in its repository (large files are linked)
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
    trained = json.loads((bundle / "models" / "plan.json").read_text())  # `monai.bundle run training` wrote it
    bundled = json.loads((SKIN / "configs" / "train.json").read_text())["bundle_plan"]
    overridden = ("sam_variant", "image_size", "batch_size")  # as trained: the bundle's plan with the run's values
    assert (trained["sam_variant"], trained["image_size"], trained["batch_size"]) == ("vit_tiny", 64, 2)
    assert {k: trained[k] for k in bundled if k not in overridden} == {
        k: v for k, v in bundled.items() if k not in overridden}
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


def zoo_checks(bundle: Path, schema: Path) -> list[str]:
    """The MONAI model zoo's CPU checks of a bundle (its ``ci/verify_bundle.py`` and contributing guide), written
    from their rules, run on the bundle's files as they are (no overrides); returns the checks passed, raises at
    the first that fails."""
    import yaml
    from monai.apps.utils import download_url
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    passed = []
    large = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    for entry in large:  # the zoo downloads every listed large file before anything else
        download_url(entry["url"], str(bundle / entry["path"]), hash_val=entry.get("hash_val"),
                     hash_type=entry.get("hash_type", "md5"))
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (bundle / required).is_file(), f"necessary file {required} is not existing"
    passed.append("directory")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"], "version is missing in changelog"
    passed.append("version and changelog")
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    passed.append("metadata schema")
    config = str(bundle / "configs" / "inference.json")
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"), config_file=config,
                      bundle_root=str(bundle))
    passed.append("data shape")
    ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "verify_model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=config, bundle_root=str(bundle))
    torch.jit.load(str(bundle / "models" / "verify_model.ts"))
    passed.append("torchscript (scripted by ckpt_export)")
    assert (bundle / "docs" / "README.md").is_file() and (bundle / "docs" / "data_license.txt").stat().st_size > 200
    passed.append("model card and data licence")
    card = (bundle / "docs" / "README.md").read_text()
    for key, value in meta["eval_metrics"].items():
        assert not isinstance(value, float) or f"{value:.3f}" in card, f"eval_metrics {key}={value} not in the card"
    passed.append("eval_metrics from the card")
    listed = {(bundle / e["path"]).resolve() for e in large} | {(bundle / "models" / "verify_model.ts").resolve()}
    too_big = [str(p.relative_to(bundle)) for p in bundle.rglob("*")
               if p.is_file() and p.resolve() not in listed and p.stat().st_size > ZOO_FILE_LIMIT]
    assert not too_big, f"files over 25 MB: {too_big}"
    passed.append("file sizes")
    return passed


def test_a_packed_model_passes_the_model_zoo_checks(bundle, tmp_path, monkeypatch):
    source = tmp_path / "samda_skin_lesion"
    shutil.copytree(bundle, source, ignore=shutil.ignore_patterns("eval", "*.pt"))
    published = tmp_path / "published"
    published.mkdir()
    shutil.move(source / "models" / BASE, published / BASE)  # the base lives elsewhere, as on a release page
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", local_env()["NO_PROXY"])
    with serving(published) as url:
        (source / "large_files.yml").write_text(
            f'large_files:\n  - path: "models/{BASE}"\n    url: "{url}/{BASE}"\n'
            f'    hash_val: "{file_sha256(published / BASE)}"\n    hash_type: "sha256"\n')
        archive = pack_bundle(source, tmp_path / "dist", model=bundle / "models" / "model.pt")
        unpacked = unpack_bundle(archive, tmp_path / "zoo")
        schema = tmp_path / "schema.json"
        shutil.copy(SCHEMA, schema)
        passed = zoo_checks(unpacked, schema)
    assert len(passed) == 8
    inference = json.loads((unpacked / "configs" / "inference.json").read_text())
    assert (inference["sam_variant"], inference["image_size"]) == ("vit_tiny", 64)  # what the model was trained as
    assert (unpacked / "models" / "model.pt").read_bytes() == (bundle / "models" / "model.pt").read_bytes()
    shipped_plan = json.loads((unpacked / "models" / "plan.json").read_text())  # the unpacked bundle checks it
    assert shipped_plan["labels"] == {"0": "background", "255": "lesion"} and shipped_plan["image_size"] == 64
    assert json.loads((SKIN / "configs" / "inference.json").read_text())["sam_variant"] is None  # source untouched


def test_pack_refuses_a_model_of_another_network(bundle, tmp_path):
    from medsa_monai.networks import MedSA

    other = tmp_path / "three_classes.pt"
    torch.save(MedSA(2, 3, 4, "vit_tiny", image_size=64, trainable="full").state_dict(), other)
    with pytest.raises(ValueError, match=r"three_classes.pt' does not fit the network of .*inference.json.*"
                                         r"class_prompts.weight: file \(3, 256\), network \(1, 256\)"):
        pack_bundle(bundle, tmp_path, model=other)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((bundle / "models" / "model.pt").read_bytes()[:4000])
    with pytest.raises(ValueError, match=r"truncated.pt' \(4,000 bytes\) cannot be read as a PyTorch checkpoint: "
                                         r"PytorchStreamReader failed reading zip archive: failed finding central "
                                         r"directory; a truncated or damaged file"):
        pack_bundle(bundle, tmp_path, model=truncated)
    assert not list(tmp_path.glob("*.zip"))


def test_pack_refuses_a_model_trained_with_another_plan(bundle, tmp_path):
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    shutil.copy(bundle / "models" / "model.pt", models / "model.pt")
    plan = json.loads((bundle / "models" / "plan.json").read_text())
    plan["normalization"] = [{"scheme": "zscore", "nonzero": False}] * 3  # the same network, other intensities
    (models / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError) as refused:
        pack_bundle(bundle, tmp_path, model=models / "model.pt")
    message = str(refused.value)
    assert f"model '{models / 'model.pt'}' was trained with the plan '{models / 'plan.json'}', whose " \
           f"normalization is [{{\"scheme\": \"zscore\"" in message and "the packed bundle's plan" in message
    assert f"medsa bundle create --plan {models / 'plan.json'}" in message
    assert not list(tmp_path.glob("*.zip"))


def test_pack_writes_the_run_values_of_the_model_into_the_packed_configs(bundle, tmp_path):
    """A model trained with another patch (a value a run may override, e.g. `medsa demo`'s) is packed with that
    value in the packed configs, so the unpacked bundle runs with the plan the model was trained with."""
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    shutil.copy(bundle / "models" / "model.pt", models / "model.pt")
    plan = json.loads((bundle / "models" / "plan.json").read_text())
    plan["patch_size"] = [96, 96]
    (models / "plan.json").write_text(json.dumps(plan))
    source = tmp_path / "samda_skin_lesion"
    shutil.copytree(bundle, source, ignore=shutil.ignore_patterns("eval", "*.pt"))
    (source / "large_files.yml").write_text(
        f'large_files:\n  - path: "models/{BASE}"\n    url: "https://example.org/{BASE}"\n'
        f'    hash_val: "{file_sha256(source / "models" / BASE)}"\n    hash_type: "sha256"\n')
    archive = pack_bundle(source, tmp_path / "dist", model=models / "model.pt")
    unpacked = unpack_bundle(archive, tmp_path / "unpacked")
    for config in ("inference.json", "train.json"):
        assert json.loads((unpacked / "configs" / config).read_text())["patch_size"] == [96, 96]
    assert json.loads((unpacked / "models" / "plan.json").read_text())["patch_size"] == [96, 96]


def test_pack_finds_the_preset_of_a_whole_state_dict(bundle, tmp_path):
    """A whole state dict records no preset: packing finds the one whose network has exactly its keys (here
    `full`, no SAM-DA tokens, in a SAM-DA bundle) and writes it into the packed configs."""
    from medsa_monai.networks import MedSA

    whole = tmp_path / "full.pt"
    torch.save(MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable="full").state_dict(), whole)
    archive = pack_bundle(bundle, tmp_path / "dist", model=whole)
    unpacked = unpack_bundle(archive, tmp_path / "unpacked")
    inference = json.loads((unpacked / "configs" / "inference.json").read_text())
    assert (inference["trainable"], inference["sam_variant"], inference["image_size"]) == ("full", "vit_tiny", 64)


def test_pack_saves_a_whole_state_dict_on_a_frozen_base_as_shared_weights(bundle, tmp_path):
    from medsa_monai.networks import MedSA

    source = tmp_path / "samda_skin_lesion"
    shutil.copytree(bundle, source, ignore=shutil.ignore_patterns("eval", "model.pt", "checkpoint_*"))
    (source / "large_files.yml").write_text(
        f'large_files:\n  - path: "models/{BASE}"\n    url: "https://example.org/{BASE}"\n'
        f'    hash_val: "{file_sha256(source / "models" / BASE)}"\n    hash_type: "sha256"\n')
    network = MedSA(2, 3, 2, "vit_tiny", sam_checkpoint=source / "models" / BASE, image_size=64, trainable="samda")
    with torch.no_grad():
        for p in network.parameters():
            if p.requires_grad:
                p.add_(0.05)
    whole = tmp_path / "whole.pt"
    torch.save(network.state_dict(), whole)
    archive = pack_bundle(source, tmp_path / "dist", model=whole)
    with zipfile.ZipFile(archive) as packed:
        shipped = packed.read("samda_skin_lesion/models/model.pt")
    assert len(shipped) < 0.3 * whole.stat().st_size
    (tmp_path / "model.pt").write_bytes(shipped)
    assert read_weights_record(tmp_path / "model.pt")["base"]["file"] == BASE
    loaded = MedSA(2, 3, 2, "vit_tiny", sam_checkpoint=source / "models" / BASE, image_size=64, trainable="samda")
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in loaded.state_dict().items())
