"""Prompt-centred zoom: the window, the predictor that decodes in it, and the training transform that shows it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsa_monai.evaluation.iterative_clicks import simulate_clicks
from medsa_monai.networks import MedSA
from medsa_monai.predictor import EMPTY_LOGIT, ClickAwareInferer, EmbeddingCache, MedSAPredictor, ZoomPredictor
from medsa_monai.preprocessing import spatial_augmentation
from medsa_monai.prompts import RandPromptZoomd, zoom_window


def test_the_window_keeps_the_slice_aspect_holds_the_region_with_its_margin_and_stays_inside():
    window = zoom_window((10, 20, 17, 29), 40, 56, margin=0.5, min_fraction=0.25)
    height, width = window.rows[1] - window.rows[0], window.cols[1] - window.cols[0]
    assert width / height == pytest.approx(56 / 40, abs=0.05)
    assert window.rows[0] <= 10 - 4 and window.rows[1] >= 18 + 4  # 8 rows, 4 of margin on each side
    assert window.cols[0] <= 20 - 5 and window.cols[1] >= 30 + 5
    assert window.factor == pytest.approx(40 / height)
    near_edge = zoom_window((0, 0, 3, 3), 40, 56, margin=0.5, min_fraction=0.25)
    assert near_edge.rows == (0, 10) and near_edge.cols == (0, 14)  # the smallest window, shifted inside
    assert zoom_window((0, 0, 30, 40), 40, 56, margin=0.5, min_fraction=0.25).whole


def volume_and_network(seed: int = 0):
    torch.manual_seed(seed)
    network = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()
    image = torch.rand(1, 1, 40, 56, 6)
    return network, image


@torch.no_grad()
def test_a_window_as_large_as_the_image_decodes_exactly_as_the_predictor():
    network, image = volume_and_network()
    base = MedSAPredictor(network)
    zoom = ZoomPredictor(base, min_fraction=1.0)
    points = torch.tensor([[[[20.0, 28.0, 3.0]], [[-1.0, -1.0, -1.0]]]])
    labels = torch.tensor([[[1], [-1]]])
    expected = base.postprocess(base.decode(base.encode(image), image.shape, points, labels), (40, 56, 6))[:, 1:]
    got = zoom.decode(zoom.encode(image), image.shape, points, labels)
    assert zoom.last_windows[0].whole
    torch.testing.assert_close(got, expected)
    assert base.embedding_cache is None and zoom.predictor.embedding_cache is not None  # a cached copy, not base


@torch.no_grad()
def test_a_box_is_decoded_in_its_window_and_pasted_back_where_it_came_from():
    network, image = volume_and_network()
    base = MedSAPredictor(network)
    zoom = ZoomPredictor(base, margin=0.5, min_fraction=0.25, max_grow=0)
    boxes = torch.tensor([[[18.0, 26.0, 2.0, 22.0, 30.0, 4.0], [math.nan] * 6]])
    got = zoom.decode(zoom.encode(image), image.shape, boxes=boxes)
    window = zoom.last_windows[0]
    assert window.factor == pytest.approx(4.0)  # a small box: the smallest window, a quarter of the slice
    rows, cols = slice(*window.rows), slice(*window.cols)
    crop = image[:, :, rows, cols]
    shifted = boxes - torch.tensor([window.rows[0], window.cols[0], 0.0] * 2)
    inside = base.postprocess(base.decode(base.encode(crop), crop.shape, boxes=shifted), tuple(crop.shape[2:]))
    torch.testing.assert_close(got[:, 0, rows, cols], inside[:, 1])
    outside = torch.ones(40, 56, dtype=torch.bool)
    outside[rows, cols] = False
    assert (got[0, 0][outside] == EMPTY_LOGIT).all()  # the prompted class lies within its window
    automatic = base.postprocess(base.decode(base.encode(image), image.shape), (40, 56, 6))
    torch.testing.assert_close(got[:, 1], automatic[:, 2])  # the class without a prompt: automatic, whole image


@torch.no_grad()
def test_a_session_keeps_the_previous_logits_exactly_where_nothing_is_asked_of_them():
    network, image = volume_and_network()
    zoom = ZoomPredictor(MedSAPredictor(network, confine_corrections=True), max_grow=0)
    points = torch.tensor([[[[20.0, 28.0, 3.0]], [[-1.0, -1.0, -1.0]]]])
    labels = torch.tensor([[[1], [-1]]])
    session = zoom.encode(image)
    first = zoom.decode(session, image.shape, points, labels)
    previous = first.clone()
    previous[:, 0, 20, 28, 3] = 5.0  # the click is obeyed: nothing is pending, nothing may change
    again = zoom.decode(session, image.shape, points, labels, mask_inputs=previous)
    torch.testing.assert_close(again[:, 0], previous[:, 0], rtol=0, atol=1e-6)


def test_the_zoom_predictor_refuses_mask_inputs_of_another_shape():
    network, image = volume_and_network()
    zoom = ZoomPredictor(MedSAPredictor(network))
    points = torch.tensor([[[[20.0, 28.0, 3.0]], [[-1.0, -1.0, -1.0]]]])
    with pytest.raises(ValueError, match="own logits as mask_inputs"):
        zoom.decode(zoom.encode(image), image.shape, points, torch.tensor([[[1], [-1]]]),
                    mask_inputs=torch.zeros(1, 2, 16, 16, 6))
    with pytest.raises(ValueError, match="min_fraction"):
        ZoomPredictor(MedSAPredictor(network), min_fraction=0)


def test_iterative_clicks_report_the_zoom_of_every_click():
    image = torch.zeros(1, 1, 40, 56, 4)
    image[0, 0, 16:24, 24:34] = 1.0
    label = (image[0, 0] > 0).numpy().astype(np.int64)
    label[16, 24, 0] = 0  # one error for the second click to correct
    result = simulate_clicks(ZoomPredictor(Thresholding(), max_grow=0), image, label, num_clicks=2, with_box=False)
    assert result.zoom.shape == (2,) and (result.zoom > 1).all()
    assert simulate_clicks(Thresholding(), image, label, num_clicks=1, with_box=False).zoom is None


@torch.no_grad()
def test_the_click_inferer_zooms_clicks_from_guidance_channels():
    network, image = volume_and_network()
    guidance = torch.zeros(1, 3, 40, 56, 6)
    guidance[0, 1, 20, 28, 3] = 1
    inferer = ClickAwareInferer(lambda x, net: net(x), image_channels=1, embedding_cache=EmbeddingCache(),
                                zoom_margin=0.5)
    out = inferer(torch.cat([image, guidance], 1), network)
    assert out.shape == (1, 3, 40, 56, 6)
    assert isinstance(inferer.predictor(network), ZoomPredictor)


def test_training_sees_a_structure_magnified_in_its_window_with_the_sample_shape_kept():
    label = torch.zeros(1, 40, 56, 10)
    label[0, 10:18, 20:30, 3:6] = 1
    label[0, 18:22, 20:30, 3:6] = 2
    image = label * 10 + torch.rand(1, 40, 56, 10)
    zoom = RandPromptZoomd(["image", "label"], prob=1.0, margin=(0.5, 0.5))
    zoom.set_random_state(0)
    out = zoom({"image": image, "label": label})
    assert out["image"].shape == image.shape and out["label"].shape == label.shape
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}
    assert (out["label"] > 0).sum() > 3 * (label > 0).sum()  # magnified
    assert ((out["image"] > 5) == (out["label"] > 0)).float().mean() > 0.97  # image and label stay aligned
    never = RandPromptZoomd(["image", "label"], prob=0.0)
    assert torch.equal(never({"image": image, "label": label})["label"], label)
    regions = torch.stack([label[0] > 0, label[0] == 2]).float()[..., 4]  # 2D, two region channels
    flat = RandPromptZoomd(["image", "label"], prob=1.0)({"image": image[..., 4], "label": regions})
    assert flat["label"].shape == regions.shape and flat["label"].sum() > regions.sum()


def test_spatial_augmentation_adds_the_zoom_only_when_asked():
    plain = spatial_augmentation(3, [40, 56, 40])
    zoomed = spatial_augmentation(3, [40, 56, 40], zoom_prob=0.5, zoom_margin=0.4)
    assert not any(isinstance(step, RandPromptZoomd) for step in plain)
    step = next(step for step in zoomed if isinstance(step, RandPromptZoomd))
    assert step.prob == 0.5 and step.margin == (0.2, 0.8) and len(zoomed) == len(plain) + 1


def test_resizing_keeps_label_values_when_shrinking_too():
    from medsa_monai.prompts.zoom import _resize_in_plane

    label = torch.randint(0, 3, (1, 30, 30, 4)).float()
    small = _resize_in_plane(label, (10, 10), nearest=True)
    assert set(torch.unique(small).tolist()) <= {0.0, 1.0, 2.0}
    assert torch.equal(_resize_in_plane(label, (30, 30), nearest=True), label)


class Thresholding:
    """A predictor stand-in that segments the bright voxels of whatever it is shown, on a 16 x 16 grid."""

    num_classes, background_channel, image_size, spatial_dims, embedding_cache = 1, True, 64, 3, None

    def encode(self, image):
        return image

    def decode(self, embeddings, image_shape, points=None, point_labels=None, boxes=None, mask_inputs=None):
        b, c, h, w, d = embeddings.shape
        flat = torch.nn.functional.interpolate(embeddings.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w), (16, 16),
                                               mode="bilinear", align_corners=False)
        return ((flat - 0.5) * 20).view(b, d, 1, 16, 16).permute(0, 2, 3, 4, 1)

    def postprocess(self, low_res, spatial):
        b, k, m, _, d = low_res.shape
        flat = torch.nn.functional.interpolate(low_res.permute(0, 4, 1, 2, 3).reshape(b * d, k, m, m), spatial[:2],
                                               mode="bilinear", align_corners=False)
        logits = flat.view(b, d, k, *spatial[:2]).permute(0, 2, 3, 4, 1)
        return torch.cat([torch.zeros_like(logits[:, :1]), logits], 1)


def test_the_window_grows_until_the_structure_no_longer_reaches_its_border():
    image = torch.zeros(1, 1, 40, 56, 4)
    image[0, 0, 8:30, 10:44] = 1.0  # far larger than the window of a small box inside it
    boxes = torch.tensor([[[17.0, 25.0, 0.0, 21.0, 29.0, 3.0]]])
    stuck = ZoomPredictor(Thresholding(), margin=0.25, max_grow=0)
    stuck.decode(stuck.encode(image), image.shape, boxes=boxes)
    assert stuck.last_windows[0].factor == pytest.approx(4.0)
    zoom = ZoomPredictor(Thresholding(), margin=0.25, max_grow=4)
    got = zoom.decode(zoom.encode(image), image.shape, boxes=boxes)
    window = zoom.last_windows[0]
    assert window.rows[0] <= 8 and window.rows[1] >= 30 and window.cols[0] <= 10 and window.cols[1] >= 44
    assert ((got[0, 0] > 0) == (image[0, 0] > 0)).float().mean() > 0.97


def test_a_first_click_takes_the_extent_of_its_structure_from_a_pass_on_the_whole_image():
    image = torch.zeros(1, 1, 40, 56, 4)
    image[0, 0, 14:26, 20:36] = 1.0
    zoom = ZoomPredictor(Thresholding(), margin=0.25, max_grow=0)
    got = zoom.decode(zoom.encode(image), image.shape, torch.tensor([[[[19.0, 27.0, 1.0]]]]), torch.tensor([[[1]]]))
    window = zoom.last_windows[0]
    assert window.rows[0] <= 14 and window.rows[1] >= 26 and window.cols[0] <= 20 and window.cols[1] >= 36
    assert window.factor > 1.5  # zoomed, around the whole structure rather than the click alone
    assert ((got[0, 0] > 0) == (image[0, 0] > 0)).float().mean() > 0.97


@torch.no_grad()
def test_a_session_in_a_window_as_large_as_the_image_feeds_back_what_the_predictor_feeds_back():
    network, image = volume_and_network(seed=1)
    base = MedSAPredictor(network, confine_corrections=True)
    zoom = ZoomPredictor(base, min_fraction=1.0)
    clicks = [([20.0, 28.0, 3.0], 1), ([12.0, 40.0, 2.0], 0), ([30.0, 10.0, 4.0], 1)]
    embeddings, session = base.encode(image), zoom.encode(image)
    low, zoomed = None, None
    for count in range(1, len(clicks) + 1):
        points = torch.tensor([[[c[0] for c in clicks[:count]], [[-1.0, -1.0, -1.0]] * count]])
        labels = torch.tensor([[[c[1] for c in clicks[:count]], [-1] * count]])
        low = base.decode(embeddings, image.shape, points, labels, mask_inputs=low)
        zoomed = zoom.decode(session, image.shape, points, labels, mask_inputs=zoomed)
        assert zoom.last_windows[0].whole
        expected = base.postprocess(low, (40, 56, 6))[:, 1:]
        torch.testing.assert_close(zoomed, expected, rtol=0, atol=1e-4)
    zoom.decode(session, image.shape, points, labels, mask_inputs=zoomed + 1.0)  # not what it returned: resampled
    assert zoom.last_windows[0].whole
