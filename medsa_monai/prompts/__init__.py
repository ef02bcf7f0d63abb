"""Simulated prompts: click and box sampling from labels, and the iterative-click protocol; a viewer's clicks as
click-guidance channels."""

from .guidance import AddClickGuidanced, clicks_from_request
from .interactive import InteractiveResult, clicks_to_reach, simulate_clicks, slice_click_dice, slice_clicks
from .sampling import (
    bounding_box,
    jittered_box,
    next_click,
    sample_error_click,
    sample_negative_clicks,
    sample_positive_clicks,
    simulated_previous_logits,
)
from .transforms import SamplePromptsd

__all__ = [
    "AddClickGuidanced",
    "InteractiveResult",
    "SamplePromptsd",
    "bounding_box",
    "clicks_from_request",
    "clicks_to_reach",
    "jittered_box",
    "next_click",
    "sample_error_click",
    "sample_negative_clicks",
    "sample_positive_clicks",
    "simulate_clicks",
    "slice_click_dice",
    "slice_clicks",
    "simulated_previous_logits",
]
