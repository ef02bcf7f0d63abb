"""The CVPR 2025 interactive protocol: click placement, boxes, AUC and NSD by hand, and end-to-end runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsa_monai.data import synthetic_case
from medsa_monai.evaluation import ProtocolResult, run_protocol, summarize_protocol
from medsa_monai.evaluation.interactive_protocol import protocol_auc, protocol_box, protocol_click, surface_dice


def _centres(*centres):
    return {tuple(c) for c in centres}


def test_missed_region_gets_a_foreground_click_at_the_edt_maximum_of_the_largest_component():
    reference = np.zeros((16, 16), dtype=bool)
    reference[2:7, 2:7] = True  # 25 voxels, centre (4, 4)
    reference[10:13, 10:13] = True  # 9 voxels
    prediction = np.zeros_like(reference)
    index, foreground = protocol_click(prediction, reference)
    assert tuple(index) == (4, 4) and foreground
    # once the big square is found, the small one is the largest error
    prediction[2:7, 2:7] = True
    index, foreground = protocol_click(prediction, reference)
    assert tuple(index) == (11, 11) and foreground


def test_false_positive_gets_a_background_click():
    reference = np.zeros((16, 16), dtype=bool)
    reference[1:3, 1:3] = True
    prediction = reference.copy()
    prediction[8:13, 8:13] = True  # a 5x5 hallucination, centre (10, 10)
    index, foreground = protocol_click(prediction, reference)
    assert tuple(index) == (10, 10) and not foreground
    assert protocol_click(reference, reference) is None


def test_error_components_use_full_connectivity():
    reference = np.zeros((16, 16), dtype=bool)
    reference[0:3, 0:3] = True
    reference[3:6, 3:6] = True  # touches the first square at a corner only: one 18-voxel component with 8-connectivity
    reference[10:14, 10:14] = True  # 16 voxels: the largest with 4-connectivity
    index, foreground = protocol_click(np.zeros_like(reference), reference)
    assert tuple(index) in _centres((1, 1), (4, 4)) and foreground


def test_distance_transform_uses_the_spacing():
    reference = np.zeros((9, 9), dtype=bool)
    reference[2:7, 2:7] = True  # 5 x 5: in voxels, only the centre (4, 4) is 3 deep
    for seed in range(5):
        assert tuple(protocol_click(np.zeros_like(reference), reference, spacing=(1.0, 1.0), seed=seed)[0]) == (4, 4)
    # with 3 mm rows, every voxel of column 4 on rows 2..6 is 3 mm from the border: a tie broken by the seed
    picks = {tuple(protocol_click(np.zeros_like(reference), reference, spacing=(3.0, 1.0), seed=s)[0])
             for s in range(40)}
    assert picks == {(row, 4) for row in range(2, 7)}


def test_ties_are_broken_by_the_seed_and_reproducibly():
    reference = np.zeros((16, 16), dtype=bool)
    reference[1:4, 1:4] = True
    reference[10:13, 10:13] = True  # two equal components, centres (2, 2) and (11, 11)
    prediction = np.zeros_like(reference)
    picks = {tuple(protocol_click(prediction, reference, seed=s)[0]) for s in range(20)}
    assert picks == _centres((2, 2), (11, 11))
    for seed in (0, 3, 7):
        assert np.array_equal(protocol_click(prediction, reference, seed=seed)[0],
                              protocol_click(prediction, reference, seed=seed)[0])
    # equal maxima inside one component: a 2x2 square has four voxels at the same distance
    square = np.zeros((6, 6), dtype=bool)
    square[2:4, 2:4] = True
    picks = {tuple(protocol_click(np.zeros_like(square), square, seed=s)[0]) for s in range(30)}
    assert picks == _centres((2, 2), (2, 3), (3, 2), (3, 3))


def test_box_is_the_depth_range_with_the_in_plane_box_of_the_middle_slice():
    mask = np.zeros((10, 10, 9), dtype=bool)
    mask[0, 0, 2] = True  # 1 voxel
    mask[2:5, 3:7, 3] = True  # 12 voxels
    mask[5:7, 1:5, 4] = True  # 8 voxels
    mask[9, 9, 5] = True
    mask[9, 9, 6] = True
    # 23 voxels sorted by slice: index 11 is on slice 3 (the challenge's z_mid), not the range's middle (4)
    assert np.array_equal(protocol_box(mask), [2, 3, 2, 4, 6, 6])
    assert protocol_box(mask).dtype == np.float32
    flat = np.zeros((8, 8), dtype=bool)
    flat[1:4, 2:7] = True
    assert np.array_equal(protocol_box(flat), [1, 2, 3, 6])
    with pytest.raises(ValueError):
        protocol_box(np.zeros((4, 4), dtype=bool))


def test_auc_is_the_unit_step_trapezoid():
    values = [0.5, 0.6, 0.8, 0.9, 1.0]
    assert protocol_auc(values) == pytest.approx(0.55 + 0.7 + 0.85 + 0.95)
    assert protocol_auc([1.0] * 5) == pytest.approx(4.0)
    assert protocol_auc([0.3]) == 0.0
    assert math.isnan(protocol_auc([0.5, math.nan]))


def test_surface_dice_by_hand():
    reference = np.zeros((20, 20), dtype=bool)
    reference[5:8, 5:8] = True
    assert surface_dice(reference, reference, (1.0, 1.0)) == pytest.approx(1.0)
    prediction = reference.copy()
    prediction[5:8, 11:14] = True  # a second 3x3 square 4-6 columns away: its 8 surface voxels are > 2 mm away
    # surfaces: reference 8 voxels (all matched), prediction 16 (8 matched): (8 + 8) / (8 + 16)
    assert surface_dice(prediction, reference, (1.0, 1.0)) == pytest.approx(2 / 3)
    # 0.25 mm columns put the extra square 1.0-1.5 mm away: within tolerance
    assert surface_dice(prediction, reference, (1.0, 0.25)) == pytest.approx(1.0)
    assert surface_dice(np.zeros_like(reference), reference) == 0.0
    assert math.isnan(surface_dice(np.zeros_like(reference), np.zeros_like(reference)))


class OracleNetwork:
    """Answers the reference whatever the prompts; records what it is given."""

    background_channel = True

    def __init__(self, label: np.ndarray, num_classes: int):
        self.label, self.num_classes = torch.as_tensor(label.astype(np.int64)), num_classes
        self.encoded, self.calls = 0, []

    def encode(self, image):
        self.encoded += 1
        return torch.zeros(image.shape[-1] if image.ndim == 5 else 1, 1)

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        self.calls.append({"points": points, "labels": point_labels, "boxes": boxes, "masks": mask_inputs})
        spatial = tuple(image_shape[2:])
        return torch.zeros(1, self.num_classes, 16, 16, *spatial[2:])

    def postprocess(self, low_res, spatial):
        one_hot = torch.stack([self.label == k for k in range(1, self.num_classes + 1)]).float()
        return torch.cat([torch.zeros(1, *spatial), 20 * one_hot - 10])[None]


class BoxNetwork(OracleNetwork):
    """Predicts each class's box prompt as a cuboid, ignoring clicks; the later class wins where boxes overlap."""

    def postprocess(self, low_res, spatial):
        boxes = self.calls[-1]["boxes"][0]
        logits = torch.full((self.num_classes, *spatial), -10.0)
        for k, box in enumerate(boxes):
            if torch.isfinite(box).all():
                low, high = box[:3].long(), box[3:].long()
                logits[k, low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1] = 10.0 + k
        return torch.cat([torch.zeros(1, *spatial), logits])[None]


def _case(shape=(24, 24, 12)):
    image, label = synthetic_case(shape, np.random.RandomState(0))
    image = (image - image.mean()) / image.std()
    return torch.from_numpy(image)[None, None], label


def test_oracle_scores_one_at_every_step_with_one_encoding():
    image, label = _case()
    network = OracleNetwork(label, num_classes=2)
    result = run_protocol(network, image, label, spacing=(1.0, 1.0, 2.5), num_clicks=5)
    assert network.encoded == 1 and len(network.calls) == 6
    np.testing.assert_allclose(result.dice, 1.0)
    np.testing.assert_allclose(result.nsd, 1.0)
    np.testing.assert_allclose(result.dsc_auc, 4.0)
    np.testing.assert_allclose(result.final_nsd, 1.0)
    assert result.clicks == [[], []]  # a perfect prediction gets no click
    assert network.calls[0]["masks"] is None and all(c["masks"] is not None for c in network.calls[1:])
    for k in (1, 2):
        assert torch.equal(network.calls[0]["boxes"][0, k - 1], torch.from_numpy(protocol_box(label == k)))
    dice_only = run_protocol(OracleNetwork(label, num_classes=2), image, label, spacing=(1.0, 1.0, 2.5),
                             num_clicks=5, surface=False)
    np.testing.assert_array_equal(dice_only.dice, result.dice)
    assert np.isnan(dice_only.nsd).all()


def test_absent_class_is_nan_unprompted_and_not_predicted():
    image, label = _case()
    label = np.where(label == 2, 0, label)
    network = OracleNetwork(label, num_classes=2)
    network.label = torch.where(network.label == 1, 2, network.label)  # would predict class 2 if allowed
    result = run_protocol(network, image, label, num_clicks=2, mask_feedback=True)
    assert np.isnan(result.dice[:, 1]).all() and np.isnan(result.dsc_auc[1]) and np.isnan(result.boxes[1]).all()
    np.testing.assert_allclose(result.dice[:, 0], 0.0)  # class 2 masked out: nothing predicted for class 1
    assert torch.isnan(network.calls[-1]["masks"][:, 1]).all()
    assert (network.calls[-1]["labels"][0, 1] == -1).all()


def test_clicks_accumulate_on_top_of_the_box():
    image, label = _case()
    network = BoxNetwork(label, num_classes=2)
    result = run_protocol(network, image, label, num_clicks=3, seed=1)
    box_prediction = np.zeros(label.shape, dtype=np.int64)
    for k in (1, 2):  # rebuild the box prediction by hand: class 2 over class 1
        i0, j0, k0, i1, j1, k1 = protocol_box(label == k).astype(int)
        box_prediction[i0:i1 + 1, j0:j1 + 1, k0:k1 + 1] = k
    for k in (1, 2):
        first = protocol_click(box_prediction == k, label == k, seed=1)
        assert np.array_equal(result.clicks[k - 1][0][0], first[0])
        assert len(result.clicks[k - 1]) == 3  # the prediction never changes: one click per step
    for step, call in enumerate(network.calls[1:], start=1):
        assert call["points"].shape == (1, 2, step, 3)
        assert torch.equal(call["boxes"], network.calls[0]["boxes"])
        for k in range(2):
            assert torch.equal(call["points"][0, k], torch.tensor(np.stack([c[0] for c in result.clicks[k][:step]]),
                                                                  dtype=torch.float32))
            assert call["labels"][0, k].tolist() == [int(c[1]) for c in result.clicks[k][:step]]
    np.testing.assert_allclose(result.dice[1:], result.dice[:1].repeat(3, 0))
    np.testing.assert_allclose(result.dsc_auc, 2 * result.dice[0])


def test_end_to_end_on_a_tiny_medsa_is_deterministic():
    from medsa_monai.networks import MedSA

    torch.manual_seed(0)
    network = MedSA(spatial_dims=3, in_channels=1, out_channels=3, sam_variant="vit_tiny", image_size=64,
                    sam_checkpoint=None).eval()
    image, label = _case()
    results = [run_protocol(network, image, label, spacing=(1.0, 1.0, 2.0), num_clicks=2, seed=3) for _ in range(2)]
    first = results[0]
    assert isinstance(first, ProtocolResult)
    assert first.dice.shape == first.nsd.shape == (3, 2)
    for values in (first.dice, first.nsd, first.final_dice, first.final_nsd):
        assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert first.dsc_auc.shape == first.nsd_auc.shape == (2,)
    assert ((first.dsc_auc >= 0) & (first.dsc_auc <= 1)).all()  # 2 clicks: the area spans one unit step
    np.testing.assert_array_equal(first.dice, results[1].dice)
    np.testing.assert_array_equal(first.nsd, results[1].nsd)
    for a, b in zip(first.clicks, results[1].clicks, strict=True):
        assert [(tuple(i), f) for i, f in a] == [(tuple(i), f) for i, f in b]


def _result(dice_rows, nsd_rows):
    dice, nsd = np.array(dice_rows, dtype=float), np.array(nsd_rows, dtype=float)
    auc = lambda v: np.array([protocol_auc(v[1:, k]) for k in range(v.shape[1])])  # noqa: E731
    return ProtocolResult(dice, nsd, auc(dice), auc(nsd), dice[-1], nsd[-1], np.zeros((2, 6)))


def test_summary_averages_over_cases_and_classes():
    a = _result([[0.2, 0.4], [0.6, 0.8], [1.0, 0.8]], [[0.1, 0.1], [0.5, 0.5], [0.9, 0.7]])
    b = _result([[0.4, math.nan], [0.6, math.nan], [0.8, math.nan]], [[0.3, math.nan]] * 3)
    summary = summarize_protocol([a, b])
    assert summary["cases"] == 2
    assert summary["classes"][1]["final_dice"] == pytest.approx(0.9)
    assert summary["classes"][2]["final_dice"] == pytest.approx(0.8)  # absent from case b: not averaged in
    assert summary["classes"][1]["dsc_auc"] == pytest.approx((0.8 + 0.7) / 2)
    assert summary["classes"][1]["dice"] == pytest.approx([0.3, 0.6, 0.9])
    assert summary["mean"]["final_dice"] == pytest.approx(0.85)
    assert summary["case_mean"]["final_dice"] == pytest.approx((0.9 + 0.8) / 2)
    assert summary["mean"]["nsd"] == pytest.approx([0.15, 0.45, 0.65])  # classes: [.2, .4, .6], [.1, .5, .7]
    with pytest.raises(ValueError):
        summarize_protocol([])


class RegionOracle(OracleNetwork):
    """Answers nested regions (sigmoid outputs, no background channel) exactly."""

    background_channel = False

    def __init__(self, regions: np.ndarray):
        super().__init__(np.zeros(regions.shape[1:]), regions.shape[0])
        self.regions = torch.as_tensor(regions).float()

    def postprocess(self, low_res, spatial):
        return (20 * self.regions - 10)[None]


def test_nested_regions_are_prompted_and_scored_each_on_its_own():
    from medsa_monai.evaluation import simulate_clicks

    disc = np.zeros((32, 32), bool)
    disc[6:26, 8:24] = True
    cup = np.zeros_like(disc)
    cup[12:20, 12:20] = True  # inside the disc: the two outputs overlap
    regions = np.stack([disc, cup])
    image = torch.zeros(1, 3, 32, 32)
    result = run_protocol(RegionOracle(regions), image, regions, num_clicks=2)
    np.testing.assert_allclose(result.dice, 1.0)  # an exclusive label map would lose the disc under the cup
    assert torch.equal(RegionOracle(regions).postprocess(None, (32, 32))[0, 0] > 0, torch.from_numpy(disc))
    np.testing.assert_array_equal(result.boxes[0], protocol_box(disc))
    np.testing.assert_array_equal(result.boxes[1], protocol_box(cup))
    clicked = simulate_clicks(RegionOracle(regions), image, regions, num_clicks=2)
    np.testing.assert_allclose(clicked.click_dice, 1.0)
    np.testing.assert_allclose(clicked.box_dice, 1.0)
    with pytest.raises(ValueError, match="region channels"):
        run_protocol(RegionOracle(regions), image, regions[:, :16])


def _whole_image_click(prediction, reference, spacing, seed):
    """The click computed on the whole image (the transform of the full padded volume), as the challenge does."""
    error = prediction != reference
    if not error.any():
        return None
    rng = np.random.RandomState(seed)
    components, count = ndimage.label(error, structure=ndimage.generate_binary_structure(error.ndim, error.ndim))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    region = components == (largest[0] if largest.size == 1 else rng.choice(largest))
    distance = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[(slice(1, -1),) * region.ndim]
    maxima = np.argwhere(np.isclose(distance * region, (distance * region).max(), rtol=1e-9, atol=0.0) & region)
    index = maxima[0] if len(maxima) == 1 else maxima[rng.choice(len(maxima))]
    return index, bool(reference[tuple(index)])


def test_click_within_the_component_box_equals_the_whole_image_click():
    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(int(n) for n in rng.integers(3, 14, size=rng.integers(2, 4)))
        reference = ndimage.binary_dilation(rng.random(shape) > 0.9, iterations=int(rng.integers(0, 3)))
        prediction = ndimage.binary_dilation(rng.random(shape) > 0.9, iterations=int(rng.integers(0, 3)))
        spacing = None if trial % 2 else [float(v) for v in rng.choice([0.5, 1.0, 2.5], size=len(shape))]
        ours = protocol_click(prediction, reference, spacing, seed=trial)
        expected = _whole_image_click(prediction, reference, spacing, seed=trial)
        assert (ours is None) == (expected is None)
        if ours is not None:
            assert np.array_equal(ours[0], expected[0]) and ours[1] == expected[1], trial
