"""Choose, for a trained 3D model, how much of a propagated slice's own automatic prediction enters its prompt.

Propagation (:func:`~medsa_monai.networks.propagation.propagate_prompts`) prompts each slice with its neighbour's
logits, mixed with the slice's own automatic logits by ``propagation_automatic_weight``. Whether that mix helps
depends on the model: on the training cases of both Task04 models of ``benchmarks/hippocampus_run.py`` a weight of
0.5 raised box Dice (0.714 -> 0.746, 0.754 -> 0.767), on the demo's training cases it lowered it (0.784 -> 0.726),
where the automatic mode was far weaker than the box. So, as nnU-Net decides its post-processing after training, the
bundles choose it after training: :func:`calibrate_propagation` scores each candidate weight with the box of the
CVPR 2025 protocol on some training cases (never the held-out ones) and writes the best to
``<ckpt_dir>/propagation.json``, which the bundle configs read back (:func:`calibrated_propagation_weight`).

The same holds for how far a background click may remove in a correction (``removal_radius`` of
:func:`~medsa_monai.networks.click_regions.confine_to_clicked_regions`): bounded, it helped both Task04 models a
little and changed little on the demo's. With the chosen weight, each candidate radius is scored by Dice after the
protocol's five clicks on the same cases (:func:`calibrated_removal_radius` reads it back).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.atomic import atomic_write_text
from ..evaluation.interactive_protocol import run_protocol
from ..evaluation.report import label_map
from ..inferers.embedding_cache import EmbeddingCache

__all__ = ["CALIBRATION_FILE", "CANDIDATE_REMOVAL_RADII", "CANDIDATE_WEIGHTS", "calibrate_propagation",
           "calibrated_propagation_weight", "calibrated_removal_radius", "calibration_checkpoint"]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "propagation.json"
CANDIDATE_WEIGHTS = (0.0, 0.25, 0.5)
CANDIDATE_REMOVAL_RADII = (None, 2.0)
CALIBRATION_CLICKS = 5


def _read(ckpt_dir: str | Path) -> tuple[Path, dict | None]:
    path = Path(ckpt_dir) / CALIBRATION_FILE
    if not path.is_file():
        return path, None
    try:
        found = json.loads(path.read_text())
        if not isinstance(found, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a propagation calibration ({error}); delete it or run the bundle's "
                         f"'calibrating' again") from error
    return path, found


def calibration_checkpoint(ckpt_dir: str | Path, selected: str = "model.pt") -> str | None:
    """The weights to calibrate: the selected model that ``inference.json`` loads (``<ckpt_dir>/model.pt``, the best
    validation epoch) when training saved one, else ``None`` (the network as training left it)."""
    path = Path(ckpt_dir) / selected
    return str(path) if path.is_file() else None


def calibrated_propagation_weight(ckpt_dir: str | Path, default: float = 0.0) -> float:
    """The ``propagation_automatic_weight`` chosen for the models in ``ckpt_dir``, or ``default`` if none was."""
    path, found = _read(ckpt_dir)
    if found is None:
        return float(default)
    try:
        weight = float(found["propagation_automatic_weight"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a propagation calibration ({error}); delete it or run the bundle's "
                         f"'calibrating' again") from error
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{path}: propagation_automatic_weight {weight} does not lie in [0, 1]")
    return weight


def calibrated_removal_radius(ckpt_dir: str | Path, default: float | None = None) -> float | None:
    """The ``removal_radius`` chosen for the models in ``ckpt_dir``, or ``default`` if none was (no file, or a file
    written before the radius was calibrated)."""
    path, found = _read(ckpt_dir)
    if found is None or "removal_radius" not in found:
        return default
    radius = found["removal_radius"]
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0):
        raise ValueError(f"{path}: removal_radius {radius!r} is neither null nor a positive number")
    return None if radius is None else float(radius)


def _mean_dice(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _best(scores: dict, order: Sequence) -> object:
    """The candidate with the highest finite score; ties (and no score) go to the earliest in ``order``."""
    return max(order, key=lambda c: scores[c] if math.isfinite(scores[c]) else -math.inf)  # max keeps the first


def calibrate_propagation(network: torch.nn.Module, cases: Iterable[dict], ckpt_dir: str | Path | None = None,
                          weights: Sequence[float] = CANDIDATE_WEIGHTS, checkpoint: str | Path | None = None,
                          removal_radii: Sequence[float | None] = CANDIDATE_REMOVAL_RADII) -> dict | None:
    """Score each candidate ``propagation_automatic_weight`` by box Dice and keep the best; then, with it, each
    candidate ``removal_radius`` by Dice after the protocol's five clicks (for a network that confines its
    corrections), and keep the best.

    Args:
        network: a 3D :class:`~medsa_monai.networks.MedSA` (a 2D network or one without propagation: nothing to
            choose, ``None`` is returned and nothing written).
        cases: items with ``"image"`` ``(C, H, W, D)`` and ``"label"`` (``(1, H, W, D)`` class indices, or region
            channels), pre-processed as the interactive evaluation sees them; training cases, not held-out ones.
        ckpt_dir: where ``propagation.json`` is written (atomically); ``None`` writes nothing.
        weights: the candidates; a tie goes to the smaller weight.
        removal_radii: the candidate radii; a tie goes to the earlier one.
        checkpoint: a ``model.pt`` or a training checkpoint (``{"model": ...}``) to load first, read with
            ``weights_only=True``; ``None`` scores the network as it is.

    Returns:
        ``{"propagation_automatic_weight": chosen, "box_dice": {weight: mean Dice}, "removal_radius": chosen,
        "click_dice": {radius: mean Dice after the clicks}, "cases": n, "checkpoint": file name or None}`` (radii
        as strings, ``"none"`` for ``None``); the network is left with the chosen weight and radius.
    """
    module = getattr(network, "module", network)
    if getattr(module, "spatial_dims", 2) != 3 or not getattr(module, "prompt_propagation", False):
        return None
    device = next(module.parameters()).device
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        module.load_state_dict(state.get("model", state))
    items = list(cases)
    if not items:
        raise ValueError("calibrate_propagation needs at least one case")
    was_training, cache = module.training, module.embedding_cache
    previous = module.propagation_automatic_weight, module.removal_radius
    radii = list(removal_radii) if module.confine_corrections else [module.removal_radius]
    module.eval()
    if cache is None:  # each case is encoded once for all the candidates (the protocol encodes at every call)
        module.embedding_cache = EmbeddingCache()
    box_dice: dict[float, list[float]] = {float(w): [] for w in weights}
    click_dice: dict[float | None, list[float]] = {r: [] for r in radii}

    def protocol(item: dict, num_clicks: int) -> np.ndarray:
        label = torch.as_tensor(item["label"])
        reference = label_map(label) if module.background_channel else label.numpy()
        return run_protocol(module, torch.as_tensor(item["image"])[None].to(device), reference,
                            num_clicks=num_clicks, surface=False).dice[-1]  # the box, or after the clicks

    try:
        with torch.no_grad():
            for item in items:
                for weight in box_dice:
                    module.propagation_automatic_weight = weight
                    score = _mean_dice(protocol(item, 0))
                    if score is not None:
                        box_dice[weight].append(score)
            box_scores = {w: float(np.mean(v)) if v else math.nan for w, v in box_dice.items()}
            weight = _best(box_scores, sorted(box_scores))
            module.propagation_automatic_weight = weight
            if len(radii) > 1:  # the embeddings of the cases are still in the cache, unless it is full
                for item in items:
                    for radius in radii:
                        module.removal_radius = radius
                        score = _mean_dice(protocol(item, CALIBRATION_CLICKS))
                        if score is not None:
                            click_dice[radius].append(score)
    finally:
        module.train(was_training)
        module.propagation_automatic_weight, module.removal_radius = previous
        module.embedding_cache = cache
    click_scores = {r: float(np.mean(v)) if v else math.nan for r, v in click_dice.items()} if len(radii) > 1 else {}
    radius = _best(click_scores, radii) if click_scores else radii[0]
    module.propagation_automatic_weight, module.removal_radius = weight, radius
    found = {"propagation_automatic_weight": weight, "box_dice": {str(w): s for w, s in box_scores.items()},
             "removal_radius": radius,
             "click_dice": {"none" if r is None else str(r): s for r, s in click_scores.items()}, "cases": len(items),
             "checkpoint": None if checkpoint is None else Path(checkpoint).name}
    logger.info("propagation calibrated on %d training cases: box Dice %s -> propagation_automatic_weight %s; "
                "Dice after %d clicks %s -> removal_radius %s", len(items),
                ", ".join(f"{w}: {s:.4f}" for w, s in box_scores.items()), weight, CALIBRATION_CLICKS,
                ", ".join(f"{r}: {s:.4f}" for r, s in click_scores.items()), radius)
    if ckpt_dir is not None:
        atomic_write_text(Path(ckpt_dir) / CALIBRATION_FILE, json.dumps(found, indent=2) + "\n")
    return found
