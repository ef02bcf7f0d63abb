"""What a bundle's training attaches to the built trainer: resumable checkpoints, the validation record, early
stopping, a wall-clock budget, a progress bar."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar
from monai.handlers import CheckpointLoader, CheckpointSaver, EarlyStopHandler

from ..data.atomic import atomic_path
from ..networks.weights import trained_weights
from ..predictor.predictor import unwrap_network
from .checkpoints import EPOCH_CHECKPOINT, latest_checkpoint

__all__ = ["prepare_training", "TimeBudget", "ValidationRecord"]

logger = logging.getLogger(__name__)


class ValidationRecord:
    """The best validation score so far, as a checkpointable object, so a resumed run keeps its best model.

    Holds the evaluator's ``best_metric`` / ``best_metric_epoch`` and the records of its key-metric
    ``CheckpointSaver`` handlers; without it a resumed run would overwrite ``model.pt`` with its first, maybe worse,
    validation.
    """

    def __init__(self, evaluator: Engine, handlers: Sequence = ()) -> None:
        self.evaluator = evaluator
        self.savers = [h for h in handlers if isinstance(h, CheckpointSaver) and h._key_metric_checkpoint is not None]

    def state_dict(self) -> dict:
        return {
            "best_metric": self.evaluator.state.best_metric,
            "best_metric_epoch": self.evaluator.state.best_metric_epoch,
            "savers": [s._key_metric_checkpoint.state_dict() for s in self.savers],
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        for saver, record in zip(self.savers, state["savers"], strict=False):
            saver._key_metric_checkpoint.load_state_dict(record)


def _validate_last_epoch(trainer: Engine, evaluator: Engine, val_interval: int) -> None:
    """Run ``evaluator`` after the last epoch when the validation interval skipped it."""
    if trainer.state.epoch == trainer.state.max_epochs and trainer.state.epoch % max(1, int(val_interval)):
        evaluator.run(trainer.state.epoch)


def _has_no_data(evaluator: Engine) -> bool:
    loader = getattr(evaluator, "data_loader", None)
    try:
        return loader is not None and len(loader) == 0
    except TypeError:  # an iterable without a length
        return False


def _skipped_run(evaluator: Engine):
    """A stand-in for ``evaluator.run`` that runs nothing and returns the evaluator's state."""

    def run(*args, **kwargs):
        return evaluator.state

    return run


def _save_model(_: Engine, network, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(trained_weights(unwrap_network(network)), tmp)
    logger.info("saved the last epoch's model to %s", path)


def _remove_older_checkpoints(engine: Engine, ckpt_dir: Path) -> None:
    for path in Path(ckpt_dir).glob("checkpoint_epoch=*.pt"):
        if (m := EPOCH_CHECKPOINT.search(path.name)) and int(m.group(1)) < engine.state.epoch:
            path.unlink(missing_ok=True)


class TimeBudget:
    """Stop training before the epoch that would overrun ``minutes`` of wall time, validating first.

    Ignite has no wall-clock limit of this kind (its ``TimeLimit`` stops mid-epoch, after the last validation).
    At each epoch end, if another epoch (timed by the slowest so far) would end past the budget, the evaluator runs
    unless this epoch was already validated, then the trainer terminates.
    """

    def __init__(self, minutes: float, evaluator: Engine | None = None, val_interval: int = 1) -> None:
        self.seconds = 60.0 * minutes
        self.evaluator = evaluator
        self.val_interval = val_interval
        self.start = self.last = 0.0
        self.longest = 0.0

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, trainer: Engine) -> None:
        self.start = self.last = time.monotonic()

    def _epoch_completed(self, trainer: Engine) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        if now - self.start + self.longest <= self.seconds:
            return
        if self.evaluator is not None and trainer.state.epoch % self.val_interval:
            self.evaluator.run(trainer.state.epoch)
        logger.info("time budget of %.1f min reached after epoch %d", self.seconds / 60, trainer.state.epoch)
        trainer.terminate()


def prepare_training(
    trainer: Engine,
    evaluator: Engine | None,
    ckpt_dir: str | Path,
    state: Mapping,
    resume: bool = False,
    early_stop_patience: int | None = None,
    key_metric: str = "val_mean_dice",
    val_handlers: Sequence = (),
    time_budget_minutes: float | None = None,
    val_interval: int = 1,
    progress_bar: bool = False,
) -> None:
    """Attach what needs the built trainer (a bundle config cannot give a trainer's handlers the trainer itself).

    - every epoch, the whole training ``state`` (model, optimizer, scheduler, trainer) and the validation record
      (:class:`ValidationRecord` of ``evaluator`` and its key-metric savers in ``val_handlers``) to
      ``<ckpt_dir>/checkpoint_epoch=N.pt``, keeping only the newest (rank 0 only);
    - with ``resume``, the newest such checkpoint is loaded when the trainer starts, and training continues with
      the epoch after it;
    - with ``early_stop_patience``, training stops when ``key_metric`` of ``evaluator`` has not improved for that
      many validations;
    - with ``time_budget_minutes``, training stops (after a last validation) before an epoch would overrun it;
    - with ``progress_bar``, ignite's progress bar (rank 0 only);
    - the last epoch is always validated (so ``model.pt`` is written even when ``max_epochs`` is not a multiple of
      ``val_interval``, as when MONAI Label overrides ``train#trainer#max_epochs``).

    Handlers in ``train#handlers`` must be plain handler configs (MONAI Label inserts its own), which is why these
    conditional ones are attached here.
    """
    state = dict(state)
    if evaluator is not None and _has_no_data(evaluator):
        logger.warning("no validation data (e.g. MONAI Label's val_split of too few labelled images): validation is "
                       "skipped and %s/model.pt is the last epoch's model", ckpt_dir)
        # ValidationHandler, a plain entry of train#handlers, would run the evaluator on nothing (ignite refuses
        # empty data): make its runs no-ops, and save the last epoch's model where the best one would have gone.
        evaluator.run = _skipped_run(evaluator)
        evaluator = None
        if idist.get_rank() == 0:
            trainer.add_event_handler(Events.COMPLETED, _save_model, state["model"], Path(ckpt_dir) / "model.pt")
    if evaluator is not None:
        state["validation"] = ValidationRecord(evaluator, val_handlers)
        # before the per-epoch checkpoint below, so that it records this validation too
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _validate_last_epoch, evaluator, val_interval)
    if resume:
        path = latest_checkpoint(ckpt_dir)
        CheckpointLoader(load_path=str(path), load_dict=state, map_location="cpu").attach(trainer)
        logger.info("resuming from %s", path)
    if idist.get_rank() == 0:
        # A run killed while saving must leave the previous checkpoint, never a truncated one or none: the file is
        # written to a temporary name and renamed (ignite's atomic DiskSaver; MONAI's CheckpointSaver writes in
        # place), and older ones are removed after that (ignite's n_saved removes them before it writes).
        # ignite names a multi-object checkpoint "checkpoint_epoch=N.pt" (its file prefix stays empty).
        trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint(
            state, DiskSaver(str(ckpt_dir), require_empty=False, atomic=True),
            score_function=lambda engine: engine.state.epoch, score_name="epoch", n_saved=None))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _remove_older_checkpoints, Path(ckpt_dir))
        if progress_bar:
            ProgressBar(persist=True).attach(trainer)
    if early_stop_patience and evaluator is not None:
        EarlyStopHandler(patience=int(early_stop_patience), score_function=lambda engine: engine.state.metrics[
            key_metric], trainer=trainer).attach(evaluator)
    if time_budget_minutes:
        TimeBudget(time_budget_minutes, evaluator, val_interval).attach(trainer)
