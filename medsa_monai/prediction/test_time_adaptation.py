"""Test-time domain adaptation: adapt to each unlabelled image before predicting it, as SAM-DA does."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.engines.utils import default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torchvision.transforms import v2

from ..networks.presets import parameter_group
from ..predictor.embedding_cache import EmbeddingCache
from ..predictor.inferers import CachedInferer
from ..predictor.predictor import MedSAPredictor

__all__ = ["TestTimeAdaptation", "view_augmentation", "prediction_entropy"]

ADAPTED_GROUPS = {
    "adapter": {"samda_adapter"},  # SAM-DA: the decoder adapter only
    "decoder": {"samda_adapter", "decoder_adapters", "sam_mask_decoder", "sam_output_heads"},  # TENT-like baseline
}


def view_augmentation(channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The acquisition-like changes of SAM-DA's test-time views on a ``(C, H, W)`` image in ``[0, 1]``: colour,
    blur and sharpness (brightness and contrast only for grey images)."""
    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.05) if channels == 3 else v2.ColorJitter(0.4, 0.4)
    return v2.Compose([v2.RandomApply([jitter], p=0.8), v2.RandomApply([v2.GaussianBlur(5, (0.1, 1.5))], p=0.5),
                       v2.RandomAdjustSharpness(2.0, p=0.5)])


def prediction_entropy(low_res: torch.Tensor, background_channel: bool = True) -> torch.Tensor:
    """Mean per-pixel entropy of each image's class probabilities, from MedSA's logits ``(B, K, h, w)``:
    softmax over background (logit 0) and the classes, or a sigmoid per class without a background channel."""
    if background_channel:
        logits = torch.cat([torch.zeros_like(low_res[:, :1]), low_res], dim=1)
        p = logits.float().softmax(1)
        return -(p * p.clamp_min(1e-8).log()).sum(1).flatten(1).mean(1)
    p = low_res.float().sigmoid()
    pixel = -(p * p.clamp_min(1e-8).log() + (1 - p) * (1 - p).clamp_min(1e-8).log())
    return pixel.flatten(1).mean(1)


class TestTimeAdaptation(SupervisedEvaluator):
    """Adapt ``network`` to each batch of (unlabelled) images, then predict it as ``SupervisedEvaluator`` does.

    For each batch: ``views`` augmented views of every image are drawn once (:func:`view_augmentation`); for
    ``steps`` steps the views are decoded in automatic mode, the ``keep`` fraction with the lowest prediction
    entropy is kept (SAM has no batch-norm statistics to update, so only confident views teach) and their mean
    entropy is minimised with AdamW, updating only the parameters of ``adapt``: ``"adapter"`` (SAM-DA's decoder
    adapter) or ``"decoder"`` (every mask-decoder parameter: a TENT-like baseline). With an
    :class:`~medsa_monai.predictor.EmbeddingCache` (``embedding_cache``; the encoder frozen), the views' embeddings
    are computed once and every step runs only the decoder. In ``"episodic"`` mode the adapted parameters return to
    their trained values (and the optimizer starts afresh) before each batch; in ``"continual"`` mode adaptation
    accumulates over the data.

    Args:
        device, val_data_loader, network, postprocessing, key_val_metric, additional_metrics, val_handlers, amp,
        prepare_batch, inferer, non_blocking: as ``SupervisedEvaluator`` (labels are optional; metrics need them).
        adapt: ``"adapter"`` or ``"decoder"``.
        mode: ``"episodic"`` or ``"continual"``.
        steps, views, keep, learning_rate: the optimisation per batch.
        seed: seeds the views of each batch (``seed + iteration``), so runs repeat.
        embedding_cache: a cache of the views' embeddings, or ``None``.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: nn.Module,
        adapt: str = "adapter",
        mode: str = "episodic",
        steps: int = 10,
        views: int = 16,
        keep: float = 0.1,
        learning_rate: float = 1e-3,
        seed: int = 0,
        inferer: Inferer | None = None,
        prepare_batch: Callable = default_prepare_batch,
        postprocessing=None,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        non_blocking: bool = False,
        embedding_cache: EmbeddingCache | None = None,
    ) -> None:
        if adapt not in ADAPTED_GROUPS:
            raise ValueError(f"adapt must be one of {sorted(ADAPTED_GROUPS)}, got {adapt!r}")
        if mode not in ("episodic", "continual"):
            raise ValueError(f"mode must be 'episodic' or 'continual', got {mode!r}")
        if steps < 0 or views < 1 or not 0 < keep <= 1:
            raise ValueError("need steps >= 0, views >= 1 and 0 < keep <= 1")
        if inferer is None:
            inferer = SimpleInferer() if embedding_cache is None else CachedInferer(SimpleInferer(), embedding_cache)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         inferer=inferer, prepare_batch=prepare_batch,
                         postprocessing=postprocessing, key_val_metric=key_val_metric,
                         additional_metrics=additional_metrics, val_handlers=val_handlers, amp=amp,
                         non_blocking=non_blocking)
        self.adapt, self.adapt_mode, self.steps, self.views, self.keep = adapt, mode, steps, views, keep
        self.learning_rate, self.seed = learning_rate, seed
        self.predictor = MedSAPredictor(network, embedding_cache=embedding_cache, propagation=False)
        groups = ADAPTED_GROUPS[adapt]
        self.adapted = {n: p for n, p in network.named_parameters() if parameter_group(n) in groups}
        if not self.adapted:
            raise ValueError(f"the network has no parameters to adapt with adapt={adapt!r} (a SAM-DA adapter needs "
                             f"trainable='samda' or samda_tokens > 0)")
        for name, param in network.named_parameters():
            param.requires_grad_(name in self.adapted)
        self.remember_trained_state()
        # Again when a run starts: after the STARTED handlers (a CheckpointLoader) have loaded the trained weights.
        self.add_event_handler(Events.ITERATION_STARTED(once=1), self.remember_trained_state)

    def remember_trained_state(self, *_) -> None:
        """Take the adapted parameters' current values as the trained ones that episodic mode returns to."""
        self.trained_state = {n: p.detach().clone() for n, p in self.adapted.items()}
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.adapted.values(), lr=self.learning_rate, weight_decay=0.0)

    def reset(self) -> None:
        """Return the adapted parameters to their trained values and restart the optimizer."""
        with torch.no_grad():
            for name, param in self.adapted.items():
                param.copy_(self.trained_state[name])
        self.optimizer = self._new_optimizer()

    def make_views(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        """``views`` augmented copies of every image of ``(B, C, H, W)``, seeded: ``(B * views, C, H, W)``."""
        if images.ndim != 4:
            raise ValueError(f"test-time adaptation works on 2D images (B, C, H, W), got shape {tuple(images.shape)}")
        augment = view_augmentation(images.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + iteration)
            return torch.stack([augment(image.clamp(0, 1)) for image in images for _ in range(self.views)])

    def adapt_to(self, images: torch.Tensor, iteration: int = 0) -> list[float]:
        """Run the adaptation steps on ``images``; returns the loss of each step."""
        if self.steps == 0:
            return []
        network, predictor = self.network, self.predictor
        views = self.make_views(images, iteration)
        keep = max(1, round(self.keep * self.views))
        losses = []
        network.train()
        for _ in range(self.steps):
            with torch.autocast(torch.device(self.state.device).type, enabled=bool(self.amp)):
                low_res = predictor.decode(predictor.encode(views), views.shape)
                entropy = prediction_entropy(low_res, network.background_channel).view(len(images), self.views)
                loss = entropy.topk(keep, dim=1, largest=False).values.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        network.eval()
        return losses

    def _iteration(self, engine: TestTimeAdaptation, batchdata: dict) -> dict:
        images = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)[0]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images  # plain tensor for torchvision
        if self.adapt_mode == "episodic":
            self.reset()
        engine.state.adaptation_losses = self.adapt_to(images, engine.state.iteration)
        return super()._iteration(engine, batchdata)
