"""Post-processing decided from cross-validation, as nnU-Net does: keep only the largest connected component of a
class where that improves the mean Dice of the cross-validation predictions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.atomic import remove_stale_temporaries
from ..data.io import write_json
from ..data.writers import save_label_map
from ..evaluation.folder import ENDINGS, match_cases, read_label_map
from ..evaluation.metrics import dice_score

__all__ = ["largest_component", "determine_postprocessing", "apply_postprocessing"]


def largest_component(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """``labels`` with, for each class in ``classes``, all but its largest connected component (full connectivity)
    set to background.

    MONAI's ``KeepLargestConnectedComponent`` does this but needs scikit-image, which nothing else here needs;
    ``scipy.ndimage.label`` gives the same components.
    """
    out = labels.copy()
    structure = np.ones((3,) * labels.ndim, dtype=bool)
    for value in classes:
        components, count = ndimage.label(labels == value, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != int(np.argmax(sizes)) + 1)] = 0
    return out


def determine_postprocessing(prediction_dir: str | Path, reference_dir: str | Path, labels: Mapping[int, str],
                             output: str | Path | None = None) -> dict:
    """For each class, compare the mean Dice of the predictions with and without keeping only its largest component;
    choose it where it is strictly better. Returns (and writes) ``{"largest_component_classes": [...], "classes":
    {value: {"dice_before", "dice_after", "applied"}}}``."""
    classes = [int(k) for k in labels if int(k) != 0]
    cases = []
    for _, pred_path, ref_path in match_cases(Path(prediction_dir), Path(reference_dir)):
        cases.append((read_label_map(pred_path)[0], read_label_map(ref_path)[0]))
    decisions = {}
    for value in classes:
        before = [dice_score(p == value, r == value) for p, r in cases]
        after = [dice_score(largest_component(p, [value]) == value, r == value) for p, r in cases]
        mean_before, mean_after = float(np.nanmean(before)), float(np.nanmean(after))
        applied = not math.isnan(mean_after) and mean_after > mean_before
        decisions[str(value)] = {"name": str(labels[value] if value in labels else labels[str(value)]),
                                 "dice_before": mean_before, "dice_after": mean_after, "applied": applied}
    result = {"largest_component_classes": [int(v) for v, d in decisions.items() if d["applied"]],
              "classes": decisions, "num_cases": len(cases), "source": str(prediction_dir)}
    if output is not None:
        write_json(output, result)
    return result


def apply_postprocessing(input_dir: str | Path, output_dir: str | Path, rules: str | Path | Mapping) -> list[Path]:
    """Apply the decisions of :func:`determine_postprocessing` (a dict or its JSON file) to every label map of
    ``input_dir``; write them, with their geometry, to ``output_dir``."""
    if not isinstance(rules, Mapping):
        rules = json.loads(Path(rules).read_text())
    classes = [int(v) for v in rules["largest_component_classes"]]
    output_dir = Path(output_dir)
    remove_stale_temporaries(output_dir)
    written = []
    for path in sorted(Path(input_dir).iterdir()):
        if path.name.startswith(".") or not path.name.lower().endswith(ENDINGS):
            continue
        labels, affine, _ = read_label_map(path)
        written.append(save_label_map(output_dir / path.name, largest_component(labels, classes), affine))
    return written
