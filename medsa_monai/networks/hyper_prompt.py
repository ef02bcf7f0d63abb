"""HyP-Adpt, Med-SA's hyper-prompting adapter: an adapter whose weights are generated from the prompt."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HyperPromptAdapter"]


class HyperPromptAdapter(nn.Module):
    """Adapter whose middle weight matrix is generated, per sample, from the prompt embedding.

    ``e_down = down(e)``, ``w = reshape(MLP(mean(prompt)), (r, r))``, ``e' = ReLU(Norm(e_down @ w))``,
    output ``up(e')``. The caller adds the output to ``e`` (a residual branch). ``up`` starts at zero, so the
    branch outputs 0 and the decoder computes what SAM computes until trained.

    Args:
        dim: width of the embedding ``e`` it adapts.
        prompt_dim: width of the prompt tokens.
        ratio: bottleneck width ``r`` as a fraction of ``dim`` (as Med-SA's adapters: 0.25).
        hidden_dim: hidden width of the weight-generating MLP; ``None`` means ``r``.
        zero_init: start ``up`` at zero.

    Shapes:
        ``e (B, T, dim)``, ``prompt (B, P, prompt_dim)`` -> ``(B, T, dim)``.
    """

    def __init__(
        self, dim: int, prompt_dim: int, ratio: float = 0.25, hidden_dim: int | None = None, zero_init: bool = True
    ) -> None:
        super().__init__()
        rank = max(1, int(dim * ratio))
        hidden = hidden_dim or rank
        self.rank = rank
        self.down = nn.Linear(dim, rank)
        self.weight_generator = nn.Sequential(nn.Linear(prompt_dim, hidden), nn.GELU(), nn.Linear(hidden, rank * rank))
        self.norm = nn.LayerNorm(rank)
        self.act = nn.ReLU()
        self.up = nn.Linear(rank, dim)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, e: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        weight = self.weight_generator(prompt.mean(dim=1)).view(-1, self.rank, self.rank)
        return self.up(self.act(self.norm(torch.bmm(self.down(e), weight))))
