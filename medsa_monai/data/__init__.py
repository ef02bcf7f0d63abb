"""Data: datalists and splits, pair checks, atomic writers, the synthetic demo data set."""

from .checks import CheckImageChannelsd, CheckImageLabeld
from .datalist import check_files, find_datalist, image_mask_pairs, load_datalist, split_cases
from .labels import LabelSpec, LabelsToTargetd, TargetToLabelsd, parse_regions
from .loading import LoadImaged
from .spacing import Spacingd
from .synthetic import make_synthetic_dataset, make_synthetic_lesion_folder, synthetic_case
from .writers import (
    AtomicNibabelWriter,
    AtomicPILWriter,
    SaveLabelMapd,
    SaveProbabilitiesd,
    load_probabilities,
    save_label_map,
    save_probabilities,
)

__all__ = [
    "AtomicNibabelWriter",
    "AtomicPILWriter",
    "CheckImageChannelsd",
    "CheckImageLabeld",
    "LabelSpec",
    "LoadImaged",
    "LabelsToTargetd",
    "SaveLabelMapd",
    "SaveProbabilitiesd",
    "TargetToLabelsd",
    "Spacingd",
    "check_files",
    "image_mask_pairs",
    "find_datalist",
    "load_datalist",
    "load_probabilities",
    "make_synthetic_dataset",
    "make_synthetic_lesion_folder",
    "parse_regions",
    "save_label_map",
    "save_probabilities",
    "split_cases",
    "synthetic_case",
]
