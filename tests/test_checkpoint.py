"""Checkpoint reading and strict, explained loading."""

from __future__ import annotations

import argparse

import pytest
import torch

from medsa_monai.networks import CheckpointMismatchError, MedSA, build_sam, read_state_dict


def test_reads_wrapped_and_ddp_prefixed_state_dicts(tmp_path, tiny_state):
    path = tmp_path / "medsam_style.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny_state.items()}, "epoch": torch.tensor(3)}, path)
    state = read_state_dict(path)
    assert state.keys() == tiny_state.keys()
    assert torch.equal(state["image_encoder.pos_embed"], tiny_state["image_encoder.pos_embed"])
    build_sam("vit_tiny", path, image_size=256)  # loads


def test_unreadable_or_unsafe_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        read_state_dict(tmp_path / "nothere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        read_state_dict(garbage)
    pickled = tmp_path / "with_args.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(pickled)
    nested = tmp_path / "nested.pth"
    torch.save({"a": torch.zeros(1), "meta": {"epoch": 1}}, nested)
    with pytest.raises(ValueError, match="meta"):
        read_state_dict(nested)


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny_state):
    incomplete = dict(tiny_state)
    del incomplete["image_encoder.blocks.1.attn.rel_pos_h"]  # the table the official Med-SA loader drops
    incomplete["image_encoder.blocks.1.attn.rel_pos_hh"] = torch.zeros(3)
    path = tmp_path / "renamed.pth"
    torch.save(incomplete, path)
    with pytest.raises(CheckpointMismatchError) as err:
        build_sam("vit_tiny", path)
    message = str(err.value)
    assert "renamed.pth" in message and "'vit_tiny'" in message
    assert "missing keys: image_encoder.blocks.1.attn.rel_pos_h" in message
    assert "unexpected keys: image_encoder.blocks.1.attn.rel_pos_hh" in message
    with pytest.raises(CheckpointMismatchError, match="rel_pos_h"):
        MedSA(2, 1, 2, "vit_tiny", path, image_size=256)  # MedSA's optional parts excuse no SAM key


def test_checkpoint_of_another_variant_names_both(tiny_checkpoint):
    with pytest.raises(CheckpointMismatchError) as err:
        MedSA(2, 1, 2, "vit_b", tiny_checkpoint, image_size=256)
    message = str(err.value)
    assert "does not fit SAM variant 'vit_b'" in message
    assert "looks like vit_tiny" in message
    assert "shape mismatches" in message


def test_med_sa_adapter_keys_load_by_name(tmp_path, tiny_state):
    """A checkpoint with Med-SA's adapter names (Space_Adapter.D_fc1 ...) fills our adapters."""
    state = dict(tiny_state)
    state["image_encoder.blocks.0.Space_Adapter.D_fc2.weight"] = torch.full((192, 48), 0.5)
    path = tmp_path / "medsa_official.pth"
    torch.save(state, path)
    net = MedSA(2, 1, 2, "vit_tiny", path, image_size=256)
    assert torch.equal(net.image_encoder.blocks[0].Space_Adapter.D_fc2.weight, torch.full((192, 48), 0.5))
    with pytest.raises(CheckpointMismatchError, match="unexpected keys: image_encoder.blocks.0.Space_Adapter"):
        MedSA(2, 1, 2, "vit_tiny", path, image_size=256, architecture={"adapters": False})
