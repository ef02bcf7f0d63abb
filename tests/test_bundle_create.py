"""``medsa bundle create``: a data set goes ingest -> plan -> bundle create -> ``python -m monai.bundle run
training`` with no hand edits, for 2D and 3D, one or several channels, classes or regions; and every bundle stays
the template plus settings (``medsa bundle sync``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import verify_metadata

from medsa_monai.bundle import RECORD_FILE, bundle_settings, create_bundle, render_config, sync_bundle
from medsa_monai.bundle.sync import _digest
from medsa_monai.cli import main

from .conftest import run_monai_bundle
from .test_pipeline_matrix import KINDS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).parent / "data" / "bundle_metadata_schema.json"
SHIPPED = ["medsa_hippocampus_mri", "medsa_fundus_disc_cup", "samda_skin_lesion", "medsa_btcv_ct"]
TINY = ["--sam_checkpoint", "None", "--trainable", "full", "--image_size", "32", "--num_workers", "0",
        "--progress_bar", "False", "--max_epochs", "1", "--val_interval", "1", "--batch_size", "2"]


def _planned(kind: str, root: Path) -> Path:
    data = KINDS[kind](root / "raw")
    main(["ingest", str(data["source"]), str(root / "ingested"), *data["ingest"]])
    main(["plan", str(root / "ingested" / "dataset.json"), "--output-dir", str(root / "plan"), "--sam-variant",
          "vit_tiny", "--memory-gb", "8", "--folds", "2"])
    return root / "plan" / "plan.json"


TRAINED_KINDS = ("rgb_nested", "task01_like")
"""Created bundles that also train through ``monai.bundle`` (a process each, about 13 s): RGB 2D, multi-modal 3D."""


@pytest.mark.parametrize("kind", [pytest.param("rgb_nested", marks=pytest.mark.slow), "grey_png", "task01_like",
                                  "ct_folder"])
def test_created_bundle_verifies_and_trains_through_monai_bundle(kind, tmp_path):
    plan_file = _planned(kind, tmp_path)
    plan = json.loads(plan_file.read_text())
    bundle = create_bundle(plan_file, tmp_path / f"{kind}_bundle")
    for name in ("configs/train.json", "configs/evaluate.json", "configs/inference.json",
                 "configs/multi_gpu_train.json", "configs/metadata.json", "configs/logging.conf", "docs/README.md",
                 "LICENSE", "large_files.yml"):
        assert (bundle / name).is_file(), name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == plan["in_channels"] == len(image["channel_def"])
    expected_outputs = list(plan["regions"]) if plan.get("regions") else list(plan["labels"].values())
    assert list(pred["channel_def"].values()) == expected_outputs
    assert pred["format"] == ("classes" if plan.get("regions") else "labels")
    card = (bundle / "docs" / "README.md").read_text()
    assert plan["dataset"] in card and f"in_channels={plan['in_channels']}" in card
    assert sync_bundle(bundle, check=True) == []
    if kind not in TRAINED_KINDS:  # one 2D and one 3D layout train; the others' configs are checked above
        return

    train = str(bundle / "configs" / "train.json")
    run_monai_bundle(bundle, "verify_net_in_out", "network_def", "--config_file", train, "--sam_checkpoint", "None",
                     "--image_size", "32")
    run_monai_bundle(bundle, "run", "training", "--config_file", train, "--bundle_root", str(bundle),
                     "--train#dataset#data", "$@split[0][:2]", *TINY)
    assert (bundle / "models" / "model.pt").is_file()


def test_create_refuses_an_existing_folder_and_leaves_nothing_on_error(tmp_path):
    plan_file = _planned("rgb_nested", tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken"):
        create_bundle(plan_file, tmp_path / "taken")
    with pytest.raises(KeyError, match="no_such_key"):
        create_bundle(plan_file, tmp_path / "new", settings={"train.json": {"no_such_key": 1}})
    with pytest.raises(KeyError, match="component or section"):
        create_bundle(plan_file, tmp_path / "new", settings={"train.json": {"network_def": {}}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ingested", "plan", "raw", "taken"]


def test_cli_create_with_settings_and_sync(tmp_path, capsys):
    plan_file = _planned("grey_png", tmp_path)
    bundle = tmp_path / "bundle"
    main(["bundle", "create", "--plan", str(plan_file), "--output", str(bundle), "--name", "lesions",
          "--set", "trainable=lora", "max_epochs=7"])
    train = json.loads((bundle / "configs" / "train.json").read_text())
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert train["trainable"] == inference["trainable"] == "lora" and train["max_epochs"] == 7
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["name"] == "lesions"
    assert bundle_settings(bundle)["train.json"]["max_epochs"] == 7
    template_default = render_config("train.json")["val_interval"]
    record = json.loads((bundle / RECORD_FILE).read_text())
    record["train.json"]["values"]["val_interval"] = "an older template's default"
    (bundle / RECORD_FILE).write_text(json.dumps(record))
    assert "val_interval" in bundle_settings(bundle)["train.json"]  # changed since it was rendered: the bundle's
    record["train.json"]["values"]["val_interval"] = _digest(template_default)
    (bundle / RECORD_FILE).write_text(json.dumps(record))
    assert "val_interval" not in bundle_settings(bundle)["train.json"]  # as rendered: it follows the template

    edited = dict(train, learning_rate=0.01)
    edited["network_def"] = dict(train["network_def"], image_size=64)  # a component edited by hand: refused
    (bundle / "configs" / "train.json").write_text(json.dumps(edited))
    with pytest.raises(SystemExit):
        main(["bundle", "sync", str(bundle), "--check"])
    assert "network_def" in capsys.readouterr().err
    edited["network_def"] = train["network_def"]
    edited["version_note"] = "x"
    (bundle / "configs" / "train.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="'version_note' is not a key of the template"):
        bundle_settings(bundle)
    del edited["version_note"]
    edited["train"] = dict(edited["train"], inferer={"_target_": "SliceInferer"})  # a section edited by hand
    (bundle / "configs" / "train.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="'train'"):
        sync_bundle(bundle)
    edited["train"] = train["train"]
    (bundle / "configs" / "logging.conf").write_text("[loggers]\nkeys=root\n")  # out of step, settings kept
    (bundle / "configs" / "train.json").write_text(json.dumps(edited))
    assert sync_bundle(bundle, check=True) == ["logging.conf", RECORD_FILE]  # settings recorded anew
    main(["bundle", "sync", str(bundle)])
    synced = json.loads((bundle / "configs" / "train.json").read_text())
    assert synced == render_config("train.json", bundle_settings(bundle)["train.json"])
    assert synced["learning_rate"] == 0.01 and synced["trainable"] == "lora"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundles_are_the_template_and_their_settings(name):
    bundle = ROOT / "bundles" / name
    assert sync_bundle(bundle, check=True) == [], f"run `medsa bundle sync bundles/{name}`"
