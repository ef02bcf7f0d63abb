"""Parameter-efficient modules inserted into a frozen SAM: Med-SA's bottleneck adapter and LoRA."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Adapter", "LoRA"]


class Adapter(nn.Module):
    """Med-SA's bottleneck adapter: ``D_fc2(GELU(D_fc1(x)))``, plus ``x`` when ``skip``.

    The attribute names ``D_fc1`` / ``D_fc2`` are those of the official Med-SA code, so its checkpoints load by key.

    Args:
        dim: width of the tokens it adapts.
        ratio: bottleneck width as a fraction of ``dim`` (Med-SA: 0.25).
        skip: add the input to the output (Med-SA's Space adapter); without it the adapter is a branch whose
            output is added by the caller (MLP and Depth adapters).
        zero_init: start the up-projection ``D_fc2`` at zero, so the adapter's branch outputs exactly 0 and the
            adapted network computes what SAM computes until trained. ``False`` keeps PyTorch's default (random)
            initialisation, as the official code does.

    Shapes:
        ``(..., dim)`` in and out.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True, zero_init: bool = True) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.skip = skip
        self.D_fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.D_fc2 = nn.Linear(hidden, dim)
        if zero_init:
            nn.init.zeros_(self.D_fc2.weight)
            nn.init.zeros_(self.D_fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip else out


class LoRA(nn.Module):
    """Low-rank update of a frozen linear layer: ``(alpha / rank) * B(A(x))`` with ``B`` starting at zero.

    Args:
        in_features: input width of the adapted layer.
        out_features: output width of the adapted layer.
        rank: rank of the update.
        alpha: scale numerator; ``None`` means ``rank`` (a scale of 1).

    Shapes:
        ``(..., in_features)`` -> ``(..., out_features)``, to be added to the frozen layer's output.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        self.scaling = (rank if alpha is None else alpha) / rank
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x)) * self.scaling
