"""nnU-Net-style planning: ingest a data set, fingerprint it, plan the training, make k-fold datalists."""

from .fingerprint import compute_fingerprint, load_fingerprint
from .folds import assign_folds, write_fold_datalist
from .ingest import DatasetError, check_dataset, ingest, read_raw_dataset
from .memory import memory_per_slice, saved_activation_bytes
from .normalization import PlannedNormalized
from .ph2 import convert_ph2
from .plan import load_plan, make_plan, target_spacing

__all__ = [
    "DatasetError",
    "PlannedNormalized",
    "assign_folds",
    "check_dataset",
    "compute_fingerprint",
    "convert_ph2",
    "ingest",
    "load_fingerprint",
    "load_plan",
    "make_plan",
    "memory_per_slice",
    "read_raw_dataset",
    "saved_activation_bytes",
    "target_spacing",
    "write_fold_datalist",
]
