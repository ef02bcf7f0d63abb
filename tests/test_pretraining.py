"""``medsa pretrain``: a tiny foundation from synthetic 2D and 3D data sets, in segment_anything's format, that the
bundles and ``medsa train`` accept as they accept the official checkpoints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from medsa_monai.cli import main as medsa
from medsa_monai.data import make_synthetic_dataset, make_synthetic_lesion_folder
from medsa_monai.data.hashing import file_sha256
from medsa_monai.networks import MedSA
from medsa_monai.pretraining import (
    CorpusSampler,
    PretrainSettings,
    corpus_entries,
    load_frames,
    pretrain,
    read_corpus,
    read_foundation_record,
    save_foundation,
)
from medsa_monai.prompts import SamplePromptsd

from .conftest import TINY, reference_sam

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SETTINGS = dict(image_size=64, steps_per_epoch=3, max_epochs=2, batch_size=2, warmup_steps=1, progress_bar=False,
                val_pairs=4)


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> list[Path]:
    """Two planned data sets: 2D RGB lesions (one structure) and 3D grey volumes (two classes)."""
    root = tmp_path_factory.mktemp("corpus")
    make_synthetic_lesion_folder(root / "lesions", num_images=8, size=(40, 52), seed=1)
    make_synthetic_dataset(root / "volumes", num_cases=6, shape=(20, 24, 12), seed=2)
    files = []
    for name in ("lesions", "volumes"):
        medsa(["ingest", str(root / name), str(root / f"ingested_{name}")])
        medsa(["plan", str(root / f"ingested_{name}" / "dataset.json"), "--output-dir", str(root / f"plan_{name}"),
               "--sam-variant", "vit_tiny", "--folds", "2"])
        files.append(root / f"plan_{name}" / "plan.json")
    return files


@pytest.fixture(scope="module")
def foundation(plans, tmp_path_factory) -> Path:
    return pretrain(plans, tmp_path_factory.mktemp("foundation"), PretrainSettings(**SETTINGS))


def test_the_foundation_loads_in_segment_anything_and_says_what_made_it(foundation, plans):
    sam = reference_sam(64, **TINY)  # segment_anything's own modules, as its registry builds them
    sam.load_state_dict(torch.load(foundation, weights_only=True))  # strict: every key, nothing more
    record = read_foundation_record(foundation)
    assert record["variant"] == "vit_tiny" and record["image_size"] == 64
    assert record["sha256"] == file_sha256(foundation) and record["file"] == foundation.name
    assert record["steps"] == 6 and record["epochs"] == 2
    corpus = {c.name: c for c in read_corpus(plans, val_fraction=0.1)}
    assert set(record["datasets"]) == set(corpus)
    for name, entry in record["datasets"].items():
        assert entry["training_cases"] == len(corpus[name].training) > 0
        assert entry["validation_cases"] == len(corpus[name].validation) > 0
    assert [v["epoch"] for v in record["validation"]] == [1, 2]
    assert 0.0 <= record["validation"][-1]["val_box_dice"] <= 1.0


def test_pretraining_resumes_where_it_stopped(plans, foundation, tmp_path):
    out = foundation.parent
    path = pretrain(plans, out, PretrainSettings(**{**SETTINGS, "max_epochs": 3, "resume": True}))
    assert read_foundation_record(path)["steps"] == 9  # 2 epochs of 3 steps from the checkpoint, then one more


def test_bundles_and_medsa_train_accept_it(foundation, plans, tmp_path):
    for bundle, size in (("samda_skin_lesion", 64), ("medsa_fundus_disc_cup", 64), ("medsa_hippocampus_mri", 32),
                         ("medsa_btcv_ct", 32)):
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
        parser.update({"sam_variant": "vit_tiny", "image_size": size, "sam_checkpoint": str(foundation)})
        network = parser.get_parsed_content("network_def")
        assert network.base_checkpoint.sha256 == file_sha256(foundation), bundle

    run = tmp_path / "run"
    medsa(["train", "--plan", str(plans[0]), "--fold", "0", "--output", str(run), "--bundle",
           str(BUNDLES / "samda_skin_lesion"), "--set", f"sam_checkpoint={foundation}", "trainable=medsa",
           "image_size=64", "max_epochs=1", "val_interval=1", "num_workers=0", "progress_bar=false"])
    saved = torch.load(run / "fold_0" / "models" / "model.pt", weights_only=True)
    assert saved["medsa_weights"]["base"]["sha256"] == file_sha256(foundation)  # adapters for this foundation


def test_each_set_is_drawn_as_often_whatever_its_size(plans):
    corpus = read_corpus(plans)
    frames = [load_frames(c, c.training, 32) for c in corpus]
    entries = corpus_entries(frames, empty_fraction=0.25)
    sizes = np.bincount([e["set"] for e in entries])
    assert sizes[1] > 3 * sizes[0]  # many more slices than images
    draws = list(CorpusSampler(entries, [1.0, 1.0], num_samples=4000, seed=3))
    share = np.mean([entries[i]["set"] == 0 for i in draws])
    assert 0.45 < share < 0.55
    weighted = list(CorpusSampler(entries, [3.0, 1.0], num_samples=4000, seed=3))
    assert 0.7 < np.mean([entries[i]["set"] == 0 for i in weighted]) < 0.8
    assert all(e["automatic"] == (e["set"] == 0) for e in entries)  # the volumes' two classes: never unprompted
    with pytest.raises(ValueError, match="weights name \\['nowhere'\\]"):
        read_corpus(plans, {"nowhere": 2.0})


def test_a_structure_that_is_not_the_whole_label_is_always_prompted():
    label = torch.zeros(1, 16, 16)
    label[0, 4:9, 5:11] = 1
    sampler = SamplePromptsd("label", num_classes=1, no_prompt_probability=1.0, automatic_key="automatic")
    prompted = sampler({"label": label, "automatic": False})
    assert (prompted["point_labels"] >= 0).any() or torch.isfinite(prompted["boxes"]).all()
    free = sampler({"label": label, "automatic": True})
    assert (free["point_labels"] < 0).all() and torch.isnan(free["boxes"]).all()


@pytest.mark.slow
def test_a_vit_b_foundation_loads_through_the_official_registry(tmp_path):
    from segment_anything import sam_model_registry

    network = MedSA(2, 3, 2, "vit_b", image_size=1024, trainable="full", intensity="zscore")
    path = save_foundation(network, tmp_path / "foundation_vit_b.pth", {"steps": 0})
    sam = sam_model_registry["vit_b"](checkpoint=str(path))
    reference = network.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in sam.state_dict().items())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pretraining_under_torchrun(plans, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(_free_port()), "-m", "medsa_monai", "pretrain", *map(str, plans), "--output", str(out),
               "--image-size", "64", "--steps-per-epoch", "2", "--max-epochs", "1", "--batch-size", "2",
               "--warmup-steps", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "foundation_vit_tiny_64.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 2
