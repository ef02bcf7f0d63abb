"""Shared weights: only what trained, loaded onto the very base checkpoint they were trained on."""

from __future__ import annotations

import pytest
import torch

from medsa_monai.networks import (
    TRAINABLE_PRESETS,
    BaseMismatchError,
    CheckpointMismatchError,
    MedSA,
    TrainedWeights,
    base_for_weights,
    read_state_dict,
    read_weights_record,
    trained_weights,
    trained_weights_bytes,
)
from medsa_monai.networks.presets import SAM_GROUPS, parameter_group

from .conftest import TINY, randomise, reference_sam

SIZE = 64


def _net(preset: str, base=None, spatial_dims: int = 2) -> MedSA:
    return MedSA(spatial_dims, 1, 3, "vit_tiny", base, image_size=SIZE, trainable=preset)


def _train(net: MedSA, seed: int = 1) -> MedSA:
    """Change every trainable parameter, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
    return net


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "other_base.pth"
    torch.save(randomise(reference_sam(1024, **TINY), seed=7).state_dict(), path)
    return path


@pytest.mark.parametrize("preset", [p for p in TRAINABLE_PRESETS if p != "full"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shared_weights_rebuild_the_trained_network_exactly(tmp_path, tiny_checkpoint, preset, spatial_dims):
    trained = _train(_net(preset, tiny_checkpoint, spatial_dims))
    path = tmp_path / "model.pt"
    torch.save(TrainedWeights(trained).state_dict(), path)
    record = read_weights_record(path)
    assert record["trainable"] == preset and record["base"]["file"] == tiny_checkpoint.name
    assert record["base"]["image_size"] == 1024 and record["base"]["variant"] == "vit_tiny"
    saved = torch.load(path, weights_only=True)
    assert saved.pop("medsa_weights")["trainable"] == preset
    frozen_sam = [k for k in trained.state_dict() if parameter_group(k) in SAM_GROUPS
                  and parameter_group(k) not in TRAINABLE_PRESETS[preset]]
    assert frozen_sam and not set(frozen_sam) & set(saved)  # the base's keys stay out
    assert abs(path.stat().st_size - trained_weights_bytes(trained)) < 200_000

    loaded = _net(preset, base_for_weights(path, tiny_checkpoint), spatial_dims)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    want, got = trained.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_full_preset_and_a_network_without_base_save_everything(tiny_checkpoint):
    full = trained_weights(_net("full", tiny_checkpoint))
    assert set(full) == set(_net("full").state_dict())
    no_base = trained_weights(_net("medsa"))  # random frozen weights: only the whole network says them
    assert set(no_base) == set(_net("medsa").state_dict())


def test_a_whole_state_dict_of_an_earlier_version_still_loads(tmp_path):
    old = _train(_net("medsa"))
    path = tmp_path / "model.pt"
    torch.save(old.state_dict(), path)
    assert read_weights_record(path) is None and base_for_weights(path, None) is None
    new = _net("medsa")
    new.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(v, new.state_dict()[k]) for k, v in old.state_dict().items())


def test_the_wrong_base_is_refused_with_both_hashes(tmp_path, tiny_checkpoint, other_base):
    path = tmp_path / "model.pt"
    torch.save(trained_weights(_train(_net("samda", tiny_checkpoint))), path)
    record = read_weights_record(path)
    with pytest.raises(BaseMismatchError) as caught:
        base_for_weights(path, other_base)
    wanted, actual = record["base"]["sha256"], _net("samda", other_base).base_checkpoint.sha256
    assert wanted in str(caught.value) and actual in str(caught.value) and wanted != actual
    with pytest.raises(BaseMismatchError) as caught:  # the same check when a network is loaded directly
        _net("samda", other_base).load_state_dict(torch.load(path, weights_only=True))
    assert wanted in str(caught.value) and actual in str(caught.value)


def test_no_base_says_which_file_to_fetch(tmp_path, tiny_checkpoint):
    path = tmp_path / "model.pt"
    torch.save(trained_weights(_train(_net("medsa", tiny_checkpoint))), path)
    with pytest.raises(FileNotFoundError, match=f"{tiny_checkpoint.name}.*not found at '{tmp_path / 'missing.pth'}'"):
        base_for_weights(path, tmp_path / "missing.pth")
    with pytest.raises(BaseMismatchError, match=f"need the base checkpoint '{tiny_checkpoint.name}'"):
        _net("medsa").load_state_dict(torch.load(path, weights_only=True))


def test_an_official_base_is_named_with_its_download_address(tmp_path, tiny_checkpoint):
    official = tmp_path / "sam_vit_b_01ec64.pth"
    official.write_bytes(tiny_checkpoint.read_bytes())  # the official name, tiny content: only the name counts here
    path = tmp_path / "model.pt"
    torch.save(trained_weights(_net("samda", official)), path)
    with pytest.raises(FileNotFoundError,
                       match="download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"):
        base_for_weights(path, tmp_path / "models" / "sam_vit_b_01ec64.pth")


def test_weights_of_another_preset_are_refused_naming_the_keys(tmp_path, tiny_checkpoint):
    weights = trained_weights(_train(_net("samda", tiny_checkpoint)))
    with pytest.raises(CheckpointMismatchError, match=r"trainable='samda'.*trainable='medsa'.*missing: "):
        _net("medsa", tiny_checkpoint).load_state_dict(weights)
    torch.save(weights, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="holds shared weights .* not a SAM checkpoint"):
        read_state_dict(tmp_path / "model.pt")


def test_shared_weights_are_a_small_part_of_vit_b():
    with torch.device("meta"):
        sizes = {p: trained_weights_bytes(MedSA(2, 1, 2, "vit_b", trainable=p)) for p in TRAINABLE_PRESETS}
    assert sizes["full"] > 350e6
    assert sizes["samda"] < 0.01 * sizes["full"]
    assert all(sizes[p] < 0.2 * sizes["full"] for p in TRAINABLE_PRESETS if p != "full")
