"""Interactive-segmentation protocol: simulated clicks on the largest error, Dice per click, NoC, box prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..prompts.sampling import bounding_box, error_click
from .metrics import dice_score
from .output_masks import predicted_masks, reference_masks
from .paper_protocols import run_paper_protocol, slice_points
from .session_clicks import SessionClicks

__all__ = ["InteractiveResult", "simulate_clicks", "clicks_to_reach", "slice_clicks", "slice_click_dice"]


@dataclass
class InteractiveResult:
    """Outcome of one simulated session on one case.

    Attributes:
        click_dice: ``(num_clicks, K)`` Dice of each class after each click (NaN for classes absent in the case).
        box_dice: ``(K,)`` Dice with the reference bounding box of each class as the only prompt, or ``None``.
        protocol: the CVPR 2025 protocol's :class:`~medsa_monai.evaluation.ProtocolResult`, or ``None``.
        slice_click_dice: ``(K,)`` Dice of Med-SA's 3D protocol (:func:`slice_click_dice`), or ``None``.
        paper: the Med-SA paper's protocols that ran, ``{name: PaperProtocolResult}``
            (:func:`~medsa_monai.evaluation.paper_protocols.run_paper_protocol`), or ``None``.
        automatic_dice: ``(K,)`` Dice of the same image decoded without any prompt, in the frame of the prompts
            (the whole pre-processed image at once, only the classes present predicted, as the prompted modes): the
            like-for-like baseline of the box and the clicks. The bundle's automatic evaluation (sliding window,
            original image space) is another frame and can differ from it by a few points.
        zoom: ``(num_clicks,)`` how much each click's window magnified the image (1: the whole image), for a
            predictor that zooms (:class:`~medsa_monai.predictor.ZoomPredictor`), else ``None``.
        clicks: per class, its clicks as ``(click number, index, foreground, moved)``: ``moved`` when the click moved
            the shown boundary (:mod:`~medsa_monai.predictor.boundary_edits`) rather than being decoded.
        masks: with ``keep_masks``, the masks shown after each click (``num_clicks`` lists of ``K`` masks).
    """

    click_dice: np.ndarray
    box_dice: np.ndarray | None
    protocol: object | None = None
    slice_click_dice: np.ndarray | None = None
    paper: dict | None = None
    automatic_dice: np.ndarray | None = None
    zoom: np.ndarray | None = None
    clicks: list | None = None
    masks: list | None = None


def clicks_to_reach(click_dice: np.ndarray, threshold: float) -> np.ndarray:
    """Number of clicks until Dice >= ``threshold`` per class (NoC); the click budget when never reached."""
    reached = click_dice >= threshold
    noc = np.where(reached.any(0), reached.argmax(0) + 1, click_dice.shape[0]).astype(float)
    noc[np.isnan(click_dice).all(0)] = math.nan
    return noc


@torch.no_grad()
def simulate_clicks(predictor, image: torch.Tensor, label: np.ndarray, num_clicks: int = 5, mask_feedback: bool = True,
                    with_box: bool = True, keep_masks: bool = False) -> InteractiveResult:
    """Simulate a user correcting ``predictor``'s prediction click by click, every class at once.

    The image embedding is computed once; each click costs one decoder pass. The image is also decoded once
    without prompts (``automatic_dice``, the baseline the prompts are compared with). Click ``t + 1`` of class
    ``k`` goes to the centre of the largest error region of class ``k`` after click ``t`` (positive in a false negative,
    negative in a false positive); the first goes to the centre of the object. With ``mask_feedback`` the previous
    low-resolution logits are given to SAM as its mask prompt. A click next to the shown boundary moves it by a voxel
    instead of being decoded where the predictor does so (``boundary_shift_radius``); a step whose every click did
    decodes nothing.

    Args:
        predictor: a :class:`~medsa_monai.predictor.MedSAPredictor` (any object with ``encode`` / ``decode`` /
            ``postprocess``, ``num_classes`` and ``background_channel``).
        image: ``(1, C, *spatial)`` pre-processed image.
        label: the reference: a ``spatial`` label map (class ``k`` is value ``k``) or ``(K, *spatial)`` region
            channels (nested or overlapping outputs, each scored on its own).
        num_clicks: clicks per class.
        mask_feedback: feed the previous prediction back as SAM's mask prompt.
        with_box: also measure Dice with the reference bounding boxes as prompts.
        keep_masks: keep the masks shown after each click (``InteractiveResult.masks``).
    """
    classes = predictor.num_classes
    spatial = tuple(image.shape[2:])
    references = reference_masks(label, classes, spatial)
    present = [bool(ref.any()) for ref in references]
    embeddings = predictor.encode(image)
    device = embeddings.device
    automatic = predicted_masks(predictor, predictor.decode(embeddings, image.shape), spatial, np.array(present))
    automatic_dice = np.array([dice_score(automatic[k], references[k]) if present[k] else math.nan
                               for k in range(classes)])

    session = SessionClicks(predictor, image.shape, classes)
    predicted = [np.zeros(spatial, dtype=bool) for _ in range(classes)]
    low_res = decoded = None
    click_dice = np.full((num_clicks, classes), math.nan)
    zoom = np.full(num_clicks, math.nan) if hasattr(predictor, "last_windows") else None
    masks = [] if keep_masks else None
    for step in range(num_clicks):
        decode = session.edits is None or decoded is None  # else only when a click is left to the decoder
        for k in range(classes):
            click = error_click(predicted[k], references[k], connectivity=1) if present[k] else None
            if click is not None and session.add(k, predicted[k], click, step + 1):
                decode = True
        if decode:
            points, labels = session.prompts(device, min_slots=1)
            low_res = predictor.decode(embeddings, image.shape, points, labels,
                                       mask_inputs=low_res if mask_feedback and step else None)
            decoded = predicted_masks(predictor, low_res, spatial)
        predicted = session.shown(decoded)
        if zoom is not None:
            zoom[step] = float(np.mean([w.factor for w in predictor.last_windows])) if decode else zoom[step - 1]
        if keep_masks:
            masks.append(predicted)
        click_dice[step] = [dice_score(predicted[k], references[k]) if present[k] else math.nan
                            for k in range(classes)]

    box_dice = None
    if with_box:
        boxes = torch.full((1, classes, 2 * len(spatial)), math.nan, device=device)
        for k in range(classes):
            if present[k]:
                low, high = bounding_box(references[k])
                boxes[0, k] = torch.as_tensor(np.concatenate([low, high]), dtype=torch.float32)
        predicted = predicted_masks(predictor, predictor.decode(embeddings, image.shape, boxes=boxes), spatial)
        box_dice = np.array([dice_score(predicted[k], references[k]) if present[k] else math.nan
                             for k in range(classes)])
    return InteractiveResult(click_dice, box_dice, automatic_dice=automatic_dice, zoom=zoom, clicks=session.placed,
                             masks=masks)


def slice_clicks(mask: np.ndarray) -> np.ndarray:
    """One positive click on every slice (last axis) of a 3D ``mask``: the centre (maximum of the distance to the
    background) of the slice's largest connected part. ``(n, 3)`` indices, one per slice holding the structure."""
    return slice_points(mask, 1, np.random.RandomState(0))


def slice_click_dice(predictor, image: torch.Tensor, label: np.ndarray) -> np.ndarray:
    """Dice of Med-SA's 3D interactive protocol: one positive click on every slice of each structure
    (:func:`slice_clicks`), all classes prompted at once (the ``"points_1"`` protocol of
    :func:`~medsa_monai.evaluation.paper_protocols.run_paper_protocol`).

    Returns ``(K,)`` Dice per class, NaN for classes absent from ``label`` (a ``(H, W, D)`` map, class ``k`` is
    value ``k``, or ``(K, H, W, D)`` region channels).
    """
    return run_paper_protocol(predictor, image, label, "points_1").dice
