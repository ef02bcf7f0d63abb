"""The iterative-click protocol and its evaluator, with a stub network whose answer is known exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Events

from medsa_monai.evaluation import InteractiveEvaluator, InteractiveReport, clicks_to_reach, simulate_clicks


class BallsAroundClicks:
    """Predicts, for one class, the union of balls of radius ``r`` around positive clicks minus negative ones."""

    num_classes = 1
    background_channel = True

    def __init__(self, radius: float = 3.0):
        self.radius = radius
        self.calls = []

    def encode(self, image):
        self.encoded = getattr(self, "encoded", 0) + 1
        return torch.zeros(1)

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        spatial = tuple(image_shape[2:])
        grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij"), -1).float()
        logit = torch.full(spatial, -1.0)
        if boxes is None and points is None:  # automatic mode: a fixed 6 x 6 corner of the square
            logit[4:10, 4:10] = 1.0
        if boxes is not None:
            low, high = boxes[0, 0, :2], boxes[0, 0, 2:]
            logit[((grid >= low) & (grid <= high)).all(-1)] = 1.0
        if points is not None:
            self.calls.append((points[0, 0].clone(), point_labels[0, 0].clone(), mask_inputs is not None))
            for p, lab in zip(points[0, 0], point_labels[0, 0], strict=True):
                if lab >= 0:
                    near = ((grid - p) ** 2).sum(-1) <= self.radius**2
                    logit[near] = 1.0 if lab == 1 else -1.0
        return logit[None, None]

    def postprocess(self, low_res, spatial):
        return torch.cat([torch.zeros_like(low_res), low_res], 1)

    def eval(self):
        return self


def _square(size=24, low=4, high=16):
    label = np.zeros((size, size), dtype=np.int64)
    label[low:high, low:high] = 1
    return label


def test_clicks_follow_the_errors_and_dice_matches_hand_computation():
    label = _square()
    net = BallsAroundClicks(radius=3.0)
    result = simulate_clicks(net, torch.zeros(1, 1, 24, 24), label, num_clicks=4)
    assert net.encoded == 1  # one image embedding for the whole session
    first_points, first_labels, feedback = net.calls[0]
    assert first_labels.tolist() == [1] and not feedback
    assert tuple(first_points[0].long().tolist()) in {(9, 9), (9, 10), (10, 9), (10, 10)}  # centre of the object
    ball = sum(1 for i in range(-3, 4) for j in range(-3, 4) if i * i + j * j <= 9)  # 29 pixels
    assert result.click_dice[0, 0] == pytest.approx(2 * ball / (ball + 144))
    assert all(c[2] for c in net.calls[1:])  # later clicks feed the previous mask back
    assert np.all(np.diff(result.click_dice[:, 0]) > 0)  # each click on a false negative adds foreground
    for points, labels, _ in net.calls:  # every click is positive and inside the object here
        assert all(label[tuple(p.long().tolist())] == 1 for p, lab in zip(points, labels, strict=True) if lab == 1)
    assert result.box_dice[0] == pytest.approx(1.0)
    assert result.automatic_dice[0] == pytest.approx(2 * 36 / (36 + 144))  # no prompt: the corner, same frame


def test_noc_counts_the_first_click_reaching_the_threshold():
    curve = np.array([[0.5, 0.2, math.nan], [0.86, 0.4, math.nan], [0.95, 0.5, math.nan]])
    assert clicks_to_reach(curve, 0.85)[:2].tolist() == [2.0, 3.0]  # not reached: the budget
    assert clicks_to_reach(curve, 0.9)[0] == 3.0
    assert math.isnan(clicks_to_reach(curve, 0.85)[2])


def test_interactive_evaluator_and_report(tmp_path):
    label = torch.from_numpy(_square())[None, None].float()
    data = [{"image": torch.zeros(1, 1, 24, 24), "label": label}] * 2
    evaluator = InteractiveEvaluator("cpu", data, BallsAroundClicks(radius=5.0), num_clicks=5,
                                     val_handlers=[InteractiveReport(tmp_path, ["square"], report_clicks=(1, 3, 5))])
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output["cases"]))
    evaluator.run()
    summary = json.loads((tmp_path / "interactive_summary.json").read_text())
    square = summary["classes"]["square"]
    assert summary["num_cases"] == 2 and set(square["dice_after_clicks"]) == {"1", "3", "5"}
    assert square["box_dice"] == pytest.approx(1.0)
    assert square["automatic_dice"] == pytest.approx(0.4) == evaluator.state.metrics["prompt_frame_automatic_dice"]
    rows = (tmp_path / "interactive_cases.csv").read_text().splitlines()
    assert rows[0] == "case,class,click,dice" and len(rows) == 1 + 2 * 5
    curve = np.array([float(r.split(",")[3]) for r in rows[1:]]).reshape(2, 5)
    for k in (1, 3, 5):
        assert square["dice_after_clicks"][str(k)] == pytest.approx(curve[:, k - 1].mean(), abs=1e-6)
    expected_noc = np.mean([clicks_to_reach(c[:, None], 0.85)[0] for c in curve])
    assert square["noc"]["85"] == pytest.approx(expected_noc) == evaluator.state.metrics["noc_85"]
    # the CVPR 2025 protocol (box, then clicks) ran too; its box step is exact for this stub, and the curve is drawn
    cvpr = summary["cvpr2025"]
    assert cvpr["cases"] == 2 and cvpr["classes"]["square"]["dice"][0] == pytest.approx(1.0)
    assert evaluator.state.metrics["cvpr_box_dice"] == pytest.approx(1.0)
    assert square["dice_curve"] == pytest.approx(list(curve.mean(0)), abs=1e-6)
    from PIL import Image

    with Image.open(tmp_path / "interactive_curves.png") as png:
        assert png.size == (640, 420) and len(set(png.getdata())) > 2  # axes and a curve, not a blank image


def test_slice_clicks_put_one_click_at_the_centre_of_each_slice():
    from medsa_monai.evaluation import slice_clicks

    mask = np.zeros((20, 20, 6), bool)
    mask[2:9, 4:11, 1] = True  # a 7 x 7 square: centre (5, 7)
    mask[10:15, 10:15, 3] = True  # 5 x 5: centre (12, 12)
    mask[0:2, 0:2, 3] = True  # a smaller part on the same slice is not clicked
    assert slice_clicks(mask).tolist() == [[5, 7, 1], [12, 12, 3]]
