"""Bundle tooling: create a bundle from a plan, keep bundles in step with the template, pack, unpack and verify
them, fetch their large files, export their network."""

from .._deprecated import moved_names
from .create import create_bundle
from .export import default_input_shape, export_torchscript, verify_torchscript
from .large_files import fetch_large_file, large_file_entries
from .packaging import BundleIntegrityError, pack_bundle, unpack_bundle, verify_bundle
from .sync import RECORD_FILE, TEMPLATE_CONFIGS, TEMPLATE_DIR, bundle_settings, render_config, sync_bundle

__all__ = [
    "BundleIntegrityError",
    "RECORD_FILE",
    "TEMPLATE_CONFIGS",
    "TEMPLATE_DIR",
    "bundle_settings",
    "create_bundle",
    "default_input_shape",
    "export_torchscript",
    "fetch_large_file",
    "large_file_entries",
    "pack_bundle",
    "render_config",
    "sync_bundle",
    "unpack_bundle",
    "verify_bundle",
    "verify_torchscript",
]

# The runtime glue that bundle configs of medsa-monai 0.1 call as `$medsa_monai.bundle.<name>(...)`: it moved to the
# stage it belongs to; a bundle of 0.1 still runs (with a warning) until `medsa bundle sync` rewrites it.
__getattr__ = moved_names(__name__, {
    "RankRecorder": "medsa_monai.training",
    "TimeBudget": "medsa_monai.training",
    "default_sam_checkpoint": "medsa_monai.training",
    "latest_checkpoint": "medsa_monai.training",
    "prepare_training": "medsa_monai.training",
    "resolve_sam_checkpoint": "medsa_monai.training",
    "state_dict_sha256": "medsa_monai.training",
    "intensity_augmentation": "medsa_monai.preprocessing",
    "loading_transforms": "medsa_monai.preprocessing",
    "spatial_augmentation": "medsa_monai.preprocessing",
    "training_frame_padding": "medsa_monai.preprocessing",
    "training_frame_size": "medsa_monai.preprocessing",
    "planned_inferer": "medsa_monai.predictor",
    "discrete_output_transforms": "medsa_monai.prediction",
    "inference_output_transforms": "medsa_monai.prediction",
    "label_map_transforms": "medsa_monai.prediction",
}, removed={
    "bundle_plan": "the configs read the typed plan: medsa_monai.planning.Plan.for_bundle(plan_file, bundled)",
    "label_spec_from": "the plan's labels: medsa_monai.planning.Plan.for_bundle(...).label_spec",
})
