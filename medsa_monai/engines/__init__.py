"""Ignite engines beyond MONAI's: interactive (iterative-click) evaluation and test-time adaptation."""

from .interactive import InteractiveEvaluator
from .interactive_report import InteractiveReport
from .test_time_adaptation import TestTimeAdaptation, prediction_entropy, view_augmentation

__all__ = ["InteractiveEvaluator", "InteractiveReport", "TestTimeAdaptation", "prediction_entropy",
           "view_augmentation"]
