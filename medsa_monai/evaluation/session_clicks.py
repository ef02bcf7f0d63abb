"""The clicks of one simulated interactive session: those placed, those the decoder is given, the boundaries moved."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SessionClicks"]


class SessionClicks:
    """The clicks a simulated user has placed on one image so far, for a predictor.

    A click next to the shown boundary of its class moves that boundary instead of being decoded where the predictor
    does so (its ``boundary_edits``, :mod:`~medsa_monai.predictor.boundary_edits`); every other click is given to the
    decoder, with all the decoded clicks before it.

    Args:
        predictor: the predictor of the session (one without ``boundary_edits`` decodes every click).
        image_shape: ``(1, C, *spatial)`` of the image.
        classes: number of outputs.
    """

    def __init__(self, predictor, image_shape: tuple[int, ...] | torch.Size, classes: int) -> None:
        make = getattr(predictor, "boundary_edits", None)
        self.edits = make(image_shape) if callable(make) else None
        self.dims = len(image_shape) - 2
        self.placed: list[list[tuple[int, np.ndarray, bool, bool]]] = [[] for _ in range(classes)]
        self.decoded: list[list[tuple[np.ndarray, bool]]] = [[] for _ in range(classes)]

    def add(self, k: int, shown: np.ndarray, click: tuple[np.ndarray, bool], number: int) -> bool:
        """Place click ``number`` ``(index, foreground)`` of class ``k`` on the prediction ``shown`` (its mask of
        class ``k``); ``True`` when it is left to the decoder, ``False`` when it moved the shown boundary."""
        moved = self.edits is not None and self.edits.take(k, shown, *click)
        self.placed[k].append((number, click[0], click[1], moved))
        if not moved:
            self.decoded[k].append(click)
        return not moved

    def prompts(self, device: torch.device | str, min_slots: int = 0
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The decoded clicks as ``points (1, K, P, dims)`` and ``labels (1, K, P)`` (-1 pads), at least ``min_slots``
        wide; ``(None, None)`` when there are none and ``min_slots`` is 0."""
        slots = max(min_slots, max(len(c) for c in self.decoded))
        if not slots:
            return None, None
        points = torch.zeros(1, len(self.decoded), slots, self.dims, device=device)
        labels = torch.full((1, len(self.decoded), slots), -1, dtype=torch.long, device=device)
        for k, class_clicks in enumerate(self.decoded):
            for i, (index, foreground) in enumerate(class_clicks):
                points[0, k, i] = torch.as_tensor(index, dtype=torch.float32)
                labels[0, k, i] = int(foreground)
        return points, labels

    def shown(self, decoded: list[np.ndarray]) -> list[np.ndarray]:
        """The ``decoded`` masks (one per class) as the session shows them: with the moved boundaries."""
        return decoded if self.edits is None else self.edits.apply(decoded)
