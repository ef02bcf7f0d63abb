"""Whole-volume inference for clicked volumes, so that a click propagates through all of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer, sliding_window_inference
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
        min_size: the leading spatial axes of a clicked input are padded (zeros, centred) to at least this size and
            the output cropped back, so that slices keep the zoom they had in training
            (:func:`~medsa_monai.bundle.training_frame_size`); ``None``: the input as it is.
    """

    def __init__(self, automatic: Inferer, image_channels: int, min_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.automatic = automatic
        self.image_channels = image_channels
        self.min_size = None if min_size is None else [int(s) for s in min_size]

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        guidance = inputs[:, self.image_channels:]
        if not (guidance.numel() and bool((guidance != 0).any())):
            return self.automatic(inputs, network, *args, **kwargs)
        spatial = list(inputs.shape[2:])
        if self.min_size is None or all(s >= m for s, m in zip(spatial, self.min_size, strict=False)):
            return network(inputs, *args, **kwargs)
        # one window as large as the padded input: MONAI pads it (constant zeros, centred) and crops the output back
        window = [max(s, m) for s, m in zip(spatial, self.min_size, strict=False)] + spatial[len(self.min_size):]
        return sliding_window_inference(inputs, window, 1, lambda padded: network(padded, *args, **kwargs),
                                        overlap=0.0, mode="constant")
