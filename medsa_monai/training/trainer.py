"""A MONAI trainer whose iteration runs simulated interactive sessions, as DeepEdit's and VISTA3D's trainers do."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.distributed as dist
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from ..networks.prompt_mapping import SamPrompts
from ..predictor.embedding_cache import EmbeddingCache
from ..predictor.predictor import MedSAPredictor
from .sessions import InteractiveSessions, Session

__all__ = ["InteractiveTrainer", "SessionStep"]

PROMPT_KEYS = ("points", "point_labels", "boxes", "mask_inputs")


class SessionStep(nn.Module):
    """The differentiable part of an iteration, as one module: encode the batch, decode the session's last prompts
    and, for the samples that need it, automatic mode from the same embedding.

    Only distributed training calls it, wrapped in ``DistributedDataParallel`` (so that its forward sets up the
    gradient all-reduce); its parameters are the network's, so checkpoints keep the network's own keys.
    """

    def __init__(self, predictor: MedSAPredictor) -> None:
        super().__init__()
        self.network = predictor.network
        self.predictor = predictor

    def forward(self, image: torch.Tensor, prompts: SamPrompts, automatic: SamPrompts | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _decode_session(self.predictor, self.predictor.encode(image), tuple(image.shape), prompts, automatic)


def _decode_session(predictor: MedSAPredictor, embeddings: torch.Tensor, image_shape: tuple[int, ...],
                    prompts: SamPrompts, automatic: SamPrompts | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the session's last prompts and, where ``automatic`` lists rows, of automatic mode (0 elsewhere)."""
    batch, depth = predictor.network.rows_of(image_shape, embeddings)
    spatial = image_shape[2:]
    logits = predictor.postprocess(predictor.decode_prompts(embeddings, prompts, batch, depth), spatial)
    automatic_logits = None if automatic is None else predictor.postprocess(
        predictor.decode_prompts(embeddings, automatic, batch, depth).nan_to_num(0.0), spatial)
    return logits, automatic_logits


class InteractiveTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose iteration trains on simulated interactive sessions
    (:class:`~medsa_monai.training.InteractiveSessions`): the first prompts come with the batch (``prepare_batch``
    gives them as keyword arguments ``points``, ``point_labels``, ``boxes``, ``mask_inputs``, or as positional ones in
    that order, e.g. MONAI's ``PrepareBatchExtraInput``), the rounds of corrections run without gradients from one
    image embedding, and the loss is taken on the last round's logits.

    Automatic mode keeps its training signal: every sample whose session was prompted is also decoded in automatic
    mode from the same embedding (a decoder pass), and ``automatic_loss_weight`` times its loss is added to the
    iteration's loss (``engine.state.output["loss"]``, so AMP's loss scaling, gradient accumulation and the logged
    loss cover both). Without it, automatic segmentation would learn only from the samples that stay unprompted.

    The embedding is computed once per sample. Under ``torch.distributed`` with more than one process, the rounds
    encode again without gradients and the last round goes through :class:`SessionStep` wrapped in
    ``DistributedDataParallel``, so that gradients are all-reduced; the network itself stays unwrapped.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as ``SupervisedTrainer``.
        sessions: the session simulator (default: :class:`InteractiveSessions` with its defaults).
        automatic_loss_weight: weight of the automatic decoding's loss (0: no automatic decoding of prompted
            samples).
        dense_prompts: draw boxes and clicks into SAM's mask prompt (as the predictor of the trained model will).
        click_radius: radius of a click's disk in those maps, in low-resolution pixels.
        embedding_cache: a cache of image embeddings, used when the encoder is frozen (a ``samda`` or ``decoder``
            network in 2D), so that later epochs run only the decoder.
        kwargs: the other arguments of ``SupervisedTrainer`` (``prepare_batch``, ``postprocessing``,
            ``train_handlers``, ``amp``, ``accumulation_steps``, ...). The iteration decodes through the network's
            own stages, so an ``inferer`` (which MONAI's bundle properties ask a training config for) is not called.
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader, network: nn.Module,
                 optimizer: torch.optim.Optimizer, loss_function: Callable, sessions: InteractiveSessions | None = None,
                 automatic_loss_weight: float = 0.3, dense_prompts: bool = False, click_radius: float = 1.0,
                 embedding_cache: EmbeddingCache | None = None, **kwargs) -> None:
        if kwargs.get("compile"):
            raise ValueError("InteractiveTrainer does not compile the network (compile=True)")
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=train_data_loader, network=network,
                         optimizer=optimizer, loss_function=loss_function, **kwargs)
        self.sessions = InteractiveSessions() if sessions is None else sessions
        self.automatic_loss_weight = float(automatic_loss_weight)
        self.predictor = MedSAPredictor(network, embedding_cache=embedding_cache, propagation=False,
                                        dense_prompts=dense_prompts, click_radius=click_radius)
        self.distributed_step = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            on_gpu = next(self.predictor.network.parameters()).is_cuda
            self.distributed_step = nn.parallel.DistributedDataParallel(
                SessionStep(self.predictor), device_ids=[self.state.device] if on_gpu else None,
                find_unused_parameters=True)

    def _iteration(self, engine: InteractiveTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[:2]
        args, kwargs = (batch[2], batch[3]) if len(batch) > 2 else ((), {})
        if len(args) > len(PROMPT_KEYS):
            raise ValueError(f"a batch gave {len(args)} extra inputs; the first prompts are {PROMPT_KEYS}")
        prompts = {**dict(zip(PROMPT_KEYS, args, strict=False)),
                   **{k: v for k, v in kwargs.items() if k in PROMPT_KEYS}}
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        should_zero_grad, should_step, acc = self._accumulation(engine)
        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        scaled = engine.amp and engine.scaler is not None
        with torch.autocast("cuda", **engine.amp_kwargs) if scaled else nullcontext():
            self._forward_and_loss(engine, inputs, targets, prompts)
        loss = engine.state.output[Keys.LOSS]
        loss = loss / acc if acc > 1 else loss
        (engine.scaler.scale(loss) if scaled else loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step:
            if scaled:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
            else:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    @staticmethod
    def _accumulation(engine: InteractiveTrainer) -> tuple[bool, bool, int]:
        """Whether this iteration zeroes the gradients and steps the optimizer (as ``SupervisedTrainer``)."""
        acc = engine.accumulation_steps
        if acc <= 1:
            return True, True, acc
        length = engine.state.epoch_length
        local = (engine.state.iteration - 1) % length if length is not None else engine.state.iteration - 1
        last = length is not None and local + 1 == length
        return local % acc == 0, (local + 1) % acc == 0 or last, acc

    def _forward_and_loss(self, engine: InteractiveTrainer, inputs: torch.Tensor, targets: torch.Tensor,
                          prompts: dict) -> None:
        session, logits, automatic = self._session_logits(inputs, targets, prompts)
        engine.state.output[Keys.PRED] = logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = engine.loss_function(logits, targets).mean()
        if automatic is not None:
            keep = torch.as_tensor(session.automatic_samples, device=inputs.device)
            loss = loss + self.automatic_loss_weight * engine.loss_function(automatic[keep], targets[keep]).mean()
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

    def _session_logits(self, inputs: torch.Tensor, targets: torch.Tensor, prompts: dict
                        ) -> tuple[Session, torch.Tensor, torch.Tensor | None]:
        """Run the session's rounds, then decode its last prompts (and automatic mode) with gradients."""
        predictor, shape = self.predictor, tuple(inputs.shape)
        batch, depth = shape[0], shape[4] if predictor.spatial_dims == 3 else 1
        embeddings = None if self.distributed_step is not None else predictor.encode(inputs)

        def decode(round_prompts: SamPrompts) -> torch.Tensor:
            source = predictor.encode(inputs) if embeddings is None else embeddings.detach()
            return predictor.decode_prompts(source, round_prompts, batch, depth)

        session = self.sessions.run(predictor.network, decode, shape, targets, **prompts)
        automatic = session.automatic if self.automatic_loss_weight else None
        if self.distributed_step is not None:
            logits, automatic_logits = self.distributed_step(inputs, session.prompts, automatic)
        else:
            logits, automatic_logits = _decode_session(predictor, embeddings, shape, session.prompts, automatic)
        return session, logits, automatic_logits
