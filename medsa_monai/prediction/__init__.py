"""Prediction of folders with trained bundles, and ensembling."""

from .ensemble import ensemble_folders
from .predict import predict_folder

__all__ = ["ensemble_folders", "predict_folder"]
