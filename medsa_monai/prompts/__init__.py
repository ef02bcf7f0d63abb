"""Simulated prompts from labels: boxes, clicks away from borders, the error click a user places next, and the
transform that prompts each training sample."""

from .._deprecated import moved_names
from .sampling import (
    bounding_box,
    error_click,
    jittered_box,
    sample_negative_clicks,
    sample_positive_clicks,
    simulated_previous_logits,
)
from .transforms import SamplePromptsd
from .zoom import RandPromptZoomd, ZoomWindow, zoom_window

__all__ = [
    "RandPromptZoomd",
    "SamplePromptsd",
    "ZoomWindow",
    "zoom_window",
    "bounding_box",
    "error_click",
    "jittered_box",
    "sample_negative_clicks",
    "sample_positive_clicks",
    "simulated_previous_logits",
]

__getattr__ = moved_names(__name__, {
    "AddClickGuidanced": "medsa_monai.predictor",
    "clicks_from_request": "medsa_monai.predictor",
    "InteractiveResult": "medsa_monai.evaluation",
    "clicks_to_reach": "medsa_monai.evaluation",
    "simulate_clicks": "medsa_monai.evaluation",
    "slice_click_dice": "medsa_monai.evaluation",
    "slice_clicks": "medsa_monai.evaluation",
}, removed={
    "next_click": "use medsa_monai.prompts.error_click(prediction, reference, connectivity=1)",
    "sample_error_click": "use medsa_monai.prompts.error_click(prediction, reference, draw=rng, power=power)",
})
