"""Evaluation: metrics per case and class, the interactive protocols (iterative clicks and NoC, CVPR 2025, the
Med-SA paper's), their reports, and the Ignite evaluator and handlers that run and write them."""

from .cup_to_disc import vcdr_errors, vertical_cup_to_disc_ratio
from .interactive_evaluator import InteractiveEvaluator
from .interactive_protocol import ProtocolResult, protocol_click, run_protocol, summarize_protocol
from .interactive_report import InteractiveReport
from .iterative_clicks import InteractiveResult, clicks_to_reach, simulate_clicks, slice_click_dice, slice_clicks
from .metrics import case_metrics, confusion_counts, dice_score, hd95, summarize
from .report import SegmentationReport

__all__ = ["InteractiveEvaluator", "InteractiveReport", "InteractiveResult", "ProtocolResult", "SegmentationReport",
           "case_metrics", "clicks_to_reach", "confusion_counts", "dice_score", "hd95", "protocol_click",
           "run_protocol", "simulate_clicks", "slice_click_dice", "slice_clicks", "summarize", "summarize_protocol",
           "vcdr_errors", "vertical_cup_to_disc_ratio"]
