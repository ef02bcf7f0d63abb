"""nnU-Net-style planning: fingerprint a data set, plan the training (the typed :class:`Plan`), make k-fold
datalists, and the memory model the plan is fitted with."""

from .._deprecated import moved_names
from .fingerprint import compute_fingerprint, load_fingerprint
from .folds import assign_folds, case_identifier, datalist_num_folds, write_fold_datalist
from .memory import memory_per_slice, saved_activation_bytes
from .plan import (
    CONFIGURATIONS,
    OVERRIDABLE,
    PLAN_VERSION,
    Plan,
    PlanError,
    check_model_plan,
    load_plan,
    model_plan_file,
    record_trained_plan,
    slice_last_indices,
)
from .planner import dataset_cache_estimate, make_plan, slice_axis, target_spacing

__all__ = [
    "CONFIGURATIONS",
    "OVERRIDABLE",
    "PLAN_VERSION",
    "Plan",
    "PlanError",
    "assign_folds",
    "case_identifier",
    "check_model_plan",
    "compute_fingerprint",
    "datalist_num_folds",
    "dataset_cache_estimate",
    "load_fingerprint",
    "load_plan",
    "make_plan",
    "model_plan_file",
    "memory_per_slice",
    "record_trained_plan",
    "saved_activation_bytes",
    "slice_axis",
    "slice_last_indices",
    "target_spacing",
    "write_fold_datalist",
]

__getattr__ = moved_names(__name__, {
    "DatasetError": "medsa_monai.conversion",
    "check_dataset": "medsa_monai.conversion",
    "convert_ph2": "medsa_monai.conversion",
    "ingest": "medsa_monai.conversion",
    "read_raw_dataset": "medsa_monai.conversion",
    "PlannedNormalized": "medsa_monai.preprocessing",
    "make_dataset": "medsa_monai.preprocessing",
})
