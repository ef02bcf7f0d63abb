"""k-fold cross-validation datalists: seeded, stratified so that every fold sees every class."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.io import write_json

__all__ = ["assign_folds", "write_fold_datalist", "datalist_num_folds"]


def assign_folds(classes_per_case: Sequence[Sequence[int]], num_folds: int = 5, seed: int = 0) -> list[int]:
    """A fold index for each case, balancing case counts and spreading each class over all folds.

    Classes are placed rarest first: the cases holding a class are shuffled (seeded) and each goes to the fold that
    has the fewest cases of that class, then the fewest cases overall. A class present in at least ``num_folds``
    cases thus reaches every fold. Cases without foreground are spread last.
    """
    n = len(classes_per_case)
    if num_folds < 2 or num_folds > n:
        raise ValueError(f"need 2 <= num_folds <= number of cases ({n}), got {num_folds}")
    rng = np.random.RandomState(seed)
    folds = [-1] * n
    sizes = np.zeros(num_folds, dtype=int)
    classes = sorted({c for cs in classes_per_case for c in cs if c != 0},
                     key=lambda c: (sum(c in cs for cs in classes_per_case), c))
    per_class = {c: np.zeros(num_folds, dtype=int) for c in classes}
    for c in classes:
        holders = [i for i in rng.permutation(n) if c in classes_per_case[i]]
        for i in holders:
            if folds[i] >= 0:
                continue
            fold = min(range(num_folds), key=lambda f: (per_class[c][f], sizes[f], f))
            folds[i] = fold
            sizes[fold] += 1
            for other in classes_per_case[i]:
                if other in per_class:
                    per_class[other][fold] += 1
    for i in rng.permutation(n):
        if folds[i] < 0:
            fold = int(np.argmin(sizes))
            folds[i] = fold
            sizes[fold] += 1
    return folds


def write_fold_datalist(path: str | Path, training: Sequence[dict], folds: Sequence[int], test: Sequence = (),
                        **extra) -> Path:
    """Write a decathlon-format datalist: ``training`` items with a ``fold`` key, ``validation``, ``test``.

    Read it with ``monai.data.load_decathlon_datalist`` (or ``medsa_monai.data.load_datalist``); the bundles pick a
    fold's validation cases with ``--fold``.
    """
    items = [dict(item, fold=int(fold)) for item, fold in zip(training, folds, strict=True)]
    return write_json(path, {**extra, "training": items, "validation": [], "test": list(test)})


def datalist_num_folds(path: str | Path) -> int | None:
    """The folds of a datalist: its ``num_folds`` (written by :func:`write_fold_datalist` through ``medsa plan``),
    else the number of distinct ``fold`` values of its ``training`` items; ``None`` for a datalist without folds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist '{path}' does not exist")
    data = json.loads(path.read_text())
    if data.get("num_folds") is not None:
        return int(data["num_folds"])
    folds = {int(item["fold"]) for item in data.get("training", []) if isinstance(item, dict) and "fold" in item}
    return len(folds) or None
