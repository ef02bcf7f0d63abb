"""A click next to the shown boundary moves it by one voxel around itself (hand-made masks, and in the protocols)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsa_monai.evaluation.interactive_protocol import run_protocol
from medsa_monai.evaluation.iterative_clicks import simulate_clicks
from medsa_monai.predictor.boundary_edits import BoundaryEdits, boundary_ring, is_boundary_click


def square(shape=(12, 12), rows=(3, 9), cols=(3, 9)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def voxels(mask: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(i) for i in index) for index in np.argwhere(mask)}


def test_a_foreground_click_next_to_the_mask_adds_the_ring_outside_it_within_the_radius():
    mask = square()  # rows and columns 3-8
    click = np.array([5, 9])  # just right of the square
    assert is_boundary_click(mask, click, True)
    assert voxels(boundary_ring(mask, click, True, 2.0)) == {(r, 9) for r in range(3, 8)}
    assert voxels(boundary_ring(mask, click, True, 0.0)) == {(5, 9)}


def test_a_background_click_inside_the_boundary_removes_the_ring_inside_it():
    mask = square()
    click = np.array([5, 8])  # the square's right column
    assert is_boundary_click(mask, click, False)
    assert voxels(boundary_ring(mask, click, False, 2.0)) == {(r, 8) for r in range(3, 8)}


def test_a_click_away_from_the_boundary_is_left_to_the_decoder():
    mask = square()
    edits = BoundaryEdits(1, mask.shape, 2.0, exclusive=True)
    assert not is_boundary_click(mask, np.array([5, 10]), True)  # two voxels out
    assert not is_boundary_click(mask, np.array([5, 5]), False)  # deep inside
    assert not edits.take(0, mask, np.array([5, 10]), True)
    assert not edits.slices
    assert not is_boundary_click(np.zeros((12, 12), bool), np.array([5, 5]), True)  # nothing shown: decode it


def test_a_3d_click_moves_the_boundary_on_its_own_slice_only():
    mask = np.repeat(square()[..., None], 5, axis=-1)
    ring = boundary_ring(mask, np.array([5, 9, 2]), True, 1.0)
    assert voxels(ring) == {(4, 9, 2), (5, 9, 2), (6, 9, 2)}
    edits = BoundaryEdits(1, mask.shape, 1.0, exclusive=True)
    assert edits.take(0, mask, np.array([5, 9, 2]), True)
    assert list(edits.slices) == [(0, 2)] and edits.slices[(0, 2)].shape == (12, 12)  # one slice kept, not a volume
    assert voxels(edits.apply([mask])[0] & ~mask) == voxels(ring)


def test_edits_stay_shown_over_later_decodes_and_a_later_click_overrides_them():
    mask = square()
    edits = BoundaryEdits(1, mask.shape, 2.0, exclusive=False)
    assert edits.take(0, mask, np.array([5, 9]), True)
    shown = edits.apply([mask])[0]
    assert voxels(shown & ~mask) == {(r, 9) for r in range(3, 8)} and voxels(mask & ~shown) == set()
    assert edits.apply([np.zeros_like(mask)])[0][5, 9]  # a decode that lost them: still shown
    assert edits.take(0, shown, np.array([5, 9]), False)  # the user takes the column back
    assert np.array_equal(edits.apply([mask])[0], mask)
    assert edits.apply([square(cols=(3, 10))])[0][3:8, 9].sum() == 0  # set not to show, whatever is decoded


def test_exclusive_classes_give_up_what_another_class_takes_and_regions_do_not():
    first, second = square(cols=(3, 6)), square(cols=(6, 9))  # side by side, touching at columns 5 / 6
    click = np.array([5, 6])  # class 0 asks for column 6, shown as class 1
    for exclusive in (True, False):
        edits = BoundaryEdits(2, first.shape, 1.0, exclusive)
        assert edits.take(0, first, click, True)
        shown = edits.apply([first, second])
        assert voxels(shown[0] & ~first) == {(4, 6), (5, 6), (6, 6)}
        assert voxels(second & ~shown[1]) == ({(4, 6), (5, 6), (6, 6)} if exclusive else set())


class ShortByOneColumn:
    """A decoder that shows the reference (2D or 3D) less its last column on every slice, whatever the clicks: the
    error left is a band one voxel thick, which only a boundary edit fixes. Counts its decodes."""

    num_classes = 1
    background_channel = True
    correction_depth_radius = 1  # what click_steps.py counts as a click's copies

    def __init__(self, reference: np.ndarray, radius: float | None):
        self.shown = reference.copy()
        other_axes = tuple(a for a in range(reference.ndim) if a != 1)
        self.shown[:, np.flatnonzero(reference.any(other_axes))[-1]] = False
        self.radius = radius
        self.decodes = 0

    def encode(self, image):
        return torch.zeros(1)

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        self.decodes += 1
        return torch.as_tensor(np.where(self.shown, 1.0, -1.0), dtype=torch.float32)[None, None]

    def postprocess(self, low_res, spatial):
        return torch.cat([torch.zeros_like(low_res), low_res], 1)

    def boundary_edits(self, image_shape):
        return None if self.radius is None else BoundaryEdits(1, tuple(image_shape[2:]), self.radius, True)


@pytest.mark.parametrize("radius", [None, 1.0, 2.0])
def test_iterative_clicks_on_a_one_voxel_band_move_the_boundary_without_decoding(radius):
    reference = square(shape=(16, 16), rows=(3, 13), cols=(3, 9))  # the band: column 8, rows 3-12
    predictor = ShortByOneColumn(reference, radius)
    result = simulate_clicks(predictor, torch.zeros(1, 1, 16, 16), reference.astype(np.int64), num_clicks=4,
                             with_box=False)
    curve = result.click_dice[:, 0]
    if radius is None:  # each click decoded again: the decoder cannot place the boundary, nothing changes
        assert np.allclose(curve, curve[0]) and predictor.decodes == 1 + 4
        return
    assert (np.diff(curve) > 0).all()  # every later click lands in the band, next to the boundary, and fixes some
    assert predictor.decodes == 1 + 1  # the automatic decode and the first click's; the boundary clicks decode nothing


def test_the_cvpr_protocol_moves_a_boundary_after_its_box():
    reference = square(shape=(16, 16), rows=(3, 13), cols=(3, 9))
    plain, shifting = ShortByOneColumn(reference, None), ShortByOneColumn(reference, 2.0)
    image, label = torch.zeros(1, 1, 16, 16), reference.astype(np.int64)
    before = run_protocol(plain, image, label, num_clicks=3, surface=False).dice[:, 0]
    shifted = run_protocol(shifting, image, label, num_clicks=3, surface=False)
    after = shifted.dice[:, 0]
    assert np.allclose(before, before[0])  # the box's prediction, whatever the clicks
    assert after[0] == before[0] and (np.diff(after) > 0).all()
    assert shifting.decodes == 1  # the box; every click moved the boundary
    assert len(shifted.clicks[0]) == 3  # the result lists them all


def test_the_predictor_moves_boundaries_only_where_a_low_resolution_pixel_spans_at_most_two_voxels():
    from medsa_monai.networks import MedSA
    from medsa_monai.predictor import MedSAPredictor

    network = MedSA(2, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()
    assert MedSAPredictor(network).boundary_edits((1, 1, 32, 32)) is None  # off unless asked for
    predictor = MedSAPredictor(network, boundary_shift_radius=2)
    edits = predictor.boundary_edits((1, 1, 32, 32))  # 2 voxels per low-resolution pixel
    assert edits.radius == 2.0 and edits.exclusive and (edits.classes, edits.spatial) == (2, (32, 32))
    assert predictor.boundary_edits((1, 1, 64, 64)) is None  # 4 voxels per pixel: the decoder's clicks
    assert MedSAPredictor(network, boundary_shift_radius=2, boundary_shift_first_click=6).boundary_edits(
        (1, 1, 32, 32)).first_click == 6
    with pytest.raises(ValueError, match="boundary_shift_radius"):
        MedSAPredictor(network, boundary_shift_radius=-1)
    with pytest.raises(ValueError, match="boundary_shift_first_click"):
        MedSAPredictor(network, boundary_shift_radius=2, boundary_shift_first_click=0)


def test_a_class_s_first_clicks_are_decoded_wherever_they_lie():
    mask = square()
    edits = BoundaryEdits(2, mask.shape, 2.0, exclusive=True, first_click=3)
    click = np.array([5, 9])  # next to the boundary
    assert not edits.take(0, mask, click, True) and not edits.take(0, mask, click, True)  # clicks 1 and 2
    assert not edits.take(1, mask, click, True)  # class 1's first click
    assert not edits.slices
    assert edits.take(0, mask, click, True)  # class 0's third
    with pytest.raises(ValueError, match="first_click"):
        BoundaryEdits(1, mask.shape, 2.0, exclusive=True, first_click=0)
