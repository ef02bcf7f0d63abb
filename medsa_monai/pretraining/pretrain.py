"""``pretrain``: fine-tune SAM on many data sets at once, class-agnostic, as MedSAM and SAM-Med2D do, into a
foundation checkpoint in ``segment_anything``'s own format.

Every weight of a plain SAM trains (no adapters), on 2D frames of every data set (slices of volumes), each
normalised by its own plan; a sample is one structure of one frame, prompted as SAM is (a box, clicks, then the
interactive rounds of :class:`~medsa_monai.training.InteractiveTrainer`), unprompted only where the structure is the
whole label. Under ``torchrun`` each process draws its own samples and gradients are averaged; process 0 validates
and writes. The run is resumable (``resume``), bounded by ``max_epochs`` and ``minutes``, and shows a progress bar.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ignite.distributed as idist
import monai.transforms as mt
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import PrepareBatchExtraInput
from monai.handlers import from_engine
from monai.losses import DiceCELoss
from monai.utils import set_determinism

from ..data.hashing import file_sha256
from ..networks.medsa import MedSA
from ..prompts.transforms import SamplePromptsd
from ..training.sessions import InteractiveSessions
from ..training.trainer import InteractiveTrainer
from ..training.workflow import prepare_training
from .corpus import CorpusSet, read_corpus
from .foundation import save_foundation
from .frames import Frames, load_frames
from .samples import CorpusSampler, SamInputd, corpus_entries
from .schedule import BudgetCosine
from .validation import CorpusValidation

__all__ = ["PretrainSettings", "pretrain"]

logger = logging.getLogger(__name__)

PROMPT_KEYS = {"points": "points", "point_labels": "point_labels", "boxes": "boxes", "mask_inputs": "mask_inputs"}


@dataclass
class PretrainSettings:
    """What a foundation run does (the command line's options).

    Attributes:
        sam_variant, image_size: the SAM to train and its input side.
        sam_checkpoint: SAM weights to start from (an official checkpoint, or a foundation to continue); ``None``
            starts from random weights.
        weights: ``{data set name: sampling weight}`` (others weigh 1: each set is drawn equally often).
        val_fraction: the share of each set's cases held out for validation.
        steps_per_epoch, max_epochs, minutes: an epoch's iterations and the run's bounds.
        batch_size, learning_rate, weight_decay, warmup_steps: optimisation (AdamW, :class:`BudgetCosine`).
        max_rounds, no_prompt_probability, empty_fraction: the sessions' correction rounds; the share of unprompted
            samples (whole-label structures only); frames without foreground of one-structure sets per frame with.
        val_interval, val_pairs: validate every so many epochs, on at most so many (frame, structure) pairs a set.
        name: the foundation's file name, without ``.pth`` (default ``foundation_<variant>_<image size>``).
        frames_dir: where each set's frames are cached (default ``<output_dir>/frames``; runs on overlapping
            corpora can share one).
    """

    sam_variant: str = "vit_tiny"
    image_size: int = 128
    sam_checkpoint: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    val_fraction: float = 0.1
    steps_per_epoch: int = 100
    max_epochs: int = 100
    minutes: float | None = None
    batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_rounds: int = 4
    no_prompt_probability: float = 0.25
    empty_fraction: float = 0.25
    val_interval: int = 1
    val_pairs: int = 32
    num_workers: int = 0
    seed: int = 0
    resume: bool = False
    progress_bar: bool = True
    name: str | None = None
    frames_dir: str | None = None


def _distributed() -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group when there is one; this process's rank, the world size, the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return idist.get_rank(), idist.get_world_size(), device


def _frames(corpus: Sequence[CorpusSet], image_size: int, cache_dir: Path) -> tuple[list[Frames], list[Frames]]:
    """Training and held-out frames of every set; process 0 fills the cache first, the others then read it."""
    def load() -> tuple[list[Frames], list[Frames]]:
        return ([load_frames(s, s.training, image_size, cache_dir) for s in corpus],
                [load_frames(s, s.validation, image_size, cache_dir) for s in corpus])

    distributed = idist.get_world_size() > 1
    if distributed and idist.get_rank() != 0:
        idist.barrier()  # process 0 fills the cache
        return load()
    frames = load()
    if distributed:
        idist.barrier()
    return frames


def _loader(frames: list[Frames], corpus: Sequence[CorpusSet], settings: PretrainSettings, rank: int
            ) -> tuple[DataLoader, list[dict]]:
    entries = corpus_entries(frames, settings.empty_fraction, settings.seed)
    transform = mt.Compose([
        SamInputd(frames),
        mt.RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
        mt.RandFlipd(["image", "label"], prob=0.5, spatial_axis=1),
        SamplePromptsd("label", num_classes=1, max_positive=3, max_negative=2, box_probability=0.5,
                       point_probability=0.5, no_prompt_probability=settings.no_prompt_probability,
                       automatic_key="automatic"),
    ])
    sampler = CorpusSampler(entries, [s.weight for s in corpus], settings.steps_per_epoch * settings.batch_size,
                            settings.seed, rank)
    loader = DataLoader(Dataset(entries, transform), batch_size=settings.batch_size, sampler=sampler,
                        num_workers=settings.num_workers)
    return loader, entries


def _record(corpus: Sequence[CorpusSet], plan_files: Sequence, frames: list[Frames], val_frames: list[Frames],
            entries: list[dict], settings: PretrainSettings, trainer: Engine, validation: CorpusValidation | None,
            seconds: float) -> dict:
    per_set = {s: sum(e["set"] == i for e in entries) for i, s in enumerate(c.name for c in corpus)}
    start = settings.sam_checkpoint
    return {
        "datasets": {c.name: {"plan": str(Path(p).resolve()), "training_cases": len(c.training),
                              "validation_cases": len(c.validation), "training_frames": len(f),
                              "validation_frames": len(v), "samples": per_set[c.name], "weight": c.weight}
                     for c, p, f, v in zip(corpus, plan_files, frames, val_frames, strict=True)},
        "steps": trainer.state.iteration, "epochs": trainer.state.epoch,
        "batch_size": settings.batch_size, "world_size": idist.get_world_size(), "seconds": round(seconds, 1),
        "started_from": None if start is None else {"file": Path(start).name, "sha256": file_sha256(start)},
        "validation": validation.history if validation is not None else [],
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("resume", "progress_bar", "frames_dir")},
    }


def pretrain(plan_files: Sequence[str | Path], output_dir: str | Path,
             settings: PretrainSettings | None = None) -> Path:
    """Train a foundation on the data sets of ``plan_files`` (one ``plan.json`` each); write
    ``<output_dir>/<name>.pth`` (``segment_anything``'s format) and ``<name>.json`` (variant, image size, data sets
    with their case and frame counts, steps, validation, SHA-256). Returns the ``.pth`` path.

    ``<output_dir>/checkpoints/`` keeps the newest resumable state; ``<output_dir>/frames/`` caches each set's
    frames (the same cases, plan and size read them back)."""
    settings = settings or PretrainSettings()
    output_dir = Path(output_dir)
    rank, world, device = _distributed()
    set_determinism(settings.seed + rank)
    corpus = read_corpus(plan_files, settings.weights, settings.val_fraction, settings.seed)
    frames_dir = Path(settings.frames_dir) if settings.frames_dir else output_dir / "frames"
    frames, val_frames = _frames(corpus, settings.image_size, frames_dir)
    loader, entries = _loader(frames, corpus, settings, rank)
    logger.info("corpus: %s", ", ".join(f"{c.name} ({len(c.training)} cases, {len(f)} frames, weight {c.weight:g})"
                                        for c, f in zip(corpus, frames, strict=True)))

    network = MedSA(2, 3, 2, settings.sam_variant, settings.sam_checkpoint, settings.image_size, trainable="full",
                    intensity="zscore").to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    schedule = BudgetCosine(optimizer, settings.max_epochs * settings.steps_per_epoch, settings.warmup_steps,
                            settings.minutes)
    trainer = InteractiveTrainer(
        device, settings.max_epochs, loader, network, optimizer, DiceCELoss(to_onehot_y=True, softmax=True),
        sessions=InteractiveSessions(max_rounds=settings.max_rounds, propagation_probability=0.0,
                                     seed=settings.seed + rank),
        automatic_loss_weight=0.0, dense_prompts=True, prepare_batch=PrepareBatchExtraInput(PROMPT_KEYS),
        amp=torch.cuda.is_available())
    schedule.attach(trainer)
    validation = None
    if rank == 0:
        names = [c.name for c in corpus]
        validation = CorpusValidation(network, val_frames, names, settings.val_interval, settings.val_pairs,
                                      seed=settings.seed)
        validation.attach(trainer)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _log_epoch, schedule)
    prepare_training(trainer, None, output_dir / "checkpoints",
                     {"model": network, "optimizer": optimizer, "schedule": schedule, "trainer": trainer},
                     resume=settings.resume, time_budget_minutes=settings.minutes,
                     val_interval=settings.val_interval, progress_bar=settings.progress_bar)
    path = output_dir / f"{settings.name or f'foundation_{settings.sam_variant}_{settings.image_size}'}.pth"
    start = time.monotonic()
    trainer.run()
    if rank == 0:
        record = _record(corpus, plan_files, frames, val_frames, entries, settings, trainer, validation,
                         time.monotonic() - start)
        save_foundation(network, path, record)
        logger.info("wrote %s and %s (%d steps)", path, path.with_suffix(".json").name, trainer.state.iteration)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return path


def _log_epoch(engine: Engine, schedule: BudgetCosine) -> None:
    loss = from_engine(["loss"], first=True)(engine.state.output) if engine.state.output else None
    logger.info("epoch %d, step %d: loss %.4f, learning-rate factor %.3f, progress %.0f%%", engine.state.epoch,
                engine.state.iteration, float(loss) if loss is not None else float("nan"), schedule.factor(),
                100 * schedule.progress())

