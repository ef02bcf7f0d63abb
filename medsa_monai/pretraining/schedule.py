"""A learning-rate schedule that ends with the run, whether steps or wall-clock minutes end it."""

from __future__ import annotations

import math
import time

import torch
from ignite.engine import Engine, Events

__all__ = ["BudgetCosine"]


class BudgetCosine:
    """Linear warm-up over ``warmup_steps``, then a cosine decay to 0 over the run's progress: the larger of the
    steps done out of ``total_steps`` and the minutes spent out of ``minutes`` (when given), so that a run stopped
    by its time budget also ends on a small learning rate. Checkpointable: a resumed run keeps its progress.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                 minutes: float | None = None) -> None:
        self.optimizer = optimizer
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.total_steps, self.warmup_steps = max(1, int(total_steps)), max(0, int(warmup_steps))
        self.seconds = 60.0 * minutes if minutes else None
        self.steps, self.spent, self._since = 0, 0.0, None

    def progress(self) -> float:
        spent = self.spent + (time.monotonic() - self._since if self._since is not None else 0.0)
        by_time = spent / self.seconds if self.seconds else 0.0
        return min(1.0, max(self.steps / self.total_steps, by_time))

    def factor(self) -> float:
        if self.steps < self.warmup_steps:
            return (self.steps + 1) / (self.warmup_steps + 1)
        return 0.5 * (1.0 + math.cos(math.pi * self.progress()))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._step)

    def _started(self, engine: Engine) -> None:
        self._since = time.monotonic()

    def _step(self, engine: Engine) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor
        self.steps += 1

    def state_dict(self) -> dict:
        spent = self.spent + (time.monotonic() - self._since if self._since is not None else 0.0)
        return {"steps": self.steps, "spent": spent}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.spent = int(state["steps"]), float(state["spent"])
        self._since = time.monotonic()
