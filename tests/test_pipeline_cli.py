"""The nnU-Net-style pipeline end to end through ``medsa``: ingest, plan, train two folds, predict (mirroring,
probabilities), evaluate, ensemble, post-process; an interrupted predict leaves no partial file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsa_monai.cli import main
from medsa_monai.data import load_probabilities, make_synthetic_dataset

SHAPE = (16, 20, 12)
TRAIN_SET = ["trainable=full", "sam_checkpoint=none", "max_epochs=1", "val_interval=1", "num_workers=0",
             "progress_bar=false", "calibration_cases=2"]


def medsa(*args: str) -> str:
    """``medsa ARGS`` in this process (a process each would add seconds of imports; test_cli.py runs the console
    entry point itself); its standard output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as stop:
            if stop.code not in (None, 0):
                raise AssertionError(f"medsa {args[0]} failed:\n{out.getvalue()[-3000:]}\n{err.getvalue()[-3000:]}"
                                     ) from None
    return out.getvalue()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data = make_synthetic_dataset(root / "data", num_cases=6, shape=SHAPE, seed=5)
    medsa("ingest", str(data), str(root / "ingested"))
    out = medsa("plan", str(root / "ingested" / "dataset.json"), "--output-dir", str(root / "plan"),
                "--sam-variant", "vit_tiny", "--memory-gb", "8", "--folds", "2")
    assert '"image_size": 96' in out
    plan = root / "plan" / "plan.json"
    for fold in (0, 1):
        medsa("train", "--plan", str(plan), "--fold", str(fold), "--output", str(root / "runs"), "--set", *TRAIN_SET)
    return {"root": root, "data": data, "plan": plan}


def test_plan_datalist_and_trained_folds(pipeline):
    root = pipeline["root"]
    datalist = json.loads((root / "plan" / "datalist.json").read_text())
    folds = [item["fold"] for item in datalist["training"]]
    assert sorted(folds) == [0, 0, 0, 1, 1, 1]
    plan = json.loads(pipeline["plan"].read_text())
    assert plan["datalist_file"] == str((root / "plan" / "datalist.json").resolve())
    for fold in (0, 1):
        assert (root / "runs" / f"fold_{fold}" / "models" / "model.pt").is_file()
        log_dir = root / "runs" / f"fold_{fold}" / "eval" / "tensorboard"
        assert list(log_dir.iterdir())


@pytest.mark.parametrize("fold", [2, -1])
def test_a_fold_the_datalist_lacks_is_refused_before_the_run_folder_exists(pipeline, tmp_path, capsys, fold):
    with pytest.raises(SystemExit):
        main(["train", "--plan", str(pipeline["plan"]), "--fold", str(fold), "--output", str(tmp_path / "runs"),
              "--set", *TRAIN_SET])
    error = capsys.readouterr().err
    assert "datalist.json" in error and ("it has folds 0..1" in error or "0 or more" in error)
    assert not (tmp_path / "runs").exists()


def test_a_model_knows_its_plan(pipeline, tmp_path, capsys):
    root, data, plan = pipeline["root"], pipeline["data"], pipeline["plan"]
    run = root / "runs" / "fold_0"
    trained = run / "models" / "plan.json"  # written by the bundle's training, beside the models it saves
    assert json.loads(trained.read_text()) == json.loads(plan.read_text())
    relabelled = json.loads(plan.read_text())
    relabelled["labels"] = {"0": "background", "1": "tail", "2": "head"}  # the same shapes, another label order
    other = tmp_path / "other_plan.json"
    other.write_text(json.dumps(relabelled))
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(run / "models" / "model.pt"), "--input", str(data / "imagesTr"), "--output",
              str(tmp_path / "out"), "--plan", str(other)])
    error = capsys.readouterr().err
    assert f"was trained with the plan '{trained}', whose labels is" in error and str(other) in error
    assert "leave out --plan to predict with the model's own plan" in error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    medsa("predict", "--model", str(run / "models" / "model.pt"), "--input", str(data / "imagesTr"), "--output",
          str(tmp_path / "own"), "--pattern", "synth_000.nii.gz")  # no --plan: the model's own
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["plan.json", "synth_000.nii.gz"]
    # evaluate reads the labels the predictions were made with, and refuses others
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "synth_000.nii.gz").symlink_to(data / "labelsTr" / "synth_000.nii.gz")
    out = medsa("evaluate", "--pred", str(tmp_path / "own"), "--ref", str(tmp_path / "ref"))
    assert "Dice" in out and (tmp_path / "own" / "summary.json").is_file()
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", str(tmp_path / "own"), "--ref", str(tmp_path / "ref"), "--labels", str(other)])
    error = capsys.readouterr().err
    assert f"the predictions in '{tmp_path / 'own'}' were made with the plan '{tmp_path / 'own' / 'plan.json'}', " \
           f"whose labels is" in error and str(other) in error and len(error.splitlines()) <= 2


def test_predict_reads_dicom_series_and_writes_dicom_seg(pipeline, tmp_path, capsys):
    """A DICOM series (written from a case) is predicted as its NIfTI is, voxel for voxel, and the SEG read back with
    highdicom holds that prediction on the series' frames; a series of another modality or with a missing slice is
    refused naming it."""
    pytest.importorskip("pydicom_seg", reason="pydicom-seg comes with MONAI Label (bash scripts/setup_env.sh)")
    pytest.importorskip("highdicom", reason="highdicom is in the [test] extra")
    import pydicom

    from medsa_monai.conversion.dicom_series import write_series
    from medsa_monai.prediction.dicom_seg import label_map_on_series, read_dicom_seg

    root, data = pipeline["root"], pipeline["data"]
    model = root / "runs" / "fold_0" / "models" / "model.pt"
    write_series(data / "imagesTr" / "synth_001.nii.gz", tmp_path / "studies" / "case_a", modality="MR")
    write_series(data / "imagesTr" / "synth_002.nii.gz", tmp_path / "studies" / "case_b", modality="MR")
    out = medsa("predict", "--model", str(model), "--input", str(tmp_path / "studies"), "--output",
                str(tmp_path / "pred"), "--output-format", "seg")
    assert "wrote 2 label maps and 2 DICOM SEG objects" in out
    medsa("predict", "--model", str(model), "--input", str(data / "imagesTr"), "--output", str(tmp_path / "nifti"),
          "--pattern", "synth_00[12].nii.gz")
    for case, source in (("case_a", "synth_001"), ("case_b", "synth_002")):
        from_dicom = nib.load(tmp_path / "pred" / f"{case}.nii.gz")
        from_nifti = nib.load(tmp_path / "nifti" / f"{source}.nii.gz")
        assert np.allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
        agreement = (np.asarray(from_dicom.dataobj) == np.asarray(from_nifti.dataobj)).mean()
        assert agreement > 0.999, agreement  # the series stores intensities in 16 bits
        series = tmp_path / "studies" / case
        masks, names = read_dicom_seg(tmp_path / "pred" / f"{case}.dcm", series)
        headers = [pydicom.dcmread(f) for f in sorted(series.iterdir())]
        on_frames = label_map_on_series(tmp_path / "pred" / f"{case}.nii.gz", headers)
        assert names == ["head", "tail"]  # the synthetic data set's label names
        for number, value in ((0, 1), (1, 2)):
            assert np.array_equal(masks[..., number].astype(bool), on_frames == value)

    write_series(data / "imagesTr" / "synth_003.nii.gz", tmp_path / "ct" / "case_c", modality="CT")
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(model), "--input", str(tmp_path / "ct"), "--output", str(tmp_path / "x")])
    error = capsys.readouterr().err
    assert f"DICOM series '{tmp_path / 'ct' / 'case_c'}' has modality 'CT'; the model was trained on 'MRI'" in error
    (tmp_path / "studies" / "case_a" / "slice_0005.dcm").unlink()
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(model), "--input", str(tmp_path / "studies" / "case_a"), "--output",
              str(tmp_path / "y")])
    error = capsys.readouterr().err
    assert "'slice_0004.dcm' and 'slice_0006.dcm' are" in error and "about 1 slice(s) missing" in error
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(model), "--input", str(data / "imagesTr"), "--output", str(tmp_path / "z"),
              "--output-format", "seg"])
    assert "holds no DICOM series" in capsys.readouterr().err


def test_predict_names_the_file_of_a_damaged_or_unfitting_model(pipeline, tmp_path, capsys):
    import torch

    from medsa_monai.networks import MedSA

    root, data, plan = pipeline["root"], pipeline["data"], str(pipeline["plan"])
    model = root / "runs" / "fold_0" / "models" / "model.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    other = tmp_path / "other.pt"  # the same variant, four classes instead of two
    torch.save(MedSA(3, 1, 5, "vit_tiny", image_size=96, trainable="full").state_dict(), other)
    for bad, expected in ((truncated, "truncated or damaged"), (other, "does not fit the network of the plan")):
        with pytest.raises(SystemExit):
            main(["predict", "--model", str(bad), "--input", str(data / "imagesTr"), "--output",
                  str(tmp_path / "out"), "--plan", plan])
        error = capsys.readouterr().err
        assert str(bad) in error and expected in error and len(error.splitlines()) <= 3, error
    assert "class_prompts.weight: file (4, 256), network (2, 256)" in error and plan in error
    assert not list((tmp_path / "out").glob("*.nii.gz")) if (tmp_path / "out").exists() else True


def test_predict_evaluate_ensemble_postprocess(pipeline):
    root, data, plan = pipeline["root"], pipeline["data"], str(pipeline["plan"])
    for fold, extra in ((0, ["--mirror"]), (1, [])):
        medsa("predict", "--model", str(root / "runs" / f"fold_{fold}" / "models" / "model.pt"), "--input",
              str(data / "imagesTr"), "--output", str(root / f"pred{fold}"), "--plan", plan, "--save-probabilities",
              *extra)
    names = sorted(p.name for p in (root / "pred0").glob("*.nii.gz"))
    assert names == sorted(p.name for p in (data / "imagesTr").glob("*.nii.gz"))
    for name in names:
        pred, source = nib.load(root / "pred0" / name), nib.load(data / "imagesTr" / name)
        assert pred.shape == source.shape and np.allclose(pred.affine, source.affine)
        probs, affine = load_probabilities(root / "pred0" / name.replace(".nii.gz", ".npz"))
        assert probs.shape == (3, *SHAPE) and np.allclose(probs.sum(0), 1, atol=1e-2)
        assert np.array_equal(np.asarray(pred.dataobj), probs.argmax(0))

    out = medsa("evaluate", "--pred", str(root / "pred0"), "--ref", str(data / "labelsTr"), "--labels", plan)
    summary = json.loads((root / "pred0" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"} and len(summary["metric_per_case"]) == 6
    assert {"Dice", "IoU", "HD95", "TP", "FP", "FN", "TN", "n_pred", "n_ref"} <= set(summary["mean"]["1"])
    assert "head" in out and "foreground" in out

    medsa("ensemble", str(root / "pred0"), str(root / "pred1"), "--output", str(root / "ensemble"))
    case = names[0].replace(".nii.gz", "")
    averaged, _ = load_probabilities(root / "ensemble" / f"{case}.npz")
    first, _ = load_probabilities(root / "pred0" / f"{case}.npz")
    second, _ = load_probabilities(root / "pred1" / f"{case}.npz")
    assert np.allclose(averaged, (first + second) / 2, atol=2e-3)
    assert np.array_equal(np.asarray(nib.load(root / "ensemble" / f"{case}.nii.gz").dataobj), averaged.argmax(0))
    assert json.loads((root / "ensemble" / "plan.json").read_text()) == json.loads((root / "pred0" / "plan.json")
                                                                                  .read_text())

    rules = root / "postprocessing.json"
    medsa("postprocess", "determine", "--pred", str(root / "pred0"), "--ref", str(data / "labelsTr"), "--labels",
          plan, "--rules", str(rules))
    decisions = json.loads(rules.read_text())
    assert set(decisions["classes"]) == {"1", "2"} and decisions["num_cases"] == 6
    medsa("postprocess", "apply", "--input", str(root / "ensemble"), "--output", str(root / "final"), "--rules",
          str(rules))
    assert sorted(p.name for p in (root / "final").glob("*.nii.gz")) == names


def test_ensemble_refuses_folders_predicted_with_different_plans(pipeline, tmp_path, capsys):
    from medsa_monai.data import save_probabilities

    plan = json.loads(pipeline["plan"].read_text())
    folders = []
    for name, labels in (("a", plan["labels"]), ("b", {"0": "background", "1": "tail", "2": "head"})):
        folder = tmp_path / name
        folder.mkdir()
        save_probabilities(folder / "case.npz", np.full((3, 4, 4, 2), 1 / 3, np.float32), np.eye(4))
        (folder / "plan.json").write_text(json.dumps({**plan, "labels": labels}))
        folders.append(str(folder))
    with pytest.raises(SystemExit):
        main(["ensemble", *folders, "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert f"'{folders[0]}' was predicted with a plan whose labels is" in error and folders[1] in error
    assert not (tmp_path / "out").exists()


COPIES = 10  # volumes the interrupted predict is given; it is stopped after two


@pytest.mark.parametrize("how", [pytest.param("SIGTERM", marks=pytest.mark.slow), "SIGKILL"])
def test_interrupted_predict_leaves_no_partial_file(pipeline, tmp_path, how):
    many = tmp_path / "many"
    many.mkdir()
    source = sorted((pipeline["data"] / "imagesTr").glob("*.nii.gz"))
    for i in range(COPIES):
        os.symlink(source[i % len(source)], many / f"copy_{i:03d}.nii.gz")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "medsa_monai", "predict", "--model",
            str(pipeline["root"] / "runs" / "fold_0" / "models" / "model.pt"), "--input", str(many), "--output",
            str(out), "--plan", str(pipeline["plan"]), "--save-probabilities", "--mirror"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out.is_dir() and len(list(out.glob("*.nii.gz"))) >= 2):
        assert time.time() < deadline and process.poll() is None, "predict wrote nothing in time"
        time.sleep(0.05)
    process.send_signal(getattr(signal, how))
    process.wait(timeout=60)
    finished = sorted(p for p in out.glob("*.nii.gz") if not p.name.startswith("."))  # glob matches dotfiles
    assert 0 < len(finished) < COPIES
    for path in finished:  # everything in place is complete
        assert np.asarray(nib.load(path).dataobj).shape == SHAPE
    temporaries = [p for p in out.iterdir() if p.name.startswith(".")]
    if how == "SIGTERM":
        assert not temporaries  # cleaned up on the way out
    else:
        subprocess.run(args, check=True, capture_output=True, timeout=600)  # a rerun removes what SIGKILL left
        assert not [p for p in out.iterdir() if p.name.startswith(".")]
        assert len(list(out.glob("*.nii.gz"))) == COPIES
