"""MONAI inferers for MedSA: the planned one (whole images, sliding windows over volumes), clicked volumes decoded
whole through a predictor, and mirroring test-time augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer, sliding_window_inference
from torch import nn

from .embedding_cache import EmbeddingCache
from .predictor import MedSAPredictor
from .zoom import ZoomPredictor

__all__ = ["planned_inferer", "CachedInferer", "ClickAwareInferer", "MirroringInferer"]


def planned_inferer(spatial_dims: int, patch_size: Sequence[int], sw_batch_size: int = 1, overlap: float = 0.5,
                    progress: bool = False, output_device: str | torch.device | None = None,
                    embedding_cache: EmbeddingCache | None = None) -> Inferer:
    """The whole image at once in 2D (MedSA resizes it to SAM's frame); a Gaussian-weighted sliding window of the
    plan's patch over volumes, ``sw_batch_size`` patches per forward pass, so memory is bounded by the plan and
    not by the volume.

    Args:
        progress: a progress bar over the windows of each volume (long CT volumes take minutes).
        output_device: where the stitched logits are accumulated (default: the input's device). ``"cpu"`` keeps
            a whole CT's logits (classes x 512 x 512 x slices floats, gigabytes) in host memory while the
            windows run on the GPU.
        embedding_cache: encode through this cache (:class:`CachedInferer`), so that an image seen before (the
            validation images of every validation) runs only the decoder.
    """
    if spatial_dims == 2:
        inferer = SimpleInferer()
    else:
        inferer = SlidingWindowInferer(roi_size=list(patch_size), sw_batch_size=int(sw_batch_size), overlap=overlap,
                                       mode="gaussian", progress=bool(progress), device=output_device)
    return inferer if embedding_cache is None else CachedInferer(inferer, embedding_cache)


class CachedInferer(Inferer):
    """Run ``inferer`` with the network's :class:`~medsa_monai.predictor.MedSAPredictor` of ``embedding_cache`` in
    place of the network (automatic mode; the cache serves whenever the network is evaluated without gradients or
    its encoder is frozen)."""

    def __init__(self, inferer: Inferer, embedding_cache: EmbeddingCache) -> None:
        super().__init__()
        self.inferer = inferer
        self.embedding_cache = embedding_cache

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        predictor = MedSAPredictor(network, embedding_cache=self.embedding_cache, propagation=False)
        return self.inferer(inputs, predictor, *args, **kwargs)


class ClickAwareInferer(Inferer):
    """Run ``automatic`` (e.g. a sliding window) on inputs without clicks, and a
    :class:`~medsa_monai.predictor.MedSAPredictor` on the whole input when its click-guidance channels (after the
    first ``image_channels``) hold a click.

    A sliding window would cut a clicked structure into windows, and the windows without the click would segment it
    automatically; on the whole volume the click is propagated through every slice. Without clicks the result is
    the automatic model's, window for window. The predictor's embedding cache lives here, across calls, so the
    first click on an image encodes it and every later click only decodes.

    Args:
        automatic: the inferer of automatic segmentation.
        image_channels: channels of the image before the guidance channels.
        min_size: the leading spatial axes of a clicked input are padded (zeros, centred) to at least this size and
            the output cropped back, so that slices keep the zoom they had in training
            (:func:`~medsa_monai.preprocessing.training_frame_size`); ``None``: the input as it is.
        embedding_cache: the predictor's cache (default: a new one of 1 GiB).
        zoom_margin: decode the clicked structures in a window around them with this margin
            (:class:`~medsa_monai.predictor.ZoomPredictor`); ``None``: the whole input.
        predictor_settings: the other arguments of :class:`~medsa_monai.predictor.MedSAPredictor`
            (``encode_depth``, ``dense_prompts``, ``propagation_automatic_weight``, ``removal_radius``, ...).
    """

    def __init__(self, automatic: Inferer, image_channels: int, min_size: Sequence[int] | None = None,
                 embedding_cache: EmbeddingCache | None = None, zoom_margin: float | None = None,
                 **predictor_settings) -> None:
        super().__init__()
        self.automatic = automatic
        self.image_channels = image_channels
        self.min_size = None if min_size is None else [int(s) for s in min_size]
        self.embedding_cache = EmbeddingCache(2**30) if embedding_cache is None else embedding_cache
        self.zoom_margin = None if zoom_margin is None else float(zoom_margin)
        self.predictor_settings = dict(predictor_settings)

    def predictor(self, network: nn.Module) -> MedSAPredictor | ZoomPredictor:
        """The predictor of ``network`` that reads the guidance channels, with this inferer's cache."""
        predictor = MedSAPredictor(network, embedding_cache=self.embedding_cache, click_guidance=True,
                                   **self.predictor_settings)
        return predictor if self.zoom_margin is None else ZoomPredictor(predictor, self.zoom_margin)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        guidance = inputs[:, self.image_channels:]
        if not (guidance.numel() and bool((guidance != 0).any())):
            return self.automatic(inputs[:, : self.image_channels], network, *args, **kwargs)
        predictor = self.predictor(network)
        spatial = list(inputs.shape[2:])
        if self.min_size is None or all(s >= m for s, m in zip(spatial, self.min_size, strict=False)):
            return predictor(inputs, *args, **kwargs)
        # one window as large as the padded input: MONAI pads it (constant zeros, centred) and crops the output back
        window = [max(s, m) for s, m in zip(spatial, self.min_size, strict=False)] + spatial[len(self.min_size):]
        return sliding_window_inference(inputs, window, 1, lambda padded: predictor(padded, *args, **kwargs),
                                        overlap=0.0, mode="constant")


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
