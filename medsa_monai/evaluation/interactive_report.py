"""Ignite handler: Dice after k clicks, clicks to reach a Dice (NoC) and box Dice, per class, as JSON and CSV."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from ..data.io import atomic_write_text, write_csv, write_json
from .curve_plot import plot_curves
from .interactive_protocol import summarize_protocol
from .iterative_clicks import InteractiveResult, clicks_to_reach
from .paper_protocols import paper_table, summarize_paper_protocols
from .report import class_map

__all__ = ["InteractiveReport"]

logger = logging.getLogger(__name__)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


class InteractiveReport:
    """Summarise the sessions of an :class:`~medsa_monai.evaluation.InteractiveEvaluator`.

    Writes ``interactive_summary.json`` (per class and averaged over classes: mean Dice after each of
    ``report_clicks`` clicks and the whole curve, mean NoC at each threshold within the click budget, the mean zoom
    of each click's window for a zooming predictor (``zoom_after_clicks``), mean box
    Dice, and the automatic Dice of the same images in the same frame (``automatic_dice``, the baseline the prompts
    are compared with); the CVPR 2025 protocol's summary under ``"cvpr2025"``, Med-SA's click-on-every-slice Dice under
    ``"slice_clicks"`` and the Med-SA paper's protocols under ``"medsa_paper"`` when they ran),
    ``interactive_curves.png`` (Dice against clicks per class) and ``interactive_cases.csv`` (every case, class and
    click). The paper's protocols (Dice and HD95 per class and their mean) also go to ``summary.json`` under
    ``"prompt_protocols"`` when the automatic evaluation wrote one there, and to ``paper_table.md``, the layout of
    the paper's tables. The same figures go to ``engine.state.metrics`` (``dice_<k>_clicks``, ``noc_<t>``,
    ``box_dice``, ``prompt_frame_automatic_dice``, ``cvpr_dsc_auc``, ``cvpr_final_dice``, ``slice_clicks_dice``,
    ``paper_<protocol>_dice``,
    averaged over classes).
    """

    def __init__(self, output_dir: str | Path | None, class_names: Mapping[Any, str] | Sequence[str],
                 report_clicks: Sequence[int] = (1, 3, 5, 10, 20),
                 thresholds: Sequence[float] = (0.8, 0.85, 0.9)) -> None:
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.classes = list(class_map(class_names).values())
        self.report_clicks = tuple(report_clicks)
        self.thresholds = tuple(thresholds)
        self.cases: list[tuple[str, InteractiveResult]] = []
        self.summary: dict = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def collect(self, engine: Engine) -> None:
        self.cases.extend(zip(engine.state.output["cases"], engine.state.output["results"], strict=True))

    def finish(self, engine: Engine) -> None:
        if not self.cases:
            return
        curves = np.stack([r.click_dice for _, r in self.cases])  # (cases, clicks, classes)
        clicks = curves.shape[1]
        shown = [k for k in self.report_clicks if k <= clicks]
        per_class: dict[str, dict] = {}
        columns = list(self.classes) + ["mean"]
        for c, name in enumerate(columns):
            curve = curves[:, :, c] if name != "mean" else np.nanmean(curves, axis=2)
            entry = {"dice_after_clicks": {str(k): _nanmean(curve[:, k - 1]) for k in shown},
                     "dice_curve": [_nanmean(curve[:, k]) for k in range(clicks)]}
            nocs = {}
            for t in self.thresholds:
                per_case = np.stack([clicks_to_reach(r.click_dice, t) for _, r in self.cases])
                nocs[f"{round(t * 100)}"] = _nanmean(per_case[:, c] if name != "mean" else np.nanmean(per_case, 1))
            entry["noc"] = nocs
            boxes = [r.box_dice for _, r in self.cases if r.box_dice is not None]
            if boxes:
                box = np.stack(boxes)
                entry["box_dice"] = _nanmean(box[:, c] if name != "mean" else np.nanmean(box, 1))
            automatic = [r.automatic_dice for _, r in self.cases if r.automatic_dice is not None]
            if automatic:
                values = np.stack(automatic)
                entry["automatic_dice"] = _nanmean(values[:, c] if name != "mean" else np.nanmean(values, 1))
            slices = [r.slice_click_dice for _, r in self.cases if r.slice_click_dice is not None]
            if slices:
                values = np.stack(slices)
                entry["slice_clicks_dice"] = _nanmean(values[:, c] if name != "mean" else np.nanmean(values, 1))
            per_class[name] = entry
        self.summary = {"num_cases": len(self.cases), "num_clicks": clicks, "noc_budget": clicks,
                        "classes": per_class}
        zooms = [r.zoom for _, r in self.cases if r.zoom is not None]
        if zooms:  # how much each click's window magnified the image, mean over cases
            self.summary["zoom_after_clicks"] = [_nanmean(step) for step in np.stack(zooms).T]
        protocols = [r.protocol for _, r in self.cases if r.protocol is not None]
        if protocols:
            cvpr = summarize_protocol(protocols)
            cvpr["classes"] = {self.classes[k - 1]: v for k, v in cvpr["classes"].items()}
            self.summary["cvpr2025"] = cvpr
            engine.state.metrics["cvpr_dsc_auc"] = cvpr["mean"]["dsc_auc"]
            engine.state.metrics["cvpr_final_dice"] = cvpr["mean"]["final_dice"]
            engine.state.metrics["cvpr_box_dice"] = cvpr["mean"]["dice"][0]
        papers = [r.paper for _, r in self.cases if r.paper]
        if papers:
            self.summary["medsa_paper"] = summarize_paper_protocols(
                {name: [p[name] for p in papers] for name in papers[0]}, self.classes)
            for name, entry in self.summary["medsa_paper"].items():
                engine.state.metrics[f"paper_{name}_dice"] = entry["mean"]["dice"]
        mean = per_class["mean"]
        if "slice_clicks_dice" in mean:
            engine.state.metrics["slice_clicks_dice"] = mean["slice_clicks_dice"]
        for k, v in mean["dice_after_clicks"].items():
            engine.state.metrics[f"dice_{k}_clicks"] = v
        for t, v in mean["noc"].items():
            engine.state.metrics[f"noc_{t}"] = v
        if "box_dice" in mean:
            engine.state.metrics["box_dice"] = mean["box_dice"]
        if "automatic_dice" in mean:
            engine.state.metrics["prompt_frame_automatic_dice"] = mean["automatic_dice"]
        logger.info("interactive, %d cases: %s", len(self.cases), ", ".join(
            f"{k}={v:.4f}" for k, v in engine.state.metrics.items()
            if k.startswith(("dice_", "noc_", "box_", "cvpr_", "slice_", "paper_", "prompt_frame_"))))
        if self.output_dir is None:
            return
        write_json(self.output_dir / "interactive_summary.json", self.summary)
        if "medsa_paper" in self.summary:
            self._write_paper(self.summary["medsa_paper"])
        curves = {name: per_class[name]["dice_curve"] for name in self.classes}
        plot_curves(self.output_dir / "interactive_curves.png", curves, title=f"Dice after each click, "
                    f"{len(self.cases)} cases (centre of the largest error, previous mask fed back)")
        rows = [[case, self.classes[c], k + 1, result.click_dice[k, c]]
                for case, result in self.cases for c in range(len(self.classes)) for k in range(clicks)]
        write_csv(self.output_dir / "interactive_cases.csv", ["case", "class", "click", "dice"], rows)

    def _write_paper(self, paper: dict) -> None:
        atomic_write_text(self.output_dir / "paper_table.md", paper_table(paper, self.classes))
        automatic = self.output_dir / "summary.json"
        if automatic.is_file():
            summary = json.loads(automatic.read_text())
            summary["prompt_protocols"] = paper
            write_json(automatic, summary)
