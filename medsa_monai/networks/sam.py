"""``build_sam``: SAM of any variant and input size, from ``segment_anything``'s own modules."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn

from .checkpoint import load_state_dict_checked, read_state_dict
from .variants import SamVariant, get_sam_variant

__all__ = ["build_sam", "build_prompt_encoder", "check_image_size", "encoder_kwargs", "SAM_PIXEL_MEAN",
           "SAM_PIXEL_STD"]

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def check_image_size(image_size: int, variant: SamVariant) -> int:
    """The token grid side for ``image_size``; raise if it is not a positive multiple of the patch size."""
    if image_size <= 0 or image_size % variant.patch_size:
        raise ValueError(f"image_size must be a positive multiple of {variant.patch_size}, got {image_size}")
    return image_size // variant.patch_size


def encoder_kwargs(variant: SamVariant, image_size: int) -> dict:
    """Keyword arguments of ``ImageEncoderViT`` for ``variant`` at ``image_size``, as SAM's ``_build_sam``."""
    return dict(
        depth=variant.depth,
        embed_dim=variant.embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=variant.num_heads,
        patch_size=variant.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=variant.global_attn_indexes,
        window_size=variant.window_size,
        out_chans=variant.prompt_embed_dim,
    )


class PositionEmbedding(PositionEmbeddingRandom):
    """SAM's ``PositionEmbeddingRandom`` (same buffer, same values) in a form ``torch.jit.script`` compiles."""

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of an ``(h, w)`` grid: ``(C, h, w)``."""
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)


def build_prompt_encoder(variant: SamVariant, image_size: int) -> PromptEncoder:
    """SAM's prompt encoder with its image and embedding sizes set for ``image_size``."""
    grid = check_image_size(image_size, variant)
    encoder = PromptEncoder(
        embed_dim=variant.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )
    encoder.pe_layer.__class__ = PositionEmbedding  # same state; a new instance would draw from the RNG again
    return encoder


def build_sam(variant: str = "vit_b", checkpoint: str | Path | None = None, image_size: int = 1024) -> Sam:
    """Build a ``segment_anything.modeling.Sam`` of ``variant`` for square inputs of side ``image_size``.

    Args:
        variant: ``vit_b``, ``vit_l``, ``vit_h`` (official hyper-parameters) or ``vit_tiny`` (see ``variants.py``).
        checkpoint: an official SAM or MedSAM checkpoint file, or ``None`` for random weights. Every key must
            match (see :func:`~medsa_monai.networks.checkpoint.load_state_dict_checked`).
        image_size: input side in pixels, a multiple of 16. For sizes other than the checkpoint's, the absolute
            position embedding and the global blocks' relative-position tables are interpolated.

    Returns:
        The model, in eval mode.
    """
    spec = get_sam_variant(variant)
    check_image_size(image_size, spec)
    sam = Sam(
        image_encoder=ImageEncoderViT(**encoder_kwargs(spec, image_size)),
        prompt_encoder=build_prompt_encoder(spec, image_size),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=spec.prompt_embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=spec.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
    if checkpoint is not None:
        load_state_dict_checked(sam, read_state_dict(checkpoint), source=str(checkpoint), variant=variant)
    return sam.eval()
