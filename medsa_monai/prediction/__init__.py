"""Prediction: folders of images predicted with trained bundles, the output transforms (label maps in each input's
geometry and values), ensembling, largest-component post-processing and SAM-DA's test-time adaptation."""

from .ensemble import ensemble_folders
from .outputs import discrete_output_transforms, inference_output_transforms, label_map_transforms
from .postprocessing import apply_postprocessing, determine_postprocessing
from .predict import predict_folder
from .test_time_adaptation import TestTimeAdaptation, prediction_entropy, view_augmentation

__all__ = ["TestTimeAdaptation", "apply_postprocessing", "determine_postprocessing", "discrete_output_transforms",
           "ensemble_folders", "inference_output_transforms", "label_map_transforms", "predict_folder",
           "prediction_entropy", "view_augmentation"]
