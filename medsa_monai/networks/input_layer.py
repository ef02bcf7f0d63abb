"""A trainable input layer that maps any number of input channels (modalities) to SAM's three."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelMixer"]


class ChannelMixer(nn.Module):
    """A learned linear map over channels (a 1x1 convolution): ``C`` input channels -> ``out_channels``.

    :class:`~medsa_monai.networks.MedSA` puts it in front of SAM's frozen image encoder when the image does not have
    the one (grey) or three (RGB) channels SAM reads, e.g. the four MRI sequences of a BraTS case.

    Initialisation: with as many input as output channels, the identity; otherwise every output channel is the mean
    of the input channels (weights ``1 / C``, bias 0), which for one input channel is SAM's grey-to-RGB repeat. So
    at initialisation the encoder sees the mean modality as a grey image: an RGB-like image whose three channels
    are alike, as SAM saw for grey photographs, rather than an arbitrary colour mix; and every modality contributes
    and receives a gradient from the first step (copying one modality per channel would leave the others unused).

    Args:
        in_channels: ``C``, the channels of the input (modalities), at least 1.
        out_channels: the channels of the output; 3 for SAM.

    Input ``(B, C, *spatial)`` -> output ``(B, out_channels, *spatial)``, for any number of spatial dims.
    """

    def __init__(self, in_channels: int, out_channels: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"ChannelMixer needs at least one input and one output channel, "
                             f"got in_channels={in_channels}, out_channels={out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity when ``in_channels == out_channels``, else the mean of the input channels in every output."""
        with torch.no_grad():
            if self.in_channels == self.out_channels:
                nn.init.eye_(self.weight)
            else:
                nn.init.constant_(self.weight, 1.0 / self.in_channels)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"ChannelMixer(in_channels={self.in_channels}) expects (B, {self.in_channels}, ...), "
                             f"got shape {tuple(x.shape)}")
        bias = self.bias.view(-1, *([1] * (x.ndim - 2)))
        return torch.einsum("oc,bc...->bo...", self.weight.to(x.dtype), x) + bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"
