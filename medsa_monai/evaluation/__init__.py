"""Metrics per case and class, their summaries, and the Ignite handler that writes them."""

from .cup_to_disc import vcdr_errors, vertical_cup_to_disc_ratio
from .interactive_protocol import ProtocolResult, run_protocol, summarize_protocol
from .metrics import case_metrics, confusion_counts, dice_score, hd95, summarize
from .report import SegmentationReport

__all__ = ["ProtocolResult", "SegmentationReport", "case_metrics", "confusion_counts", "dice_score", "hd95",
           "run_protocol", "summarize", "summarize_protocol", "vcdr_errors", "vertical_cup_to_disc_ratio"]
