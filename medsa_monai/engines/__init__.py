"""Ignite engines beyond MONAI's: the interactive (iterative-click) evaluator and its report."""

from .interactive import InteractiveEvaluator
from .interactive_report import InteractiveReport

__all__ = ["InteractiveEvaluator", "InteractiveReport"]
