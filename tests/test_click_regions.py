"""A corrective click changes the regions it touches only: hand-made masks, and through propagation."""

from __future__ import annotations

import torch

from medsa_monai.networks.prompt_mapping import index_to_sam_xy, to_sam_prompts
from medsa_monai.predictor.corrections import confine_to_clicked_regions, obey_clicks, pending_clicks

from .test_propagation import SIDE, TubeDecoder, propagate, tube


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
    whole = propagate(TubeDecoder(structure), prompts, 1, 30)
    confined = propagate(TubeDecoder(structure), prompts, 1, 30,
                                 confine_corrections=True)
    assert torch.equal(whole[0, 0, ..., 12] > 0, structure[..., 12])  # the whole slice replaced
    # confined: the structure added where clicked, the old blob (not clicked) kept, other slices untouched
    assert torch.equal(confined[0, 0, ..., 12] > 0, structure[..., 12] | (previous[0, 0, ..., 12] > 0))
    others = [z for z in range(30) if z != 12]
    assert torch.equal(confined[0, 0][..., others], previous[0, 0][..., others])


@torch.no_grad()
def test_medsa_confines_a_click_in_a_session_under_way_by_default():
    from medsa_monai.networks import MedSA
    from medsa_monai.predictor import MedSAPredictor

    torch.manual_seed(0)
    net = MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64, trainable="full").eval(), obey_clicks=False)
    assert net.confine_corrections and MedSAPredictor(net.network).obey_clicks
    volume = torch.rand(1, 1, 32, 32, 6)
    embeddings = net.encode(volume)
    previous = torch.randn(1, 1, SIDE, SIDE, 6) * 4  # a previous prediction fed back
    points = torch.tensor([[[[12.0, 20.0, 2.0]]]])  # (i, j, k): SAM frame (x, y) = (40.5, 24.5) on slice 2
    for label in (1, 0):
        labels = torch.tensor([[[label]]])
        previous[0, 0, 4:8, 8:12, 2] = -4.0 if label else 4.0  # shown wrong around the click: it asks for a change
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


def test_a_2d_session_is_corrected_as_a_slice_of_a_3d_one():
    from medsa_monai.networks import MedSA
    from medsa_monai.predictor import MedSAPredictor

    torch.manual_seed(0)
    network = MedSA(2, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()  # two classes
    confining = MedSAPredictor(network, obey_clicks=False)  # the confinement alone (obeyed clicks: below)
    assert MedSAPredictor(network).confine_corrections
    whole = MedSAPredictor(network, confine_corrections=False)  # as SamPredictor: each click decodes the image again
    image = torch.rand(2, 1, 32, 32)
    embeddings = whole.encode(image)
    previous = torch.randn(2, 2, SIDE, SIDE) * 4
    previous[0, 0, 4:8, 8:12] = -4.0  # shown wrong around the click of image 0: it asks for a change
    points = torch.tensor([[[[12.0, 20.0]], [[float("nan"), float("nan")]]], [[[12.0, 20.0]], [[1.0, 1.0]]]])
    labels = torch.tensor([[[1], [-1]], [[-1], [-1]]])  # image 1 has no click: nothing pending
    confined = confining.decode(embeddings, image.shape, points.nan_to_num(0.0), labels, mask_inputs=previous)
    redone = whole.decode(embeddings, image.shape, points.nan_to_num(0.0), labels, mask_inputs=previous)
    expected = confine_to_clicked_regions(redone[0, 0], previous[0, 0], torch.tensor([[40.5, 24.5]]),
                                          labels[0, 0])
    assert torch.allclose(confined[0, 0], expected, atol=1e-5)
    assert not torch.allclose(confined[0, 0], redone[0, 0])
    assert not torch.allclose(redone[0, 0], previous[0, 0])  # decoded whole, the image changes elsewhere too
    # classes without a click (image 0's second, image 1's both) are decoded in automatic mode either way
    assert torch.allclose(confined[0, 1], redone[0, 1], atol=1e-5)
    assert torch.allclose(confined[1], redone[1], atol=1e-5)
    # a click the previous prediction already obeys is done: its class keeps its logits
    previous[0, 0, 4:8, 8:12] = 4.0
    obeyed = confining.decode(embeddings, image.shape, points.nan_to_num(0.0), labels, mask_inputs=previous)
    assert torch.equal(obeyed[0, 0], previous[0, 0])
    # a box with the previous mask and no click (a new box, say) is decoded whole
    boxes = torch.tensor([[[2.0, 2.0, 20.0, 20.0], [float("nan")] * 4]] * 2)
    assert torch.equal(confining.decode(embeddings, image.shape, boxes=boxes, mask_inputs=previous),
                       whole.decode(embeddings, image.shape, boxes=boxes, mask_inputs=previous))


def test_a_background_click_removes_only_within_the_removal_radius():
    previous = logits((2, 12, 2, 12))
    new = logits((2, 12, 2, 3))  # decoded again: almost all of it removed
    out = confine_to_clicked_regions(new, previous, click(7, 7), torch.tensor([0]), removal_radius=2.0)
    rows, cols = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    near = (rows - 7) ** 2 + (cols - 7) ** 2 <= 4
    removed = (previous > 0) & ~(out > 0)
    assert torch.equal(removed, near & (previous > 0) & ~(new > 0))  # exactly the disk of radius 2, 13 pixels
    assert int(removed.sum()) == 13
    # a foreground click is not bounded by it
    grown = confine_to_clicked_regions(logits((2, 12, 2, 16)), previous, click(7, 13), torch.tensor([1]),
                                       removal_radius=2.0)
    assert torch.equal(grown > 0, logits((2, 12, 2, 16)) > 0)


def test_pending_clicks_read_the_prediction_as_it_is_shown():
    torch.manual_seed(0)
    height, width = 23, 37  # the image's slice: low-resolution logits are interpolated to it
    previous = torch.randn(1, 2, SIDE, SIDE) * 3
    shown = torch.nn.functional.interpolate(previous, size=(height, width), mode="bilinear", align_corners=False)
    ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ij = torch.stack([ii.flatten(), jj.flatten()], -1).float()
    coords = index_to_sam_xy(ij, torch.tensor([64 / height, 64 / width]))  # every voxel centre, SAM frame
    for exclusive in (False, True):
        for label in (0, 1):
            labels = torch.full((1, 2, coords.shape[0]), label)
            pending = pending_clicks(previous, coords[None, None].expand(1, 2, -1, -1), labels, exclusive)
            for k in range(2):
                visible = shown[0, k] > 0
                if exclusive:
                    visible &= shown[0, k] >= shown[0].amax(0)
                asked = ~visible if label == 1 else visible  # a click where the voxel is shown wrong
                assert torch.equal(pending[0, k] != -1, asked.flatten()), (exclusive, label, k)
    padding = pending_clicks(previous, torch.full((1, 2, 1, 2), float("nan")), torch.full((1, 2, 1), -1), True)
    assert (padding == -1).all()


def test_a_slice_whose_clicks_are_obeyed_is_not_decoded_again():
    structure = tube(5, 24)
    previous = torch.where(structure, 6.0, -6.0)[None, None].clone()  # (1, 1, m, m, 30): the structure, shown
    clicks = torch.tensor([[[[30.0, 34.0, 12.0], [30.0, 34.0, 20.0]]]])  # both inside the structure
    labels = torch.tensor([[[1, 1]]])
    previous[0, 0, 7:10, 6:9, 20] = -6.0  # slice 20 lost the structure around its click: that one is pending
    prompts = to_sam_prompts(clicks, labels, None, previous, spatial_shape=(64, 64, 30), image_size=64,
                             num_classes=1, batch=1, click_depth_radius=0)
    decoder = TubeDecoder(structure)
    out = propagate(decoder, prompts, 1, 30, confine_corrections=True)
    assert [z for z, kind in decoder.decoded if kind == "click"] == [20]
    assert torch.equal(out[0, 0, ..., 12], previous[0, 0, ..., 12])
    assert torch.equal(out[0, 0, ..., 20] > 0, structure[..., 20])  # the pending click restored it
    decoder = TubeDecoder(structure)
    propagate(decoder, prompts, 1, 30)  # SAM's way: every clicked slice again
    assert sorted(z for z, kind in decoder.decoded if kind == "click") == [12, 20]



def test_obeyed_clicks_are_shown_where_they_were_placed_and_nothing_else_changes():
    torch.manual_seed(0)
    height, width = 23, 37
    coords = index_to_sam_xy(torch.tensor([[4.0, 7.0], [15.0, 30.0], [22.0, 0.0]]), torch.tensor([64 / height,
                                                                                              64 / width]))
    for exclusive in (False, True):
        for label in (0, 1):
            logits_ = torch.randn(2, SIDE, SIDE) * 3
            labels = torch.tensor([[label, label, -1], [-1, -1, -1]])  # class 0's first two; the third is padding
            out = obey_clicks(logits_, coords[None].expand(2, -1, -1), labels, exclusive)
            pending = pending_clicks(out[None], coords[None, None].expand(1, 2, -1, -1), labels[None], exclusive)
            assert (pending == -1).all(), (exclusive, label)  # both shown as asked, read as they are shown
            changed = (out != logits_).any(0)
            assert changed.sum() <= 8  # at most the 2 x 2 pixels each click is read from
            assert not changed[-2:, :2].any()  # the padding click changed nothing
            assert torch.equal(out[1], logits_[1])  # the other class keeps its logits
            kept = out[0][changed] if label == 1 else -out[0][changed]
            assert (kept >= 1.0).all()  # at the margin, or further where the logits already were
            if exclusive and label == 1:
                assert (out[0][changed] >= logits_[1][changed] + 1.0).all()  # above the other class


def test_a_decoder_that_ignores_a_click_still_shows_it_when_clicks_are_obeyed():
    structure = tube(5, 24)
    previous = torch.where(structure, 6.0, -6.0)[None, None].clone()
    clicks = torch.tensor([[[[30.0, 50.0, 12.0]]]])  # outside the structure: the decoder cannot add it
    labels = torch.tensor([[[1]]])
    prompts = to_sam_prompts(clicks, labels, None, previous, spatial_shape=(64, 64, 30), image_size=64,
                             num_classes=1, batch=1, click_depth_radius=2)
    ignored = propagate(TubeDecoder(structure), prompts, 1, 30, confine_corrections=True)
    obeyed = propagate(TubeDecoder(structure), prompts, 1, 30, confine_corrections=True, obey=True)
    sam_xy = prompts.coords[12, 0]  # the click as the decoder sees it on its own slice (row 12 of one volume)
    assert pending_clicks(ignored[..., 12], sam_xy[None, None], labels, True).item() == 1  # left undone
    assert pending_clicks(obeyed[..., 12], sam_xy[None, None], labels, True).item() == -1  # shown
    assert (obeyed[..., 12] != ignored[..., 12]).sum() <= 4
    others = [z for z in range(30) if z != 12]  # its copies on slices 10-14 are not enforced
    assert torch.equal(obeyed[..., others], ignored[..., others])


def test_a_2d_click_is_shown_where_it_was_placed_with_obey_clicks():
    from medsa_monai.networks import MedSA
    from medsa_monai.predictor import MedSAPredictor

    torch.manual_seed(0)
    network = MedSA(2, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()  # two exclusive classes
    image = torch.rand(1, 1, 32, 32)
    plain, obeying = MedSAPredictor(network, obey_clicks=False), MedSAPredictor(network, obey_clicks=True)
    embeddings = plain.encode(image)
    previous = torch.full((1, 2, SIDE, SIDE), -8.0)
    previous[0, 1, 2:10, 2:10] = 8.0  # class 1 shown over the click's place: a class-0 click asks for a change
    points = torch.tensor([[[[12.0, 20.0]], [[0.0, 0.0]]]])
    labels = torch.tensor([[[1], [-1]]])
    sam_xy = index_to_sam_xy(points, torch.tensor([2.0, 2.0]))  # the click as the decoder reads it
    left = plain.decode(embeddings, image.shape, points, labels, mask_inputs=previous)
    shown = obeying.decode(embeddings, image.shape, points, labels, mask_inputs=previous)
    assert pending_clicks(left, sam_xy, labels, exclusive=True)[0, 0, 0] == 1  # the decoder alone left it undone
    assert (pending_clicks(shown, sam_xy, labels, exclusive=True) == -1).all()
    assert (shown != left).sum() <= 4 and torch.equal(shown[:, 1], left[:, 1])  # its class's 2 x 2 pixels
    # a coarser grid (a low-resolution pixel over 2 image pixels, here 4): the click is left as the decoder made it
    large = torch.rand(1, 1, 64, 64)
    embeddings = plain.encode(large)
    sam_xy = index_to_sam_xy(points * 2, torch.tensor([1.0, 1.0]))
    left = plain.decode(embeddings, large.shape, points * 2, labels, mask_inputs=previous)
    assert pending_clicks(left, sam_xy, labels, exclusive=True)[0, 0, 0] == 1
    assert torch.equal(obeying.decode(embeddings, large.shape, points * 2, labels, mask_inputs=previous), left)
