"""Data set conversion: read any supported layout and file format, check it, and write the ingested
``dataset.json``; converters for data sets published in their own layout (PH2)."""

from .ingest import ingest
from .inspection import check_dataset
from .layouts import DatasetError, read_raw_dataset
from .ph2 import convert_ph2

__all__ = ["DatasetError", "check_dataset", "convert_ph2", "ingest", "read_raw_dataset"]
