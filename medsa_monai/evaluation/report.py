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

from ..data.io import write_csv, write_json
from ..data.labels import LabelSpec
from ..data.writers import case_name as file_case_name
from .cup_to_disc import VCDR_COLUMNS, case_vcdr, cup_to_disc_outputs, summarize_vcdr
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
        cup_to_disc: the names of the optic disc and cup outputs (among the class names) to also measure the
            vertical cup-to-disc ratio of 2D fundus images (:func:`~.cup_to_disc.vertical_cup_to_disc_ratio`; their
            second spatial axis, MONAI's y, is the vertical one): each row of ``metrics.csv`` then has the case's
            ``vCDR``, ``vCDR_reference`` and ``vCDR_abs_error``, and ``summary.json`` its ``"vcdr"`` mean absolute
            error (``mae``, ``std``, ``count``; ``skipped``: cases with an empty disc). With classes rather than
            regions, the whole disc is the union of the disc (rim) and cup classes.

    Raises:
        ValueError: for ``cup_to_disc`` names that are not among the class names; when collecting, for 3D data.
    """

    def __init__(self, output_dir: str | Path | None, class_names: Mapping[Any, str] | Sequence[str],
                 pred_key: str = "pred", label_key: str = "label", label_spec: LabelSpec | None = None,
                 targets: bool = False, cup_to_disc: Sequence[str] | None = None) -> None:
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
        self.cup_to_disc = cup_to_disc_outputs(cup_to_disc, list(self.classes.values())) if cup_to_disc else None
        self.vcdr: list[dict[str, float]] = []
        self.vcdr_summary: dict = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def reset(self, engine: Engine | None = None) -> None:
        self.cases = []
        self.vcdr = []

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
            pred, label, name = label_map(pred), label_map(label), case_name(item)
            vcdr = self._vcdr(name, pred, label) if self.cup_to_disc is not None else None
            self.cases.append((name, self._metrics(pred, label, spacing)))
            if vcdr is not None:
                self.vcdr.append(vcdr)

    def _masks(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """``{class or region name: boolean mask}`` of a label map."""
        if self.label_spec is None:
            return {name: labels == value for value, name in self.classes.items()}
        return {self._renamed.get(n, n): m for n, m in self.label_spec.output_masks(labels).items()}

    def _metrics(self, pred: np.ndarray, label: np.ndarray, spacing: list[float]) -> dict[str, dict[str, float]]:
        if self.label_spec is None:
            return case_metrics(pred, label, self.classes, spacing)
        return mask_metrics(self._masks(pred), self._masks(label), spacing)

    def _vcdr(self, case: str, pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
        exclusive = self.label_spec is None or not self.label_spec.has_regions
        try:
            return case_vcdr(self._masks(pred), self._masks(label), self.cup_to_disc, rows_axis=1,
                             exclusive=exclusive)
        except ValueError as err:
            raise ValueError(f"case '{case}': {err}") from None

    @staticmethod
    def _gathered(items: list) -> list:
        """``items`` of every process, in rank order, when running distributed."""
        if not (dist.is_available() and dist.is_initialized()):
            return items
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, items)
        return [c for part in gathered for c in part]

    def finish(self, engine: Engine) -> None:
        cases = self._gathered(self.cases)
        vcdr = self._gathered(self.vcdr) if self.cup_to_disc is not None else []
        if not cases:
            return
        self.summary = summarize([metrics for _, metrics in cases])
        for name in self.classes.values():
            for metric in ("dice", "hd95"):
                engine.state.metrics[f"{metric}_{name}"] = self.summary.get(name, {}).get(metric, {}).get("mean")
        if vcdr:
            self.vcdr_summary = summarize_vcdr(vcdr)
            engine.state.metrics["vcdr_mae"] = self.vcdr_summary["mae"]
        if self.output_dir is None or (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            return
        self._write(cases, vcdr)
        for name in list(self.classes.values()) + ["mean"]:
            s = self.summary.get(name, {})
            logger.info("%s: Dice %.4f +- %.4f, HD95 %.2f (%d cases)", name, s["dice"]["mean"], s["dice"]["std"],
                        s["hd95"]["mean"], len(cases))
        if vcdr:
            logger.info("vCDR: MAE %.4f +- %.4f (%d cases)", self.vcdr_summary["mae"], self.vcdr_summary["std"],
                        self.vcdr_summary["count"])
        logger.info("wrote %s and %s", self.output_dir / "metrics.csv", self.output_dir / "summary.json")

    def _write(self, cases: list[tuple[str, dict[str, dict[str, float]]]], vcdr: list[dict[str, float]]) -> None:
        """``metrics.csv`` (a row per case and class, the case's vCDR columns with ``cup_to_disc``) and
        ``summary.json``."""
        extra = [[v[c] for c in VCDR_COLUMNS] for v in vcdr] or [[]] * len(cases)
        rows = [[case, cls] + [values[m] for m in METRICS] + more for (case, metrics), more in
                zip(cases, extra, strict=True) for cls, values in metrics.items()]
        header = ["case", "class", *METRICS, *(VCDR_COLUMNS if vcdr else ())]
        write_csv(self.output_dir / "metrics.csv", header, rows)
        summary = {"num_cases": len(cases), "classes": self.summary, "cases": dict(cases)}
        write_json(self.output_dir / "summary.json", {**summary, "vcdr": self.vcdr_summary} if vcdr else summary)
