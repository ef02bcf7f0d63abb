"""Data: datalists and splits, pair checks, atomic writers, the synthetic demo data set."""

from .btcv import BTCV_LABELS, TOTALSEGMENTATOR_TO_BTCV, totalsegmentator_to_btcv
from .checks import CheckImageChannelsd, CheckImageLabeld
from .datalist import (
    check_files,
    find_datalist,
    has_labels,
    image_mask_pairs,
    input_datalist,
    load_datalist,
    split_cases,
)
from .labels import LabelSpec, LabelsToTargetd, TargetToLabelsd, parse_regions
from .loading import LoadImaged
from .spacing import Spacingd
from .synthetic import (
    make_synthetic_ct_dataset,
    make_synthetic_dataset,
    make_synthetic_lesion_folder,
    synthetic_case,
    synthetic_ct_case,
)
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
    "BTCV_LABELS",
    "TOTALSEGMENTATOR_TO_BTCV",
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
    "has_labels",
    "input_datalist",
    "load_datalist",
    "load_probabilities",
    "make_synthetic_ct_dataset",
    "make_synthetic_dataset",
    "make_synthetic_lesion_folder",
    "parse_regions",
    "save_label_map",
    "save_probabilities",
    "split_cases",
    "synthetic_case",
    "synthetic_ct_case",
    "totalsegmentator_to_btcv",
]
