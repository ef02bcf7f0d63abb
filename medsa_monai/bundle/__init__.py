"""Bundle glue: functions that bundle configs call by ``$medsa_monai.bundle.<name>(...)``."""

from .create import bundle_plan, bundle_settings, create_bundle, render_config, sync_bundle
from .distributed import RankRecorder, state_dict_sha256
from .export import default_input_shape, export_torchscript, verify_torchscript
from .large_files import fetch_large_file, large_file_entries
from .packaging import BundleIntegrityError, pack_bundle, unpack_bundle, verify_bundle
from .planned import (
    discrete_output_transforms,
    inference_output_transforms,
    intensity_augmentation,
    label_map_transforms,
    label_spec_from,
    loading_transforms,
    planned_inferer,
    spatial_augmentation,
    training_frame_padding,
    training_frame_size,
)
from .workflow import TimeBudget, default_sam_checkpoint, latest_checkpoint, prepare_training, resolve_sam_checkpoint

__all__ = [
    "BundleIntegrityError",
    "bundle_plan",
    "bundle_settings",
    "create_bundle",
    "render_config",
    "sync_bundle",
    "RankRecorder",
    "TimeBudget",
    "default_input_shape",
    "default_sam_checkpoint",
    "discrete_output_transforms",
    "export_torchscript",
    "fetch_large_file",
    "inference_output_transforms",
    "intensity_augmentation",
    "label_map_transforms",
    "label_spec_from",
    "large_file_entries",
    "loading_transforms",
    "latest_checkpoint",
    "pack_bundle",
    "planned_inferer",
    "prepare_training",
    "resolve_sam_checkpoint",
    "spatial_augmentation",
    "training_frame_padding",
    "training_frame_size",
    "state_dict_sha256",
    "unpack_bundle",
    "verify_bundle",
    "verify_torchscript",
]
