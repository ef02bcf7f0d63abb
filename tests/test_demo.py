"""``medsa demo``, shortened: synthetic data, training, evaluation, predictions and the overlay PNG."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
from PIL import Image


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "medsa_monai", "demo", "--output-dir", str(out), "--cases", "6", "--epochs", "2",
         "--image-size", "32"], capture_output=True, text=True, encoding="utf-8", errors="replace",
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "medsa demo: 1 held-out synthetic cases" in result.stdout
    assert "head: Dice" in result.stdout and "tail: Dice" in result.stdout and "NoC@85" in result.stdout
    summary = json.loads((out / "eval" / "summary.json").read_text())
    case = next(iter(summary["cases"]))
    prediction = nib.load(out / "eval" / "predictions" / f"{case}_seg.nii.gz")
    assert prediction.shape == nib.load(out / "data" / "imagesTr" / f"{case}.nii.gz").shape
    image = Image.open(out / "overlay.png")
    assert image.size == (4 * 3 * 32, 4 * 40)  # three 32 x 40 slices side by side, shown 4x
    # model.pt: the last epoch is always validated (val_interval 5 > 2 epochs), the demo evaluates the last epoch
    # and the propagation weight chosen on the training cases after training
    assert sorted(p.name for p in (out / "models").iterdir()) == ["checkpoint_epoch=2.pt", "model.pt", "plan.json",
                                                                  "propagation.json"]
    calibration = json.loads((out / "models" / "propagation.json").read_text())
    assert calibration["cases"] == 5 and calibration["checkpoint"] is None  # the last epoch, as evaluated
