"""Attention with SAM's decomposed relative positions, computed by ``scaled_dot_product_attention``.

SAM adds, for a query at grid position ``p`` and a key at ``p'``, one bias per grid axis:
``q . R_axis[p_axis, p'_axis]``, and materialises the full ``N x N`` attention matrix to do it. The same sum is a
dot product of augmented vectors, ``[q * scale, q . R_axis[p_axis, :]...] . [k, onehot(p'_axis)...]``, so the fused
attention kernels (flash / memory-efficient, also on the CPU) can run it without the ``N x N`` bias. PyTorch's
``scaled_dot_product_attention`` has no decomposed-bias argument, hence this function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["relative_position_attention", "gather_relative_table"]


def gather_relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """``R[i, j] = table[c + clamp(i - j)]`` for ``i, j < size``, with ``c`` the table's centre.

    Offsets beyond the table's extent reuse its last entries (used along depth, where the slice count is not
    bounded by the table). Shapes: ``table (2 c + 1, C)`` -> ``(size, size, C)``.
    """
    centre = (table.shape[0] - 1) // 2
    pos = torch.arange(size, device=table.device)
    offsets = (pos[:, None] - pos[None, :]).clamp(-centre, centre) + centre
    return table[offsets]


def relative_position_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: list[int],
    tables: list[torch.Tensor],
) -> torch.Tensor:
    """Softmax attention with SAM's scale and decomposed relative-position bias along each grid axis.

    Args:
        q, k, v: ``(..., N, head_dim)`` with ``N = prod(grid)`` tokens laid out row-major on ``grid``.
        grid: token grid shape, ``[H, W]`` or ``[D]``.
        tables: one gathered table per axis, ``(grid[a], grid[a], head_dim)``: entry ``[i, j]`` is the embedding of
            the offset between query position ``i`` and key position ``j`` (SAM's ``get_rel_pos`` output).

    Returns:
        ``(..., N, head_dim)``.
    """
    if len(grid) != len(tables) or len(grid) not in (1, 2):
        raise ValueError("relative_position_attention takes a 1-d or 2-d grid with one table per axis")
    head_dim = q.shape[-1]
    lead = list(q.shape[:-2])
    n = q.shape[-2]
    q_grid = q.reshape(lead + grid + [head_dim])
    q_parts = [q * head_dim**-0.5]
    k_parts = [k]
    index = torch.arange(n, device=q.device)
    for axis in range(len(grid)):
        size = grid[axis]
        # rel[..., p, j] = q_p . table[p_axis, j]; einsum over the query's own axis position.
        if len(grid) == 1:
            spec = "...az,ayz->...ay"
        elif axis == 0:
            spec = "...abz,ayz->...aby"
        else:
            spec = "...abz,byz->...aby"
        q_parts.append(torch.einsum(spec, [q_grid, tables[axis]]).reshape(lead + [n, size]))
        stride = 1
        for later in grid[axis + 1:]:
            stride *= later
        step = torch.div(index, stride, rounding_mode="floor")
        position = step - torch.div(step, size, rounding_mode="floor") * size  # step % size, in ops ONNX exports
        onehot = (position[:, None] == torch.arange(size, device=q.device)[None, :]).to(k.dtype)  # size stays symbolic
        k_parts.append(onehot.expand(lead + [n, size]))
    qa = torch.cat(q_parts, dim=-1)
    ka = torch.cat(k_parts, dim=-1)
    # Fused kernels need equal q/k/v widths that are multiples of 8: pad with zeros, which change no dot product.
    width = (qa.shape[-1] + 7) // 8 * 8  # rounded up with positive operands: exported graphs truncate
    qa = F.pad(qa, (0, width - qa.shape[-1]))
    ka = F.pad(ka, (0, width - ka.shape[-1]))
    va = F.pad(v, (0, width - head_dim))
    return F.scaled_dot_product_attention(qa, ka, va, scale=1.0)[..., :head_dim]

