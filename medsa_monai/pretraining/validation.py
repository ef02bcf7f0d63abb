"""Validation of a foundation on the held-out frames of each corpus set: Dice of a box prompt, and of automatic
mode where the structure is the whole label."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..predictor.predictor import MedSAPredictor
from ..prompts.sampling import bounding_box
from .frames import Frames
from .samples import sam_frame

__all__ = ["CorpusValidation"]

logger = logging.getLogger(__name__)


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = prediction.sum() + reference.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(prediction, reference).sum() / total)


class CorpusValidation:
    """Every ``interval`` epochs and when training ends, the Dice of each held-out (frame, structure) with its
    tight bounding box as the prompt (``box``, drawn into the mask prompt too, as training and the bundles'
    predictor do), and without prompt for sets of one structure (``automatic``), per set;
    ``engine.state.metrics["val_box_dice"]`` is the mean over sets, ``history`` keeps every validation.

    Args:
        network: the network being trained (``MedSA``; a distributed wrapper is unwrapped by the caller).
        frames: the held-out frames of each set.
        names: the sets' names.
        max_pairs: at most this many (frame, structure) pairs per set, drawn seeded once.
        batch_size: frames per forward pass.
    """

    def __init__(self, network: torch.nn.Module, frames: Sequence[Frames], names: Sequence[str], interval: int = 1,
                 max_pairs: int = 32, batch_size: int = 16, seed: int = 0) -> None:
        self.network, self.frames, self.names = network, list(frames), list(names)
        self.predictor = MedSAPredictor(network, propagation=False, dense_prompts=True)  # as training decodes
        self.interval, self.batch_size = max(1, int(interval)), int(batch_size)
        rng = np.random.RandomState(seed)
        self.pairs = []
        for frames_of_set in self.frames:
            present = np.argwhere(frames_of_set.present()) if len(frames_of_set) else np.zeros((0, 2), int)
            self.pairs.append(present[np.sort(rng.permutation(len(present))[:max_pairs])])
        self.history: list[dict] = []
        self._validated = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._last)

    def _last(self, engine: Engine) -> None:
        if self._validated != engine.state.epoch:
            self(engine)

    @torch.no_grad()
    def _dice_of(self, frames: Frames, pairs: np.ndarray, prompted: bool) -> list[float]:
        device = next(self.network.parameters()).device
        scores = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            images = torch.from_numpy(np.stack([sam_frame(frames.images[i], frames.intensity) for i, _ in chunk]))
            masks = [frames.mask(i, k) for i, k in chunk]
            boxes = None
            if prompted:
                boxes = torch.tensor(np.stack([np.concatenate(bounding_box(m)) for m in masks]),
                                     dtype=torch.float32)[:, None]
                boxes = boxes.to(device)
            logits = self.predictor(images.to(device), boxes=boxes)
            predicted = (logits.argmax(1) == 1).cpu().numpy()
            scores += [_dice(p, m) for p, m in zip(predicted, masks, strict=True)]
        return scores

    def __call__(self, engine: Engine) -> None:
        training = self.network.training
        self.network.eval()
        record: dict = {"epoch": engine.state.epoch, "iteration": engine.state.iteration, "sets": {}}
        for name, frames, pairs in zip(self.names, self.frames, self.pairs, strict=True):
            if not len(pairs):
                continue
            entry = {"pairs": len(pairs), "box_dice": float(np.mean(self._dice_of(frames, pairs, True)))}
            if frames.structures == 1:
                entry["automatic_dice"] = float(np.mean(self._dice_of(frames, pairs, False)))
            record["sets"][name] = entry
        self.network.train(training)
        box = [s["box_dice"] for s in record["sets"].values()]
        record["val_box_dice"] = float(np.mean(box)) if box else float("nan")
        engine.state.metrics["val_box_dice"] = record["val_box_dice"]
        self.history.append(record)
        self._validated = engine.state.epoch
        logger.info("epoch %d: held-out box Dice %.4f (%s)", engine.state.epoch, record["val_box_dice"],
                    ", ".join(f"{n} {s['box_dice']:.3f}" + (f" / automatic {s['automatic_dice']:.3f}"
                                                            if "automatic_dice" in s else "")
                              for n, s in record["sets"].items()))
