"""MedSA: the MONAI network component that adapts a frozen SAM to 2D images and 3D volumes."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .architecture import Architecture, resolve_architecture
from .checkpoint import load_state_dict_checked, read_state_dict
from .decoder import build_mask_decoder
from .encoder import MedSAImageEncoder
from .input_layer import ChannelMixer
from .presets import SAM_GROUPS, apply_trainable, parameter_group
from .prompt_mapping import SamPrompts, to_sam_prompts
from .sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_prompt_encoder, check_image_size
from .variants import get_sam_variant
from .weights import BaseCheckpoint, describe_base, is_trained_weights, load_trained_weights

__all__ = ["MedSA", "INTENSITY_MAPPINGS"]

logger = logging.getLogger(__name__)

INTENSITY_MAPPINGS = ("unit", "uint8", "zscore")


class MedSA(nn.Module):
    """Med-SA (Wu et al., "Medical SAM Adapter"): a frozen SAM with adapters, SD-Trans and HyP-Adpt; also SAM-DA
    (``trainable="samda"``: a decoder adapter, the image encoder untouched).

    The network computes, as ``segment_anything``'s ``Sam`` does: :meth:`encode` an image, :meth:`decode` prompts
    into logits, :meth:`forward` both at once. What belongs to an interactive session (the embedding cache, slab
    encoding of deep volumes, propagating a prompt through a volume, confined corrections, clicks arriving as
    guidance channels, prompts drawn as maps, calibrated settings) is held by
    :class:`~medsa_monai.predictor.MedSAPredictor`, as ``SamPredictor`` holds it for ``Sam``.

    The attribute names ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` and all their state-dict keys
    are SAM's, so official SAM, MedSAM and Med-SA checkpoints load by key.

    Input channels (``in_channels``, any ``C >= 1``): SAM reads three (RGB). A grey image (``C = 1``) is repeated to
    three channels and an RGB image (``C = 3``) is used as it is, exactly as SAM. Any other number of channels
    (modalities, e.g. four MRI sequences) goes through a trainable input layer (:class:`ChannelMixer`, a 1x1
    convolution ``C -> 3``, state-dict keys ``input_layer.*``, trainable in every preset) that starts as the mean of
    the channels in each of the three, so the encoder first sees the mean modality as a grey image. The layer acts
    on the resized slices in the input's intensity space, before the mapping below.

    Input intensities (``intensity``): SAM was trained on 8-bit RGB normalised by its pixel mean and std. The three
    channels are then:

    - ``"unit"`` (default): intensities in ``[0, 1]`` (e.g. after ``ScaleIntensityRange``) are multiplied by 255 and
      normalised as SAM does, so the network sees what SAM sees for the 8-bit version of the image;
    - ``"uint8"``: intensities in ``[0, 255]``, normalised as SAM does;
    - ``"zscore"``: already zero-mean unit-variance (e.g. ``NormalizeIntensity``), passed unchanged.

    Geometry: each 2D image or slice is resized (bilinear, antialiased) to ``image_size`` squared; the low-resolution
    mask logits (``image_size / 4``) are resized back to the input's size. Volumes are sliced along their last
    spatial axis; with SD-Trans the slices of one volume attend to each other along depth in every encoder block.

    Output: logits ``(B, out_channels, H, W[, D])``. With ``background_channel`` the first channel is a constant 0,
    so each class logit is SAM's mask logit (log-odds against background), ``softmax`` and ``argmax`` over
    channels work as for any MONAI network, and ``out_channels - 1`` classes are decoded.

    Prompts (optional, in the array-index order of the input's spatial dims; SAM's ``(x, y)`` is derived inside):

    - ``points (B, K, P, spatial_dims)`` with ``point_labels (B, K, P)``: 1 foreground, 0 background, -1 padding.
      In 3D a click prompts its own slice and ``click_depth_radius`` slices on either side.
    - ``boxes (B, K, 2 * spatial_dims)``: ``(i0, j0[, k0], i1, j1[, k1])``, NaN rows for classes without a box; in
      3D a box prompts the slices of its range.
    - ``mask_inputs``: logits of a previous prediction, low-resolution ``(B, K, S/4, S/4[, D])`` (as ``predict``
      returns) or at the image's resolution ``(B, K, H, W[, D])``; a NaN plane means no mask for that class.

    ``K`` is the number of foreground classes. A (slice, class) pair with neither points nor box uses the class's
    learned prompt embedding (automatic mode, which is also what ``forward(image)`` alone does, e.g. inside
    MONAI's ``SlidingWindowInferer``). With ``prompt_class_token`` a prompted pair gets that embedding too, beside
    its point and box tokens, so a box over two touching structures still says which one is meant.

    Args:
        spatial_dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, H, W, D)``.
        in_channels: channels of the image, at least 1: 1 (grey), 3 (RGB) or any number of modalities.
        out_channels: output channels, the background channel included when ``background_channel``.
        sam_variant: ``vit_b``, ``vit_l``, ``vit_h`` or ``vit_tiny``.
        sam_checkpoint: official SAM / MedSAM / Med-SA checkpoint, or a MedSA state dict; ``None`` keeps random
            weights. SAM keys must all be present; MedSA's own parts may be absent (they keep their initial values).
        image_size: side of SAM's input frame, a multiple of 16 (SAM: 1024). Position tables are interpolated.
        trainable: preset of trainable parameters: ``medsa``, ``adapters_only``, ``decoder``, ``lora``, ``samda``,
            ``full``.
        intensity: ``unit``, ``uint8`` or ``zscore`` (see above).
        background_channel: prepend a constant-zero background logit channel.
        depth_attention: SD-Trans for volumes; ``None`` follows the preset
            (:func:`~medsa_monai.networks.resolve_architecture`).
        architecture: the other optional parts, an :class:`~medsa_monai.networks.Architecture` or a mapping of some
            of its fields (``adapters``, ``hyper_prompt``, ``lora_rank``, ``samda_tokens``, ``adapter_ratio``,
            ``adapter_init``); what it leaves out follows the preset.
        input_layer: put the trainable input layer (:class:`ChannelMixer`) in front of the encoder; ``None`` does
            so only when ``in_channels`` is neither 1 nor 3 (then ``False`` is an error). ``True`` with 1 or 3
            channels starts it as SAM's repeat or as the identity, so the output is SAM's until it trains.
        click_depth_radius: in 3D, a click also prompts the slices up to this many slices away, at the same
            in-plane position, its point token marked by a learned embedding of the slice offset
            (``click_depth_embed``, zero-initialised; the click's own slice gets none, exactly as SAM).
        prompt_class_token: give a prompted (slice, class) pair its class's learned prompt embedding as an extra
            token; ``False`` (the default) keeps a prompted pair's decoding exactly SAM's.
        gradient_checkpointing: recompute encoder activations in the backward pass to save memory.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        sam_variant: str = "vit_b",
        sam_checkpoint: str | Path | None = None,
        image_size: int = 1024,
        trainable: str = "medsa",
        intensity: str = "unit",
        background_channel: bool = True,
        depth_attention: bool | None = None,
        architecture: Architecture | Mapping | None = None,
        input_layer: bool | None = None,
        click_depth_radius: int = 0,
        prompt_class_token: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        num_classes = _check_arguments(spatial_dims, in_channels, out_channels, intensity, background_channel,
                                       input_layer, click_depth_radius)
        variant = get_sam_variant(sam_variant)
        check_image_size(image_size, variant)
        arch = resolve_architecture(trainable, spatial_dims, depth_attention, architecture)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.sam_variant = sam_variant
        self.image_size = image_size
        self.trainable = trainable
        self.intensity = intensity
        self.background_channel = background_channel
        self.architecture = arch
        self.click_depth_radius = click_depth_radius
        self.prompt_class_token = prompt_class_token

        zero_init = arch.adapter_init == "zero"
        self.image_encoder = MedSAImageEncoder(
            variant, image_size, adapters=arch.adapters, depth_attention=arch.depth_attention,
            adapter_ratio=arch.adapter_ratio, adapter_zero_init=zero_init, lora_rank=arch.lora_rank,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.prompt_encoder = build_prompt_encoder(variant, image_size)
        self.mask_decoder = build_mask_decoder(
            variant.prompt_embed_dim, adapters=arch.adapters, hyper_prompt=arch.hyper_prompt,
            adapter_ratio=arch.adapter_ratio, adapter_zero_init=zero_init, samda_tokens=arch.samda_tokens,
        )
        self.class_prompts = nn.Embedding(num_classes, variant.prompt_embed_dim)
        if input_layer is None:
            input_layer = in_channels not in (1, 3)
        self.input_layer = ChannelMixer(in_channels, 3) if input_layer else None
        self.click_depth_embed = None
        if click_depth_radius:
            self.click_depth_embed = nn.Embedding(click_depth_radius + 1, variant.prompt_embed_dim, padding_idx=0)
            nn.init.zeros_(self.click_depth_embed.weight)
        self.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False)

        self.base_checkpoint: BaseCheckpoint | None = None
        if sam_checkpoint is not None:
            self.load_sam_checkpoint(sam_checkpoint)
        apply_trainable(self, trainable)

    def load_sam_checkpoint(self, path: str | Path) -> list[str]:
        """Load an official SAM / MedSAM / Med-SA checkpoint as the base (recorded in ``base_checkpoint``); return
        the keys that kept their initial values."""
        state = read_state_dict(path)
        kept = load_state_dict_checked(self, state, source=str(path), variant=self.sam_variant,
                                       optional=lambda key: parameter_group(key) not in SAM_GROUPS)
        self.base_checkpoint = describe_base(path, state)
        return kept

    def load_state_dict(self, state_dict: Mapping, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; also loads shared weights (what a frozen-base training saves, see
        :mod:`~medsa_monai.networks.weights`) into a network built on their base checkpoint, always strictly."""
        if is_trained_weights(state_dict):
            return load_trained_weights(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- the three stages -------------------------------------------------------------------------------------

    def sam_input(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W[, D])`` -> the image encoder's input ``(B * D, 3, S, S)``, one row per image or slice
        (slices of a volume consecutive): resized to ``image_size``, through the input layer, SAM's intensities."""
        self.check_image(image)
        return self.sam_frame(image)

    def sam_frame(self, image: torch.Tensor, always_resize: bool = False) -> torch.Tensor:
        """:meth:`sam_input` without the input checks (for graph export, where a check on values cannot run);
        ``always_resize`` resizes an image already at ``image_size`` too (an identity), so that a graph recorded at
        one size takes any."""
        slices = image
        if self.spatial_dims == 3:
            slices = image.permute(0, 4, 1, 2, 3).reshape(-1, image.shape[1], image.shape[2], image.shape[3])
        # under torch.jit.trace the branch is frozen at the example's size: always resize (an identity at the same
        # size), so a traced network resizes inputs of any size as the eager one does
        if (always_resize or torch.jit.is_tracing() or slices.shape[-2] != self.image_size
                or slices.shape[-1] != self.image_size):
            slices = F.interpolate(slices, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        if self.input_layer is not None:
            slices = self.input_layer(slices)
        return self._to_sam_intensity(slices)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W[, D])`` -> image embeddings ``(B * D, E, S / 16, S / 16)``, one per slice (``E``: the
        variant's ``prompt_embed_dim``, SAM's 256)."""
        depth = image.shape[-1] if self.spatial_dims == 3 else None
        return self.image_encoder(self.sam_input(image), depth=depth)

    def encoder_is_frozen(self) -> bool:
        """Whether each image's embedding depends on that image alone and cannot change by training: no encoder or
        input-layer parameter trains and no SD-Trans mixes slices."""
        encoding = [self.image_encoder] + ([self.input_layer] if self.input_layer is not None else [])
        return not self.architecture.depth_attention and not any(
            p.requires_grad for module in encoding for p in module.parameters())

    def decode(
        self,
        embeddings: torch.Tensor,
        image_shape: tuple[int, ...] | torch.Size,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings of :meth:`encode` and prompts -> low-resolution logits ``(B, K, S / 4, S / 4[, D])``.

        ``image_shape`` is the shape of the image the embeddings came from; prompts are as for :meth:`forward`.
        """
        batch, depth = self.rows_of(image_shape, embeddings)
        prompts = to_sam_prompts(points, point_labels, boxes, mask_inputs, spatial_shape=tuple(image_shape[2:]),
                                 image_size=self.image_size, num_classes=self.num_classes, batch=batch,
                                 click_depth_radius=self.click_depth_radius)
        return self.decode_prompts(embeddings, prompts, batch, depth)

    def rows_of(self, image_shape: tuple[int, ...] | torch.Size, embeddings: torch.Tensor) -> tuple[int, int]:
        """``(B, D)`` of an image of ``image_shape`` (``D = 1`` in 2D), checked against its ``embeddings``."""
        batch = image_shape[0]
        depth = image_shape[4] if self.spatial_dims == 3 else 1
        if embeddings.shape[0] != batch * depth:
            raise ValueError(f"{embeddings.shape[0]} embeddings do not fit an image of shape {tuple(image_shape)}")
        return batch, depth

    def decode_prompts(self, embeddings: torch.Tensor, prompts: SamPrompts, batch: int, depth: int = 1
                       ) -> torch.Tensor:
        """Embeddings ``(B * D, E, S / 16, S / 16)`` and SAM-frame prompts per (row, class) -> low-resolution
        logits ``(B, K, S / 4, S / 4[, D])``; pairs left out by ``prompts.active`` are NaN.

        Pairs are decoded by kind of prompt (:meth:`SamPrompts.groups`); a pair with a mask prompt
        (``prompts.masks``) gets SAM's mask embedding of it."""
        rows, classes = batch * depth, self.num_classes
        image_pe = self.prompt_encoder.get_dense_pe()
        side = self.image_size // 4
        low_res = embeddings.new_full((rows * classes, side, side), math.nan)
        for has_points, has_box, row, cls in prompts.groups(rows, classes, embeddings.device):
            sparse, dense = self._prompt_embeddings(prompts, has_points, has_box, row, cls)
            decoded, _ = self.mask_decoder(embeddings[row], image_pe, sparse, dense, multimask_output=False)
            low_res = low_res.index_put((row * classes + cls,), decoded[:, 0].to(low_res.dtype))
        low_res = low_res.view(batch, depth, classes, side, side)
        return low_res.permute(0, 2, 3, 4, 1) if self.spatial_dims == 3 else low_res[:, 0]

    def decode_automatic(self, embeddings: torch.Tensor, batch: int, depth: int = 1) -> torch.Tensor:
        """Embeddings ``(B * D, E, S / 16, S / 16)`` -> low-resolution logits ``(B, K, S / 4, S / 4[, D])`` of
        automatic mode: every (row, class) pair decoded from its class's learned prompt embedding.

        The same as :meth:`decode` without prompts, in a form ``torch.jit.script`` compiles."""
        rows, classes = embeddings.shape[0], self.num_classes
        if rows != batch * depth:
            raise ValueError(f"{rows} embeddings do not fit {batch} image(s) of {depth} slice(s)")
        pairs = torch.arange(rows * classes, device=embeddings.device)
        row = torch.div(pairs, classes, rounding_mode="floor")
        sparse = self.class_prompts(pairs % classes)[:, None]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            1, -1, embeddings.shape[-2], embeddings.shape[-1])
        decoded, _ = self.mask_decoder(embeddings[row], self.prompt_encoder.get_dense_pe(), sparse, dense,
                                       multimask_output=False)
        side = self.image_size // 4
        low_res = decoded[:, 0].reshape(batch, depth, classes, side, side)
        return low_res.permute(0, 2, 3, 4, 1) if self.spatial_dims == 3 else low_res[:, 0]

    def postprocess(self, low_res: torch.Tensor, spatial_shape: list[int]) -> torch.Tensor:
        """Low-resolution logits ``(B, K, m, m[, D])`` -> logits ``(B, out_channels, *spatial_shape)``."""
        height, width = spatial_shape[0], spatial_shape[1]
        if self.spatial_dims == 3:
            b, k, m, _, d = low_res.shape
            flat = low_res.permute(0, 4, 1, 2, 3).reshape(b * d, k, m, m)
            flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
            logits = flat.view(b, d, k, height, width).permute(0, 2, 3, 4, 1)
        else:
            logits = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)
        if self.background_channel:
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
        return logits

    def predict(
        self,
        image: torch.Tensor,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`forward`, also returning the low-resolution logits to feed back as ``mask_inputs``."""
        low_res = self.decode(self.encode(image), image.shape, points, point_labels, boxes, mask_inputs)
        return self.postprocess(low_res, tuple(image.shape[2:])), low_res

    def forward(
        self,
        image: torch.Tensor,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image ``(B, C, H, W[, D])`` and optional prompts (one set) -> logits ``(B, out_channels, H, W[, D])``.

        ``torch.jit.script`` compiles automatic mode (the image alone); a scripted network refuses prompts."""
        prompted = points is not None or point_labels is not None or boxes is not None or mask_inputs is not None
        if not torch.jit.is_scripting():
            if prompted:
                return self.predict(image, points, point_labels, boxes, mask_inputs)[0]
        elif prompted:
            raise RuntimeError("this TorchScript MedSA decodes automatic mode only (the image alone); prompts go to "
                               "the PyTorch network or the ONNX prompt decoder (medsa export --format onnx)")
        embeddings = self.encode(image)
        depth = image.shape[4] if self.spatial_dims == 3 else 1
        return self.postprocess(self.decode_automatic(embeddings, image.shape[0], depth), image.shape[2:])

    # -- helpers ----------------------------------------------------------------------------------------------

    def check_image(self, image: torch.Tensor) -> None:
        """Raise ``ValueError`` for an image of the wrong rank or channel count, or with NaN / infinite values."""
        expected = self.spatial_dims + 2
        shape = _shape_text(image.shape)
        if image.ndim != expected:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, H, W, D)"
            raise ValueError(f"MedSA(spatial_dims={self.spatial_dims}) expects a {expected}-d image {layout}, "
                             f"got shape {shape}")
        if image.shape[1] != self.in_channels:
            raise ValueError(f"MedSA(in_channels={self.in_channels}) got an image with {image.shape[1]} channels "
                             f"(shape {shape}); expected {self.in_channels} (clicks sent as guidance "
                             f"channels go to medsa_monai.predictor.MedSAPredictor(click_guidance=True))")
        if not image.is_floating_point():
            raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"image of shape {shape} contains NaN or infinite values")

    def _prompt_embeddings(self, prompts: SamPrompts, has_points: bool, has_box: bool, row: torch.Tensor,
                           cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's sparse and dense prompt embeddings of the (row, class) pairs of one kind of prompt."""
        sparse, dense = self.prompt_encoder(
            points=(prompts.coords[row, cls], prompts.labels[row, cls]) if has_points else None,
            boxes=prompts.boxes[row, cls] if has_box else None,
            masks=None,
        )
        if not (has_points or has_box):
            sparse = self.class_prompts(cls)[:, None]
        else:
            if has_points and self.click_depth_embed is not None and prompts.depth_offsets is not None:
                offsets = prompts.depth_offsets[row, cls]  # point tokens come first in SAM's sparse embedding
                shift = self.click_depth_embed(offsets) * (offsets > 0)[..., None]  # own slice: as SAM
                points_part = sparse[:, : offsets.shape[1]] + shift
                sparse = torch.cat([points_part, sparse[:, offsets.shape[1]:]], dim=1)
            if self.prompt_class_token:
                token = self.class_prompts(cls)[:, None]
                if prompts.class_token is not None:
                    keep = prompts.class_token.to(token.device)[row, cls][:, None, None]
                    token = torch.where(keep, token, self.prompt_encoder.not_a_point_embed.weight[None])
                sparse = torch.cat([sparse, token], dim=1)
        if prompts.masks is not None:
            dense = self._dense_embedding(prompts.masks[row, cls], dense)
        return sparse, dense

    def _dense_embedding(self, masks: torch.Tensor, no_mask: torch.Tensor) -> torch.Tensor:
        """SAM's mask-prompt embedding of ``masks (M, 1, m, m)``; rows that are NaN get ``no_mask`` instead."""
        given = torch.isfinite(masks).flatten(1).all(1)
        if not given.any():
            return no_mask
        embedded = self.prompt_encoder(points=None, boxes=None, masks=masks.nan_to_num(0.0))[1]
        return torch.where(given[:, None, None, None], embedded, no_mask)

    def _to_sam_intensity(self, slices: torch.Tensor) -> torch.Tensor:
        if slices.shape[1] == 1:
            slices = slices.expand(-1, 3, -1, -1)
        if self.intensity == "zscore":
            return slices
        scale = 255.0 if self.intensity == "unit" else 1.0
        return (slices * scale - self.pixel_mean) / self.pixel_std


def _shape_text(shape: list[int]) -> str:
    return "(" + ", ".join([str(size) for size in shape]) + ")"


def _check_arguments(spatial_dims: int, in_channels: int, out_channels: int, intensity: str,
                     background_channel: bool, input_layer: bool | None, click_depth_radius: int) -> int:
    """Raise ``ValueError`` for arguments that do not fit together; return the number of foreground classes."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1 (1 grey, 3 RGB, or any number of modalities), "
                         f"got {in_channels}")
    if input_layer is False and in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels} needs the input layer that maps them to SAM's three; "
                         f"input_layer=False is for 1 or 3 channels only")
    if intensity not in INTENSITY_MAPPINGS:
        raise ValueError(f"intensity must be one of {INTENSITY_MAPPINGS}, got {intensity!r}")
    if click_depth_radius < 0 or (click_depth_radius and spatial_dims != 3):
        raise ValueError(f"click_depth_radius must be 0, or positive for a 3D network, got {click_depth_radius}")
    num_classes = out_channels - 1 if background_channel else out_channels
    if num_classes < 1:
        raise ValueError(f"out_channels={out_channels} leaves no foreground class "
                         f"(background_channel={background_channel})")
    return num_classes
