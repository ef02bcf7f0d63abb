"""Preprocessing: the intensity normalisation and the transforms a plan implies, and the cached data sets."""

from .dataset_cache import make_dataset
from .normalization import PlannedNormalized
from .transforms import (
    intensity_augmentation,
    loading_transforms,
    planned_loading,
    spatial_augmentation,
    training_frame_padding,
    training_frame_size,
)

__all__ = ["PlannedNormalized", "intensity_augmentation", "loading_transforms", "make_dataset",
           "planned_loading", "spatial_augmentation", "training_frame_padding", "training_frame_size"]
