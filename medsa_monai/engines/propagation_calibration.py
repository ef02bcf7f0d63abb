"""Choose, for a trained 3D model, how much of a propagated slice's own automatic prediction enters its prompt.

Propagation (:func:`~medsa_monai.networks.propagation.propagate_prompts`) prompts each slice with its neighbour's
logits, mixed with the slice's own automatic logits by ``propagation_automatic_weight``. Whether that mix helps
depends on the model: on the training cases of both Task04 models of ``benchmarks/hippocampus_run.py`` a weight of
0.5 raised box Dice (0.714 -> 0.746, 0.754 -> 0.767), on the demo's training cases it lowered it (0.784 -> 0.726),
where the automatic mode was far weaker than the box. So, as nnU-Net decides its post-processing after training, the
bundles choose it after training: :func:`calibrate_propagation` scores each candidate weight with the box of the
CVPR 2025 protocol on some training cases (never the held-out ones) and writes the best to
``<ckpt_dir>/propagation.json``, which the bundle configs read back (:func:`calibrated_propagation_weight`).
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

__all__ = ["CALIBRATION_FILE", "CANDIDATE_WEIGHTS", "calibrate_propagation", "calibrated_propagation_weight"]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "propagation.json"
CANDIDATE_WEIGHTS = (0.0, 0.25, 0.5)


def calibrated_propagation_weight(ckpt_dir: str | Path, default: float = 0.0) -> float:
    """The ``propagation_automatic_weight`` chosen for the models in ``ckpt_dir``, or ``default`` if none was."""
    path = Path(ckpt_dir) / CALIBRATION_FILE
    if not path.is_file():
        return float(default)
    try:
        weight = float(json.loads(path.read_text())["propagation_automatic_weight"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a propagation calibration ({error}); delete it or run the bundle's "
                         f"'calibrating' again") from error
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{path}: propagation_automatic_weight {weight} does not lie in [0, 1]")
    return weight


def calibrate_propagation(network: torch.nn.Module, cases: Iterable[dict], ckpt_dir: str | Path | None = None,
                          weights: Sequence[float] = CANDIDATE_WEIGHTS, checkpoint: str | Path | None = None
                          ) -> dict | None:
    """Score each candidate ``propagation_automatic_weight`` by box Dice and keep the best.

    Args:
        network: a 3D :class:`~medsa_monai.networks.MedSA` (a 2D network or one without propagation: nothing to
            choose, ``None`` is returned and nothing written).
        cases: items with ``"image"`` ``(C, H, W, D)`` and ``"label"`` (``(1, H, W, D)`` class indices, or region
            channels), pre-processed as the interactive evaluation sees them; training cases, not held-out ones.
        ckpt_dir: where ``propagation.json`` is written (atomically); ``None`` writes nothing.
        weights: the candidates; a tie goes to the smaller weight.
        checkpoint: a ``model.pt`` or a training checkpoint (``{"model": ...}``) to load first, read with
            ``weights_only=True``; ``None`` scores the network as it is.

    Returns:
        ``{"propagation_automatic_weight": chosen, "box_dice": {weight: mean Dice}, "cases": n}``; the network is
        left with the chosen weight.
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
    was_training, previous, cache = module.training, module.propagation_automatic_weight, module.embedding_cache
    module.eval()
    if cache is None:  # each case is encoded once for all the weights (the protocol encodes at every call)
        module.embedding_cache = EmbeddingCache()
    dice: dict[float, list[float]] = {float(w): [] for w in weights}
    try:
        with torch.no_grad():
            for item in items:
                image = torch.as_tensor(item["image"])[None].to(device)
                label = torch.as_tensor(item["label"])
                reference = label_map(label) if module.background_channel else label.numpy()
                for weight in dice:
                    module.propagation_automatic_weight = weight
                    result = run_protocol(module, image, reference, num_clicks=0)
                    values = result.dice[0][np.isfinite(result.dice[0])]
                    if values.size:
                        dice[weight].append(float(values.mean()))
    finally:
        module.train(was_training)
        module.propagation_automatic_weight = previous
        module.embedding_cache = cache
    scores = {weight: float(np.mean(values)) if values else math.nan for weight, values in dice.items()}
    chosen = min(scores, key=lambda w: (-scores[w] if math.isfinite(scores[w]) else math.inf, w))
    module.propagation_automatic_weight = chosen
    found = {"propagation_automatic_weight": chosen, "box_dice": {str(w): s for w, s in scores.items()},
             "cases": len(items)}
    logger.info("propagation calibrated on %d training cases: box Dice %s -> propagation_automatic_weight %s",
                len(items), ", ".join(f"{w}: {s:.4f}" for w, s in scores.items()), chosen)
    if ckpt_dir is not None:
        atomic_write_text(Path(ckpt_dir) / CALIBRATION_FILE, json.dumps(found, indent=2) + "\n")
    return found
