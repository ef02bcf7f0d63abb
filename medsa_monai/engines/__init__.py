"""Ignite engines beyond MONAI's: interactive (iterative-click) evaluation, model selection on prompted Dice,
calibration of prompt propagation, and test-time adaptation."""

from .interactive import InteractiveEvaluator
from .interactive_report import InteractiveReport
from .prompted_validation import PromptedValidation
from .propagation_calibration import (
    calibrate_propagation,
    calibrated_propagation_weight,
    calibrated_removal_radius,
    calibration_checkpoint,
)
from .test_time_adaptation import TestTimeAdaptation, prediction_entropy, view_augmentation

__all__ = ["InteractiveEvaluator", "InteractiveReport", "PromptedValidation", "TestTimeAdaptation",
           "calibrate_propagation", "calibrated_propagation_weight", "calibrated_removal_radius",
           "calibration_checkpoint", "prediction_entropy", "view_augmentation"]
