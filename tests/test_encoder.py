"""Med-SA encoder block: SD-Trans depth attention against a written-out reference, any slice count, depth order."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import window_partition, window_unpartition

from medsa_monai.networks import MedSABlock, MedSAImageEncoder, get_sam_variant
from medsa_monai.networks.attention import gather_relative_table

from .conftest import randomise


def _block(window_size: int) -> MedSABlock:
    block = MedSABlock(48, 3, window_size=window_size, input_size=(6, 6), adapters=True, depth_attention=True)
    return randomise(block, seed=window_size).eval()


def _reference_forward(block: MedSABlock, x: torch.Tensor, depth: int) -> torch.Tensor:
    """The block written out naively: SAM's windowed attention, plus per-token attention along the slices."""
    bd, h, w, c = x.shape
    heads, head_dim = block.attn.num_heads, c // block.attn.num_heads
    normed = block.norm1(x)
    if block.window_size:
        windows, padded = window_partition(normed, block.window_size)
        spatial = window_unpartition(block.attn(windows), block.window_size, padded, (h, w))
    else:
        spatial = block.attn(normed)
    spatial = block.Space_Adapter(spatial)

    table = gather_relative_table(block.attn.rel_pos_h + block.depth_rel_pos, depth)  # (D, D, head_dim)
    depth_out = torch.zeros_like(x)
    for b in range(bd // depth):
        for i in range(h):
            for j in range(w):
                seq = normed[b * depth:(b + 1) * depth, i, j]  # the token's own slices, whole grid, no windows
                q, k, v = block.attn.qkv(seq).view(depth, 3, heads, head_dim).unbind(1)
                heads_out = []
                for n in range(heads):
                    logits = q[:, n] @ k[:, n].T * head_dim**-0.5 + torch.einsum("id,ijd->ij", q[:, n], table)
                    heads_out.append(logits.softmax(-1) @ v[:, n])
                branch = block.attn.proj(torch.cat(heads_out, -1))
                depth_out[b * depth:(b + 1) * depth, i, j] = block.Depth_Adapter(branch)
    x = x + spatial + depth_out
    normed = block.norm2(x)
    return x + block.mlp(normed) + 0.5 * block.MLP_Adapter(normed)


@pytest.mark.parametrize("window_size", [0, 4])
@torch.no_grad()
def test_depth_attention_matches_written_out_reference(window_size):
    block = _block(window_size)
    x = torch.randn(2 * 5, 6, 6, 48, generator=torch.Generator().manual_seed(1))
    out = block(x, depth=5)
    assert (out - _reference_forward(block, x, depth=5)).abs().max() < 1e-5


@torch.no_grad()
def test_slices_interact_only_in_3d_mode():
    block = _block(4)
    x = torch.randn(6, 6, 6, 48, generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[0] += torch.randn(6, 6, 48, generator=torch.Generator().manual_seed(9))  # LayerNorm ignores a constant
    assert not torch.allclose(block(x, depth=6)[3], block(changed, depth=6)[3])
    assert torch.equal(block(x)[3], block(changed)[3])  # 2D: slices are independent images
    # Volumes of a batch stay apart: depth=3 splits the 6 slices into two volumes.
    assert torch.equal(block(x, depth=3)[3:], block(changed, depth=3)[3:])


@torch.no_grad()
def test_depth_order_matters():
    block = _block(0)
    x = torch.randn(7, 6, 6, 48, generator=torch.Generator().manual_seed(3))
    forward = block(x, depth=7)
    reversed_back = block(x.flip(0), depth=7).flip(0)
    assert not torch.allclose(forward, reversed_back, atol=1e-4)  # relative depth positions are seen


@pytest.mark.parametrize("depth", [1, 2, 5, 7])
@torch.no_grad()
def test_encoder_accepts_any_slice_count(depth):
    encoder = MedSAImageEncoder(get_sam_variant("vit_tiny"), 64, depth_attention=True).eval()
    out = encoder(torch.randn(2 * depth, 3, 64, 64), depth=depth)
    assert out.shape == (2 * depth, 256, 4, 4)
    with pytest.raises(ValueError, match="cannot be split"):
        encoder(torch.randn(2 * depth + 1, 3, 64, 64), depth=depth + 1 if depth > 1 else 2)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    variant = get_sam_variant("vit_tiny")
    plain = randomise(MedSAImageEncoder(variant, 64, depth_attention=True))
    ckpt = MedSAImageEncoder(variant, 64, depth_attention=True, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 64)
    for model in (plain, ckpt):
        model(x, depth=2).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
