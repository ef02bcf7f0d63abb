"""k-fold cross-validation datalists: seeded, stratified so that every fold sees every class."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.io import write_json
from ..data.writers import case_name

__all__ = ["assign_folds", "case_identifier", "write_fold_datalist", "datalist_num_folds"]


def assign_folds(classes_per_case: Sequence[Sequence[int]], num_folds: int = 5, seed: int = 0,
                 case_ids: Sequence[str] | None = None) -> list[int]:
    """A fold index for each case, balancing case counts and spreading each class over all folds.

    Classes are placed rarest first: the cases holding a class are shuffled (seeded) and each goes to the fold that
    has the fewest cases of that class, then the fewest cases overall. A class present in at least ``num_folds``
    cases thus reaches every fold. Cases without foreground are spread last.

    With ``case_ids`` the cases are taken in the sorted order of their identifiers (as nnU-Net sorts them before
    its seeded split), so the folds of a case do not depend on the order its files were listed in.
    """
    n = len(classes_per_case)
    if case_ids is not None:
        if len(case_ids) != n or len(set(case_ids)) != n:
            raise ValueError(f"case_ids must name each of the {n} cases once, got {len(case_ids)} "
                             f"({len(set(case_ids))} distinct)")
        order = sorted(range(n), key=lambda i: case_ids[i])
        sorted_folds = assign_folds([classes_per_case[i] for i in order], num_folds, seed)
        folds = [0] * n
        for position, i in enumerate(order):
            folds[i] = sorted_folds[position]
        return folds
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


def case_identifier(item: dict) -> str:
    """A training item's case identifier: its ``case`` (written by ``medsa ingest``: the case name of the source
    layout, e.g. ``benign_100`` for ``benign_100.png`` and for nnU-Net's ``benign_100_0000.png``), else the file
    name of its (first) image without the extension."""
    if item.get("case"):
        return str(item["case"])
    image = item["image"][0] if isinstance(item["image"], list) else item["image"]
    return case_name(image)


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
