"""A corrective click changes the regions it touches only: hand-made masks, and through propagation."""

from __future__ import annotations

import torch

from medsa_monai.networks.click_regions import confine_to_clicked_regions
from medsa_monai.networks.prompt_mapping import to_sam_prompts
from medsa_monai.networks.propagation import propagate_prompts

from .test_propagation import SIDE, TubeDecoder, tube


def logits(*boxes: tuple[int, int, int, int], value: float = 5.0) -> torch.Tensor:
    out = torch.full((SIDE, SIDE), -value)
    for i0, i1, j0, j1 in boxes:
        out[i0:i1, j0:j1] = value
    return out


def click(i: int, j: int) -> torch.Tensor:
    """The SAM-frame (x, y) of low-resolution pixel (i, j): each covers 4 x 4 pixels."""
    return torch.tensor([[j * 4 + 1.5, i * 4 + 1.5]])


def test_a_foreground_click_adds_the_region_it_touches_and_nothing_else():
    previous = logits((2, 6, 2, 6))
    # decoded again: the clicked region (rows 2-5, columns 6-8) added, but also a far blob, and a corner removed
    new = logits((3, 6, 2, 9), (12, 14, 12, 14), value=7.0)
    out = confine_to_clicked_regions(new, previous, click(4, 7), torch.tensor([1]))
    changed = (new > 0) != (previous > 0)
    expected = torch.where(changed, previous, new)  # where the sign is kept: the new logits
    # the far blob is not touched: the previous mask stays; the removed top row touches the clicked region
    # (diagonally) but a foreground click only adds: it stays too
    expected[3:6, 6:9] = new[3:6, 6:9]  # the region the click touched, added
    assert torch.equal(out, expected)
    assert torch.equal(out > 0, logits((2, 6, 2, 6), (3, 6, 6, 9)) > 0)


def test_a_background_click_removes_the_region_it_touches_only():
    previous = logits((2, 8, 2, 8), (12, 15, 12, 15))
    new = logits((2, 8, 2, 5))  # columns 5-7 removed (clicked), and the far blob lost too
    out = confine_to_clicked_regions(new, previous, click(5, 6), torch.tensor([0]))
    assert torch.equal(out > 0, logits((2, 8, 2, 5), (12, 15, 12, 15)) > 0)
    assert torch.equal(out[12:15, 12:15], previous[12:15, 12:15])
    assert torch.equal(out[2:8, 5:8], torch.minimum(new, previous)[2:8, 5:8])


def test_padding_clicks_and_a_click_without_change_keep_the_previous_mask():
    previous = logits((2, 6, 2, 6))
    new = logits((2, 6, 2, 6), (10, 12, 10, 12))
    out = confine_to_clicked_regions(new, previous, torch.tensor([[0.0, 0.0], [10 * 4.0, 10 * 4.0]]),
                                     torch.tensor([1, -1]))  # the only click near the blob is padding
    assert torch.equal(out > 0, previous > 0)


def test_a_propagated_session_confines_each_correction():
    structure = tube(5, 24)
    previous = torch.full((1, 1, SIDE, SIDE, 30), -6.0)
    previous[0, 0, 2:4, 2:4, 3:27] = 6.0  # the previous prediction: wrong place
    clicks = torch.tensor([[[[30.0, 34.0, 12.0]]]])  # inside the structure (low-resolution row 8, column 7)
    prompts = to_sam_prompts(clicks, torch.ones(1, 1, 1), None, previous, spatial_shape=(64, 64, 30),
                             image_size=64, num_classes=1, batch=1, click_depth_radius=0)
    whole = propagate_prompts(TubeDecoder(structure), torch.zeros(30, 1), prompts, 1, 30)
    confined = propagate_prompts(TubeDecoder(structure), torch.zeros(30, 1), prompts, 1, 30,
                                 confine_corrections=True)
    assert torch.equal(whole[0, 0, ..., 12] > 0, structure[..., 12])  # the whole slice replaced
    # confined: the structure added where clicked, the old blob (not clicked) kept, other slices untouched
    assert torch.equal(confined[0, 0, ..., 12] > 0, structure[..., 12] | (previous[0, 0, ..., 12] > 0))
    others = [z for z in range(30) if z != 12]
    assert torch.equal(confined[0, 0][..., others], previous[0, 0][..., others])


@torch.no_grad()
def test_medsa_confines_a_click_in_a_session_under_way_by_default():
    from medsa_monai.networks import MedSA

    torch.manual_seed(0)
    net = MedSA(3, 1, 2, "vit_tiny", image_size=64, trainable="full").eval()
    assert net.confine_corrections
    volume = torch.rand(1, 1, 32, 32, 6)
    embeddings = net.encode(volume)
    previous = torch.randn(1, 1, SIDE, SIDE, 6) * 4  # a previous prediction fed back
    points = torch.tensor([[[[12.0, 20.0, 2.0]]]])  # (i, j, k): SAM frame (x, y) = (40.5, 24.5) on slice 2
    for label in (1, 0):
        labels = torch.tensor([[[label]]])
        confined = net.decode(embeddings, volume.shape, points, labels, mask_inputs=previous)
        net.confine_corrections = False
        whole = net.decode(embeddings, volume.shape, points, labels, mask_inputs=previous)
        net.confine_corrections = True
        others = [0, 1, 3, 4, 5]
        assert torch.equal(confined[..., others], previous[..., others])  # only the clicked slice is decoded
        assert torch.equal(whole[..., others], previous[..., others])
        expected = confine_to_clicked_regions(whole[0, 0, ..., 2], previous[0, 0, ..., 2],
                                              torch.tensor([[40.5, 24.5]]), labels[0, 0])
        assert torch.equal(confined[0, 0, ..., 2], expected)
        assert not torch.equal(confined, whole)  # the whole slice decoded again changed more than the click's region
