"""Med-SA's paper protocols: points on every slice, boxes of a given IoU, Dice and HD95 per class, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsa_monai.evaluation import slice_clicks
from medsa_monai.evaluation.metrics import hd95
from medsa_monai.evaluation.paper_protocols import (
    PAPER_PROTOCOLS,
    box_with_iou,
    paper_table,
    parse_paper_protocol,
    run_paper_protocol,
    slice_points,
    summarize_paper_protocols,
)
from tests.test_interactive_protocol import BoxNetwork, OracleNetwork, _case


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    dims = len(a) // 2
    inter = np.prod(np.clip(np.minimum(a[dims:], b[dims:]) - np.maximum(a[:dims], b[:dims]) + 1, 0, None))
    volume = lambda box: np.prod(box[dims:] - box[:dims] + 1)  # noqa: E731
    return float(inter / (volume(a) + volume(b) - inter))


def test_protocol_names():
    assert [parse_paper_protocol(n) for n in PAPER_PROTOCOLS] == [("points", 1), ("points", 3), ("box", 0.75),
                                                                  ("box", 0.5)]
    for bad in ("points_0", "box_1.5", "box_0", "bbox_0.5", "points"):
        with pytest.raises(ValueError, match="prompt protocol"):
            parse_paper_protocol(bad)


@pytest.mark.parametrize("iou", [0.75, 0.5, 0.3])
def test_box_has_the_asked_iou_and_holds_the_structure(iou):
    mask = np.zeros((64, 64, 40), dtype=bool)
    mask[20:31, 25:41, 15:23] = True
    tight = np.array([20, 25, 15, 30, 40, 22], dtype=float)
    boxes = set()
    for seed in range(5):
        box, achieved = box_with_iou(mask, iou, np.random.RandomState(seed))
        assert achieved == pytest.approx(iou) and _box_iou(box.astype(float), tight) == pytest.approx(iou)
        assert (box[:3] <= tight[:3]).all() and (box[3:] >= tight[3:]).all()
        boxes.add(tuple(np.round(box, 3)))
    assert len(boxes) == 5  # the seed decides how the box grows
    again, _ = box_with_iou(mask, iou, np.random.RandomState(0))
    np.testing.assert_array_equal(again, box_with_iou(mask, iou, np.random.RandomState(0))[0])


def test_box_cut_by_the_border_reports_its_higher_iou():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:8, 1:9] = True
    box, achieved = box_with_iou(mask, 0.5, np.random.RandomState(0))
    assert (box[:2] >= 0).all() and (box[2:] <= 9).all()
    assert achieved > 0.5 and achieved == pytest.approx(_box_iou(box.astype(float), np.array([0, 1, 7, 8.0])))


def test_points_on_every_slice_start_at_the_centre_and_stay_inside():
    mask = np.zeros((20, 20, 6), dtype=bool)
    mask[3:10, 4:11, 1] = True
    mask[8:15, 8:15, 2:4] = True
    mask[5, 5, 4] = True  # a single voxel: one click only
    points = slice_points(mask, 3, np.random.RandomState(0))
    assert sorted(set(points[:, 2])) == [1, 2, 3, 4]
    assert [int((points[:, 2] == k).sum()) for k in (1, 2, 3, 4)] == [3, 3, 3, 1]
    assert mask[tuple(points.T)].all()
    for k in (1, 2, 3):
        on_slice = points[points[:, 2] == k]
        assert len({tuple(p) for p in on_slice}) == 3  # distinct
    np.testing.assert_array_equal(slice_points(mask, 1, np.random.RandomState(9)), slice_clicks(mask))
    assert slice_points(mask[..., 1], 2, np.random.RandomState(0)).shape == (2, 2)


def test_oracle_is_perfect_and_prompts_are_as_the_protocol_says():
    image, label = _case()
    for name in PAPER_PROTOCOLS:
        network = OracleNetwork(label, num_classes=2)
        result = run_paper_protocol(network, image, label, name, spacing=(1.0, 1.0, 2.0), seed=1)
        np.testing.assert_allclose(result.dice, 1.0)
        np.testing.assert_allclose(result.hd95, 0.0)
        call = network.calls[-1]
        assert network.encoded == 1 and len(network.calls) == 1
        kind, value = parse_paper_protocol(name)
        if kind == "points":
            assert call["boxes"] is None
            for k in (1, 2):
                given = call["points"][0, k - 1][call["labels"][0, k - 1] == 1].long().numpy()
                assert len(given) == value * np.unique(np.argwhere(label == k)[:, 2]).size
                assert (label[tuple(given.T)] == k).all()
        else:
            assert call["points"] is None
            np.testing.assert_allclose(result.box_iou, value, rtol=1e-6)


def test_box_protocol_scores_the_box_by_hand():
    image, label = _case()
    network = BoxNetwork(label, num_classes=2)
    result = run_paper_protocol(network, image, label, "box_0.5", spacing=(1.0, 1.0, 2.0), seed=2)
    prediction = np.zeros(label.shape, dtype=np.int64)
    for k, box in enumerate(network.calls[-1]["boxes"][0].long().numpy(), start=1):  # later class wins
        prediction[box[0]:box[3] + 1, box[1]:box[4] + 1, box[2]:box[5] + 1] = k
    for k in (1, 2):
        p, r = prediction == k, label == k
        assert result.dice[k - 1] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
        assert result.hd95[k - 1] == pytest.approx(hd95(p, r, (1.0, 1.0, 2.0)))
    assert (result.dice < 1).all()  # a loose box over-segments


def test_absent_class_is_nan_and_not_prompted():
    image, label = _case()
    label = np.where(label == 2, 0, label)
    network = OracleNetwork(label, num_classes=2)
    result = run_paper_protocol(network, image, label, "points_3")
    assert math.isnan(result.dice[1]) and math.isnan(result.hd95[1]) and result.dice[0] == 1.0
    assert (network.calls[-1]["labels"][0, 1] == -1).all()


def test_summary_and_table():
    a = run_paper_protocol(OracleNetwork(_case()[1], 2), *_case(), "box_0.75")
    b = type(a)(np.array([0.5, math.nan]), np.array([4.0, math.nan]), np.array([0.75, math.nan]))
    summary = summarize_paper_protocols({"box_0.75": [a, b]}, ["liver", "spleen"])["box_0.75"]
    assert summary["cases"] == 2
    assert summary["classes"]["liver"] == {"dice": 0.75, "hd95": 2.0}
    assert summary["classes"]["spleen"] == {"dice": 1.0, "hd95": 0.0}
    assert summary["mean"]["dice"] == pytest.approx(0.875) and summary["mean"]["box_iou"] == pytest.approx(0.75)
    table = paper_table({"box_0.75": summary}, ["liver", "spleen"]).splitlines()
    assert table[0] == "| prompt | liver | spleen | mean Dice | mean HD95 (mm) |"
    assert table[2] == "| box_0.75 | 75.0 | 100.0 | 87.5 | 1.0 |"


def test_end_to_end_on_a_tiny_medsa_is_deterministic():
    from medsa_monai.networks import MedSA

    torch.manual_seed(0)
    network = MedSA(spatial_dims=3, in_channels=1, out_channels=3, sam_variant="vit_tiny", image_size=64,
                    sam_checkpoint=None).eval()
    image, label = _case()
    embeddings = network.encode(image)
    for name in PAPER_PROTOCOLS:
        first = run_paper_protocol(network, image, label, name, (1.0, 1.0, 2.0), seed=4, embeddings=embeddings)
        second = run_paper_protocol(network, image, label, name, (1.0, 1.0, 2.0), seed=4)
        assert ((first.dice >= 0) & (first.dice <= 1)).all() and (first.hd95 >= 0).all()
        np.testing.assert_allclose(first.dice, second.dice)
        np.testing.assert_allclose(first.hd95, second.hd95)
