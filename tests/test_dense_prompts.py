"""Boxes and clicks drawn into SAM's mask prompt (``MedSAPredictor(network, dense_prompts=True)``), checked by
hand."""

from __future__ import annotations

import math

import pytest
import torch

from medsa_monai.networks import MedSA
from medsa_monai.networks.prompt_mapping import to_sam_prompts
from medsa_monai.predictor import MedSAPredictor
from medsa_monai.predictor.dense_prompts import CLICK_LOGIT, OUTSIDE_LOGIT, draw_prompt_maps


def test_box_map_is_zero_inside_and_background_outside():
    # side 8 (image_size 32): low-resolution pixel centres 1.5, 5.5, ..., 29.5; each covers centre +- 2
    maps = draw_prompt_maps(None, 8, boxes=torch.tensor([[8.0, 4.0, 23.0, 15.0], [math.nan] * 4]))
    expected = torch.full((8, 8), OUTSIDE_LOGIT)
    expected[1:4, 2:6] = 0.0  # rows (y) 1..3, columns (x) 2..5 touch the box
    assert maps.shape == (2, 1, 8, 8)
    assert torch.equal(maps[0, 0], expected)
    assert torch.equal(maps[1, 0], torch.zeros(8, 8))  # no box, no mask, no click: a neutral map


def test_clicks_set_disks_over_the_previous_mask_on_their_own_slice_only():
    previous = torch.full((2, 1, 8, 8), -3.0)
    previous[1] = math.nan  # the second pair has no mask prompt: its box map is the base
    coords = torch.tensor([[[13.5, 9.5], [29.5, 29.5], [0.0, 0.0]], [[13.5, 9.5], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1], [0, 1, -1]])
    offsets = torch.tensor([[0, 0, 0], [0, 1, 0]])  # the second pair's positive click lies on another slice
    boxes = torch.tensor([[math.nan] * 4, [0.0, 0.0, 31.0, 31.0]])
    maps = draw_prompt_maps(previous, 8, coords, labels, offsets, boxes, click_radius=1.0)
    first = torch.full((8, 8), -3.0)  # a mask prompt is given: the box map does not replace it
    for i, j in ((2, 3), (1, 3), (3, 3), (2, 2), (2, 4)):  # (x 13.5, y 9.5) is the centre of pixel (2, 3)
        first[i, j] = CLICK_LOGIT
    first[6, 7] = first[7, 6] = first[7, 7] = -CLICK_LOGIT  # the negative click in the corner, clipped
    assert torch.equal(maps[0, 0], first)
    second = torch.zeros(8, 8)  # whole-image box: zero everywhere
    for i, j in ((2, 3), (1, 3), (3, 3), (2, 2), (2, 4)):
        second[i, j] = -CLICK_LOGIT
    assert torch.equal(maps[1, 0], second)


def _net(dense: bool) -> MedSAPredictor:
    torch.manual_seed(0)
    network = MedSA(2, 1, 3, "vit_tiny", image_size=64, trainable="full", prompt_class_token=True).eval()
    return MedSAPredictor(network, dense_prompts=dense)


def test_network_decodes_prompted_pairs_with_the_drawn_map_and_leaves_automatic_pairs_alone():
    spatial = (32, 32)
    boxes = torch.full((1, 2, 4), math.nan)
    boxes[0, 0] = torch.tensor([4.0, 4.0, 15.0, 20.0])
    points = torch.tensor([[[[10.0, 12.0]], [[0.0, 0.0]]]])
    point_labels = torch.tensor([[[1], [-1]]])
    image = torch.rand(1, 1, *spatial, generator=torch.Generator().manual_seed(1))
    dense, plain = _net(True), _net(False)
    with torch.no_grad():
        embeddings = dense.encode(image)
        got = dense.decode(embeddings, image.shape, points, point_labels, boxes)
        without = plain.decode(embeddings, image.shape, points, point_labels, boxes)
        prompts = to_sam_prompts(points, point_labels, boxes, None, spatial_shape=spatial, image_size=64,
                                 num_classes=2, batch=1)
        maps = draw_prompt_maps(None, 16, prompts.coords[0, :1], prompts.labels[0, :1], None, prompts.boxes[0, :1])
        net = dense.network
        sparse, _ = net.prompt_encoder(points=(prompts.coords[0, :1], prompts.labels[0, :1]),
                                       boxes=prompts.boxes[0, :1], masks=None)
        sparse = torch.cat([sparse, net.class_prompts.weight[:1][:, None]], dim=1)
        _, mask_embedding = net.prompt_encoder(points=None, boxes=None, masks=maps)
        by_hand, _ = net.mask_decoder(embeddings, net.prompt_encoder.get_dense_pe(), sparse, mask_embedding,
                                      multimask_output=False)
    assert torch.allclose(got[0, 0], by_hand[0, 0], atol=1e-5)
    assert not torch.allclose(got[0, 0], without[0, 0], atol=1e-3)
    assert torch.equal(got[0, 1], without[0, 1])  # automatic pair: no map, exactly as without dense prompts


def test_click_radius_must_be_positive():
    with pytest.raises(ValueError, match="click_radius"):
        MedSAPredictor(MedSA(2, 1, 2, "vit_tiny", image_size=64), click_radius=0)


def test_a_kept_box_clamps_the_fed_back_mask_outside_it():
    previous = torch.full((1, 1, 8, 8), 5.0)
    maps = draw_prompt_maps(previous, 8, boxes=torch.tensor([[8.0, 4.0, 23.0, 15.0]]))
    expected = torch.full((8, 8), OUTSIDE_LOGIT)
    expected[1:4, 2:6] = 5.0  # inside, the previous prediction; outside, certain background
    assert torch.equal(maps[0, 0], expected)


def test_boxes_derived_by_propagation_are_not_drawn():
    from dataclasses import replace

    net = _net(True)
    spatial = (32, 32)
    boxes = torch.tensor([[[4.0, 4.0, 15.0, 20.0], [math.nan] * 4]])
    previous = torch.full((1, 2, 16, 16), 3.0)
    prompts = to_sam_prompts(None, None, boxes, previous, spatial_shape=spatial, image_size=64, num_classes=2,
                             batch=1)
    with torch.no_grad():
        embeddings = net.encode(torch.rand(1, 1, *spatial, generator=torch.Generator().manual_seed(2)))
        drawn = net.decode_prompts(embeddings, prompts, 1)
        derived = net.decode_prompts(embeddings, replace(prompts, derived_boxes=torch.tensor([[True, False]])), 1)
        token_only = net.network.decode_prompts(embeddings, prompts, 1)  # the network alone: no drawn maps
    assert torch.equal(derived[0, 0], token_only[0, 0])  # the box stays a token; the mask prompt is as fed back
    assert not torch.allclose(drawn[0, 0], derived[0, 0], atol=1e-3)
