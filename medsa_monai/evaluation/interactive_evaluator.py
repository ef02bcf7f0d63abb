"""An Ignite evaluator that simulates interactive sessions (iterative clicks, boxes) on each case."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from monai.data.utils import affine_to_spacing
from monai.engines import Evaluator
from monai.engines.utils import default_prepare_batch
from torch import nn

from ..predictor.predictor import MedSAPredictor
from .interactive_protocol import run_protocol
from .iterative_clicks import simulate_clicks, slice_click_dice
from .paper_protocols import parse_paper_protocol, run_paper_protocol
from .report import case_name, label_map

__all__ = ["InteractiveEvaluator"]


class InteractiveEvaluator(Evaluator):
    """Simulate interactive sessions on every case of ``val_data_loader``, under three protocols:

    - iterative clicks (:func:`~medsa_monai.evaluation.simulate_clicks`): ``num_clicks`` clicks per class, each at the
      centre of the largest error, the budget of the clicks-to-reach-Dice (NoC) measure; and the reference bounding
      box as the only prompt;
    - the CVPR 2025 challenge's protocol (:func:`~medsa_monai.evaluation.run_protocol`, with ``protocol_clicks``
      clicks after the box; ``0`` skips it), whose Dice / NSD AUC compare with nnInteractive, SAM-Med3D, VISTA3D;
    - for volumes, Med-SA's own 3D protocol (:func:`~medsa_monai.evaluation.slice_click_dice`: a click on every slice
      of each structure);
    - the Med-SA paper's prompt protocols named in ``paper_protocols`` (``"points_1"``, ``"points_3"``,
      ``"box_0.75"``, ``"box_0.5"``, see :mod:`~medsa_monai.evaluation.paper_protocols`): Dice and HD95 per class.

    Each iteration's output is ``{"cases": [names], "results": [InteractiveResult]}``; attach
    :class:`~medsa_monai.evaluation.InteractiveReport` to summarise them. Cases are whole pre-processed images or
    volumes (no sliding window: clicks live in the whole image's frame).

    Args:
        device, val_data_loader, prepare_batch, val_handlers, amp, non_blocking: as MONAI's ``Evaluator``.
        predictor: the :class:`~medsa_monai.predictor.MedSAPredictor` of the network to evaluate, with the settings
            it is used with (a bare network gets a predictor of default settings).
        num_clicks: clicks per class and case of the iterative protocol (the NoC budget).
        mask_feedback: feed the previous low-resolution prediction back as SAM's mask prompt.
        with_box: also measure Dice with the reference bounding box as the prompt.
        protocol_clicks: clicks after the box in the CVPR 2025 protocol (5 in the challenge; 0 skips it).
        spacing: voxel size (mm) for the protocol's NSD and click placement; ``None`` reads the image's ``pixdim``.
        slice_protocol: run Med-SA's click-on-every-slice protocol on volumes.
        paper_protocols: names of the Med-SA paper's protocols to run (one decoder pass each).
        seed: seed of the protocol's tie-breaking and of the paper protocols' random points and boxes.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        predictor: MedSAPredictor | nn.Module,
        num_clicks: int = 5,
        mask_feedback: bool = True,
        with_box: bool = True,
        prepare_batch: Callable = default_prepare_batch,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        non_blocking: bool = False,
        protocol_clicks: int = 5,
        spacing: Sequence[float] | None = None,
        slice_protocol: bool = True,
        paper_protocols: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, prepare_batch=prepare_batch,
                         val_handlers=val_handlers, amp=amp, non_blocking=non_blocking, decollate=False)
        # a bare network gets a predictor; any other object with the predictor's methods is used as it is
        self.predictor = MedSAPredictor(predictor) if isinstance(predictor, nn.Module) else predictor
        self.num_clicks = num_clicks
        self.mask_feedback = mask_feedback
        self.with_box = with_box
        self.protocol_clicks = protocol_clicks
        self.spacing = spacing
        self.slice_protocol = slice_protocol
        self.paper_protocols = tuple(paper_protocols or ())
        for name in self.paper_protocols:
            parse_paper_protocol(name)  # a misspelt protocol fails before the first case, not after an hour
        self.seed = seed

    def _iteration(self, engine: InteractiveEvaluator, batchdata: dict) -> dict:
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        predictor = self.predictor
        getattr(predictor, "network", predictor).eval()
        names, results = [], []
        for b in range(image.shape[0]):
            case = image[b:b + 1]  # regions keep their channels (nested outputs); classes become a label map
            reference = label_map(label[b]) if predictor.background_channel else label[b].detach().cpu().numpy()
            with torch.autocast(torch.device(engine.state.device).type, enabled=bool(self.amp)):
                result = simulate_clicks(predictor, case, reference, self.num_clicks, self.mask_feedback,
                                         self.with_box)
                if self.protocol_clicks:
                    result.protocol = run_protocol(predictor, case, reference, self._spacing(image, b),
                                                   self.protocol_clicks, self.seed, self.mask_feedback)
                if self.paper_protocols:
                    spacing, embeddings = self._spacing(image, b), predictor.encode(case)
                    result.paper = {name: run_paper_protocol(predictor, case, reference, name, spacing,
                                                             self.seed, embeddings)
                                    for name in self.paper_protocols}
                if self.slice_protocol and case.ndim == 5:
                    result.slice_click_dice = (result.paper["points_1"].dice if "points_1" in self.paper_protocols
                                               else slice_click_dice(predictor, case, reference))
            results.append(result)
            names.append(case_name({"label": label[b], "image": image[b]}))
        engine.state.output = {"cases": names, "results": results}
        return engine.state.output

    def _spacing(self, image: torch.Tensor, index: int) -> list[float] | None:
        if self.spacing is not None:
            return [float(v) for v in self.spacing]
        affine = getattr(image, "affine", None)
        if affine is None:
            return None
        affine = torch.as_tensor(affine).detach().cpu().double()
        affine = affine[index] if affine.ndim == 3 else affine
        return [float(v) for v in affine_to_spacing(affine, r=image.ndim - 2)]
