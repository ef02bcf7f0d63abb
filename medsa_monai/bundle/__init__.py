"""Bundle glue: functions that bundle configs call by ``$medsa_monai.bundle.<name>(...)``."""

from .distributed import RankRecorder, state_dict_sha256
from .export import default_input_shape, export_torchscript, verify_torchscript
from .large_files import fetch_large_file, large_file_entries
from .packaging import BundleIntegrityError, pack_bundle, unpack_bundle, verify_bundle
from .workflow import TimeBudget, default_sam_checkpoint, latest_checkpoint, prepare_training, resolve_sam_checkpoint

__all__ = [
    "BundleIntegrityError",
    "RankRecorder",
    "TimeBudget",
    "default_input_shape",
    "default_sam_checkpoint",
    "export_torchscript",
    "fetch_large_file",
    "large_file_entries",
    "latest_checkpoint",
    "pack_bundle",
    "prepare_training",
    "resolve_sam_checkpoint",
    "state_dict_sha256",
    "unpack_bundle",
    "verify_bundle",
    "verify_torchscript",
]
