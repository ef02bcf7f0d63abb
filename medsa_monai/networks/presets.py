"""Which parameters train: named presets over parameter groups, and parameter counts."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

__all__ = ["PARAMETER_GROUPS", "TRAINABLE_PRESETS", "parameter_group", "apply_trainable", "count_parameters",
           "ParameterCount"]

# Parameters that SAM does not have, recognised by a marker in their name; the first match wins.
_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the layer that maps the image's channels to SAM's three (in_channels not 1 or 3): every preset trains it
    ("input_layer", (".input_layer.",)),
    ("prompt_embeddings", (".class_prompts.", ".click_depth_embed.")),
    ("lora", (".lora_",)),
    ("depth_attention", (".Depth_Adapter.", ".depth_rel_pos")),
    ("encoder_adapters", (".Space_Adapter.", ".MLP_Adapter.")),
    ("decoder_adapters", (".hyper_prompt_adapter.", ".mlp_adapter.", ".image_adapter.")),
    ("samda_adapter", (".samda_adapter.",)),
    # SAM's own output heads of the single-mask output that MedSA uses: they train with any decoder adaptation
    ("sam_output_heads", (".mask_decoder.mask_tokens.", ".mask_decoder.output_hypernetworks_mlps.0.")),
)
_SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
PARAMETER_GROUPS: tuple[str, ...] = tuple(g for g, _ in _MARKERS) + tuple(f"sam_{p}" for p in _SAM_PARTS) + ("other",)
SAM_GROUPS = frozenset({f"sam_{p}" for p in _SAM_PARTS} | {"sam_output_heads"})

TRAINABLE_PRESETS: dict[str, frozenset[str]] = {
    # Med-SA: encoder adapters, SD-Trans, HyP-Adpt and decoder adapters, prompt embeddings, SAM's mask decoder.
    "medsa": frozenset({"encoder_adapters", "depth_attention", "decoder_adapters", "samda_adapter", "lora",
                        "prompt_embeddings", "sam_mask_decoder", "sam_output_heads", "input_layer"}),
    # Adapters and prompt embeddings only: SAM stays entirely frozen.
    "adapters_only": frozenset({"encoder_adapters", "depth_attention", "decoder_adapters", "samda_adapter", "lora",
                                "prompt_embeddings", "input_layer"}),
    # MedSAM-like: the mask decoder (and prompt embeddings) train, the image encoder is frozen.
    "decoder": frozenset({"sam_mask_decoder", "sam_output_heads", "decoder_adapters", "samda_adapter",
                          "depth_attention", "prompt_embeddings", "input_layer"}),
    # SAMed-like: LoRA on the encoder's qkv, the mask decoder and prompt embeddings.
    "lora": frozenset({"lora", "depth_attention", "prompt_embeddings", "sam_mask_decoder", "sam_output_heads",
                       "input_layer"}),
    # SAM-DA: the decoder adapter, the single-mask output heads and the class prompts; the encoder is untouched.
    "samda": frozenset({"samda_adapter", "sam_output_heads", "prompt_embeddings", "input_layer"}),
    "full": frozenset(PARAMETER_GROUPS),
}


def parameter_group(name: str) -> str:
    """The group of the parameter or buffer called ``name`` (a ``state_dict`` key); ``other`` if none fits."""
    dotted = "." + name
    for group, markers in _MARKERS:
        if any(marker in dotted for marker in markers):
            return group
    return next((f"sam_{part}" for part in _SAM_PARTS if name.startswith(part + ".")), "other")


def apply_trainable(module: nn.Module, preset: str) -> None:
    """Set ``requires_grad`` of every parameter of ``module`` by the groups of ``preset``."""
    if preset not in TRAINABLE_PRESETS:
        raise ValueError(f"unknown trainable preset {preset!r}; choose one of {sorted(TRAINABLE_PRESETS)}")
    groups = TRAINABLE_PRESETS[preset]
    for name, param in module.named_parameters():
        param.requires_grad_(parameter_group(name) in groups)


class ParameterCount(NamedTuple):
    """Parameter numbers of a module: ``total``, ``trainable`` and ``percent`` trainable."""

    total: int
    trainable: int
    percent: float


def count_parameters(module: nn.Module) -> ParameterCount:
    """Count the parameters of ``module`` and those with ``requires_grad`` (shared tensors counted once)."""
    params = {id(p): p for p in module.parameters()}.values()
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return ParameterCount(total, trainable, 100.0 * trainable / total if total else 0.0)
