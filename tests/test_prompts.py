"""Prompt simulation: clicks inside / outside, boxes around the object, determinism, the next-click rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsa_monai.prompts import (
    SamplePromptsd,
    error_click,
    jittered_box,
    sample_negative_clicks,
    sample_positive_clicks,
    simulated_previous_logits,
)


def next_click(prediction, reference):
    return error_click(prediction, reference, connectivity=1)


def _label(shape=(20, 24, 16)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[4:12, 5:15, 3:10] = 1
    label[12:16, 5:15, 3:10] = 2
    return label


def test_positive_clicks_inside_and_away_from_border():
    mask = _label() == 1
    rng = np.random.RandomState(0)
    clicks = sample_positive_clicks(mask, 200, rng)
    assert clicks.shape == (200, 3)
    assert mask[tuple(clicks.T)].all()
    inner = ndimage.binary_erosion(mask)
    assert inner[tuple(clicks.T)].all()  # border voxels have zero weight
    # distance weighting: clicks concentrate toward the centre more than a uniform draw would
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    assert distance[tuple(clicks.T)].mean() > distance[mask].mean()


def test_negative_clicks_outside_near_the_object():
    mask = _label() == 1
    clicks = sample_negative_clicks(mask, 100, np.random.RandomState(1), margin=0.25)
    assert not mask[tuple(clicks.T)].any()
    low, high = np.argwhere(mask).min(0), np.argwhere(mask).max(0)
    grow = np.ceil((high - low + 1) * 0.25)
    assert ((clicks >= low - grow) & (clicks <= high + grow)).all()


def test_boxes_contain_the_object_and_jitter_is_bounded():
    mask = _label() == 2
    low, high = np.argwhere(mask).min(0), np.argwhere(mask).max(0)
    exact = jittered_box(mask, np.random.RandomState(0), jitter=0.0)
    assert exact.tolist() == low.tolist() + high.tolist()
    extent = high - low + 1
    for seed in range(20):
        box = jittered_box(mask, np.random.RandomState(seed), jitter=0.1)
        assert (np.abs(box[:3] - low) <= np.ceil(0.1 * extent)).all()
        assert (np.abs(box[3:] - high) <= np.ceil(0.1 * extent)).all()
        assert (box[:3] <= box[3:]).all() and (box >= 0).all() and (box[3:] < mask.shape).all()


def test_sample_prompts_transform_format_and_seeded_determinism():
    label = torch.from_numpy(_label())[None]
    make = lambda: SamplePromptsd("label", num_classes=3, max_positive=3, max_negative=2,  # noqa: E731
                                  no_prompt_probability=0.2, box_probability=0.5)
    first, second = make(), make()
    first.set_random_state(7)
    second.set_random_state(7)
    runs = [(first({"label": label}), second({"label": label})) for _ in range(25)]
    for a, b in runs:
        for key in ("points", "point_labels", "boxes"):
            assert torch.equal(a[key].nan_to_num(-9), b[key].nan_to_num(-9))
    out = runs[0][0]
    assert out["points"].shape == (3, 5, 3) and out["point_labels"].shape == (3, 5) and out["boxes"].shape == (3, 6)
    seen_automatic = seen_prompted = False
    for a, _ in runs:
        labels, points, boxes = a["point_labels"], a["points"].long(), a["boxes"]
        assert not (labels[2] != -1).any() and torch.isnan(boxes[2]).all()  # class 3 is absent
        if (labels == -1).all() and torch.isnan(boxes).all():
            seen_automatic = True
            continue
        seen_prompted = True
        for k in range(2):
            mask = label[0] == k + 1
            assert (labels[k] != -1).any() or torch.isfinite(boxes[k]).all()  # every present class is prompted
            for p, lab in zip(points[k], labels[k], strict=True):
                if lab == 1:
                    assert mask[tuple(p)]
                elif lab == 0:
                    assert not mask[tuple(p)]
    assert seen_automatic and seen_prompted


def test_sample_prompts_rejects_bad_labels():
    with pytest.raises(ValueError, match="shape"):
        SamplePromptsd("label", num_classes=1)({"label": torch.zeros(2, 8, 8)})


def test_next_click_goes_to_the_centre_of_the_largest_error():
    reference = np.zeros((30, 30), dtype=bool)
    reference[5:25, 5:25] = True
    prediction = np.zeros_like(reference)
    assert next_click(prediction, reference)[1] is True
    assert tuple(next_click(prediction, reference)[0]) in {(14, 14), (14, 15), (15, 14), (15, 15)}
    prediction = reference.copy()
    prediction[0:4, 0:30] = True  # false-positive band of 120 voxels
    prediction[5:9, 5:10] = False  # false-negative hole of 20 voxels
    index, positive = next_click(prediction, reference)
    assert positive is False and index[0] in (1, 2) and prediction[tuple(index)] and not reference[tuple(index)]
    assert next_click(reference, reference) is None


def test_simulated_previous_prediction_resembles_the_reference():
    mask = _label() == 1
    overlaps = []
    for seed in range(30):
        logits = simulated_previous_logits(mask, np.random.RandomState(seed))
        assert logits.shape == mask.shape and logits.dtype == np.float32
        assert logits.min() >= -8.0 and logits.max() <= 8.0
        guess = logits > 0
        overlaps.append(2 * (guess & mask).sum() / (guess.sum() + mask.sum()))
    assert min(overlaps) > 0.3 and 0.5 < np.median(overlaps) < 0.98  # imperfect but recognisable
    assert np.array_equal(simulated_previous_logits(mask, np.random.RandomState(3)),
                          simulated_previous_logits(mask, np.random.RandomState(3)))
    assert (simulated_previous_logits(np.zeros_like(mask), np.random.RandomState(0)) < 0).all()


def test_mask_prompts_in_the_transform():
    label = torch.from_numpy(_label())[None]
    t = SamplePromptsd("label", num_classes=2, no_prompt_probability=0.0, mask_probability=1.0)
    t.set_random_state(0)
    out = t({"label": label})
    assert out["mask_inputs"].shape == (2, 20, 24, 16) and torch.isfinite(out["mask_inputs"]).all()
    none = SamplePromptsd("label", num_classes=2, no_prompt_probability=1.0, mask_probability=1.0)({"label": label})
    assert torch.isnan(none["mask_inputs"]).all()  # automatic samples get no mask
