"""Metrics per case and class, their summaries, and the Ignite handler that writes them."""

from .metrics import case_metrics, confusion_counts, dice_score, hd95, summarize
from .report import SegmentationReport

__all__ = ["SegmentationReport", "case_metrics", "confusion_counts", "dice_score", "hd95", "summarize"]
