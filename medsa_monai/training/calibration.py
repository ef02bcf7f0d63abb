"""Choose, for a trained 3D model, the settings its predictor propagates prompts and confines corrections with.

Propagation (:func:`~medsa_monai.predictor.propagate_prompts`) prompts each slice with its neighbour's logits, mixed
with the slice's own automatic logits by ``propagation_automatic_weight``. Whether that mix helps depends on the
model (it helped both Task04 models and hurt the demo's, where automatic mode was far weaker than the box; the
figures are in docs/interactive.md). So, as nnU-Net decides its post-processing after training, the bundles choose
it after training: :func:`calibrate_propagation` scores each candidate weight with the box of the CVPR 2025 protocol
on some training cases (never the held-out ones) and writes the best to ``<ckpt_dir>/propagation.json``, which the
bundle configs read back (:func:`~medsa_monai.predictor.calibrated_propagation_weight`).

The same holds for how far a background click may remove in a correction (``removal_radius`` of
:func:`~medsa_monai.predictor.confine_to_clicked_regions`). With the chosen weight, each candidate radius is scored
on the same cases by Dice after five clicks in both ways a session starts: after the CVPR 2025 protocol's box, and
from clicks alone (the iterative protocol, the first click on the structure), since a radius that helps after a box
can cost far more when a first click overshoots (:func:`~medsa_monai.predictor.calibrated_removal_radius` reads it
back). Then, with that radius, how many slices beyond its own a correction reaches (``correction_depth_radius`` of
:class:`~medsa_monai.predictor.MedSAPredictor`), scored the same way
(:func:`~medsa_monai.predictor.calibrated_correction_depth`). A candidate replaces the first (the plain default)
only when it scores at least ``CALIBRATION_MARGIN`` higher: training is not bitwise repeatable, and a choice made by
less than that swung with the run (docs/demo.md).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch

from ..data.atomic import atomic_write_text
from ..evaluation.interactive_protocol import run_protocol
from ..evaluation.iterative_clicks import simulate_clicks
from ..evaluation.report import label_map
from ..predictor.calibrated import CALIBRATION_FILE
from ..predictor.embedding_cache import EmbeddingCache
from ..predictor.predictor import MedSAPredictor

__all__ = ["CALIBRATION_MARGIN", "CANDIDATE_CORRECTION_DEPTHS", "CANDIDATE_REMOVAL_RADII", "CANDIDATE_WEIGHTS",
           "calibrate_propagation", "calibration_checkpoint"]

logger = logging.getLogger(__name__)

CANDIDATE_WEIGHTS = (0.0, 0.25, 0.5)
CANDIDATE_REMOVAL_RADII = (None, 2.0)
CANDIDATE_CORRECTION_DEPTHS = (0, 2, 4)
CALIBRATION_CLICKS = 5
CALIBRATION_MARGIN = 0.005


def calibration_checkpoint(ckpt_dir: str | Path, selected: str = "model.pt") -> str | None:
    """The weights to calibrate: the selected model that ``inference.json`` loads (``<ckpt_dir>/model.pt``, the best
    validation epoch) when training saved one, else ``None`` (the network as training left it)."""
    path = Path(ckpt_dir) / selected
    return str(path) if path.is_file() else None


def _mean_dice(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _best(scores: dict, order: Sequence, margin: float = 0.0) -> object:
    """The candidate with the highest finite score; ties (and no score) go to the earliest in ``order``, and the
    first of ``order`` stays unless the best beats it by at least ``margin``."""
    best = max(order, key=lambda c: scores[c] if math.isfinite(scores[c]) else -math.inf)  # max keeps the first
    first = scores[order[0]]
    if math.isfinite(first) and not scores[best] >= first + margin:
        return order[0]
    return best


def _scores(predictor: MedSAPredictor, items: list[dict], setting: str, candidates: Sequence,
            num_clicks: int) -> dict:
    """Mean Dice over ``items`` after the protocol's box and ``num_clicks`` clicks, per candidate value of the
    predictor's ``setting`` (NaN for a candidate no case scored); with clicks, the mean of that and of Dice after
    ``num_clicks`` iterative clicks without a box."""
    device = next(predictor.network.parameters()).device
    dice: dict = {c: [] for c in candidates}
    for item in items:
        label = torch.as_tensor(item["label"])
        reference = label_map(label) if predictor.background_channel else label.numpy()
        image = torch.as_tensor(item["image"])[None].to(device)
        for candidate in candidates:
            setattr(predictor, setting, candidate)
            score = _mean_dice(run_protocol(predictor, image, reference, num_clicks=num_clicks,
                                            surface=False).dice[-1])  # the box, or after the clicks
            if score is not None and num_clicks:
                alone = _mean_dice(simulate_clicks(predictor, image, reference, num_clicks, with_box=False)
                                   .click_dice[-1])
                score = (score + alone) / 2
            if score is not None:
                dice[candidate].append(score)
    return {c: float(np.mean(v)) if v else math.nan for c, v in dice.items()}


def calibrate_propagation(predictor: MedSAPredictor, cases: Iterable[dict], ckpt_dir: str | Path | None = None,
                          weights: Sequence[float] = CANDIDATE_WEIGHTS, checkpoint: str | Path | None = None,
                          removal_radii: Sequence[float | None] = CANDIDATE_REMOVAL_RADII,
                          margin: float = CALIBRATION_MARGIN,
                          correction_depths: Sequence[int] = CANDIDATE_CORRECTION_DEPTHS) -> dict | None:
    """Score each candidate ``propagation_automatic_weight`` by box Dice and keep the best; then, with it, each
    candidate ``removal_radius`` by Dice after five clicks, after the box and without one (for a predictor that
    confines its corrections), and keep the best; then, with it, each candidate ``correction_depth_radius`` the same
    way.

    Args:
        predictor: the :class:`~medsa_monai.predictor.MedSAPredictor` of a 3D network (one without propagation, or
            of a 2D network: nothing to choose, ``None`` is returned and nothing written; likewise on every process
            but the first of a distributed run).
        cases: items with ``"image"`` ``(C, H, W, D)`` and ``"label"`` (``(1, H, W, D)`` class indices, or region
            channels), pre-processed as the interactive evaluation sees them; training cases, not held-out ones.
        ckpt_dir: where ``propagation.json`` is written (atomically); ``None`` writes nothing.
        weights: the candidates; a tie goes to the smaller weight, and the first is kept unless another beats it
            by ``margin``.
        removal_radii: the candidate radii, likewise.
        correction_depths: the candidate depths, likewise (the first should be 0: a correction on its own slice).
        margin: the gain in mean Dice a candidate needs over the first.
        checkpoint: a ``model.pt`` or a training checkpoint (``{"model": ...}``) to load into the network first,
            read with ``weights_only=True``; ``None`` scores the network as it is.

    Returns:
        ``{"propagation_automatic_weight": chosen, "box_dice": {weight: mean Dice}, "removal_radius": chosen,
        "click_dice": {radius: mean Dice after the clicks}, "correction_depth_radius": chosen, "depth_dice": {depth:
        mean Dice after the clicks}, "cases": n, "margin": margin, "checkpoint": file name or None}`` (radii
        as strings, ``"none"`` for ``None``); the predictor is left with the chosen weight, radius and depth.
    """
    network = predictor.network
    if network.spatial_dims != 3 or not predictor.propagation or idist.get_rank() != 0:
        return None
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location=next(network.parameters()).device, weights_only=True)
        network.load_state_dict(state.get("model", state))
    items = list(cases)
    if not items:
        raise ValueError("calibrate_propagation needs at least one case")
    scoring = copy.copy(predictor)  # each case is encoded once for all the candidates
    scoring.embedding_cache = predictor.embedding_cache or EmbeddingCache()
    radii = list(removal_radii) if predictor.confine_corrections else [predictor.removal_radius]
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            box_scores = _scores(scoring, items, "propagation_automatic_weight", [float(w) for w in weights], 0)
            scoring.propagation_automatic_weight = weight = _best(box_scores, sorted(box_scores), margin)
            click_scores = _scores(scoring, items, "removal_radius", radii, CALIBRATION_CLICKS) if len(
                radii) > 1 else {}
            scoring.removal_radius = radius = _best(click_scores, radii, margin) if click_scores else radii[0]
            depths = [int(d) for d in correction_depths] or [predictor.correction_depth_radius]
            depth_scores = {}
            if len(depths) > 1:  # the predictor's own depth was scored with the chosen radius already
                known = {scoring.correction_depth_radius: click_scores[radius]} if click_scores else {}
                depth_scores = {**known, **_scores(scoring, items, "correction_depth_radius",
                                                   [d for d in depths if d not in known], CALIBRATION_CLICKS)}
                depth_scores = {d: depth_scores[d] for d in depths}
    finally:
        network.train(was_training)
    depth = _best(depth_scores, depths, margin) if depth_scores else depths[0]
    predictor.propagation_automatic_weight, predictor.removal_radius = weight, radius
    predictor.correction_depth_radius = depth
    found = {"propagation_automatic_weight": weight, "box_dice": {str(w): s for w, s in box_scores.items()},
             "removal_radius": radius,
             "click_dice": {"none" if r is None else str(r): s for r, s in click_scores.items()},
             "correction_depth_radius": depth, "depth_dice": {str(d): s for d, s in depth_scores.items()},
             "cases": len(items), "margin": margin, "checkpoint": None if checkpoint is None else Path(checkpoint).name}
    logger.info("propagation calibrated on %d training cases: box Dice %s -> propagation_automatic_weight %s; "
                "Dice after %d clicks %s -> removal_radius %s; %s -> correction_depth_radius %s", len(items),
                ", ".join(f"{w}: {s:.4f}" for w, s in box_scores.items()), weight, CALIBRATION_CLICKS,
                ", ".join(f"{r}: {s:.4f}" for r, s in click_scores.items()), radius,
                ", ".join(f"{d}: {s:.4f}" for d, s in depth_scores.items()), depth)
    if ckpt_dir is not None:
        atomic_write_text(Path(ckpt_dir) / CALIBRATION_FILE, json.dumps(found, indent=2) + "\n")
    return found
