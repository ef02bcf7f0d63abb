"""An Ignite evaluator that simulates interactive sessions (iterative clicks, boxes) on each case."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from monai.engines import Evaluator
from monai.engines.utils import default_prepare_batch
from torch import nn

from ..evaluation.report import case_name, label_map
from ..prompts.interactive import simulate_clicks

__all__ = ["InteractiveEvaluator"]


class InteractiveEvaluator(Evaluator):
    """Run :func:`~medsa_monai.prompts.simulate_clicks` on every case of ``val_data_loader``.

    Each iteration's output is ``{"cases": [names], "results": [InteractiveResult]}``; attach
    :class:`~medsa_monai.engines.InteractiveReport` to summarise Dice per click, NoC and box Dice. Cases are
    whole pre-processed images or volumes (no sliding window: clicks live in the whole image's frame).

    Args:
        device, val_data_loader, prepare_batch, val_handlers, amp, non_blocking: as MONAI's ``Evaluator``.
        network: a :class:`~medsa_monai.networks.MedSA`.
        num_clicks: clicks per class and case.
        mask_feedback: feed the previous low-resolution prediction back as SAM's mask prompt.
        with_box: also measure Dice with the reference bounding box as the prompt.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: nn.Module,
        num_clicks: int = 5,
        mask_feedback: bool = True,
        with_box: bool = True,
        prepare_batch: Callable = default_prepare_batch,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, prepare_batch=prepare_batch,
                         val_handlers=val_handlers, amp=amp, non_blocking=non_blocking, decollate=False)
        self.network = network
        self.num_clicks = num_clicks
        self.mask_feedback = mask_feedback
        self.with_box = with_box

    def _iteration(self, engine: InteractiveEvaluator, batchdata: dict) -> dict:
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        self.network.eval()
        names, results = [], []
        for b in range(image.shape[0]):
            with torch.autocast(torch.device(engine.state.device).type, enabled=bool(self.amp)):
                results.append(simulate_clicks(self.network, image[b:b + 1], label_map(label[b]), self.num_clicks,
                                               self.mask_feedback, self.with_box))
            names.append(case_name({"label": label[b], "image": image[b]}))
        engine.state.output = {"cases": names, "results": results}
        return engine.state.output
