"""Data: datalists and splits, pair checks, atomic writers, the synthetic demo data set."""

from .checks import CheckImageLabeld
from .datalist import check_files, load_datalist, split_cases
from .synthetic import make_synthetic_dataset, synthetic_case
from .writers import AtomicNibabelWriter, SaveProbabilitiesd, load_probabilities, save_label_map, save_probabilities

__all__ = ["AtomicNibabelWriter", "CheckImageLabeld", "SaveProbabilitiesd", "check_files", "load_datalist",
           "load_probabilities", "make_synthetic_dataset", "save_label_map", "save_probabilities", "split_cases",
           "synthetic_case"]
