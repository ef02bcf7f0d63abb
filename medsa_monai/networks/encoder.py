"""Med-SA's image encoder: SAM's ViT with Space / MLP adapters, optional LoRA, and SD-Trans depth attention."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from torch import nn
from torch.utils.checkpoint import checkpoint

from .adapters import Adapter, LoRA
from .attention import gather_relative_table, relative_position_attention
from .sam import check_image_size, encoder_kwargs
from .variants import SamVariant

__all__ = ["MedSABlock", "MedSAImageEncoder"]


class MedSABlock(Block):
    """A SAM ViT block with Med-SA's adapters and SD-Trans (space-depth transpose) for volumes.

    Computation, for tokens ``x`` of shape ``(B * D, H, W, C)`` (``D`` slices per volume, ``D = 1`` in 2D)::

        n      = norm1(x)
        s      = Space_Adapter(attn(n))                    # SAM's (windowed) attention, adapter with skip
        s     += Depth_Adapter(depth_attn(n))              # SD-Trans, only when ``depth`` is given
        x      = x + s
        x      = x + mlp(norm2(x)) + 0.5 * MLP_Adapter(norm2(x))

    SD-Trans transposes the token grid so that each spatial token attends along the slices of its volume,
    through the block's own frozen ``qkv`` / ``proj`` weights (one ``qkv`` projection serves both branches). It works
    on the un-windowed grid, so windowed blocks do not mix windows with slices, and accepts any number of slices.
    Depth position information: a relative-position bias along depth, ``q . R[d_q - d_k]``, where ``R`` is the
    block's frozen SAM table ``rel_pos_h`` (SAM's learnt embedding of "k tokens apart" reused for "k slices apart")
    plus a trainable, zero-initialised correction ``depth_rel_pos``; offsets beyond the table reuse its ends.

    With zero-initialised adapters (the default) the block's output equals SAM's ``Block`` output exactly.

    Args:
        dim, num_heads, mlp_ratio, norm_layer, window_size, input_size: as ``segment_anything``'s ``Block``.
        adapters: add the Space and MLP adapters.
        depth_attention: add the SD-Trans branch (``Depth_Adapter`` and ``depth_rel_pos``).
        adapter_ratio: bottleneck width of the adapters as a fraction of ``dim``.
        adapter_zero_init: zero-initialise the adapters' up-projections (see :class:`Adapter`).
        lora_rank: rank of a LoRA update of ``attn.qkv``; 0 for none.
        mlp_adapter_scale: weight of the MLP adapter's branch (Med-SA: 0.5).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        *,
        adapters: bool = True,
        depth_attention: bool = False,
        adapter_ratio: float = 0.25,
        adapter_zero_init: bool = True,
        lora_rank: int = 0,
        mlp_adapter_scale: float = 0.5,
    ) -> None:
        super().__init__(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer,
                         act_layer=nn.GELU, use_rel_pos=True, window_size=window_size, input_size=input_size)
        adapter = partial(Adapter, dim, adapter_ratio, zero_init=adapter_zero_init)
        self.Space_Adapter = adapter(skip=True) if adapters else None
        self.MLP_Adapter = adapter(skip=False) if adapters else None
        self.Depth_Adapter = adapter(skip=False) if depth_attention else None
        self.depth_rel_pos = nn.Parameter(torch.zeros_like(self.attn.rel_pos_h)) if depth_attention else None
        self.lora_qkv = LoRA(dim, 3 * dim, lora_rank) if lora_rank else None
        self.mlp_adapter_scale = mlp_adapter_scale

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Tokens ``(B * D, H, W, C)`` -> same shape; ``depth`` is ``D`` for volumes, ``None`` for 2D images."""
        shortcut = x
        _, h, w, _ = x.shape
        normed = self.norm1(x)
        if self.window_size > 0:
            # SAM pads the normalised tokens to whole windows; the padded tokens still take part as keys.
            pad_h, pad_w = (-h) % self.window_size, (-w) % self.window_size
            normed = F.pad(normed, (0, 0, 0, pad_w, 0, pad_h))
        qkv = self.attn.qkv(normed)
        if self.lora_qkv is not None:
            qkv = qkv + self.lora_qkv(normed)

        if self.window_size > 0:
            windows, padded_hw = window_partition(qkv, self.window_size)
            out = window_unpartition(self._spatial_attention(windows), self.window_size, padded_hw, (h, w))
        else:
            out = self._spatial_attention(qkv)
        if self.Space_Adapter is not None:
            out = self.Space_Adapter(out)
        if depth is not None and self.Depth_Adapter is not None:
            out = out + self._depth_attention(qkv[:, :h, :w], depth)

        x = shortcut + out
        normed = self.norm2(x)
        out = x + self.mlp(normed)
        if self.MLP_Adapter is not None:
            out = out + self.mlp_adapter_scale * self.MLP_Adapter(normed)
        return out

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(n, L, 3 C)`` -> q, k, v of ``(n, heads, L, C / heads)``."""
        n, length, _ = qkv.shape
        q_k_v = qkv.reshape(n, length, 3, self.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        return q_k_v[0], q_k_v[1], q_k_v[2]

    def _spatial_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """SAM's attention over each ``(h, w)`` grid of ``qkv (n, h, w, 3 C)``, projected: ``(n, h, w, C)``."""
        n, h, w, _ = qkv.shape
        q, k, v = self._split_heads(qkv.reshape(n, h * w, -1))
        tables = [get_rel_pos(h, h, self.attn.rel_pos_h), get_rel_pos(w, w, self.attn.rel_pos_w)]
        out = relative_position_attention(q, k, v, [h, w], tables)
        return self.attn.proj(out.transpose(1, 2).reshape(n, h, w, -1))

    def _depth_attention(self, qkv: torch.Tensor, depth: int) -> torch.Tensor:
        """SD-Trans: every spatial token of ``qkv (B * D, H, W, 3 C)`` attends along its ``D`` slices."""
        bd, h, w, c3 = qkv.shape
        if bd % depth:
            raise ValueError(f"{bd} slices cannot be split into volumes of depth {depth}")
        tokens = qkv.reshape(bd // depth, depth, h * w, c3).transpose(1, 2)  # (B, H*W, D, 3C)
        q, k, v = self._split_heads(tokens.reshape(-1, depth, c3))
        table = gather_relative_table(self.attn.rel_pos_h + self.depth_rel_pos, depth)
        out = relative_position_attention(q, k, v, [depth], [table])  # (B*H*W, heads, D, C/heads)
        out = out.transpose(1, 2).reshape(bd // depth, h * w, depth, -1).transpose(1, 2)
        return self.Depth_Adapter(self.attn.proj(out.reshape(bd, h, w, -1)))


class MedSAImageEncoder(ImageEncoderViT):
    """SAM's ViT image encoder made of :class:`MedSABlock` blocks; state-dict keys are SAM's (plus the adapters').

    Args:
        variant: the SAM backbone's hyper-parameters.
        image_size: input side in pixels, a multiple of the patch size.
        adapters, depth_attention, adapter_ratio, adapter_zero_init, lora_rank: see :class:`MedSABlock`.
        gradient_checkpointing: recompute each block's activations in the backward pass instead of storing them
            (less memory when training adapters through the frozen encoder, about 30% more compute).

    Shapes:
        ``(B * D, 3, image_size, image_size)`` -> ``(B * D, E, image_size / 16, image_size / 16)``, ``E`` the
        variant's ``prompt_embed_dim`` (SAM's 256).
    """

    def __init__(
        self,
        variant: SamVariant,
        image_size: int = 1024,
        *,
        adapters: bool = True,
        depth_attention: bool = False,
        adapter_ratio: float = 0.25,
        adapter_zero_init: bool = True,
        lora_rank: int = 0,
        gradient_checkpointing: bool = False,
    ) -> None:
        grid = check_image_size(image_size, variant)
        kwargs = encoder_kwargs(variant, image_size)
        super().__init__(**{**kwargs, "depth": 0})  # patch embedding, position embedding and neck as SAM's
        self.blocks = nn.ModuleList(
            MedSABlock(
                dim=variant.embed_dim,
                num_heads=variant.num_heads,
                mlp_ratio=kwargs["mlp_ratio"],
                norm_layer=kwargs["norm_layer"],
                window_size=0 if i in variant.global_attn_indexes else variant.window_size,
                input_size=(grid, grid),
                adapters=adapters,
                depth_attention=depth_attention,
                adapter_ratio=adapter_ratio,
                adapter_zero_init=adapter_zero_init,
                lora_rank=lora_rank,
            )
            for i in range(variant.depth)
        )
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Images ``(B * D, 3, S, S)`` (SAM-normalised) -> embeddings ``(B * D, E, S / 16, S / 16)``.

        ``depth`` is the number of consecutive slices that form one volume (SD-Trans), ``None`` for 2D images.
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            if not torch.jit.is_scripting() and self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, depth, use_reentrant=False)
            else:
                x = block(x, depth)
        return self.neck(x.permute(0, 3, 1, 2))
