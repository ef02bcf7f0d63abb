"""MedSA: the MONAI network component that adapts a frozen SAM to 2D images and 3D volumes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state_dict_checked, read_state_dict
from .decoder import build_mask_decoder
from .dense_prompts import draw_prompt_maps
from .encoder import MedSAImageEncoder
from .guidance import guidance_to_points
from .input_layer import ChannelMixer
from .presets import SAM_GROUPS, TRAINABLE_PRESETS, apply_trainable, parameter_group
from .prompt_mapping import SamPrompts, to_sam_prompts
from .propagation import propagate_prompts
from .sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_prompt_encoder, check_image_size
from .variants import get_sam_variant

__all__ = ["MedSA", "Architecture", "resolve_architecture", "INTENSITY_MAPPINGS"]

logger = logging.getLogger(__name__)

INTENSITY_MAPPINGS = ("unit", "uint8", "zscore")


@dataclass(frozen=True)
class Architecture:
    """Which optional parts a :class:`MedSA` has (they define its state-dict keys)."""

    adapters: bool
    hyper_prompt: bool
    depth_attention: bool
    lora_rank: int
    samda_tokens: int = 0


def resolve_architecture(
    trainable: str,
    spatial_dims: int,
    adapters: bool | None = None,
    hyper_prompt: bool | None = None,
    depth_attention: bool | None = None,
    lora_rank: int | None = None,
    samda_tokens: int | None = None,
) -> Architecture:
    """Fill in the parts left ``None`` from the preset.

    ======================  ===========  ===========  ==================  =========  ===============
    preset                  adapters     HyP-Adpt     SD-Trans (3D only)  LoRA rank  SAM-DA tokens
    ======================  ===========  ===========  ==================  =========  ===============
    medsa, adapters_only    yes          yes          yes                 0          0
    lora                    no           no           yes                 4          0
    decoder                 no           no           no                  0          0
    samda                   no           no           no                  0          2
    full                    no           no           yes                 0          0
    ======================  ===========  ===========  ==================  =========  ===============

    ``samda`` keeps the image encoder exactly SAM's (no SD-Trans either), so its embeddings can be cached.
    """
    if trainable not in TRAINABLE_PRESETS:
        raise ValueError(f"unknown trainable preset {trainable!r}; choose one of {sorted(TRAINABLE_PRESETS)}")
    med_sa = trainable in ("medsa", "adapters_only")
    adapters = med_sa if adapters is None else adapters
    return Architecture(
        adapters=adapters,
        hyper_prompt=adapters if hyper_prompt is None else hyper_prompt,
        depth_attention=(spatial_dims == 3 and trainable not in ("decoder", "samda")) if depth_attention is None
        else depth_attention and spatial_dims == 3,
        lora_rank=(4 if trainable == "lora" else 0) if lora_rank is None else lora_rank,
        samda_tokens=(2 if trainable == "samda" else 0) if samda_tokens is None else samda_tokens,
    )


class MedSA(nn.Module):
    """Med-SA (Wu et al., "Medical SAM Adapter"): a frozen SAM with adapters, SD-Trans and HyP-Adpt; also SAM-DA
    (``trainable="samda"``: a decoder adapter, the image encoder untouched).

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
      In 3D a click prompts its own slice.
    - ``boxes (B, K, 2 * spatial_dims)``: ``(i0, j0[, k0], i1, j1[, k1])``, NaN rows for classes without a box.
    - ``mask_inputs``: logits of a previous prediction, low-resolution ``(B, K, S/4, S/4[, D])`` (as ``predict``
      returns) or at the image's resolution ``(B, K, H, W[, D])``; a NaN plane means no mask for that class.

    ``K`` is the number of foreground classes. A (slice, class) pair with neither points nor box uses the class's
    learned prompt embedding (automatic mode, which is also what ``forward(image)`` alone does, e.g. inside
    MONAI's ``SlidingWindowInferer``). With ``prompt_class_token`` a prompted pair gets that embedding too, beside
    its point and box tokens, so a box over two touching structures still says which one is meant.

    3D prompts at inference (eval mode) are propagated (``prompt_propagation``, see
    :func:`~medsa_monai.networks.propagation.propagate_prompts`): the slices with clicks, and the middle slice of a
    box, are decoded with their prompts; each further slice is decoded from its neighbour's prediction (its mask
    logits, mixed with the slice's own automatic logits by ``propagation_automatic_weight``, and its bounding box as
    prompts), outwards until the structure ends (or the box's slice range), so a click on one slice segments the
    whole structure and costs decoder passes only. A prompted class then never falls back to its automatic prompt on
    other slices: its result there is always a prompted decoding. In training, and with ``prompt_propagation=False``,
    a click prompts its own slice and ``click_depth_radius`` slices on either side, a box the slices of its range.

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
        adapters: Med-SA's encoder (Space, MLP) and decoder adapters; ``None`` follows the preset.
        hyper_prompt: HyP-Adpt in the decoder; ``None`` follows ``adapters``.
        depth_attention: SD-Trans for volumes; ``None`` follows the preset (see :func:`resolve_architecture`).
        adapter_ratio: bottleneck width of all adapters as a fraction of the width they adapt.
        adapter_init: ``"zero"`` (output equals SAM's until trained) or ``"official"`` (random, as Med-SA's code).
        lora_rank: rank of LoRA on the encoder's ``qkv``; ``None`` follows the preset.
        gradient_checkpointing: recompute encoder activations in the backward pass to save memory.
        samda_tokens: learned tokens of SAM-DA's decoder adapter after each two-way block (0: none); ``None``
            follows the preset (2 for ``samda``).
        embedding_cache: an :class:`~medsa_monai.inferers.EmbeddingCache`; used whenever no encoder or input-layer
            parameter trains and there is no SD-Trans (the embeddings then depend only on the image), so that later
            passes over an image (epochs, prompts, adaptation steps) run only the decoder; and, whatever the preset,
            at inference (eval mode, no gradients), where the cache key covers the encoder's adapters and the input
            layer too and a volume with SD-Trans is cached whole, so that each new click on an image costs one
            decoder pass.
        click_guidance: accept clicks as guidance channels after the image channels, ``1 + K`` of them (background
            clicks, then the clicks of each class; :class:`~medsa_monai.prompts.AddClickGuidanced` writes them), and
            turn them into point prompts (:func:`~medsa_monai.networks.guidance.guidance_to_points`). This is how
            MONAI Label's DeepEdit-style infer task, which calls ``inferer(image, network)``, passes clicks.
        click_depth_radius: in 3D, a click also prompts the slices up to this many slices away, at the same
            in-plane position, its point token marked by a learned embedding of the slice offset
            (``click_depth_embed``, zero-initialised; the click's own slice gets none, exactly as SAM).
        input_layer: put the trainable input layer (:class:`ChannelMixer`) in front of the encoder; ``None`` does
            so only when ``in_channels`` is neither 1 nor 3 (then ``False`` is an error). ``True`` with 1 or 3
            channels starts it as SAM's repeat or as the identity, so the output is SAM's until it trains (with a
            trainable input layer the embedding cache no longer serves training: the encoder's input changes at
            every step).
        prompt_class_token: give a prompted (slice, class) pair its class's learned prompt embedding as an extra
            token; ``False`` (the default) keeps a prompted pair's decoding exactly SAM's.
        prompt_propagation: in 3D at inference, propagate prompts slice by slice (see above); ``None`` means yes
            for 3D networks.
        propagation_automatic_weight: weight of a propagated slice's own automatic logits in its mask prompt, beside
            its neighbour's logits (``automatic_weight`` of :func:`~medsa_monai.networks.propagation.propagate_prompts`;
            ``0``: the neighbour's alone). Whether the mix helps depends on the model; the bundles choose it after
            training on training cases (:func:`~medsa_monai.engines.calibrate_propagation`).
        confine_corrections: in a propagated 3D session under way, a click changes its slice only in the regions of
            change it touches, adding for a foreground click and removing for a background one
            (:func:`~medsa_monai.networks.click_regions.confine_to_clicked_regions`), and only slices with a click
            the previous prediction does not obey yet are decoded again; ``False`` keeps SAM's whole slice decoded
            again at every click.
        removal_radius: with ``confine_corrections``, how far from a background click (in low-resolution pixels,
            4 SAM pixels each) it may remove; ``None``: the whole region of change it touches. The bundles choose
            it after training on training cases (:func:`~medsa_monai.engines.calibrate_propagation`).
        encode_depth: in 3D, encode a deeper volume in consecutive slabs of at most this many slices (SD-Trans
            attends within a slab), so that encoding a whole CT (hundreds of slices, as the interactive protocols
            and clicks do) needs the memory of one training slab, not of the volume; ``None`` encodes any depth at
            once. Without SD-Trans slices are encoded independently, so the result does not depend on it.
        dense_prompts: also draw boxes and clicks into SAM's mask prompt, as maps aligned with the image
            (:func:`~medsa_monai.networks.dense_prompts.draw_prompt_maps`: outside a first box certain background,
            a disk of certain foreground / background at each click, over the previous prediction); ``False`` keeps
            a prompted pair's decoding exactly SAM's.
        click_radius: radius of a click's disk in those maps, in low-resolution pixels (``image_size / 4`` frame).
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
        adapters: bool | None = None,
        hyper_prompt: bool | None = None,
        depth_attention: bool | None = None,
        adapter_ratio: float = 0.25,
        adapter_init: str = "zero",
        lora_rank: int | None = None,
        gradient_checkpointing: bool = False,
        click_depth_radius: int = 0,
        samda_tokens: int | None = None,
        embedding_cache=None,
        click_guidance: bool = False,
        input_layer: bool | None = None,
        prompt_class_token: bool = False,
        prompt_propagation: bool | None = None,
        propagation_automatic_weight: float = 0.0,
        confine_corrections: bool = True,
        removal_radius: float | None = None,
        encode_depth: int | None = None,
        dense_prompts: bool = False,
        click_radius: float = 1.0,
    ) -> None:
        super().__init__()
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
        if adapter_init not in ("zero", "official"):
            raise ValueError(f"adapter_init must be 'zero' or 'official', got {adapter_init!r}")
        num_classes = out_channels - 1 if background_channel else out_channels
        if num_classes < 1:
            raise ValueError(f"out_channels={out_channels} leaves no foreground class "
                             f"(background_channel={background_channel})")
        variant = get_sam_variant(sam_variant)
        check_image_size(image_size, variant)
        arch = resolve_architecture(trainable, spatial_dims, adapters, hyper_prompt, depth_attention, lora_rank,
                                    samda_tokens)

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

        zero_init = adapter_init == "zero"
        self.image_encoder = MedSAImageEncoder(
            variant, image_size, adapters=arch.adapters, depth_attention=arch.depth_attention,
            adapter_ratio=adapter_ratio, adapter_zero_init=zero_init, lora_rank=arch.lora_rank,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.prompt_encoder = build_prompt_encoder(variant, image_size)
        self.mask_decoder = build_mask_decoder(
            variant.prompt_embed_dim, adapters=arch.adapters, hyper_prompt=arch.hyper_prompt,
            adapter_ratio=adapter_ratio, adapter_zero_init=zero_init, samda_tokens=arch.samda_tokens,
        )
        self.class_prompts = nn.Embedding(num_classes, variant.prompt_embed_dim)
        if input_layer is None:
            input_layer = in_channels not in (1, 3)
        self.input_layer = ChannelMixer(in_channels, 3) if input_layer else None
        self.click_depth_radius = click_depth_radius
        self.click_depth_embed = None
        if click_depth_radius:
            self.click_depth_embed = nn.Embedding(click_depth_radius + 1, variant.prompt_embed_dim, padding_idx=0)
            nn.init.zeros_(self.click_depth_embed.weight)
        self.embedding_cache = embedding_cache
        self.click_guidance = click_guidance
        self.prompt_class_token = prompt_class_token
        self.prompt_propagation = spatial_dims == 3 if prompt_propagation is None else bool(prompt_propagation)
        if self.prompt_propagation and spatial_dims != 3:
            raise ValueError("prompt_propagation is for 3D networks (spatial_dims=3)")
        if not 0.0 <= propagation_automatic_weight <= 1.0:
            raise ValueError(f"propagation_automatic_weight must lie in [0, 1], got {propagation_automatic_weight}")
        self.propagation_automatic_weight = float(propagation_automatic_weight)
        self.confine_corrections = bool(confine_corrections)
        if removal_radius is not None and not removal_radius > 0:
            raise ValueError(f"removal_radius must be None or positive, got {removal_radius}")
        self.removal_radius = None if removal_radius is None else float(removal_radius)
        if encode_depth is not None and (spatial_dims != 3 or int(encode_depth) < 1):
            raise ValueError(f"encode_depth must be None, or a positive slab depth for a 3D network, got "
                             f"{encode_depth}")
        self.encode_depth = None if encode_depth is None else int(encode_depth)
        if click_radius <= 0:
            raise ValueError(f"click_radius must be positive, got {click_radius}")
        self.dense_prompts = dense_prompts
        self.click_radius = float(click_radius)
        self.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(1, 3, 1, 1), persistent=False)

        if sam_checkpoint is not None:
            self.load_sam_checkpoint(sam_checkpoint)
        apply_trainable(self, trainable)

    def load_sam_checkpoint(self, path: str | Path) -> list[str]:
        """Load an official SAM / MedSAM / Med-SA checkpoint; return the keys that kept their initial values."""
        return load_state_dict_checked(
            self, read_state_dict(path), source=str(path), variant=self.sam_variant,
            optional=lambda key: parameter_group(key) not in SAM_GROUPS,
        )

    # -- the three stages -------------------------------------------------------------------------------------

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W[, D])`` -> image embeddings ``(B * D, 256, S / 16, S / 16)``, one per slice (volumes
        deeper than ``encode_depth`` slab by slab)."""
        self.check_image(image)
        if self.spatial_dims == 3 and self.encode_depth is not None and image.shape[-1] > self.encode_depth:
            slabs = [self._encode(slab).unflatten(0, (image.shape[0], -1))
                     for slab in image.split(self.encode_depth, dim=-1)]
            return torch.cat(slabs, dim=1).flatten(0, 1)
        return self._encode(image)

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 3:
            depth = image.shape[-1]
            slices = image.permute(0, 4, 1, 2, 3).reshape(-1, *image.shape[1:4])
        else:
            depth, slices = None, image
        # under torch.jit.trace the branch is frozen at the example's size: always resize (an identity at the same
        # size), so a traced network resizes inputs of any size as the eager one does
        if torch.jit.is_tracing() or tuple(slices.shape[-2:]) != (self.image_size, self.image_size):
            slices = F.interpolate(slices, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        if self.input_layer is not None:
            slices = self.input_layer(slices)
        sam_input = self._to_sam_intensity(slices)
        if self.uses_embedding_cache():
            if depth is not None and self.architecture.depth_attention:  # SD-Trans: a slice's embedding needs all
                volumes = sam_input.unflatten(0, (-1, depth))
                return self.embedding_cache.embed(volumes, self.image_encoder, lambda v: self.image_encoder(
                    v.flatten(0, 1), depth=depth).unflatten(0, (len(v), depth))).flatten(0, 1)
            return self.embedding_cache.embed(sam_input, self.image_encoder, self.image_encoder)
        return self.image_encoder(sam_input, depth=depth)

    def uses_embedding_cache(self) -> bool:
        """Whether :meth:`encode` goes through ``embedding_cache``: when the encoder is frozen (training
        included), or at inference (eval mode, gradients off) whatever the preset. The cache is keyed by the content
        of the image and of every encoder weight (adapters, LoRA, SD-Trans included), so a cached embedding is
        never stale; it is bypassed while tracing, where it would bake one image's embedding into the trace."""
        if self.embedding_cache is None or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        return self.encoder_is_frozen() or (not torch.is_grad_enabled() and not self.training)

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
        batch, spatial = image_shape[0], tuple(image_shape[2:])
        depth = spatial[2] if self.spatial_dims == 3 else 1
        if embeddings.shape[0] != batch * depth:
            raise ValueError(f"{embeddings.shape[0]} embeddings do not fit an image of shape {tuple(image_shape)}")
        propagate = self.propagates() and (points is not None or boxes is not None)
        prompts = to_sam_prompts(points, point_labels, boxes, mask_inputs, spatial_shape=spatial,
                                 image_size=self.image_size, num_classes=self.num_classes, batch=batch,
                                 click_depth_radius=0 if propagate else self.click_depth_radius)
        if propagate:
            return propagate_prompts(self, embeddings, prompts, batch, depth, self.propagation_automatic_weight,
                                     self.confine_corrections, self.removal_radius)
        return self.decode_prompts(embeddings, prompts, batch, depth)

    def propagates(self) -> bool:
        """Whether :meth:`decode` propagates 3D prompts slice by slice: ``prompt_propagation`` in eval mode."""
        return self.spatial_dims == 3 and self.prompt_propagation and not self.training

    def decode_prompts(self, embeddings: torch.Tensor, prompts: SamPrompts, batch: int, depth: int = 1
                       ) -> torch.Tensor:
        """Embeddings ``(B * D, 256, S / 16, S / 16)`` and SAM-frame prompts per (row, class) -> low-resolution
        logits ``(B, K, S / 4, S / 4[, D])``; pairs left out by ``prompts.active`` are NaN."""
        rows, classes = batch * depth, self.num_classes
        image_pe = self.prompt_encoder.get_dense_pe()
        side = self.image_size // 4
        low_res = embeddings.new_full((rows * classes, side, side), math.nan)
        for has_points, has_box, row, cls in prompts.groups(rows, classes, embeddings.device):
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
            masks = prompts.masks[row, cls] if prompts.masks is not None else None
            if self.dense_prompts and (has_points or has_box):
                masks = draw_prompt_maps(
                    masks, side, prompts.coords[row, cls] if has_points else None,
                    prompts.labels[row, cls] if has_points else None,
                    prompts.depth_offsets[row, cls] if has_points and prompts.depth_offsets is not None else None,
                    self._drawn_boxes(prompts, row, cls) if has_box else None, self.click_radius)
            if masks is not None:
                dense = self._dense_embedding(masks, dense)
            decoded, _ = self.mask_decoder(embeddings[row], image_pe, sparse, dense, multimask_output=False)
            low_res = low_res.index_put((row * classes + cls,), decoded[:, 0].to(low_res.dtype))
        low_res = low_res.view(batch, depth, classes, side, side)
        return low_res.permute(0, 2, 3, 4, 1) if self.spatial_dims == 3 else low_res[:, 0]

    def postprocess(self, low_res: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """Low-resolution logits ``(B, K, m, m[, D])`` -> logits ``(B, out_channels, *spatial_shape)``."""
        height, width = spatial_shape[:2]
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
        image, points, point_labels = self._split_guidance(image, points, point_labels)
        low_res = self.decode(self.encode(image), image.shape, points, point_labels, boxes, mask_inputs)
        return self.postprocess(low_res, tuple(image.shape[2:])), low_res

    def forward(
        self,
        image: torch.Tensor,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        sam_prompts: SamPrompts | Sequence[SamPrompts] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Image ``(B, C, H, W[, D])`` and optional prompts -> logits ``(B, out_channels, H, W[, D])``.

        ``sam_prompts`` (instead of the others): prompts already in SAM's frame per (row, class), decoded as they
        are (see :meth:`decode_prompts`); interactive training passes its rounds' prompts this way. A sequence of
        them is decoded from one image embedding and gives a tuple of logits (pairs left out are 0).
        """
        if sam_prompts is not None:
            depth = image.shape[-1] if self.spatial_dims == 3 else 1
            embeddings = self.encode(image)
            several = not isinstance(sam_prompts, SamPrompts)
            decoded = tuple(
                self.postprocess(self.decode_prompts(embeddings, p, image.shape[0], depth).nan_to_num(0.0),
                                 tuple(image.shape[2:])) for p in (sam_prompts if several else [sam_prompts]))
            return decoded if several else decoded[0]
        return self.predict(image, points, point_labels, boxes, mask_inputs)[0]

    # -- helpers ----------------------------------------------------------------------------------------------

    def _split_guidance(self, image: torch.Tensor, points: torch.Tensor | None, point_labels: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """With ``click_guidance``, an image with ``1 + K`` channels more than ``in_channels`` carries clicks:
        return the image alone and the clicks as points."""
        guided = self.in_channels + self.num_classes + 1
        if not self.click_guidance or image.ndim != self.spatial_dims + 2 or image.shape[1] != guided:
            return image, points, point_labels
        if points is not None:
            raise ValueError("clicks come either as guidance channels or as points, not both")
        points, point_labels = guidance_to_points(image[:, self.in_channels:])
        return image[:, : self.in_channels], points, point_labels

    def check_image(self, image: torch.Tensor) -> None:
        """Raise ``ValueError`` for an image of the wrong rank or channel count, or with NaN / infinite values."""
        expected = self.spatial_dims + 2
        if image.ndim != expected:
            layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, H, W, D)"
            raise ValueError(f"MedSA(spatial_dims={self.spatial_dims}) expects a {expected}-d image {layout}, "
                             f"got shape {tuple(image.shape)}")
        if image.shape[1] != self.in_channels:
            guided = (f" (or {self.in_channels + self.num_classes + 1} with click guidance: the image, then 1 + "
                      f"{self.num_classes} guidance channels)") if self.click_guidance else ""
            raise ValueError(f"MedSA(in_channels={self.in_channels}) got an image with {image.shape[1]} channels "
                             f"(shape {tuple(image.shape)}); expected {self.in_channels}{guided}")
        if not image.is_floating_point():
            raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
        if not torch.isfinite(image).all():
            raise ValueError(f"image of shape {tuple(image.shape)} contains NaN or infinite values")

    @staticmethod
    def _drawn_boxes(prompts: SamPrompts, row: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        boxes = prompts.boxes[row, cls]
        if prompts.derived_boxes is None:
            return boxes
        derived = prompts.derived_boxes.to(boxes.device)[row, cls][:, None]
        return torch.where(derived, torch.full_like(boxes, float("nan")), boxes)

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
