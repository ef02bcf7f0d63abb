"""Ignite engines beyond MONAI's: interactive (iterative-click) evaluation, model selection on prompted Dice, and
test-time adaptation."""

from .interactive import InteractiveEvaluator
from .interactive_report import InteractiveReport
from .prompted_validation import PromptedValidation
from .test_time_adaptation import TestTimeAdaptation, prediction_entropy, view_augmentation

__all__ = ["InteractiveEvaluator", "InteractiveReport", "PromptedValidation", "TestTimeAdaptation",
           "prediction_entropy", "view_augmentation"]
