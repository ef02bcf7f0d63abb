"""One boolean mask per network output, for references and predictions alike, so that the interactive protocols
treat exclusive classes and nested or overlapping regions (the optic disc {1, 2} around the cup {2}) the same way."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["reference_masks", "predicted_masks"]


def reference_masks(label: np.ndarray | torch.Tensor, outputs: int, spatial: tuple[int, ...]) -> list[np.ndarray]:
    """The reference of each output: ``label`` is a label map of the image's ``spatial`` shape (class ``k`` is
    value ``k``, ``k = 1..outputs``), a ``(1, *spatial)`` one, or ``(outputs, *spatial)`` binary region channels.

    Raises:
        ValueError: for any other shape, naming it.
    """
    label = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if label.shape == (1, *spatial):
        label = label[0]
    if label.shape == spatial:
        return [label == k + 1 for k in range(outputs)]
    if label.shape == (outputs, *spatial):
        return [label[k] > 0 for k in range(outputs)]
    raise ValueError(f"reference of shape {label.shape}: expected a label map {spatial} or {outputs} region "
                     f"channels {(outputs, *spatial)}")


def predicted_masks(predictor, low_res: torch.Tensor, spatial: tuple[int, ...],
                    present: np.ndarray | None = None) -> list[np.ndarray]:
    """Low-resolution logits ``(1, K, ...)`` of ``predictor`` -> one mask per output at ``spatial``: with a background
    channel, exclusive classes (the largest foreground logit where it beats the background's 0); without, regions,
    each output on its own (logit > 0), so nested structures overlap. Outputs not ``present`` are never predicted."""
    logits = predictor.postprocess(low_res, spatial)[0]
    foreground = (logits[1:] if predictor.background_channel else logits).float().clone()
    if present is not None:
        foreground[torch.as_tensor(~np.asarray(present, bool), device=foreground.device)] = -math.inf
    if not predictor.background_channel:
        return list((foreground > 0).cpu().numpy())
    best = foreground.max(0)
    winner = torch.where(best.values > 0, best.indices + 1, 0).cpu().numpy()
    return [winner == k + 1 for k in range(foreground.shape[0])]
