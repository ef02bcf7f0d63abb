"""Ensemble predictions of several folds or configurations by averaging their class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.atomic import remove_stale_temporaries
from ..data.labels import LabelSpec
from ..data.writers import load_probabilities, save_label_map, save_probabilities

__all__ = ["ensemble_folders"]


def ensemble_folders(folders: Sequence[str | Path], output_dir: str | Path, save_probabilities_too: bool = True,
                     labels: LabelSpec | None = None) -> list[Path]:
    """Average ``<case>.npz`` probabilities over ``folders``; write the label map and, by default, the averaged
    ``<case>.npz`` to ``output_dir``.

    The label map is the argmax of the classes (or the regions above 0.5, painted in ``regions_class_order``),
    in the data set's own values when ``labels`` is given (else class indices), and in the format of the first
    folder's prediction of that case: ``<case>.png`` for 2D photographs, else ``<case>.nii.gz``.

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
        written.append(save_label_map(output_dir / f"{case}{_suffix(folders[0], case)}",
                                      _label_map(mean, labels, _suffix(folders[0], case)), affine))
    return written


def _suffix(folder: Path, case: str) -> str:
    return ".png" if (folder / f"{case}.png").is_file() else ".nii.gz"


def _label_map(probabilities: np.ndarray, labels: LabelSpec | None, suffix: str) -> np.ndarray:
    """Probabilities ``(C, *spatial)`` in MONAI's axis order -> a label map; for PNG in image order (rows first)."""
    if labels is not None and labels.has_regions:
        discrete = torch.from_numpy(probabilities > 0.5)
    else:
        discrete = torch.from_numpy(probabilities.argmax(0)[None])
    result = (labels.to_label_map(discrete) if labels is not None else discrete)[0].numpy()
    return result.T if suffix == ".png" else result  # MONAI reads 2D images with the column axis first
