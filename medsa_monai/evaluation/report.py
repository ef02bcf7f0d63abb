"""Ignite handler: per-case, per-class metrics of an evaluator's predictions, saved as CSV and summary JSON."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from ..data.labels import LabelSpec
from ..data.writers import case_name as file_case_name
from .io import write_csv, write_json
from .metrics import METRICS, case_metrics, mask_metrics, summarize

__all__ = ["SegmentationReport", "class_map", "case_name", "label_map"]

logger = logging.getLogger(__name__)


def class_map(class_names: Mapping[Any, str] | Sequence[str]) -> dict[int, str]:
    """``{label value: name}`` from a mapping (keys may be strings, as in JSON) or a list for values 1, 2, ..."""
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items() if int(k) != 0}
    return {i + 1: str(name) for i, name in enumerate(class_names)}


def case_name(item: Mapping[str, Any], keys: Sequence[str] = ("label", "image", "pred")) -> str:
    """The case name (file name without extension) an output item was loaded from, from its MetaTensor meta data."""
    for key in keys:
        meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict") or {}
        if meta.get("filename_or_obj"):
            return file_case_name(meta["filename_or_obj"])
    return "case"


def label_map(tensor: torch.Tensor) -> np.ndarray:
    """``(C, *spatial)`` one-hot / probabilities (argmax over C) or ``(1, *spatial)`` labels -> ``spatial`` ints."""
    array = torch.as_tensor(tensor).detach().cpu()
    array = array.argmax(0) if array.shape[0] > 1 else array[0]
    return array.round().long().numpy()


class SegmentationReport:
    """Compute Dice, IoU, HD95 and voxel counts per case and class; write ``metrics.csv`` and ``summary.json``.

    Attach to an evaluator whose (decollated) output items hold the prediction and the reference label in the same
    space, e.g. after ``Invertd`` brought the prediction back to the original image. HD95 is in the units of the
    label's voxel spacing: millimetres for medical volumes, pixels for images without a physical spacing (PNG).
    The summary gives the mean, std and median of each metric per class, and the mean Dice and HD95 per class
    also go to ``engine.state.metrics`` (``dice_<class>``, ``hd95_<class>``).

    Args:
        output_dir: where to write; ``None`` to only compute.
        class_names: names of the foreground classes, a list for values 1, 2, ... or a ``{value: name}`` mapping.
        label_spec: the data set's labels; predictions and references are then label maps in its own values, and
            each class or region (:meth:`~medsa_monai.data.LabelSpec.output_masks`) is measured, named by
            ``class_names`` in order.
        targets: with ``label_spec``, predictions and references are in the training target's layout (class
            indices, or one binary channel per region) rather than label maps in the data set's values.
        pred_key, label_key: keys of the prediction and the reference in each output item.
    """

    def __init__(self, output_dir: str | Path | None, class_names: Mapping[Any, str] | Sequence[str],
                 pred_key: str = "pred", label_key: str = "label", label_spec: LabelSpec | None = None,
                 targets: bool = False) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.label_spec = label_spec
        self.targets = targets
        self.classes = class_map(class_names)
        self._renamed: dict[str, str] = {}
        if label_spec is not None:  # label maps in the data set's own values: measure each class or region
            names = dict(zip(label_spec.output_names, class_names, strict=True)) if len(class_names) == len(
                label_spec.output_names) else {}
            self.classes = {i + 1: names.get(n, n) for i, n in enumerate(label_spec.output_names)}
            self._renamed = names
        self.pred_key = pred_key
        self.label_key = label_key
        self.cases: list[tuple[str, dict[str, dict[str, float]]]] = []
        self.summary: dict = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def reset(self, engine: Engine | None = None) -> None:
        self.cases = []

    def collect(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list) else [output]:
            pred, label = item[self.pred_key], item.get(self.label_key)
            if label is None:  # unlabelled data (inference, test-time adaptation): nothing to measure
                continue
            spacing = getattr(label, "pixdim", None)
            spacing = [float(s) for s in spacing] if spacing is not None else [1.0] * (label.ndim - 1)
            if self.label_spec is not None and self.targets:
                pred, label = self.label_spec.to_label_map(pred), self.label_spec.to_label_map(label)
            self.cases.append((case_name(item), self._metrics(label_map(pred), label_map(label), spacing)))

    def _metrics(self, pred: np.ndarray, label: np.ndarray, spacing: list[float]) -> dict[str, dict[str, float]]:
        if self.label_spec is None:
            return case_metrics(pred, label, self.classes, spacing)
        rename = self._renamed
        return mask_metrics({rename.get(n, n): m for n, m in self.label_spec.output_masks(pred).items()},
                            {rename.get(n, n): m for n, m in self.label_spec.output_masks(label).items()}, spacing)

    def finish(self, engine: Engine) -> None:
        cases = self.cases
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, cases)
            cases = [c for part in gathered for c in part]
        if not cases:
            return
        self.summary = summarize([metrics for _, metrics in cases])
        for name in self.classes.values():
            for metric in ("dice", "hd95"):
                engine.state.metrics[f"{metric}_{name}"] = self.summary.get(name, {}).get(metric, {}).get("mean")
        if self.output_dir is None or (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            return
        rows = [[case, cls] + [values[m] for m in METRICS] for case, metrics in cases for cls, values in
                metrics.items()]
        write_csv(self.output_dir / "metrics.csv", ["case", "class", *METRICS], rows)
        write_json(self.output_dir / "summary.json", {"num_cases": len(cases), "classes": self.summary,
                                                       "cases": dict(cases)})
        for name in list(self.classes.values()) + ["mean"]:
            s = self.summary.get(name, {})
            logger.info("%s: Dice %.4f +- %.4f, HD95 %.2f (%d cases)", name, s["dice"]["mean"], s["dice"]["std"],
                        s["hd95"]["mean"], len(cases))
        logger.info("wrote %s and %s", self.output_dir / "metrics.csv", self.output_dir / "summary.json")
