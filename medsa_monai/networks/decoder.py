"""SAM's mask decoder with Med-SA's decoder adapters (HyP-Adpt, MLP adapter, image adapter), batched per image."""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from segment_anything.modeling.transformer import TwoWayAttentionBlock
from torch import nn

from .adapters import Adapter
from .decoder_adapter import DecoderPromptAdapter
from .hyper_prompt import HyperPromptAdapter

__all__ = ["MedSADecoderBlock", "MedSAMaskDecoder", "build_mask_decoder"]


class MedSADecoderBlock(TwoWayAttentionBlock):
    """SAM's two-way attention block with the three decoder adapters of the Med-SA paper.

    Where each one sits, in the order of SAM's block (``queries`` are the prompt/output tokens, ``keys`` the image
    tokens)::

        queries = norm1(queries + self_attn(queries))
        queries = queries + cross_attn_token_to_image(queries, keys)
        queries = queries + hyper_prompt_adapter(queries, prompt)         # 1. HyP-Adpt
        queries = norm2(queries)
        queries = norm3(queries + mlp(queries) + 0.5 * mlp_adapter(queries))  # 2. MLP adapter, parallel
        keys    = keys + cross_attn_image_to_token(keys, queries)
        keys    = image_adapter(keys)                                     # 3. adapter with skip
        keys    = norm4(keys)
        keys    = samda_adapter(keys)                                     # SAM-DA, when enabled

    ``prompt`` is the sparse prompt embedding: the tokens after SAM's output tokens in ``query_pe`` (points, box
    corners, or MedSA's learned class prompt). All adapters start with a zero up-projection, so at initialisation
    the block's output equals SAM's exactly.

    Args:
        embedding_dim, num_heads, mlp_dim, skip_first_layer_pe: as ``TwoWayAttentionBlock``.
        num_output_tokens: SAM's output tokens that precede the prompt tokens (IoU token + mask tokens).
        adapters: add the MLP and image adapters.
        hyper_prompt: add HyP-Adpt.
        adapter_ratio, adapter_zero_init: see :class:`~medsa_monai.networks.adapters.Adapter`.
        samda_tokens: add SAM-DA's :class:`DecoderPromptAdapter` with this many tokens after the block (0: none).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        skip_first_layer_pe: bool = False,
        *,
        num_output_tokens: int = 5,
        adapters: bool = True,
        hyper_prompt: bool = True,
        adapter_ratio: float = 0.25,
        adapter_zero_init: bool = True,
        mlp_adapter_scale: float = 0.5,
        samda_tokens: int = 0,
    ) -> None:
        super().__init__(embedding_dim, num_heads, mlp_dim=mlp_dim, skip_first_layer_pe=skip_first_layer_pe)
        self.samda_adapter = DecoderPromptAdapter(embedding_dim, samda_tokens) if samda_tokens else None
        self.num_output_tokens = num_output_tokens
        self.mlp_adapter_scale = mlp_adapter_scale
        self.hyper_prompt_adapter = (
            HyperPromptAdapter(embedding_dim, embedding_dim, adapter_ratio, zero_init=adapter_zero_init)
            if hyper_prompt else None
        )
        self.mlp_adapter = Adapter(embedding_dim, adapter_ratio, skip=False, zero_init=adapter_zero_init) \
            if adapters else None
        self.image_adapter = Adapter(embedding_dim, adapter_ratio, skip=True, zero_init=adapter_zero_init) \
            if adapters else None

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # segment_anything's block offers no place to insert modules, so its forward is restated here.
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        queries = queries + self.cross_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys)
        if self.hyper_prompt_adapter is not None:
            queries = queries + self.hyper_prompt_adapter(queries, query_pe[:, self.num_output_tokens:])
        queries = self.norm2(queries)

        out = queries + self.mlp(queries)
        if self.mlp_adapter is not None:
            out = out + self.mlp_adapter_scale * self.mlp_adapter(queries)
        queries = self.norm3(out)

        keys = keys + self.cross_attn_image_to_token(q=keys + key_pe, k=queries + query_pe, v=queries)
        if self.image_adapter is not None:
            keys = self.image_adapter(keys)
        keys = self.norm4(keys)
        if self.samda_adapter is not None:
            keys = self.samda_adapter(keys)
        return queries, keys


class MedSAMaskDecoder(MaskDecoder):
    """SAM's ``MaskDecoder`` that accepts one image embedding per prompt row.

    ``segment_anything`` decodes the prompts of one image at a time and repeats that image's embedding for every
    prompt; here row ``i`` of the embeddings goes with row ``i`` of the prompts, so many images (slices, batch
    elements, classes) decode in one pass. A single embedding row is still repeated for all prompts, as in SAM.
    """

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As SAM's: masks ``(N, 3 or 1, S / 4, S / 4)`` and IoU predictions ``(N, 3 or 1)``."""
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:]
        return masks[:, :1], iou_pred[:, :1]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        rows = tokens.shape[0]
        if image_embeddings.shape[0] != rows:
            image_embeddings = torch.repeat_interleave(image_embeddings, rows, dim=0)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(rows, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1: (1 + self.num_mask_tokens), :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in_list: list[torch.Tensor] = []
        for i, mlp in enumerate(self.output_hypernetworks_mlps):
            hyper_in_list.append(mlp(mask_tokens_out[:, i, :]))
        hyper_in = torch.stack(hyper_in_list, dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


def build_mask_decoder(
    prompt_embed_dim: int = 256,
    *,
    adapters: bool = True,
    hyper_prompt: bool = True,
    adapter_ratio: float = 0.25,
    adapter_zero_init: bool = True,
    samda_tokens: int = 0,
) -> MedSAMaskDecoder:
    """SAM's mask decoder (hyper-parameters of every official variant) with :class:`MedSADecoderBlock` layers."""
    transformer = TwoWayTransformer(depth=0, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8)
    transformer.depth = 2
    transformer.layers = nn.ModuleList(
        MedSADecoderBlock(
            prompt_embed_dim,
            num_heads=8,
            mlp_dim=2048,
            skip_first_layer_pe=(i == 0),
            num_output_tokens=1 + 4,  # IoU token + 3 multimask tokens + 1 single-mask token
            adapters=adapters,
            hyper_prompt=hyper_prompt,
            adapter_ratio=adapter_ratio,
            adapter_zero_init=adapter_zero_init,
            samda_tokens=samda_tokens,
        )
        for i in range(2)
    )
    return MedSAMaskDecoder(
        num_multimask_outputs=3,
        transformer=transformer,
        transformer_dim=prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
