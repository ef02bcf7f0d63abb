"""Data: datalists and splits, pair checks, atomic writers, the synthetic demo data set."""

from .checks import CheckImageLabeld
from .datalist import check_files, load_datalist, split_cases
from .synthetic import make_synthetic_dataset, synthetic_case
from .writers import AtomicNibabelWriter

__all__ = ["AtomicNibabelWriter", "CheckImageLabeld", "check_files", "load_datalist", "make_synthetic_dataset",
           "split_cases", "synthetic_case"]
