"""MONAI network components built on ``segment_anything``: SAM backbones, Med-SA adapters, SD-Trans, HyP-Adpt,
SAM-DA's decoder adapter, and the MedSA network that computes with them."""

from .._deprecated import moved_names
from .adapters import Adapter, LoRA
from .architecture import Architecture, resolve_architecture
from .checkpoint import CheckpointMismatchError, read_state_dict
from .decoder import MedSADecoderBlock, MedSAMaskDecoder, build_mask_decoder
from .encoder import MedSABlock, MedSAImageEncoder
from .hyper_prompt import HyperPromptAdapter
from .medsa import MedSA
from .presets import TRAINABLE_PRESETS, ParameterCount, apply_trainable, count_parameters, parameter_group
from .prompt_mapping import SamPrompts, to_sam_prompts
from .sam import build_sam
from .variants import SAM_VARIANTS, SamVariant, get_sam_variant
from .weights import (
    BaseCheckpoint,
    BaseMismatchError,
    TrainedWeights,
    base_for_weights,
    read_weights_record,
    trained_weights,
    trained_weights_bytes,
)

__all__ = [
    "Adapter",
    "Architecture",
    "BaseCheckpoint",
    "BaseMismatchError",
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
    "SamPrompts",
    "SamVariant",
    "TRAINABLE_PRESETS",
    "TrainedWeights",
    "apply_trainable",
    "base_for_weights",
    "build_mask_decoder",
    "build_sam",
    "count_parameters",
    "get_sam_variant",
    "parameter_group",
    "read_state_dict",
    "read_weights_record",
    "resolve_architecture",
    "to_sam_prompts",
    "trained_weights",
    "trained_weights_bytes",
]

__getattr__ = moved_names(__name__, {"propagate_prompts": "medsa_monai.predictor"})
