"""nnU-Net-style planning: ingest a data set, fingerprint it, plan the training, make k-fold datalists."""

from .dataset_cache import make_dataset
from .fingerprint import compute_fingerprint, load_fingerprint
from .folds import assign_folds, datalist_num_folds, write_fold_datalist
from .ingest import ingest
from .inspection import check_dataset
from .layouts import DatasetError, read_raw_dataset
from .memory import memory_per_slice, saved_activation_bytes
from .normalization import PlannedNormalized
from .ph2 import convert_ph2
from .plan import (
    PLAN_VERSION,
    dataset_cache_estimate,
    load_plan,
    make_plan,
    slice_axis,
    slice_last_indices,
    target_spacing,
)

__all__ = [
    "DatasetError",
    "PLAN_VERSION",
    "PlannedNormalized",
    "assign_folds",
    "check_dataset",
    "compute_fingerprint",
    "convert_ph2",
    "datalist_num_folds",
    "dataset_cache_estimate",
    "ingest",
    "load_fingerprint",
    "load_plan",
    "make_dataset",
    "make_plan",
    "memory_per_slice",
    "read_raw_dataset",
    "saved_activation_bytes",
    "slice_axis",
    "slice_last_indices",
    "target_spacing",
    "write_fold_datalist",
]
