"""Segmentation metrics and reports against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from medsa_monai.evaluation import SegmentationReport, case_metrics, dice_score, hd95, summarize


def test_counts_dice_and_iou_by_hand():
    ref = np.zeros((10, 10), dtype=np.int64)
    ref[2:6, 2:6] = 1  # 16 voxels
    pred = np.zeros_like(ref)
    pred[3:7, 2:6] = 1  # 16 voxels, 12 overlapping
    m = case_metrics(pred, ref, {1: "a"}, spacing=(1.0, 1.0))["a"]
    assert (m["tp"], m["fp"], m["fn"]) == (12, 4, 4)
    assert m["dice"] == pytest.approx(24 / 32) and m["iou"] == pytest.approx(12 / 20)
    assert math.isnan(dice_score(np.zeros(4, bool), np.zeros(4, bool)))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred, ref[:5], {1: "a"}, (1.0, 1.0))


def test_hd95_in_millimetres():
    ref = np.zeros((20, 20, 20), dtype=bool)
    ref[5:10, 5:10, 5:10] = True
    shifted = np.roll(ref, 3, axis=0)
    # every surface point moves by 3 voxels along the first axis, whose spacing is 2 mm
    assert hd95(shifted, ref, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(ref, ref, (1.0, 1.0, 1.0)) == 0.0
    assert math.isnan(hd95(np.zeros_like(ref), np.zeros_like(ref), (1, 1, 1)))
    # a missed structure costs the image diagonal, not a silent NaN
    assert hd95(np.zeros_like(ref), ref, (2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(40**2 + 20**2 + 20**2))


def test_summary_statistics_skip_nan():
    cases = [{"a": {"dice": 0.5, "iou": 0.3, "hd95": 2.0}}, {"a": {"dice": 0.9, "iou": 0.8, "hd95": math.nan}},
             {"a": {"dice": 0.7, "iou": 0.5, "hd95": 4.0}}]
    s = summarize(cases)
    assert s["a"]["dice"]["mean"] == pytest.approx(0.7) and s["a"]["dice"]["median"] == pytest.approx(0.7)
    assert s["a"]["dice"]["std"] == pytest.approx(np.std([0.5, 0.9, 0.7]))
    assert s["a"]["hd95"]["mean"] == pytest.approx(3.0) and s["a"]["hd95"]["count"] == 2


def test_report_handler_writes_csv_and_json(tmp_path):
    ref = torch.zeros(1, 8, 8, 4)
    ref[0, 2:5, 2:5, 1:3] = 1
    ref[0, 5:7, 2:5, 1:3] = 2
    pred = ref.clone()
    pred[0, 6, 2:5, 1:3] = 0  # half of class 2 missed
    label = MetaTensor(ref, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])),
                       meta={"filename_or_obj": "/data/labelsTr/case_007.nii.gz"})
    onehot = torch.nn.functional.one_hot(pred[0].long(), 3).permute(3, 0, 1, 2).float()
    engine = Engine(lambda e, b: [{"pred": onehot, "label": label}])
    SegmentationReport(tmp_path, ["first", "second"]).attach(engine)
    engine.run([0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_cases"] == 1
    assert summary["cases"]["case_007"]["first"]["dice"] == 1.0
    assert summary["cases"]["case_007"]["second"]["dice"] == pytest.approx(2 * 6 / (6 + 12))
    assert summary["classes"]["second"]["dice"]["mean"] == pytest.approx(2 / 3)
    assert engine.state.metrics["dice_first"] == 1.0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("case,class,dice,iou,hd95,tp,fp,fn")
    assert lines[2].startswith("case_007,second,0.666667")
