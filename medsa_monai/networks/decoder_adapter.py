"""SAM-DA's decoder adapter (Gamazo Tejero et al., "SAM-DA: Decoder Adapter for Efficient Medical Domain
Adaptation", WACV 2025)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecoderPromptAdapter"]


class DecoderPromptAdapter(nn.Module):
    """Learnable prompt tokens that the image tokens attend to, through a zero-initialised gate, then a linear map.

    ``x = x + gate * out(attention(q(x), k(A), v(A)))``, then ``x = L(x)``, with ``A`` the ``num_tokens`` learned
    tokens, ``gate`` a scalar starting at 0 and ``L`` a linear map starting as the identity, so that at
    initialisation the adapter returns its input exactly and the adapted decoder equals SAM's.

    This is the design of the SAM-DA paper as far as its public description and the first author's related code
    show it (the paper's method section was not available to us): one adapter after each two-way transformer block
    of SAM's mask decoder, acting on the image tokens.

    Args:
        dim: width of the image tokens (SAM: 256).
        num_tokens: learned prompt tokens (SAM-DA: 2).
        num_heads: attention heads.

    Shapes:
        ``(B, N, dim)`` in and out.
    """

    def __init__(self, dim: int = 256, num_tokens: int = 2, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.tokens = nn.Parameter(torch.randn(num_tokens, dim) * dim**-0.5)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.zeros(1))
        self.linear = nn.Linear(dim, dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # (..., heads, tokens, dim / heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens.to(x.dtype).expand(x.shape[0], -1, -1)
        attended = F.scaled_dot_product_attention(self._heads(self.q_proj(x)), self._heads(self.k_proj(tokens)),
                                                  self._heads(self.v_proj(tokens)))
        x = x + self.gate * self.out_proj(attended.transpose(-3, -2).flatten(-2))
        return self.linear(x)
