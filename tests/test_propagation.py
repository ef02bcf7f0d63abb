"""3D prompt propagation: seeds, waves, bounds, and a prompted class never in automatic mode on other slices."""

from __future__ import annotations

import math

import pytest
import torch

from medsa_monai.networks import MedSA
from medsa_monai.networks.prompt_mapping import to_sam_prompts
from medsa_monai.predictor import MedSAPredictor
from medsa_monai.predictor.propagation import EMPTY_LOGIT, low_res_boxes, propagate_prompts

SIDE = 16  # low-resolution side: image_size 64


class TubeDecoder:
    """A stand-in for MedSA's decoder that knows the structure: a (slice, class) pair decoded with any prompt (a
    click, a box, or a mask prompt with foreground) returns the structure's low-resolution mask of that slice as
    logits; a pair with only an empty mask prompt, or in automatic mode, returns background. It records every
    decoded pair, so the test sees which slices propagation reached and how."""

    num_classes = 1
    image_size = 64
    background_channel = True

    def __init__(self, structure: torch.Tensor):
        self.structure = structure  # (m, m, D) bool
        self.decoded: list[tuple[int, str]] = []

    def decode_prompts(self, embeddings, prompts, batch, depth):
        rows = batch * depth
        out = torch.full((rows, 1, SIDE, SIDE), math.nan)
        active = prompts.active if prompts.active is not None else torch.ones(rows, 1, dtype=torch.bool)
        for row in torch.nonzero(active[:, 0]).flatten().tolist():
            clicked = prompts.labels is not None and bool((prompts.labels[row, 0] == 1).any())
            boxed = prompts.boxes is not None and bool(torch.isfinite(prompts.boxes[row, 0]).all())
            masked = prompts.masks is not None and bool((prompts.masks[row, 0] > 0).any())
            kind = "click" if clicked else "box" if boxed else "mask" if masked else "automatic"
            self.decoded.append((row % depth, kind))
            hit = self.structure[..., row % depth] if kind != "automatic" else torch.zeros(SIDE, SIDE, dtype=bool)
            out[row, 0] = torch.where(hit, 8.0, -8.0)
        return out.view(batch, depth, 1, SIDE, SIDE).permute(0, 2, 3, 4, 1)


def propagate(decoder, prompts, batch: int, depth: int, **kwargs) -> torch.Tensor:
    """:func:`propagate_prompts` with the decoder's ``decode_prompts`` over ``depth`` slices of embeddings."""
    return propagate_prompts(lambda p: decoder.decode_prompts(torch.zeros(depth, 1), p, batch, depth), prompts, batch,
                             depth, decoder.num_classes, decoder.background_channel, **kwargs)


def tube(first: int, last: int, depth: int = 30) -> torch.Tensor:
    structure = torch.zeros(SIDE, SIDE, depth, dtype=torch.bool)
    structure[5:10, 6:11, first:last + 1] = True
    return structure


def prompts_for(points=None, labels=None, boxes=None, depth=30):
    return to_sam_prompts(points, labels, boxes, None, spatial_shape=(64, 64, depth), image_size=64, num_classes=1,
                          batch=1, click_depth_radius=0)


def test_one_click_segments_every_slice_of_a_20_slice_tube_and_nothing_outside():
    structure = tube(5, 24)
    decoder = TubeDecoder(structure)
    click = torch.tensor([[[[30.0, 34.0, 12.0]]]])
    low_res = propagate(decoder, prompts_for(click, torch.ones(1, 1, 1)), 1, 30)
    predicted = (low_res[0, 0] > 0).flatten(0, 1).any(0)
    assert predicted.tolist() == structure.flatten(0, 1).any(0).tolist()  # slices 5..24, no others
    assert (low_res[0, 0][..., :4] == EMPTY_LOGIT).all()  # never reached: certain background
    kinds = dict(decoder.decoded)
    assert kinds[12] == "click" and all(kinds[z] == "box" for z in range(5, 25) if z != 12)
    assert "automatic" not in kinds.values()  # the prompted class never falls back to its automatic prompt
    assert sorted(kinds) == list(range(4, 26))  # the slice past each end is tried once, found empty, and stops


def test_clicks_on_two_slices_combine_across_a_gap():
    structure = tube(2, 8) | tube(15, 20)
    decoder = TubeDecoder(structure)
    clicks = torch.tensor([[[[30.0, 34.0, 4.0], [30.0, 34.0, 18.0]]]])
    low_res = propagate(decoder, prompts_for(clicks, torch.ones(1, 1, 2)), 1, 30)
    predicted = (low_res[0, 0] > 0).flatten(0, 1).any(0)
    assert predicted.tolist() == structure.flatten(0, 1).any(0).tolist()


def test_a_3d_box_seeds_its_middle_slice_and_bounds_propagation():
    decoder = TubeDecoder(tube(0, 29))
    box = torch.tensor([[[20.0, 24.0, 10.0, 40.0, 44.0, 16.0]]])
    low_res = propagate(decoder, prompts_for(boxes=box), 1, 30)
    predicted = (low_res[0, 0] > 0).flatten(0, 1).any(0)
    assert torch.nonzero(predicted).flatten().tolist() == list(range(10, 17))
    assert decoder.decoded[0] == (13, "box")
    # a box drawn on one slice is not a bound
    decoder = TubeDecoder(tube(0, 29))
    flat = torch.tensor([[[20.0, 24.0, 13.0, 40.0, 44.0, 13.0]]])
    low_res = propagate(decoder, prompts_for(boxes=flat), 1, 30)
    assert (low_res[0, 0] > 0).flatten(0, 1).any(0).all()


def test_a_session_under_way_is_corrected_on_the_clicked_slices_only():
    structure = tube(5, 24)
    decoder = TubeDecoder(structure)
    previous = torch.full((1, 1, SIDE, SIDE, 30), -6.0)
    previous[0, 0, 2:4, 2:4, 3:27] = 6.0  # the previous prediction: wrong place, on slices 3..26
    box = torch.tensor([[[20.0, 24.0, 5.0, 40.0, 44.0, 24.0]]])
    clicks = torch.tensor([[[[30.0, 34.0, 12.0], [30.0, 34.0, 20.0]]]])
    prompts = to_sam_prompts(clicks, torch.ones(1, 1, 2), box, previous, spatial_shape=(64, 64, 30), image_size=64,
                             num_classes=1, batch=1, click_depth_radius=0)
    low_res = propagate(decoder, prompts, 1, 30)
    assert sorted(decoder.decoded) == [(12, "click"), (20, "click")]  # nothing else decoded again
    assert torch.equal(low_res[0, 0, ..., 12], torch.where(structure[..., 12], 8.0, -8.0))
    others = [z for z in range(30) if z not in (12, 20)]
    assert torch.equal(low_res[0, 0][..., others], previous[0, 0][..., others])  # kept as they were
    # without the previous prediction the same prompts propagate through the whole structure
    decoder = TubeDecoder(structure)
    low_res = propagate(decoder, prompts_for(clicks, torch.ones(1, 1, 2), box), 1, 30)
    assert (low_res[0, 0] > 0).flatten(0, 1).any(0).tolist() == structure.flatten(0, 1).any(0).tolist()


def test_low_res_boxes_in_sam_frame():
    masks = torch.full((2, SIDE, SIDE), -1.0)
    masks[0, 2:5, 7:9] = 1.0
    boxes, present = low_res_boxes(masks)
    assert present.tolist() == [True, False]
    assert boxes[0].tolist() == [28.0, 8.0, 35.0, 19.0]  # x0 = 7 * 4, y0 = 2 * 4, x1 = 8 * 4 + 3, y1 = 4 * 4 + 3
    assert torch.isnan(boxes[1]).all()


class AutomaticKnowsDecoder(TubeDecoder):
    """The tube decoder whose automatic mode returns a known field (3.0 everywhere): records the mask prompts of the
    propagated slices, so a test can check how they were mixed."""

    def __init__(self, structure: torch.Tensor):
        super().__init__(structure)
        self.wave_masks: dict[int, torch.Tensor] = {}
        self.automatic_rows: list[int] = []

    def decode_prompts(self, embeddings, prompts, batch, depth):
        if prompts.labels is None and prompts.boxes is None and prompts.masks is None:  # automatic mode
            rows = torch.nonzero(prompts.active[:, 0]).flatten().tolist()
            self.automatic_rows += rows
            out = torch.full((batch * depth, 1, SIDE, SIDE), math.nan)
            out[rows] = 3.0
            return out.view(batch, depth, 1, SIDE, SIDE).permute(0, 2, 3, 4, 1)
        if prompts.derived_boxes is not None:
            for row in torch.nonzero(prompts.active[:, 0]).flatten().tolist():
                self.wave_masks[row] = prompts.masks[row, 0, 0].clone()
        return super().decode_prompts(embeddings, prompts, batch, depth)


def test_propagated_slices_mix_the_neighbour_with_their_own_automatic_logits():
    structure = tube(5, 24)
    click = torch.tensor([[[[30.0, 34.0, 12.0]]]])
    decoder = AutomaticKnowsDecoder(structure)
    low_res = propagate(decoder, prompts_for(click, torch.ones(1, 1, 1)), 1, 30,
                                automatic_weight=0.25)
    assert (low_res[0, 0] > 0).flatten(0, 1).any(0).tolist() == structure.flatten(0, 1).any(0).tolist()
    # slice 13's neighbour is the clicked slice 12 (the structure: +8, elsewhere -8); its own automatic logits: 3
    neighbour = torch.where(structure[..., 12], 8.0, -8.0)
    assert torch.equal(decoder.wave_masks[13], 0.75 * neighbour + 0.25 * 3.0)
    assert torch.equal(decoder.wave_masks[4], 0.75 * torch.where(structure[..., 5], 8.0, -8.0) + 0.25 * 3.0)
    # the automatic logits are decoded once, for the slices propagation may still reach (not the seed)
    assert sorted(decoder.automatic_rows) == [z for z in range(30) if z != 12]
    # at weight 0 the prompted class is never decoded in automatic mode
    decoder = AutomaticKnowsDecoder(structure)
    propagate(decoder, prompts_for(click, torch.ones(1, 1, 1)), 1, 30)
    assert decoder.automatic_rows == [] and torch.equal(decoder.wave_masks[13], neighbour)


def test_automatic_weight_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="automatic_weight"):
        propagate(TubeDecoder(tube(5, 24)), prompts_for(boxes=torch.tensor(
            [[[20.0, 24.0, 10.0, 40.0, 44.0, 16.0]]])), 1, 30, automatic_weight=1.5)
    with pytest.raises(ValueError, match="propagation_automatic_weight"):
        MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64), propagation_automatic_weight=-0.1)


@torch.no_grad()
def test_medsa_prompted_class_never_uses_its_automatic_prompt_on_other_slices():
    torch.manual_seed(0)
    # at the default weight (0.5) the automatic logits of the slices propagation reaches enter their mask prompt
    # (test above); at 0 nothing of the automatic mode does
    net = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()
    predictor = MedSAPredictor(net, propagation_automatic_weight=0.0)
    used = []
    net.class_prompts.register_forward_hook(lambda module, args, out: used.append(args[0].clone()))
    volume = torch.rand(1, 1, 32, 32, 8)
    points = torch.tensor([[[[10.0, 12.0, 3.0]], [[0.0, 0.0, 0.0]]]])
    labels = torch.tensor([[[1], [-1]]])  # class 1 clicked on slice 3, class 2 not prompted
    low_res = predictor.decode(predictor.encode(volume), volume.shape, points, labels)
    assert torch.isfinite(low_res).all()
    automatic = torch.cat(used)
    assert automatic.numel() == 8 and (automatic == 1).all()  # only class 2, on its 8 slices
    used.clear()  # the network alone does not propagate: the other slices of class 1 are automatic
    net.decode(net.encode(volume), volume.shape, points, labels)
    assert (torch.cat(used) == 0).sum() == 7


@torch.no_grad()
def test_class_token_tells_touching_structures_apart():
    torch.manual_seed(0)
    net = MedSA(2, 1, 3, "vit_tiny", image_size=64, trainable="full", prompt_class_token=True).eval()
    image = torch.rand(1, 1, 32, 32)
    box = torch.tensor([[[4.0, 4.0, 20.0, 20.0], [4.0, 4.0, 20.0, 20.0]]])  # the same box for both classes
    low_res = net.decode(net.encode(image), image.shape, boxes=box)
    assert not torch.allclose(low_res[0, 0], low_res[0, 1])
    net.prompt_class_token = False  # SAM's decoding: the same box gives the same answer whatever the class
    low_res = net.decode(net.encode(image), image.shape, boxes=box)
    assert torch.allclose(low_res[0, 0], low_res[0, 1])


@torch.no_grad()
def test_a_viewer_click_propagates_through_the_click_guidance_path():
    """MONAI Label's deepedit task calls ``inferer(image_with_guidance, network)``: a click on one slice of a
    volume reaches the network as a guidance channel and is propagated like any other 3D prompt."""
    torch.manual_seed(0)
    net = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()
    predictor = MedSAPredictor(net, click_guidance=True, propagation_automatic_weight=0.0)
    volume = torch.rand(1, 1, 32, 32, 8)
    guidance = torch.zeros(1, 3, 32, 32, 8)
    guidance[0, 1, 10, 12, 3] = 1.0  # one click of class 1 on slice 3
    seen = []
    net.mask_decoder.register_forward_hook(lambda module, args, out: seen.append(out[0].shape[0]))
    used = []
    net.class_prompts.register_forward_hook(lambda module, args, out: used.append(args[0].clone()))
    with_clicks = predictor(torch.cat([volume, guidance], 1))
    assert with_clicks.shape == (1, 3, 32, 32, 8)
    assert len(seen) > 2  # the automatic class, the seed, then waves of propagated slices
    assert (torch.cat(used) == 1).all()  # class 1 never decoded with its automatic prompt


def test_click_aware_inferer_uses_the_whole_volume_only_when_clicked():
    from monai.inferers import SlidingWindowInferer

    from medsa_monai.predictor import ClickAwareInferer

    calls = []

    def network(x):
        calls.append(tuple(x.shape))
        return x[:, :1]

    inferer = ClickAwareInferer(SlidingWindowInferer(roi_size=(8, 8, 8)), image_channels=1)
    inferer.predictor = lambda net: net  # a network that reads its guidance channels itself
    volume = torch.zeros(1, 4, 16, 16, 16)
    inferer(volume, network)
    assert set(calls) == {(1, 1, 8, 8, 8)}  # no click: window by window, the image alone
    calls.clear()
    volume[0, 2, 3, 3, 3] = 1.0
    inferer(volume, network)
    assert calls == [(1, 4, 16, 16, 16)]  # a click: the whole volume at once


def test_click_aware_inferer_pads_a_clicked_volume_to_the_training_frame_and_crops_back():
    from monai.inferers import SimpleInferer

    from medsa_monai.predictor import ClickAwareInferer

    seen = []

    def network(x):
        seen.append(x.clone())
        return x[:, :1] * 2 + 1

    inferer = ClickAwareInferer(SimpleInferer(), image_channels=1, min_size=(12, 16))
    inferer.predictor = lambda net: net
    volume = torch.zeros(1, 2, 9, 16, 5)
    volume[0, 0] = torch.arange(9 * 16 * 5, dtype=torch.float32).view(9, 16, 5) + 1
    volume[0, 1, 4, 4, 2] = 1.0
    out = inferer(volume, network)
    assert seen[0].shape == (1, 2, 12, 16, 5)  # 3 rows of zeros added, 1 before and 2 after (MONAI's centring)
    assert torch.equal(seen[0][0, :, 1:10], volume[0]) and (seen[0][0, :, [0, 10, 11]] == 0).all()
    assert torch.equal(out, volume[:, :1] * 2 + 1)  # cropped back to the input
    seen.clear()
    large = torch.zeros(1, 2, 20, 20, 5)
    large[0, 1, 4, 4, 2] = 1.0
    inferer(large, network)
    assert seen[0].shape == (1, 2, 20, 20, 5)  # larger than the frame: as it is


def test_training_frame_padding_pads_volumes_in_plane_only():
    from medsa_monai.preprocessing import training_frame_padding, training_frame_size

    assert training_frame_size(2, [256, 256]) is None and training_frame_padding(2, [256, 256]) == []
    assert training_frame_size(3, [40, 56, 40]) == [40, 56]
    (pad,) = training_frame_padding(3, [40, 56, 40])
    padded = pad({"image": torch.ones(1, 35, 60, 30), "label": torch.ones(1, 35, 60, 30)})
    assert padded["image"].shape == (1, 40, 60, 30) and padded["label"].shape == (1, 40, 60, 30)
    assert padded["image"][0, :2].sum() == 0 and padded["image"][0, 2:37].min() == 1  # 2 before, 3 after


def test_a_correction_reaches_the_slices_within_its_depth_radius_where_they_do_not_obey_it_yet():
    structure = tube(5, 24)
    previous = torch.where(structure, 6.0, -6.0)[None, None].clone()
    previous[0, 0, ..., 10:15] = -6.0  # the previous prediction misses slices 10..14
    click = torch.tensor([[[[30.0, 34.0, 12.0]]]])
    for radius, decoded in ((0, [12]), (2, [10, 11, 12, 13, 14]), (4, [10, 11, 12, 13, 14])):
        decoder = TubeDecoder(structure)
        prompts = to_sam_prompts(click, torch.ones(1, 1, 1), None, previous, spatial_shape=(64, 64, 30),
                                 image_size=64, num_classes=1, batch=1, click_depth_radius=radius)
        low_res = propagate(decoder, prompts, 1, 30, confine_corrections=True)
        assert sorted(z for z, _ in decoder.decoded) == decoded  # slices 8, 9, 15, 16 already obey the click
        fixed = (low_res[0, 0] > 0) == structure
        assert fixed.all(0).all(0).sum() == 30 - 5 + len(decoded)


def test_the_predictor_sends_a_correction_to_its_depth_radius_and_a_first_click_to_its_slice(monkeypatch):
    import medsa_monai.predictor.predictor as module

    radii = []
    real = module.to_sam_prompts
    monkeypatch.setattr(module, "to_sam_prompts",
                        lambda *a, **k: radii.append(k["click_depth_radius"]) or real(*a, **k))
    torch.manual_seed(0)
    predictor = MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64).eval(), correction_depth_radius=3)
    image = torch.rand(1, 1, 32, 32, 8)
    with torch.no_grad():
        embeddings = predictor.encode(image)
        points, labels = torch.tensor([[[[16.0, 16.0, 4.0]]]]), torch.ones(1, 1, 1)
        first = predictor.decode(embeddings, image.shape, points, labels)
        predictor.decode(embeddings, image.shape, points, labels, mask_inputs=first)
    assert radii == [0, 3]
