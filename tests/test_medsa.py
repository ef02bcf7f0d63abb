"""MedSA as a MONAI network: shapes, prompt geometry, trainable presets, persistence and input errors."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from medsa_monai.networks import TRAINABLE_PRESETS, MedSA, count_parameters, parameter_group
from medsa_monai.predictor import MedSAPredictor

from .conftest import randomise


def tiny(spatial_dims=2, out_channels=3, image_size=64, **kwargs) -> MedSA:
    return MedSA(spatial_dims, 1, out_channels, "vit_tiny", image_size=image_size, **kwargs)


@torch.no_grad()
def test_odd_sizes_in_and_out():
    net = tiny(3).eval()
    volume = torch.rand(2, 1, 37, 53, 29)
    assert net(volume).shape == (2, 3, 37, 53, 29)
    points = torch.tensor([[[[5.0, 7.0, 3.0]], [[30.0, 50.0, 28.0]]]] * 2)
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 36.0, 52.0, 28.0], [float("nan")] * 6]] * 2)
    assert net(volume, points, torch.ones(2, 2, 1), boxes).shape == (2, 3, 37, 53, 29)
    assert tiny(2).eval()(torch.rand(1, 1, 37, 53)).shape == (1, 3, 37, 53)
    no_background = tiny(2, out_channels=2, background_channel=False).eval()
    assert no_background(torch.rand(1, 1, 37, 53)).shape == (1, 2, 37, 53)


def _captured_points(net, *args):
    seen = []
    handle = net.prompt_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["points"]), with_kwargs=True)
    with torch.no_grad():
        net(*args)
    handle.remove()
    return [p for p in seen if p is not None]


def test_click_index_reaches_sam_as_x_y():
    net = tiny(2, out_channels=2).eval()
    (coords, labels), = _captured_points(net, torch.rand(1, 1, 64, 64), torch.tensor([[[[10.0, 50.0]]]]),
                                         torch.ones(1, 1, 1))
    assert coords.tolist() == [[[50.0, 10.0]]] and labels.tolist() == [[1]]  # (i, j) -> (x=j, y=i)
    # A 32 x 128 image is resized to 64 x 64: pixel centres map to pixel centres.
    (coords, _), = _captured_points(net, torch.rand(1, 1, 32, 128), torch.tensor([[[[10.0, 50.0]]]]),
                                    torch.ones(1, 1, 1))
    assert torch.allclose(coords, torch.tensor([[[50.5 * 0.5 - 0.5, 10.5 * 2 - 0.5]]]))


def test_3d_click_prompts_its_own_slice_only():
    net = tiny(3, out_channels=2).eval()
    (coords, labels), = _captured_points(net, torch.rand(1, 1, 64, 64, 6), torch.tensor([[[[10.0, 50.0, 4.0]]]]),
                                         torch.ones(1, 1, 1))
    assert coords.tolist() == [[[50.0, 10.0]]] and labels.tolist() == [[1]]  # one row: slice 4


@pytest.mark.parametrize("preset", sorted(TRAINABLE_PRESETS))
def test_only_preset_parameters_get_gradients(preset):
    net = tiny(3, image_size=32, trainable=preset, click_depth_radius=1)
    groups = TRAINABLE_PRESETS[preset]
    for name, param in net.named_parameters():
        assert param.requires_grad == (parameter_group(name) in groups), name
    volume = torch.rand(1, 1, 20, 20, 3)
    loss = net(volume).square().mean() + net(volume, torch.tensor([[[[3.0, 4.0, 1.0]], [[9.0, 9.0, 2.0]]]]),
                                              torch.ones(1, 2, 1)).square().mean()
    loss.backward()
    seen = set()
    for name, param in net.named_parameters():
        if parameter_group(name) not in groups:
            assert param.grad is None, name
        elif param.grad is not None:
            seen.add(parameter_group(name))
    present = {parameter_group(n) for n, _ in net.named_parameters()}
    assert seen == groups & present  # every trainable group present in the network received gradients
    counts = count_parameters(net)
    assert counts.trainable == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_preset_architectures():
    medsa = tiny(3, trainable="medsa")
    assert medsa.image_encoder.blocks[0].Space_Adapter is not None and medsa.architecture.depth_attention
    lora = tiny(3, trainable="lora")
    assert lora.image_encoder.blocks[0].lora_qkv.A.out_features == 4
    assert lora.image_encoder.blocks[0].MLP_Adapter is None
    decoder = tiny(3, trainable="decoder")
    assert decoder.image_encoder.blocks[0].Depth_Adapter is None and decoder.mask_decoder.transformer.layers[0]\
        .hyper_prompt_adapter is None
    assert not tiny(2, trainable="medsa").architecture.depth_attention  # SD-Trans is for volumes


def test_count_parameters_counts_shared_once():
    layer = torch.nn.Linear(10, 5)
    model = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
    model[0].bias.requires_grad_(False)
    assert tuple(count_parameters(model)) == (55, 50, pytest.approx(100 * 50 / 55))


def test_save_and_load_round_trip(tmp_path):
    net = randomise(tiny(3)).eval()
    path = tmp_path / "medsa.pt"
    torch.save(net.state_dict(), path)
    again = tiny(3, sam_checkpoint=path).eval()
    strict = tiny(3).eval()
    strict.load_state_dict(torch.load(path, weights_only=True))
    volume = torch.rand(1, 1, 30, 30, 4)
    with torch.no_grad():
        expected = net(volume)
        assert torch.equal(again(volume), expected) and torch.equal(strict(volume), expected)
        assert not torch.equal(tiny(3).eval()(volume), expected)


@torch.no_grad()
def test_sliding_window_inference_in_automatic_mode():
    net = tiny(3, image_size=32).eval()
    out = sliding_window_inference(torch.rand(1, 1, 40, 44, 20), (32, 32, 16), 2, net, overlap=0.25, mode="gaussian")
    assert out.shape == (1, 3, 40, 44, 20)


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(1, 3, 32, 32), "in_channels=1.*3 channels"),
        (torch.rand(1, 1, 32), "expects a 4-d image"),
        (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
        (torch.ones(1, 1, 32, 32, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_images_are_rejected(image, match):
    with pytest.raises(ValueError, match=match):
        tiny(2)(image)


def test_2d_tensor_to_3d_network():
    with pytest.raises(ValueError, match=r"spatial_dims=3.*5-d image.*\(1, 1, 32, 32\)"):
        tiny(3)(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points=torch.tensor([[[[40.0, 3.0]], [[1.0, 1.0]]]]), point_labels=torch.ones(1, 2, 1)),
         r"outside the image of spatial shape \(32, 32\).*\[40.0, 3.0\]"),
        (dict(points=torch.tensor([[[[-1.0, 3.0]], [[1.0, 1.0]]]]), point_labels=torch.ones(1, 2, 1)), "outside"),
        (dict(points=torch.zeros(1, 2, 1, 2), point_labels=torch.full((1, 2, 1), 2)), "must be 1 .*got values"),
        (dict(points=torch.zeros(1, 3, 1, 2), point_labels=torch.ones(1, 3, 1)), r"points must have shape \(1, 2"),
        (dict(points=torch.zeros(1, 2, 1, 2)), "together"),
        (dict(boxes=torch.tensor([[[5.0, 5.0, 2.0, 9.0], [0.0, 0.0, 1.0, 1.0]]])), "max index below"),
        (dict(boxes=torch.tensor([[[0.0, 0.0, 2.0, 40.0], [0.0, 0.0, 1.0, 1.0]]])), "box corners lie outside"),
        (dict(mask_inputs=torch.zeros(1, 2, 8, 8)), r"mask_inputs must have shape \(1, 2, 16, 16\)"),
    ],
)
def test_bad_prompts_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(2)(torch.rand(1, 1, 32, 32), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(in_channels=0), "in_channels must be at least 1"),
        (dict(sam_variant="vit_x"), "unknown SAM variant 'vit_x'"),
        (dict(image_size=100), "multiple of 16"),
        (dict(trainable="some"), "unknown trainable preset"),
        (dict(out_channels=1), "no foreground class"),
        (dict(intensity="hu"), "intensity"),
        (dict(click_depth_radius=2), "click_depth_radius"),
    ],
)
def test_bad_construction_is_rejected(kwargs, match):
    args = dict(spatial_dims=2, in_channels=1, out_channels=2, sam_variant="vit_tiny", image_size=64) | kwargs
    with pytest.raises(ValueError, match=match):
        MedSA(**args)


@torch.no_grad()
def test_mask_inputs_change_the_prediction():
    net = randomise(tiny(2, out_channels=2)).eval()
    image = torch.rand(1, 1, 32, 32)
    points, labels = torch.tensor([[[[5.0, 5.0]]]]), torch.ones(1, 1, 1)
    logits, low_res = net.predict(image, points, labels)
    assert low_res.shape == (1, 1, 16, 16)
    assert not torch.allclose(net(image, points, labels, mask_inputs=low_res), logits)


@pytest.mark.parametrize("intensity, scale", [("unit", 1.0), ("uint8", 255.0)])
@torch.no_grad()
def test_intensity_mappings_agree(intensity, scale):
    unit = tiny(2, intensity="unit").eval()
    other = tiny(2, intensity=intensity).eval()
    other.load_state_dict(unit.state_dict())
    image = torch.rand(1, 1, 32, 32)
    assert torch.allclose(unit.encode(image), other.encode(image * scale), atol=1e-5)


@torch.no_grad()
def test_full_resolution_and_partial_mask_prompts():
    net = randomise(tiny(3, out_channels=3)).eval()
    volume = torch.rand(1, 1, 24, 20, 5)
    logits, low_res = net.predict(volume)
    assert low_res.shape == (1, 2, 16, 16, 5)
    full = torch.nn.functional.interpolate(low_res.permute(0, 4, 1, 2, 3)[0], size=(24, 20), mode="bilinear")
    full = full.permute(1, 2, 3, 0)[None]  # (1, K, 24, 20, 5)
    from_full = net(volume, mask_inputs=full)
    assert not torch.allclose(from_full, logits)
    only_first = low_res.clone()
    only_first[:, 1] = float("nan")  # no mask for class 2: it decodes as without mask
    mixed = net(volume, mask_inputs=only_first)
    assert torch.allclose(mixed[:, 2], logits[:, 2])
    assert torch.allclose(mixed[:, 1], net(volume, mask_inputs=low_res)[:, 1])
    with pytest.raises(ValueError, match=r"mask_inputs must have shape \(1, 2, 16, 16, 5\).*or \(1, 2, 24, 20, 5\)"):
        net(volume, mask_inputs=torch.zeros(1, 2, 8, 8, 5))


def test_3d_click_reaches_neighbouring_slices_with_an_offset_embedding():
    torch.manual_seed(0)
    near = randomise(tiny(3, out_channels=2, click_depth_radius=2)).eval()
    own = tiny(3, out_channels=2).eval()
    own.load_state_dict({k: v for k, v in near.state_dict().items() if "click_depth_embed" not in k})
    volume = torch.rand(1, 1, 32, 32, 9)
    points, labels = torch.tensor([[[[10.0, 20.0, 4.0]]]]), torch.ones(1, 1, 1)
    (coords, row_labels), = _captured_points(near, volume, points, labels)
    assert coords.shape[0] == 5 and row_labels.flatten().tolist() == [1] * 5  # slices 2..6
    with torch.no_grad():
        with_radius, without = near(volume, points, labels), own(volume, points, labels)
    assert torch.allclose(with_radius[..., 4], without[..., 4], atol=1e-5)  # own slice: offset 0, exactly SAM
    assert not torch.allclose(with_radius[..., 3], without[..., 3])  # neighbours are now prompted
    assert torch.equal(with_radius[..., 8], without[..., 8])  # beyond the radius: automatic, as before
    assert torch.equal(tiny(3, click_depth_radius=2).click_depth_embed.weight, torch.zeros(3, 256))  # zero init


def test_click_depth_offsets_in_prompt_mapping():
    from medsa_monai.networks.prompt_mapping import to_sam_prompts

    prompts = to_sam_prompts(torch.tensor([[[[1.0, 2.0, 4.0], [3.0, 3.0, 0.0]]]]), torch.tensor([[[1, 0]]]), None,
                             None, spatial_shape=(8, 8, 7), image_size=32, num_classes=1, batch=1,
                             click_depth_radius=2)
    assert prompts.labels[:, 0].tolist() == [[-1, 0], [-1, 0], [1, 0], [1, -1], [1, -1], [1, -1], [1, -1]]
    assert prompts.depth_offsets[:, 0].tolist() == [[0, 0], [0, 1], [2, 2], [1, 0], [0, 0], [1, 0], [2, 0]]


def test_deep_volumes_are_encoded_slab_by_slab():
    image = torch.randn(2, 1, 20, 24, 11)
    torch.manual_seed(0)
    network = randomise(MedSA(3, 1, 3, "vit_tiny", image_size=32, depth_attention=True)).eval()
    slabbed = MedSAPredictor(network, encode_depth=4)
    whole = MedSA(3, 1, 3, "vit_tiny", image_size=32, depth_attention=True).eval()
    whole.load_state_dict(network.state_dict())
    with torch.no_grad():
        embeddings = slabbed.encode(image)
        by_hand = torch.cat([whole.encode(image[..., k:k + 4]).unflatten(0, (2, -1)) for k in (0, 4, 8)], 1)
        assert embeddings.shape == whole.encode(image).shape
        torch.testing.assert_close(embeddings, by_hand.flatten(0, 1))
        assert not torch.allclose(embeddings, whole.encode(image))  # SD-Trans attends within a slab only
        assert slabbed(image).shape == (2, 3, 20, 24, 11)
        per_slice = randomise(MedSA(3, 1, 3, "vit_tiny", image_size=32, depth_attention=False)).eval()
        exact = MedSA(3, 1, 3, "vit_tiny", image_size=32, depth_attention=False)
        exact.load_state_dict(per_slice.state_dict())
        torch.testing.assert_close(MedSAPredictor(per_slice, encode_depth=3).encode(image),
                                   exact.eval().encode(image))
    with pytest.raises(ValueError, match="encode_depth"):
        MedSAPredictor(MedSA(2, 1, 3, "vit_tiny", image_size=32), encode_depth=4)
