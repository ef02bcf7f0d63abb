"""A MedSA network in use: the predictor that holds an interactive session (embedding cache, slab encoding,
propagation through a volume, confined corrections, prompts drawn as maps, clicks from MONAI Label) and the MONAI
inferers built on it."""

from .calibrated import (
    CALIBRATION_FILE,
    calibrated_correction_depth,
    calibrated_propagation_weight,
    calibrated_removal_radius,
)
from .click_guidance import AddClickGuidanced, clicks_from_request, guidance_to_points, index_mapping
from .corrections import confine_to_clicked_regions, pending_clicks
from .dense_prompts import draw_prompt_maps, with_prompt_maps
from .embedding_cache import EmbeddingCache
from .inferers import ClickAwareInferer, MirroringInferer, planned_inferer
from .onnx_predictor import OnnxPredictor
from .predictor import MedSAPredictor, unwrap_network
from .propagation import EMPTY_LOGIT, low_res_boxes, propagate_prompts
from .zoom import ZoomPredictor, ZoomSession

__all__ = [
    "AddClickGuidanced",
    "CALIBRATION_FILE",
    "ClickAwareInferer",
    "EMPTY_LOGIT",
    "EmbeddingCache",
    "MedSAPredictor",
    "MirroringInferer",
    "OnnxPredictor",
    "calibrated_correction_depth",
    "calibrated_propagation_weight",
    "calibrated_removal_radius",
    "clicks_from_request",
    "confine_to_clicked_regions",
    "draw_prompt_maps",
    "guidance_to_points",
    "index_mapping",
    "low_res_boxes",
    "pending_clicks",
    "planned_inferer",
    "propagate_prompts",
    "unwrap_network",
    "with_prompt_maps",
    "ZoomPredictor",
    "ZoomSession",
]
