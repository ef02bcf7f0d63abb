"""Class-agnostic training samples of a corpus, and the sampler that weighs its data sets.

A sample is one structure (a class or a region) of one frame, as a binary target, with SAM's prompts for it:
a box, clicks, then the interactive rounds the trainer simulates. A sample may go unprompted (automatic mode) only
where its structure is the whole label (a data set of one class or region), since nothing else could say which
structure is meant; frames without foreground are samples of such sets only, unprompted, to learn to predict
nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import Randomizable

from ..networks.sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .frames import Frames

__all__ = ["corpus_entries", "CorpusSampler", "SamInputd", "sam_frame"]

_MEAN = np.asarray(SAM_PIXEL_MEAN, np.float32)[:, None, None]
_STD = np.asarray(SAM_PIXEL_STD, np.float32)[:, None, None]


def corpus_entries(frames: Sequence[Frames], empty_fraction: float = 0.25, seed: int = 0) -> list[dict]:
    """Every (set, frame, structure) with foreground, and, for sets of one structure, frames without foreground
    (structure 0, empty), at most ``empty_fraction`` of that set's frames with foreground, drawn seeded.

    Returns items ``{"set": s, "frame": i, "structure": k, "automatic": whole label}``.
    """
    rng = np.random.RandomState(seed)
    entries: list[dict] = []
    for s, set_frames in enumerate(frames):
        present = set_frames.present()
        whole = set_frames.structures == 1
        found = [{"set": s, "frame": int(i), "structure": int(k), "automatic": whole}
                 for i, k in zip(*np.nonzero(present), strict=True)]
        entries += found
        if whole:
            empty = np.flatnonzero(~present.any(1))
            keep = rng.permutation(empty)[: int(empty_fraction * len(found))]
            entries += [{"set": s, "frame": int(i), "structure": 0, "automatic": True} for i in sorted(keep)]
    return entries


def sam_frame(image: np.ndarray, intensity: str, channel: int | None = None) -> np.ndarray:
    """A frame ``(C, S, S)`` normalised by its plan -> SAM's input ``(3, S, S)``: grey repeated to three channels
    (``channel`` picks one of several), RGB as it is, then SAM's pixel mean and std for ``unit`` ([0, 1]) and
    ``uint8`` intensities, as :class:`~medsa_monai.networks.MedSA` maps them; ``zscore`` frames pass unchanged."""
    image = np.asarray(image, np.float32)
    if image.shape[0] != 3:
        image = image[[channel or 0]] if image.shape[0] > 1 else image
        image = np.repeat(image, 3, axis=0)
    if intensity == "zscore":
        return image
    scale = 255.0 if intensity == "unit" else 1.0
    return (image * scale - _MEAN) / _STD


class SamInputd(Randomizable):
    """Entry ``{"set", "frame", "structure", "automatic"}`` -> ``image (3, S, S)`` in SAM's input space and
    ``label (1, S, S)`` the structure's binary mask; a frame of neither 1 nor 3 channels gives one random channel
    (each modality seen as a grey image, as MedSAM trains on multi-sequence MRI)."""

    def __init__(self, frames: Sequence[Frames]) -> None:
        self.frames = list(frames)

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, entry: Mapping[Hashable, object]) -> dict:
        frames = self.frames[int(entry["set"])]
        index, structure = int(entry["frame"]), int(entry["structure"])
        channels = frames.images.shape[1]
        channel = int(self.R.randint(channels)) if channels not in (1, 3) else None
        image = sam_frame(frames.images[index], frames.intensity, channel)
        mask = frames.mask(index, structure)
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(mask[None].astype(np.float32)),
                "automatic": bool(entry["automatic"])}


class CorpusSampler(torch.utils.data.Sampler):
    """Draw ``num_samples`` entries per epoch, with replacement, each data set with probability proportional to its
    weight whatever its size (entries of a set equally likely); each process of a distributed run draws its own.

    Args:
        entries: from :func:`corpus_entries`.
        set_weights: one weight per data set.
        num_samples: entries per epoch (and per process).
        seed, rank: the draw of epoch ``e`` is seeded by ``(seed, e, rank)``.
    """

    def __init__(self, entries: Sequence[Mapping], set_weights: Sequence[float], num_samples: int, seed: int = 0,
                 rank: int = 0) -> None:
        sets = np.asarray([int(e["set"]) for e in entries])
        counts = np.bincount(sets, minlength=len(set_weights)).astype(float)
        weights = np.asarray(set_weights, float)
        usable = (counts > 0) & (weights > 0)
        if not usable.any():
            raise ValueError("no data set of the corpus has a sample to draw with a positive weight")
        per_set = np.where(usable, weights / np.maximum(counts, 1), 0.0)
        self.probabilities = torch.as_tensor(per_set[sets] / per_set[sets].sum(), dtype=torch.float64)
        self.num_samples, self.seed, self.rank, self.epoch = int(num_samples), int(seed), int(rank), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.rank)) % 2**63)
        self.epoch += 1
        return iter(torch.multinomial(self.probabilities, self.num_samples, True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
