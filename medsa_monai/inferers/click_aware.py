"""Whole-volume inference for clicked volumes, so that a click propagates through all of it."""

from __future__ import annotations

import torch
from monai.inferers import Inferer
from torch import nn

__all__ = ["ClickAwareInferer"]


class ClickAwareInferer(Inferer):
    """Run ``automatic`` (e.g. a sliding window) on inputs without clicks, and the network on the whole input when
    its click-guidance channels (after the first ``image_channels``) hold a click.

    A sliding window would cut a clicked structure into windows, and the windows without the click would segment it
    automatically; on the whole volume the click is propagated through every slice. Without clicks the result is
    the automatic model's, window for window.

    Args:
        automatic: the inferer of automatic segmentation.
        image_channels: channels of the image before the guidance channels.
    """

    def __init__(self, automatic: Inferer, image_channels: int) -> None:
        super().__init__()
        self.automatic = automatic
        self.image_channels = image_channels

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        guidance = inputs[:, self.image_channels:]
        if guidance.numel() and bool((guidance != 0).any()):
            return network(inputs, *args, **kwargs)
        return self.automatic(inputs, network, *args, **kwargs)
