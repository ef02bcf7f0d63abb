"""Any number of input channels: the trainable input layer that maps C modalities to SAM's three."""

from __future__ import annotations

import pytest
import torch

from medsa_monai.networks import TRAINABLE_PRESETS, MedSA, count_parameters, parameter_group
from medsa_monai.networks.input_layer import ChannelMixer
from medsa_monai.predictor import EmbeddingCache, MedSAPredictor

from .conftest import randomise

SIZE = 64


def tiny(spatial_dims: int = 2, in_channels: int = 4, out_channels: int = 3, image_size: int = SIZE, **kwargs
         ) -> MedSA:
    return MedSA(spatial_dims, in_channels, out_channels, "vit_tiny", image_size=image_size, **kwargs)


def _image(spatial_dims: int, channels: int, seed: int = 0) -> torch.Tensor:
    shape = (2, channels, 40, 36) if spatial_dims == 2 else (1, channels, 40, 36, 3)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_channel_mixer_starts_as_mean_identity_or_repeat():
    x = torch.rand(2, 4, 5, 6, 7)
    mixer = ChannelMixer(4)
    assert mixer.weight.shape == (3, 4) and mixer.bias.shape == (3,)
    assert torch.allclose(mixer(x), x.mean(1, keepdim=True).expand(-1, 3, -1, -1, -1), atol=1e-6)
    rgb = torch.rand(2, 3, 5, 6)
    assert torch.equal(ChannelMixer(3)(rgb), rgb)
    grey = torch.rand(2, 1, 5, 6)
    assert torch.equal(ChannelMixer(1)(grey), grey.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match=r"in_channels=4.*\(2, 3, 5, 6\)"):
        mixer(rgb)
    with pytest.raises(ValueError, match="at least one"):
        ChannelMixer(0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("channels", [2, 4])
@torch.no_grad()
def test_any_channel_count_gives_monai_output_shape(spatial_dims, channels):
    net = tiny(spatial_dims, channels).eval()
    image = _image(spatial_dims, channels)
    assert net(image).shape == (image.shape[0], 3, *image.shape[2:])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("intensity", ["unit", "zscore"])
@torch.no_grad()
def test_forced_input_layer_starts_as_the_network_without_it(channels, intensity):
    plain = randomise(tiny(2, channels, intensity=intensity)).eval()
    layered = tiny(2, channels, intensity=intensity, input_layer=True).eval()
    missing, unexpected = layered.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["input_layer.bias", "input_layer.weight"] and not unexpected
    image = _image(2, channels)
    points, labels = torch.tensor([[[[10.0, 20.0]], [[30.0, 5.0]]]] * 2), torch.ones(2, 2, 1)
    assert (layered(image) - plain(image)).abs().max() < 1e-6
    assert (layered(image, points, labels) - plain(image, points, labels)).abs().max() < 1e-6


def test_default_input_layer_only_for_other_channel_counts():
    for channels in (1, 3):
        net = tiny(2, channels)
        assert net.input_layer is None
        assert not any(key.startswith("input_layer.") for key in net.state_dict())
    state = tiny(2, 4).state_dict()
    assert state["input_layer.weight"].shape == (3, 4) and state["input_layer.bias"].shape == (3,)
    assert tiny(2, 3, input_layer=True).state_dict()["input_layer.weight"].shape == (3, 3)
    with pytest.raises(ValueError, match="in_channels=2 needs the input layer"):
        tiny(2, 2, input_layer=False)
    with pytest.raises(ValueError, match="in_channels must be at least 1"):
        tiny(2, 0)


@pytest.mark.parametrize("preset", sorted(TRAINABLE_PRESETS))
def test_input_layer_trains_in_every_preset(preset):
    net = tiny(3, 4, image_size=32, trainable=preset)
    assert "input_layer" in TRAINABLE_PRESETS[preset]
    for name, param in net.input_layer.named_parameters(prefix="input_layer"):
        assert parameter_group(name) == "input_layer" and param.requires_grad, name
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert {"input_layer.weight", "input_layer.bias"} <= trainable
    assert count_parameters(net).trainable == sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("preset", ["samda", "medsa"])
def test_input_layer_gets_gradients(preset):
    cache = EmbeddingCache() if preset == "samda" else None  # a trainable input layer bypasses the cache
    net = tiny(2, 4, trainable=preset)
    assert not net.encoder_is_frozen()
    MedSAPredictor(net, embedding_cache=cache)(_image(2, 4)).square().mean().backward()
    for name, param in net.input_layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert tiny(2, 3, trainable="samda").encoder_is_frozen()  # three channels: SAM-DA's encoder stays cacheable


@pytest.mark.parametrize("spatial_dims", [2, 3])
@torch.no_grad()
def test_state_dict_round_trip(tmp_path, spatial_dims):
    net = randomise(tiny(spatial_dims, 4)).eval()
    path = tmp_path / "medsa_4ch.pt"
    torch.save(net.state_dict(), path)
    strict = tiny(spatial_dims, 4).eval()
    strict.load_state_dict(torch.load(path, weights_only=True))
    again = tiny(spatial_dims, 4, sam_checkpoint=path).eval()
    image = _image(spatial_dims, 4)
    expected = net(image)
    assert torch.equal(strict(image), expected) and torch.equal(again(image), expected)
    assert not torch.equal(tiny(spatial_dims, 4).eval()(image), expected)


def test_official_sam_checkpoint_loads_into_a_multichannel_network(tiny_checkpoint, tiny_state):
    net = MedSA(2, 4, 2, "vit_tiny", image_size=256)
    kept = net.load_sam_checkpoint(tiny_checkpoint)
    assert {"input_layer.weight", "input_layer.bias"} <= set(kept)
    assert torch.equal(net.image_encoder.patch_embed.proj.weight, tiny_state["image_encoder.patch_embed.proj.weight"])
    assert torch.equal(net.input_layer.weight, torch.full((3, 4), 0.25))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("intensity", ["unit", "zscore"])
@torch.no_grad()
def test_equal_channels_give_the_grey_network_output(tiny_checkpoint, spatial_dims, intensity):
    grey_net = MedSA(spatial_dims, 1, 2, "vit_tiny", tiny_checkpoint, image_size=SIZE, intensity=intensity).eval()
    four = MedSA(spatial_dims, 4, 2, "vit_tiny", tiny_checkpoint, image_size=SIZE, intensity=intensity).eval()
    missing, _ = four.load_state_dict(grey_net.state_dict(), strict=False)  # the parts SAM lacks (class prompts)
    assert sorted(missing) == ["input_layer.bias", "input_layer.weight"]
    grey = _image(spatial_dims, 1, seed=5)
    points = torch.tensor([[[[12.0, 30.0] + ([1.0] if spatial_dims == 3 else [])]]] * grey.shape[0])
    labels = torch.ones(grey.shape[0], 1, 1)
    image = grey.expand(-1, 4, *([-1] * spatial_dims))
    assert (four(image) - grey_net(grey)).abs().max() < 1e-5
    assert (four(image, points, labels) - grey_net(grey, points, labels)).abs().max() < 1e-5


@torch.no_grad()
def test_intensity_mappings_agree_for_any_channel_count():
    unit = tiny(2, 4, intensity="unit").eval()
    uint8 = tiny(2, 4, intensity="uint8").eval()
    uint8.load_state_dict(unit.state_dict())
    image = _image(2, 4)
    assert torch.allclose(unit.encode(image), uint8.encode(image * 255), atol=1e-5)


@torch.no_grad()
def test_click_guidance_after_four_image_channels():
    net = MedSAPredictor(randomise(tiny(2, 4, out_channels=3)).eval(), click_guidance=True)
    image = _image(2, 4)[:1]
    guidance = torch.zeros(1, 3, *image.shape[2:])
    guidance[0, 1, 10, 12] = guidance[0, 0, 30, 3] = 1  # a class-1 click and a background click
    points = torch.tensor([[[[10.0, 12.0], [30.0, 3.0]], [[0.0, 0.0]] * 2]])
    labels = torch.tensor([[[1, 0], [-1, -1]]])
    guided = net(torch.cat([image, guidance], 1))
    assert torch.equal(guided, net(image, points=points, point_labels=labels))
    assert not torch.equal(guided, net(image))
    with pytest.raises(ValueError, match=r"in_channels=4.*5 channels.*expected 4 \(or 7 with click guidance"):
        net(torch.cat([image, guidance[:, :1]], 1))
