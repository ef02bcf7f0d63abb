"""Which optional parts a MedSA network has, from its trainable preset and explicit choices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from .presets import TRAINABLE_PRESETS

__all__ = ["Architecture", "resolve_architecture"]

ADAPTER_INITS = ("zero", "official")


@dataclass(frozen=True)
class Architecture:
    """The optional parts of a :class:`~medsa_monai.networks.MedSA` (they define its state-dict keys).

    Attributes:
        adapters: Med-SA's encoder (Space, MLP) and decoder adapters.
        hyper_prompt: HyP-Adpt in the decoder.
        depth_attention: SD-Trans for volumes.
        lora_rank: rank of LoRA on the encoder's ``qkv`` (0: none).
        samda_tokens: learned tokens of SAM-DA's decoder adapter after each two-way block (0: none).
        adapter_ratio: bottleneck width of all adapters as a fraction of the width they adapt.
        adapter_init: ``"zero"`` (output equals SAM's until trained) or ``"official"`` (random, as Med-SA's code).
    """

    adapters: bool
    hyper_prompt: bool
    depth_attention: bool
    lora_rank: int
    samda_tokens: int = 0
    adapter_ratio: float = 0.25
    adapter_init: str = "zero"


def resolve_architecture(
    trainable: str,
    spatial_dims: int,
    depth_attention: bool | None = None,
    choices: Architecture | Mapping | None = None,
) -> Architecture:
    """The parts of a network: ``choices`` (an :class:`Architecture`, or a mapping of some of its fields), the rest
    from the preset.

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
    ``hyper_prompt`` follows ``adapters`` unless chosen; SD-Trans exists only in 3D.

    Raises:
        ValueError: an unknown preset, field or ``adapter_init``.
    """
    if trainable not in TRAINABLE_PRESETS:
        raise ValueError(f"unknown trainable preset {trainable!r}; choose one of {sorted(TRAINABLE_PRESETS)}")
    chosen = dict(vars(choices) if isinstance(choices, Architecture) else (choices or {}))
    known = {f.name for f in fields(Architecture)}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise ValueError(f"architecture has no part {', '.join(map(repr, unknown))}; its parts: {sorted(known)}")
    if depth_attention is not None:
        chosen.setdefault("depth_attention", depth_attention)
    med_sa = trainable in ("medsa", "adapters_only")
    adapters = chosen.get("adapters", med_sa)
    default = Architecture(
        adapters=adapters,
        hyper_prompt=adapters,
        depth_attention=spatial_dims == 3 and trainable not in ("decoder", "samda"),
        lora_rank=4 if trainable == "lora" else 0,
        samda_tokens=2 if trainable == "samda" else 0,
    )
    architecture = replace(default, **{k: v for k, v in chosen.items() if v is not None})
    if architecture.adapter_init not in ADAPTER_INITS:
        raise ValueError(f"adapter_init must be one of {ADAPTER_INITS}, got {architecture.adapter_init!r}")
    return replace(architecture, depth_attention=bool(architecture.depth_attention) and spatial_dims == 3)
