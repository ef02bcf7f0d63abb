"""Model selection on prompted and automatic Dice: a handler that prompts the validation cases too."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..evaluation.interactive_protocol import run_protocol
from ..evaluation.report import label_map
from ..predictor.predictor import MedSAPredictor

__all__ = ["PromptedValidation"]

logger = logging.getLogger(__name__)


class PromptedValidation:
    """Measure prompted Dice on the validator's cases and combine it with its automatic key metric.

    On every validation case (``engine.state.batch``: the whole pre-processed image and its class-index label, or
    its region channels),
    the CVPR 2025 protocol's first steps run (:func:`~medsa_monai.evaluation.run_protocol`): the box, then
    ``num_clicks`` corrective clicks. At the end of the validation ``engine.state.metrics`` gets
    ``prompted_metric`` (mean over cases, classes and steps of the prompted Dice) and ``selection_metric``, the mean
    of ``automatic_metric`` (the validator's own metric, e.g. ``val_mean_dice``) and the prompted Dice, which the
    checkpoint saver and early stopping then follow, so that the model kept is good with and without prompts.

    Attach it before the ``CheckpointSaver`` (list it first among the validator's handlers). Regions (one binary
    channel each, nested or overlapping) are prompted and scored each on its own.

    Args:
        predictor: the :class:`~medsa_monai.predictor.MedSAPredictor` of the network being validated, with the
            settings it is used with (a bare network gets a predictor of default settings).
        num_clicks: corrective clicks after the box.
        automatic_metric: the validator's metric of automatic segmentation.
        prompted_metric: name of the prompted Dice in ``engine.state.metrics``.
        selection_metric: name of the combined metric.
    """

    def __init__(self, predictor: MedSAPredictor | torch.nn.Module, num_clicks: int = 1,
                 automatic_metric: str = "val_mean_dice", prompted_metric: str = "val_prompted_dice",
                 selection_metric: str = "val_selection_dice") -> None:
        self.predictor = predictor if isinstance(predictor, MedSAPredictor) else MedSAPredictor(predictor)
        self.num_clicks = num_clicks
        self.automatic_metric = automatic_metric
        self.prompted_metric = prompted_metric
        self.selection_metric = selection_metric
        self._dice: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._dice.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.finish)

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch  # MONAI's evaluators decollate it into a list of items
        items = batch if isinstance(batch, list) else [
            {"image": image, "label": label} for image, label in zip(batch["image"], batch["label"], strict=True)]
        network = self.predictor.network
        was_training = network.training
        network.eval()
        device = next(network.parameters()).device
        try:
            for item in items:
                image = torch.as_tensor(item["image"])[None].to(device)
                label = torch.as_tensor(item["label"])
                reference = label_map(label) if network.background_channel else label.numpy()  # regions: channels
                result = run_protocol(self.predictor, image, reference, num_clicks=self.num_clicks, surface=False)
                values = result.dice[np.isfinite(result.dice)]
                if values.size:
                    self._dice.append(float(values.mean()))
        finally:
            network.train(was_training)

    def finish(self, engine: Engine) -> None:
        automatic = engine.state.metrics.get(self.automatic_metric, math.nan)
        prompted = float(np.mean(self._dice)) if self._dice else math.nan
        engine.state.metrics[self.prompted_metric] = prompted
        engine.state.metrics[self.selection_metric] = automatic if math.isnan(prompted) else (
            0.5 * (float(automatic) + prompted))
        logger.info("validation: automatic %s=%.4f, prompted (box + %d click) %s=%.4f, selection %s=%.4f",
                    self.automatic_metric, float(automatic), self.num_clicks, self.prompted_metric, prompted,
                    self.selection_metric, engine.state.metrics[self.selection_metric])
