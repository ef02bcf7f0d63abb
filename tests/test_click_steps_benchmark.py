"""benchmarks/click_steps.py: what each click fixes and breaks, counted by hand on a predictor that paints balls."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .test_boundary_edits import ShortByOneColumn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def click_steps():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling trained_bundle
    try:
        spec = importlib.util.spec_from_file_location("click_steps", BENCHMARKS / "click_steps.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


class BallsAroundClicks:
    """Foreground in a ball of ``radius`` around every foreground click, one class, 3D; nothing without clicks."""

    num_classes = 1
    background_channel = True
    correction_depth_radius = 1

    def __init__(self, radius: float):
        self.radius = radius

    def encode(self, image):
        return torch.zeros(1)

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        spatial = tuple(image_shape[2:])
        grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij"), -1).float()
        logit = torch.full(spatial, -1.0)
        if points is not None:
            for p, label in zip(points[0, 0], point_labels[0, 0], strict=True):
                if label == 1:
                    logit[((grid - p) ** 2).sum(-1) <= self.radius ** 2] = 1.0
        return logit[None, None]

    def postprocess(self, low_res, spatial):
        return torch.cat([torch.zeros_like(low_res), low_res], 1)


class Observed:
    """A predictor whose ``decode`` records each call's clicks and logits."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self.calls = []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def decode(self, embeddings, shape, points=None, labels=None, **kwargs):
        low_res = self._predictor.decode(embeddings, shape, points, labels, **kwargs)
        if kwargs.get("boxes") is None and points is not None:
            self.calls.append((points.clone(), labels.clone(), low_res.clone()))
        return low_res


def _ball(shape, centre, radius):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius ** 2


def test_each_click_is_split_into_its_slice_its_copies_and_the_rest(click_steps):
    shape = (12, 12, 20)
    label = np.zeros(shape, dtype=np.int64)
    label[2:10, 2:10, 2:18] = 1
    predictor = BallsAroundClicks(radius=2.5)
    records = click_steps.step_records(predictor, torch.zeros(1, 1, *shape), label, num_clicks=4)
    assert [r["click"] for r in records] == [2, 3, 4]

    observed = Observed(predictor)
    from medsa_monai.evaluation.iterative_clicks import simulate_clicks

    result = simulate_clicks(observed, torch.zeros(1, 1, *shape), label, 4, True, with_box=False)
    covered = np.zeros(shape, dtype=bool)
    for step, (points, _, _) in enumerate(observed.calls):
        click = points[0, 0, step].long().numpy()
        ball = _ball(shape, click, 2.5)
        new = ball & ~covered
        covered |= ball
        if step == 0:
            continue
        record = records[step - 1]
        for kind, inside in (("fixed", label == 1), ("broken", label == 0)):
            changed = new & inside
            own = changed[..., click[2]].sum()
            copies = changed[..., [click[2] - 1, click[2] + 1]].sum()
            assert (record[f"{kind} own"], record[f"{kind} copies"]) == (own, copies)
            assert record[f"{kind} elsewhere"] == changed.sum() - own - copies
        assert record["fixed elsewhere"] > 0  # the ball reaches 2 slices beyond the click
        assert record["step"] == pytest.approx(result.click_dice[step, 0] - result.click_dice[step - 1, 0])
        assert record["depth"] >= 1  # the click lies in the error it corrects

    rows = click_steps.summarise(records)
    assert list(rows) == ["clicks 2-5"] and rows["clicks 2-5"]["steps"] == 3
    assert rows["clicks 2-5"]["falls"] == 0.0


class GrowingBalls(BallsAroundClicks):
    """Each call paints larger balls: the later clicks reach past the structure."""

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        if points is not None:
            self.radius = 1.5 * int((point_labels[0, 0] != -1).sum())
        return super().decode(embeddings, image_shape, points, point_labels, boxes, mask_inputs)


def test_a_click_that_reaches_past_the_structure_breaks_what_it_overshoots(click_steps):
    shape = (14, 14, 14)
    label = np.zeros(shape, dtype=np.int64)
    label[4:10, 4:10, 4:10] = 1
    records = click_steps.step_records(GrowingBalls(1.5), torch.zeros(1, 1, *shape), label, num_clicks=3)
    observed = Observed(GrowingBalls(1.5))
    from medsa_monai.evaluation.iterative_clicks import simulate_clicks

    simulate_clicks(observed, torch.zeros(1, 1, *shape), label, 3, True, with_box=False)
    masks = [low[0, 0].numpy() > 0 for _, _, low in observed.calls]
    for record, before, after in zip(records, masks[:-1], masks[1:], strict=True):
        broken = after & ~before & (label == 0)
        assert record["broken own"] + record["broken copies"] + record["broken elsewhere"] == broken.sum() > 0
        assert 0 < record["overshoot"] <= broken.sum()
    assert records[0]["step"] > 0 > records[1]["step"]  # the third click's ball is too large: Dice falls
    assert click_steps.summarise(records)["clicks 2-5"]["falls"] == 0.5


def test_clicks_that_move_the_boundary_are_counted_on_their_own_slice(click_steps):
    shape = (12, 12, 6)
    label = np.zeros(shape, dtype=np.int64)
    label[2:10, 2:8, 1:5] = 1  # the decoder misses column 7 on every slice: a band one voxel thick
    predictor = ShortByOneColumn(label == 1, radius=1.0)
    records = click_steps.step_records(predictor, torch.zeros(1, 1, *shape), label, num_clicks=4)
    assert [r["click"] for r in records] == [2, 3, 4]
    for record in records:
        assert record["moved"] == 1.0 and record["depth"] == 1.0
        assert record["fixed own"] == 2 and record["broken own"] == 0  # the click and one neighbour (radius 1)
        assert record["fixed copies"] == record["broken copies"] == record["fixed elsewhere"] == 0
        assert record["step"] > 0
    assert click_steps.summarise(records)["clicks 2-5"]["moved"] == 1.0
