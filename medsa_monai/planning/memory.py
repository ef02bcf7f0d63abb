"""Memory per slice of MedSA training and inference, for planning batch size and slab depth.

Training memory is dominated by the activations autograd keeps for the backward pass through the image encoder
(every block holds adapters, so every block's activations are kept, frozen or not). They are measured, not guessed:
one encoder block of the variant's width runs on one slice's token grid at ``image_size`` and the tensors it saves
for backward are counted (:func:`saved_activation_bytes`), then multiplied by the number of blocks (windowed and
global blocks separately). Mixed precision halves them. Inference keeps no activations; its peak per slice is
about the largest intermediate of a block, the MLP's ``4 x width`` hidden tokens plus the attention operands,
taken as ``12 x tokens x width`` elements. Fixed costs: fp32 weights, gradients and AdamW's two moments of the
trainable parameters, and ``1 GiB`` for the CUDA context and workspace.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ..networks.encoder import MedSABlock
from ..networks.variants import get_sam_variant

__all__ = ["saved_activation_bytes", "memory_per_slice", "MemoryEstimate"]

GIB = 1024**3
CONTEXT_BYTES = 1 * GIB
DECODER_MARGIN = 1.10  # mask decoder, neck and prompt paths: about a tenth on top of the encoder blocks


def saved_activation_bytes(module: torch.nn.Module, inputs: torch.Tensor, **kwargs) -> int:
    """Bytes of the tensors autograd saves for backward in ``module(inputs)``, each storage counted once and
    parameters left out (they are weights, not activations)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(inputs, **kwargs)
    return sum(seen.values())


@lru_cache(maxsize=64)
def _block_bytes(width: int, heads: int, window: int, grid: int, depth_attention: bool) -> int:
    """fp32 bytes saved per slice by one Med-SA block (adapters on, base frozen) on a ``grid x grid`` token grid."""
    torch.manual_seed(0)
    block = MedSABlock(width, heads, window_size=window, input_size=(grid, grid), adapters=True,
                       depth_attention=depth_attention)
    for name, p in block.named_parameters():
        p.requires_grad_("Adapter" in name or "depth_rel_pos" in name)
    slices = 2 if depth_attention else 1
    tokens = torch.randn(slices, grid, grid, width, requires_grad=True)
    return saved_activation_bytes(block, tokens, depth=slices if depth_attention else None) // slices


class MemoryEstimate(dict):
    """``train_bytes_per_slice``, ``infer_bytes_per_slice``, ``fixed_bytes`` (weights, gradients, optimizer state,
    CUDA context) and ``weights_bytes``: a dict that prints in GiB."""

    def __repr__(self) -> str:
        return ", ".join(f"{k}={v / GIB:.3f} GiB" for k, v in self.items())


def memory_per_slice(variant: str, image_size: int, spatial_dims: int = 3, amp: bool = True,
                     trainable_parameters: int | None = None, total_parameters: int | None = None,
                     depth_attention: bool | None = None) -> MemoryEstimate:
    """Training and inference bytes per slice of a MedSA network, and the fixed bytes of a training run.

    Args:
        variant: SAM variant.
        image_size: SAM input side.
        spatial_dims: the network's spatial dims.
        amp: mixed precision (activations in 16 bits).
        trainable_parameters, total_parameters: for the fixed cost; ``None`` counts a ``medsa`` network.
        depth_attention: SD-Trans's depth branch in every block; ``None``: for volumes (``spatial_dims`` 3).
            ``False`` with ``spatial_dims`` 3 is the per-slice ("2d") configuration of a volume network.
    """
    spec = get_sam_variant(variant)
    grid = image_size // spec.patch_size
    depth_attention = spatial_dims == 3 if depth_attention is None else bool(depth_attention and spatial_dims == 3)
    n_global = len(spec.global_attn_indexes)
    per_block = {
        "global": _block_bytes(spec.embed_dim, spec.num_heads, 0, grid, depth_attention),
        "window": _block_bytes(spec.embed_dim, spec.num_heads, spec.window_size, grid, depth_attention),
    }
    encoder = n_global * per_block["global"] + (spec.depth - n_global) * per_block["window"]
    scale = 0.5 if amp else 1.0
    train = int(encoder * DECODER_MARGIN * scale)
    infer = int(12 * grid * grid * spec.embed_dim * (2 if amp else 4))
    if trainable_parameters is None or total_parameters is None:
        from ..networks.medsa import MedSA
        from ..networks.presets import count_parameters

        with torch.device("meta"):
            counts = count_parameters(MedSA(spatial_dims, 1, 2, variant, image_size=image_size,
                                            depth_attention=depth_attention))
        trainable_parameters, total_parameters = counts.trainable, counts.total
    weights = 4 * total_parameters
    fixed = weights + 12 * trainable_parameters + CONTEXT_BYTES
    return MemoryEstimate(train_bytes_per_slice=train, infer_bytes_per_slice=infer, fixed_bytes=fixed,
                          weights_bytes=weights)
