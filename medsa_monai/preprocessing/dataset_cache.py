"""Where a bundle keeps its preprocessed training cases: in memory, or on disk when the plan says they do not fit.

The plan's ``dataset_cache`` (see :func:`~medsa_monai.planning.make_plan`) estimates the cached data set's size
against a memory budget; :func:`make_dataset` builds the matching MONAI data set.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import json_hashing, pickle_hashing

__all__ = ["make_dataset", "DATASET_CACHE_KINDS"]

DATASET_CACHE_KINDS = ("memory", "disk")


def _transform_hash(transforms) -> bytes:
    """A hash of the transforms with their settings (MONAI's default JSON hash falls back to their class names,
    which do not change with the plan); of the class names only for transforms that cannot be pickled."""
    try:
        return pickle_hashing(transforms)
    except (pickle.PicklingError, AttributeError, TypeError):
        return json_hashing([type(t).__name__ for t in transforms])


def make_dataset(data: Sequence, transform: Callable, kind: str = "memory", cache_dir: str | Path | None = None,
                 num_workers: int = 0) -> Dataset:
    """A MONAI data set caching the deterministic transforms' results.

    Args:
        data: the items (e.g. ``{"image": ..., "label": ...}``).
        transform: the preprocessing; random transforms still run at every access.
        kind: ``"memory"``: ``CacheDataset`` with every case cached in memory (``num_workers`` threads fill it);
            ``"disk"``: ``PersistentDataset`` writing each case to ``cache_dir`` on first access.
        cache_dir: required for ``"disk"``; created if missing. Files are keyed by the data item and a hash of the
            transforms, so a changed plan does not read stale cases.
        num_workers: threads filling the memory cache.
    """
    if kind == "memory":
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers)
    if kind == "disk":
        if cache_dir is None:
            raise ValueError("a disk dataset cache needs cache_dir (a folder for the preprocessed cases)")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # the transforms' settings (the plan's spacing, normalisation, labels...) are part of the cache key, so a
        # new plan never reads cases preprocessed for an old one
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=_transform_hash)
    raise ValueError(f"dataset cache kind must be one of {DATASET_CACHE_KINDS}, got {kind!r}")
