"""Relative-position attention through scaled_dot_product_attention against an explicit computation."""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import get_rel_pos

from medsa_monai.networks.attention import gather_relative_table, relative_position_attention


def _explicit(q, k, v, grid, tables):
    """softmax(q k^T / sqrt(d) + sum_axis q . R_axis[p_axis(i), p_axis(j)]) v, written out."""
    n, d = q.shape[-2:]
    positions = torch.stack(torch.meshgrid(*[torch.arange(s) for s in grid], indexing="ij"), -1).reshape(n, -1)
    logits = q @ k.transpose(-1, -2) / d**0.5
    for axis, table in enumerate(tables):
        r = table[positions[:, axis][:, None], positions[:, axis][None, :]]  # (n, n, d)
        logits = logits + torch.einsum("...id,ijd->...ij", q, r)
    return logits.softmax(-1) @ v


def test_matches_explicit_attention_2d_and_1d():
    gen = torch.Generator().manual_seed(0)
    for grid in [[5, 7], [9]]:
        n = 1
        for s in grid:
            n *= s
        q, k, v = (torch.randn(2, 3, n, 16, generator=gen) for _ in range(3))
        tables = [get_rel_pos(s, s, torch.randn(2 * s - 1, 16, generator=gen)) for s in grid]
        out = relative_position_attention(q, k, v, grid, tables)
        assert out.shape == (2, 3, n, 16)
        assert torch.allclose(out, _explicit(q, k, v, grid, tables), atol=1e-5)


def test_gather_relative_table_clamps_long_offsets():
    table = torch.arange(5.0)[:, None]  # offsets -2..2 stored at 0..4
    r = gather_relative_table(table, 6)[..., 0]
    assert r[3, 3] == 2  # offset 0 -> centre
    assert r[4, 3] == 3 and r[3, 4] == 1  # +1 / -1
    assert r[5, 0] == 4 and r[0, 5] == 0  # offsets +5 / -5 reuse the ends
