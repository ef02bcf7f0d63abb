"""Ensemble predictions of several folds or configurations by averaging their class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.atomic import remove_stale_temporaries
from ..data.writers import load_probabilities, save_label_map, save_probabilities

__all__ = ["ensemble_folders"]


def ensemble_folders(folders: Sequence[str | Path], output_dir: str | Path, save_probabilities_too: bool = True
                     ) -> list[Path]:
    """Average ``<case>.npz`` probabilities over ``folders``; write ``<case>.nii.gz`` (argmax) and, by default,
    the averaged ``<case>.npz`` to ``output_dir``.

    Raises:
        FileNotFoundError: for cases missing from some folder, named.
        ValueError: for probabilities of different shapes or geometry for the same case.
    """
    if len(folders) < 2:
        raise ValueError("ensembling needs at least two folders of probabilities")
    folders = [Path(f) for f in folders]
    cases = [sorted(p.stem for p in f.glob("*.npz") if not p.name.startswith(".")) for f in folders]
    if not cases[0]:
        raise FileNotFoundError(f"no probabilities (*.npz, from `medsa predict --save-probabilities`) in "
                                f"'{folders[0]}'")
    missing = {str(f): sorted(set(cases[0]) ^ set(c)) for f, c in zip(folders[1:], cases[1:], strict=True)
               if set(c) != set(cases[0])}
    if missing:
        raise FileNotFoundError(f"the folders do not hold the same cases: {missing}")
    output_dir = Path(output_dir)
    remove_stale_temporaries(output_dir)
    written = []
    for case in cases[0]:
        total, affine = None, None
        for folder in folders:
            probs, aff = load_probabilities(folder / f"{case}.npz")
            if total is None:
                total, affine = probs, aff
            elif probs.shape != total.shape or not np.allclose(aff, affine, atol=1e-4):
                raise ValueError(f"case '{case}': '{folder}' holds probabilities of shape {probs.shape}, "
                                 f"'{folders[0]}' of shape {total.shape} (or another geometry)")
            else:
                total = total + probs
        mean = total / len(folders)
        if save_probabilities_too:
            save_probabilities(output_dir / f"{case}.npz", mean, affine)
        written.append(save_label_map(output_dir / f"{case}.nii.gz", mean.argmax(0), affine))
    return written
