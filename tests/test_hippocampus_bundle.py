"""The hippocampus bundle through ``python -m monai.bundle`` on tiny synthetic data: parse, train, resume,
evaluate, infer, and the errors a user meets first."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from medsa_monai.data import make_synthetic_dataset

from .conftest import run_monai_bundle

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "medsa_hippocampus_mri"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
SHAPE = (24, 28, 20)
FAST = ["--sam_variant", "vit_tiny", "--trainable", "full", "--image_size", "32", "--num_workers", "0",
        "--patch_size", "[24,28,20]", "--batch_size", "2", "--progress_bar", "False"]
CALIBRATE = ["--calibration_cases", "2"]  # the calibration after training, on two cases: its own tests score it


def bundle_cli(*args: str, cwd: Path | None = None, timeout: int = 300, check: bool = True
               ) -> subprocess.CompletedProcess:
    return run_monai_bundle(BUNDLE, *args, cwd=cwd, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_cases=6, shape=SHAPE, seed=3)
    (root / "imagesTs").mkdir()
    shutil.copy(root / "imagesTr" / "synth_000.nii.gz", root / "imagesTs" / "synth_000.nii.gz")
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), "--bundle_root", str(out),
               "--sam_checkpoint", "None", "--max_epochs", "2", "--val_interval", "1", *FAST, *CALIBRATE)
    return out


def test_configs_parse_with_standard_ids(dataset, tmp_path):
    small = {"dataset_dir": str(dataset), "bundle_root": str(tmp_path), "sam_variant": "vit_tiny", "image_size": 32,
             "sam_checkpoint": "none", "num_workers": 0}
    for workflow_type, config in (("train", TRAIN), ("infer", str(CONFIGS / "inference.json"))):
        workflow = ConfigWorkflow(config_file=config, meta_file=str(CONFIGS / "metadata.json"),
                                  workflow_type=workflow_type, **small)
        workflow.initialize()
        assert not workflow.check_properties(), f"{config} misses required properties"
    multi_gpu = ConfigParser()
    multi_gpu.read_config([TRAIN, str(CONFIGS / "multi_gpu_train.json")])
    for key in ("network", "train#sampler", "train#dataloader#sampler", "validate#sampler", "initialize", "finalize"):
        assert key in multi_gpu, key
    parser = ConfigParser()
    parser.read_config([TRAIN, str(CONFIGS / "evaluate.json")])
    for key in ("bundle_root", "dataset_dir", "network_def", "network", "train#trainer", "train#dataset#data",
                "train#handlers", "train#trainer#max_epochs", "validate#evaluator", "validate#dataset#data",
                "validate#handlers", "run", "training", "evaluating", "evaluate#evaluator", "interactive#evaluator",
                "sam_variant", "sam_checkpoint"):
        assert key in parser, key
    inference = ConfigParser()
    inference.read_config(str(CONFIGS / "inference.json"))
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "run", "inferring"):
        assert key in inference, key


def test_metadata_has_the_bundle_spec_fields():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright", "network_data_format"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "image"}
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "anterior", "2": "posterior"}
    for doc in ("docs/README.md", "LICENSE", "large_files.yml"):
        assert (BUNDLE / doc).is_file(), doc


def test_verify_net_in_out():
    bundle_cli("verify_net_in_out", "network_def", "--config_file", TRAIN, "--sam_checkpoint", "None",
               "--sam_variant", "vit_tiny", "--image_size", "32")


def test_missing_sam_checkpoint_says_how_to_get_it(dataset, tmp_path):
    result = bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), "--bundle_root",
                        str(tmp_path), "--max_epochs", "1", check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "sam_vit_b_01ec64.pth' not found" in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in message
    assert "--sam_checkpoint None" in message


def test_training_writes_best_and_resumable_checkpoints(trained):
    files = sorted(p.name for p in (trained / "models").iterdir())
    # + the propagation weight chosen and the plan it was trained with
    assert files == ["checkpoint_epoch=2.pt", "model.pt", "plan.json", "propagation.json"]
    # chosen for the model inference.json loads, the best validation epoch, not the network as training left it
    assert json.loads((trained / "models" / "propagation.json").read_text())["checkpoint"] == "model.pt"
    assert list((trained / "eval" / "tensorboard").iterdir())


def test_evaluate_reports_metrics_in_original_space(dataset, trained):
    bundle_cli("run", "evaluating", "--config_file", f"['{TRAIN}','{CONFIGS / 'evaluate.json'}']", "--dataset_dir",
               str(dataset), "--bundle_root", str(trained), "--interactive_clicks", "3", *FAST)
    summary = json.loads((trained / "eval" / "summary.json").read_text())
    assert summary["num_cases"] == 1 and set(summary["classes"]) == {"anterior", "posterior", "mean"}
    case = next(iter(summary["cases"]))
    for metric in ("dice", "iou", "hd95", "tp", "fp", "fn"):
        assert metric in summary["cases"][case]["anterior"]
    interactive = json.loads((trained / "eval" / "interactive_summary.json").read_text())
    assert set(interactive["classes"]["mean"]["dice_after_clicks"]) == {"1", "3"}
    prediction = nib.load(trained / "eval" / "predictions" / f"{case}_seg.nii.gz")
    reference = nib.load(dataset / "labelsTr" / f"{case}.nii.gz")
    assert prediction.shape == reference.shape and np.allclose(prediction.affine, reference.affine)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


def run_benchmark(script: str, dataset: Path, trained: Path, monkeypatch, *args: str) -> None:
    """``python benchmarks/<script>`` on the trained bundle's last model with the training's settings, run in this
    process (as ``__main__``, its folder on the path as when it is run as a script)."""
    benchmarks = BUNDLE.parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    monkeypatch.setattr(sys, "argv", [
        script, "--bundle", str(BUNDLE), "--data", str(dataset), "--model",
        str(trained / "models" / "checkpoint_epoch=2.pt"), "--set", "sam_variant=vit_tiny", "trainable=full",
        "image_size=32", "patch_size=[24,28,20]", *args])
    runpy.run_path(str(benchmarks / script), run_name="__main__")


def test_click_benchmarks_score_the_cases_of_the_training_split(dataset, trained, tmp_path, monkeypatch, capsys):
    run_benchmark("click_ceiling.py", dataset, trained, monkeypatch, "--image-sizes", "32", "--clicks", "3",
                  "--oracles", "disk:1", "--output", str(tmp_path / "ceiling.json"))
    assert "1 held-out cases, 3 clicks" in capsys.readouterr().out  # of 6 cases, validation 1, held out 1
    rows = json.loads((tmp_path / "ceiling.json").read_text())
    model = rows["model, image_size=32"]
    assert 0 <= model["dice@1"] <= 1 and 0 <= model["dice@3"] <= 1 and 0 < model["grid ceiling"] <= 1
    assert 1 <= model["noc@80"] <= 3 and set(rows) == {"model, image_size=32", "oracle, disk r=1 voxels on the "
                                                       "click's slice"}
    run_benchmark("click_steps.py", dataset, trained, monkeypatch, "--part", "training", "--cases", "2",
                  "--clicks", "3", "--output", str(tmp_path / "steps.json"))
    assert "2 training cases" in capsys.readouterr().out
    counted = json.loads((tmp_path / "steps.json").read_text())["clicks 2-5"]
    assert 0 < counted["steps"] <= 2 * 2 * 2  # clicks 2 and 3 of each (case, class) whose prediction was wrong
    with pytest.raises(SystemExit, match="the predictor has no setting 'obey_click'"):
        run_benchmark("click_steps.py", dataset, trained, monkeypatch, "--predictor-settings", "obey_click=false")


@pytest.mark.slow
def test_training_and_clicks_with_the_prompt_centred_zoom(dataset, tmp_path):
    bundle_cli("run", "training", "--config_file", TRAIN, "--dataset_dir", str(dataset), "--bundle_root",
               str(tmp_path), "--sam_checkpoint", "None", "--max_epochs", "1", "--val_interval", "1",
               "--prompt_zoom_probability", "1.0", *FAST, *CALIBRATE)
    bundle_cli("run", "evaluating", "--config_file", f"['{TRAIN}','{CONFIGS / 'evaluate.json'}']", "--dataset_dir",
               str(dataset), "--bundle_root", str(tmp_path), "--interactive_clicks", "2", "--interactive_zoom", "True",
               "--protocol_clicks", "0", "--paper_protocols", "[]", *FAST)
    interactive = json.loads((tmp_path / "eval" / "interactive_summary.json").read_text())
    assert len(interactive["zoom_after_clicks"]) == 2 and min(interactive["zoom_after_clicks"]) >= 1.0
    assert set(interactive["classes"]["mean"]["noc"]) == {"80", "85", "90"}


def test_inference_writes_nifti_with_the_input_geometry(dataset, trained):
    bundle_cli("run", "inferring", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir", str(dataset),
               "--bundle_root", str(trained), *FAST[:-2])
    out = nib.load(trained / "eval" / "inference" / "synth_000_seg.nii.gz")
    source = nib.load(dataset / "imagesTs" / "synth_000.nii.gz")
    assert out.shape == source.shape and np.allclose(out.affine, source.affine)
    assert out.get_data_dtype() == np.uint8
    assert not [p for p in (trained / "eval" / "inference").iterdir() if p.name.startswith(".")]  # no temp files


def test_killed_run_resumes_from_its_last_checkpoint(dataset, tmp_path):
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN, "--dataset_dir",
            str(dataset), "--bundle_root", str(tmp_path), "--sam_checkpoint", "None", "--val_interval", "1", *FAST,
            *CALIBRATE]
    process = subprocess.Popen([*args, "--max_epochs", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 240
    try:
        while not list((tmp_path / "models").glob("checkpoint_epoch=*.pt")):
            assert time.time() < deadline and process.poll() is None, "no checkpoint before the deadline"
            time.sleep(0.5)
        time.sleep(1.0)  # let ignite finish the atomic rename
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    saved = max(int(p.stem.split("=")[1]) for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt"))
    resumed = subprocess.run([*args, "--max_epochs", str(saved + 1), "--resume", "True"], capture_output=True,
                             text=True, encoding="utf-8", errors="replace", timeout=300)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming from" in log and f"checkpoint_epoch={saved}.pt" in log, log[-3000:]
    after = log[log.index("resuming from"):]
    assert f"Epoch[{saved + 1}] Complete" in after and "Epoch[1] Complete" not in after, log[-3000:]
    assert sorted(p.name for p in (tmp_path / "models").glob("checkpoint_epoch=*.pt")) == [
        f"checkpoint_epoch={saved + 1}.pt"]


def _parsed_training_dataset(dataset_dir: Path):
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(dataset_dir), "num_workers": 0, "val_fraction": 0.0})
    return parser.get_parsed_content("train#dataset")


@pytest.mark.parametrize("problem", ["shape", "values", "missing"])
def test_bad_data_is_reported_with_the_case_name(dataset, tmp_path, problem):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    label_file = broken / "labelsTr" / "synth_004.nii.gz"
    label = nib.load(label_file)
    data = np.asarray(label.dataobj)
    if problem == "shape":
        nib.save(nib.Nifti1Image(data[:-2], label.affine), label_file)
        match = r"synth_004.nii.gz.*label spatial shape \(22, 28, 20\) differs from image spatial shape \(24, 28, 20\)"
    elif problem == "values":
        data = data.copy()
        data[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(data, label.affine), label_file)
        match = r"synth_004.nii.gz.*label values \[7\] are not among the declared labels \[0, 1, 2\]"
    else:
        label_file.unlink()
        match = r"synth_004.nii.gz: label file .* does not exist"
    with pytest.raises(Exception) as err:
        _parsed_training_dataset(broken)
    chain, e = [], err.value
    while e is not None:  # MONAI wraps the error in "Failed to instantiate ..."; a user sees the whole chain
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert re.search(match, "\n".join(chain)), chain
