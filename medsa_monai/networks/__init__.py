"""MONAI network components built on ``segment_anything``: SAM backbones, Med-SA adapters, SD-Trans, HyP-Adpt."""

from .adapters import Adapter, LoRA
from .checkpoint import CheckpointMismatchError, read_state_dict
from .decoder import MedSADecoderBlock, MedSAMaskDecoder, build_mask_decoder
from .encoder import MedSABlock, MedSAImageEncoder
from .hyper_prompt import HyperPromptAdapter
from .medsa import MedSA, resolve_architecture
from .presets import TRAINABLE_PRESETS, ParameterCount, apply_trainable, count_parameters, parameter_group
from .propagation import propagate_prompts
from .sam import build_sam
from .variants import SAM_VARIANTS, SamVariant, get_sam_variant

__all__ = [
    "Adapter",
    "CheckpointMismatchError",
    "HyperPromptAdapter",
    "LoRA",
    "MedSA",
    "MedSABlock",
    "MedSADecoderBlock",
    "MedSAImageEncoder",
    "MedSAMaskDecoder",
    "ParameterCount",
    "SAM_VARIANTS",
    "SamVariant",
    "TRAINABLE_PRESETS",
    "apply_trainable",
    "build_mask_decoder",
    "build_sam",
    "count_parameters",
    "get_sam_variant",
    "parameter_group",
    "propagate_prompts",
    "read_state_dict",
    "resolve_architecture",
]
