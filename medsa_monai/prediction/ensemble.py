"""Ensemble predictions of several folds or configurations by averaging their class probabilities."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.atomic import remove_stale_temporaries
from ..data.labels import LabelSpec
from ..data.writers import load_probabilities, save_label_map, save_probabilities
from ..planning.plan import TRAINED_PLAN, Plan

__all__ = ["ensemble_folders"]

logger = logging.getLogger(__name__)


def ensemble_folders(folders: Sequence[str | Path], output_dir: str | Path, save_probabilities_too: bool = True,
                     labels: LabelSpec | None = None) -> list[Path]:
    """Average ``<case>.npz`` probabilities over ``folders``; write the label map and, by default, the averaged
    ``<case>.npz`` to ``output_dir``.

    The label map is the argmax of the classes (or the regions above 0.5, painted in ``regions_class_order``),
    in the data set's own values when ``labels`` is given or the folders' ``plan.json`` (written by
    ``medsa predict``) gives them (else class indices), and in the format of the first
    folder's prediction of that case: ``<case>.png`` for 2D photographs, else ``<case>.nii.gz``.

    Raises:
        FileNotFoundError: for cases missing from some folder, named.
        ValueError: for probabilities of different shapes or geometry for the same case, or folders predicted
            with plans that differ in a key the models depend on (naming both folders and the key).
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
    plan = _common_plan(folders)
    if labels is None and plan is not None:
        labels = plan.label_spec  # the data set's own values, from the plan the predictions were made with
    output_dir = Path(output_dir)
    remove_stale_temporaries(output_dir)
    if plan is not None:
        plan.save(output_dir / TRAINED_PLAN)
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


def _common_plan(folders: Sequence[Path]) -> Plan | None:
    """The plan every folder's predictions were made with (their ``plan.json``); an error naming two folders and
    the first key when they differ; ``None``, with a warning, when some folder has none (an earlier version)."""
    found = {folder: folder / TRAINED_PLAN for folder in folders if (folder / TRAINED_PLAN).is_file()}
    if len(found) < len(folders):
        logger.warning("%s hold(s) no %s (predicted by an earlier version): whether all folders were predicted "
                       "with the same plan cannot be checked", ", ".join(str(f) for f in folders if f not in found),
                       TRAINED_PLAN)
    plans = {folder: Plan.load(path) for folder, path in found.items()}
    if not plans:
        return None
    (first, plan), *others = plans.items()
    for folder, other in others:
        difference = plan.first_difference(other)
        if difference is not None:
            key, mine, theirs = difference
            raise ValueError(f"'{first}' was predicted with a plan whose {key} is {json.dumps(mine)}, '{folder}' "
                             f"with {json.dumps(theirs)}: ensemble predictions of models trained with the same plan")
    return plan if len(plans) == len(folders) else None
