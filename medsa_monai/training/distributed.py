"""What each process of a distributed (``torchrun``) bundle run trained on, to check data sharding and weight sync."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..data.atomic import atomic_write_text
from ..predictor.predictor import unwrap_network

__all__ = ["RankRecorder", "state_dict_sha256"]


def state_dict_sha256(network: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a network's state dict, or of a state dict (keys, dtypes, shapes and values; a DDP /
    DataParallel wrapper ignored, so a wrapped network and the checkpoint saved from it hash the same)."""
    state = unwrap_network(network).state_dict() if isinstance(network, torch.nn.Module) else network
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class RankRecorder:
    """Record, in each process of a distributed run, what it trained on and the weights it ended with.

    Writes ``<output_dir>/rank<k>.json`` (atomically) when the engine completes, with:

    - ``rank``, ``world_size``, ``iterations``;
    - ``sampled``: per epoch, the ``image`` entries of the data items the data loader's sampler gave this rank
      (from the sampler's indices into the dataset's ``data`` list, so it works when the transforms drop the
      metadata, as the bundles' ``EnsureTyped(track_meta=False)`` does);
    - ``initial_sha256`` and ``state_sha256``: :func:`state_dict_sha256` of ``network`` (default: the engine's
      ``network``) when the engine started and when it completed.

    The bundles' ``configs/multi_gpu_train.json`` adds ``train#extra_handlers`` to every rank's trainer, so a
    config overlay given after it records a run::

        {"train#extra_handlers": ["$medsa_monai.training.RankRecorder(@output_dir + '/ranks')"]}
    """

    def __init__(self, output_dir: str | Path, network: torch.nn.Module | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.network = network
        self.sampled: list[list[str]] = []
        self.initial_sha256: str | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _network(self, engine: Engine) -> torch.nn.Module | None:
        return self.network if self.network is not None else getattr(engine, "network", None)

    def started(self, engine: Engine) -> None:
        network = self._network(engine)
        self.initial_sha256 = state_dict_sha256(network) if network is not None else None

    def epoch_started(self, engine: Engine) -> None:
        loader = engine.state.dataloader
        sampler, data = getattr(loader, "sampler", None), getattr(getattr(loader, "dataset", None), "data", None)
        if sampler is None or data is None:
            return
        # the sampler's order for this epoch: MONAI's workflow called its set_epoch at EPOCH_STARTED already
        self.sampled.append([str(data[i].get("image", i)) if isinstance(data[i], dict) else str(i)
                             for i in iter(sampler)])

    def completed(self, engine: Engine) -> None:
        rank = idist.get_rank()
        network = self._network(engine)
        record = {
            "rank": rank,
            "world_size": idist.get_world_size(),
            "iterations": engine.state.iteration,
            "sampled": self.sampled,
            "initial_sha256": self.initial_sha256,
            "state_sha256": state_dict_sha256(network) if network is not None else None,
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.output_dir / f"rank{rank}.json", json.dumps(record, indent=1))
