"""Test-time augmentation by mirroring, as nnU-Net does it."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from monai.inferers import Inferer

__all__ = ["MirroringInferer"]


class MirroringInferer(Inferer):
    """Run ``inferer`` on the input and on its mirror images along every subset of ``axes``, flip each output
    back, and average the logits (nnU-Net v2's mirroring; MONAI's ``TestTimeAugmentation`` samples random
    transforms for uncertainty instead). ``2 ** len(axes)`` passes.

    Args:
        inferer: the inferer to wrap (e.g. ``SlidingWindowInferer``).
        axes: spatial axes to mirror (0 is the first spatial axis).

    Prompts cannot be mirrored with the image here, so extra arguments are refused: use it in automatic mode.
    """

    def __init__(self, inferer: Inferer, axes: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__()
        self.inferer = inferer
        self.axes = tuple(int(a) for a in axes)

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if args or any(v is not None for v in kwargs.values()):
            raise ValueError("MirroringInferer mirrors images only; prompts would not follow the flips")
        dims = [a + 2 for a in self.axes]
        total = None
        subsets = [s for r in range(len(dims) + 1) for s in combinations(dims, r)]
        for subset in subsets:
            flipped = torch.flip(inputs, subset) if subset else inputs
            out = self.inferer(flipped, network)
            out = torch.flip(out, subset) if subset else out
            total = out if total is None else total + out
        return total / len(subsets)
