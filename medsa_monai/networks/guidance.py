"""Click-guidance channels -> SAM point prompts.

MONAI Label's bundle infer task calls ``inferer(image, network)`` with nothing but the image, as MONAI's inferers
do. To get a viewer's clicks to a promptable network through that call, the DeepEdit convention appends them to the
image as extra channels (:class:`medsa_monai.prompts.AddClickGuidanced` writes them); :class:`MedSA` with
``click_guidance=True`` reads them back here as point prompts. The clicks travel with the image through
``SlidingWindowInferer`` too: a window's guidance channels hold the clicks inside that window, at window indices.
"""

from __future__ import annotations

import torch

__all__ = ["guidance_to_points"]


def guidance_to_points(guidance: torch.Tensor, threshold: float = 0.5
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Click-guidance channels -> ``points (B, K, P, dims)`` and ``point_labels (B, K, P)`` for :class:`MedSA`.

    Args:
        guidance: ``(B, 1 + K, *spatial)``: channel 0 holds the background clicks, channel ``k`` the clicks of
            class ``k``; a click is a voxel above ``threshold`` (the transform writes 1 at each click, 0 elsewhere).
        threshold: the value above which a voxel is a click.

    A class with at least one click of its own gets its clicks as positive points and the background clicks as
    negative points. A class without a click of its own gets only padding (-1) and stays in automatic mode (its
    learned prompt), so a background click refines the classes that were clicked and leaves the others alone.
    Returns ``(None, None)`` when no class has a click (then the network runs in automatic mode).
    """
    if guidance.ndim < 4:
        raise ValueError(f"guidance must be (B, 1 + K, *spatial), got shape {tuple(guidance.shape)}")
    batch, channels = guidance.shape[:2]
    dims = guidance.ndim - 2
    clicked = guidance > threshold
    per_case: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    width = 0
    for b in range(batch):
        negatives = torch.nonzero(clicked[b, 0]).float()
        classes = []
        for k in range(1, channels):
            positives = torch.nonzero(clicked[b, k]).float()
            if len(positives):
                coords = torch.cat([positives, negatives])
                labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).long()
            else:
                coords, labels = positives, torch.zeros(0, dtype=torch.long)
            classes.append((coords, labels.to(guidance.device)))
            width = max(width, len(labels))
        per_case.append(classes)
    if not width:
        return None, None
    points = torch.zeros(batch, channels - 1, width, dims, device=guidance.device)
    point_labels = torch.full((batch, channels - 1, width), -1, dtype=torch.long, device=guidance.device)
    for b, classes in enumerate(per_case):
        for k, (coords, labels) in enumerate(classes):
            points[b, k, : len(labels)] = coords
            point_labels[b, k, : len(labels)] = labels
    return points, point_labels
