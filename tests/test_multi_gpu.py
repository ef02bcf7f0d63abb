"""``configs/multi_gpu_train.json`` of both bundles under the real ``torchrun``: 2 processes, Gloo on the CPU.

Each rank records (``medsa_monai.training.RankRecorder``, added by a test overlay through ``train#extra_handlers``)
what its sampler gave it and its weights; checkpoints go to a per-rank folder so that the writer shows.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medsa_monai.data import make_synthetic_dataset, make_synthetic_lesion_folder
from medsa_monai.training import state_dict_sha256

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
OVERLAY = {
    "train#extra_handlers": ["$medsa_monai.training.RankRecorder(@output_dir + '/ranks')"],
    "ckpt_dir": "$@bundle_root + '/models' + os.environ['RANK']",
    "log_dir": "$@output_dir + '/tensorboard' + os.environ['RANK']",
}
TINY = ["--sam_checkpoint", "None", "--sam_variant", "vit_tiny", "--num_workers", "0", "--max_epochs", "1",
        "--val_interval", "1", "--batch_size", "2", "--warmup_epochs", "0", "--progress_bar", "False"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(bundle: str, dataset: Path, out: Path, *overrides: str) -> Path:
    """Train one epoch with 2 processes; return the folder of the per-rank logs."""
    configs = BUNDLES / bundle / "configs"
    overlay = out / "record.json"
    out.mkdir(parents=True, exist_ok=True)
    overlay.write_text(json.dumps(OVERLAY))
    files = [str(configs / "train.json"), str(configs / "multi_gpu_train.json"), str(overlay)]
    logs = out / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(free_port()), "--log-dir", str(logs), "--redirects", "3",
               "-m", "monai.bundle", "run", "training", "--config_file", repr(files),
               "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
               "--dataset_dir", str(dataset), "--bundle_root", str(out / "bundle"), *TINY, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=240, env=env)
    rank_logs = "\n".join(f"--- {p.relative_to(logs)}\n{p.read_text(errors='replace')[-2000:]}"
                          for p in sorted(logs.rglob("*.log")))
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}\n{rank_logs}"
    return logs


def scalar_values(log_dir: Path) -> int:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(len(event.summary.value) for f in log_dir.glob("events.out.tfevents.*")
               for event in EventFileLoader(str(f)).Load())


def check_run(out: Path, logs: Path, train_images: int, iterations: int, calibrated: bool = False) -> None:
    ranks = [json.loads((out / "bundle" / "eval" / "ranks" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    # the distributed sampler split the training set: disjoint halves that cover it
    seen = [set(r["sampled"][0]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == train_images // 2 and not seen[0] & seen[1]
    assert [r["iterations"] for r in ranks] == [iterations, iterations]
    # the weights trained and stayed the same on both ranks (gradients all-reduced), and model.pt holds them
    assert ranks[0]["initial_sha256"] == ranks[1]["initial_sha256"] != ranks[0]["state_sha256"]
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"]
    models = out / "bundle" / "models0"
    # rank 0 also chose a 3D model's propagation weight after training
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "model.pt", "plan.json"] + (
        ["propagation.json"] if calibrated else [])
    assert state_dict_sha256(torch.load(models / "model.pt", weights_only=True)) == ranks[0]["state_sha256"]
    # only rank 0 wrote checkpoints, TensorBoard scalars and the loss / metric log lines
    assert not (out / "bundle" / "models1").exists()
    assert scalar_values(out / "bundle" / "eval" / "tensorboard0") > 0
    assert scalar_values(out / "bundle" / "eval" / "tensorboard1") == 0
    stdout = [next(logs.rglob(f"{k}/stdout.log")).read_text() for k in (0, 1)]
    assert "train_loss" in stdout[0] and "Metrics -- val_mean_dice" in stdout[0]
    assert "train_loss" not in stdout[1] and "Metrics --" not in stdout[1]


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return make_synthetic_lesion_folder(tmp_path_factory.mktemp("lesions"), num_images=10, seed=2)


def test_skin_bundle_trains_on_two_processes(lesions, tmp_path):
    logs = torchrun("samda_skin_lesion", lesions, tmp_path, "--image_size", "32")
    check_run(tmp_path, logs, train_images=8, iterations=2)


@pytest.mark.slow
def test_hippocampus_bundle_trains_on_two_processes(tmp_path):
    dataset = make_synthetic_dataset(tmp_path / "data", num_cases=6, shape=(24, 28, 20), seed=3)
    logs = torchrun("medsa_hippocampus_mri", dataset, tmp_path / "run", "--image_size", "32", "--trainable", "full",
                    "--patch_size", "[24,28,20]", "--val_fraction", "0.34")
    check_run(tmp_path / "run", logs, train_images=4, iterations=1, calibrated=True)
