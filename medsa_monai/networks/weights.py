"""Trained weights to share: only what training changed, beside the record of the SAM checkpoint they need.

A network trained with a frozen base (every preset but ``full``) differs from its base checkpoint only in the
parts that trained and the parts SAM does not have (adapters, LoRA, class prompts, the input layer). Its shared
weights, the bundle's ``models/model.pt``, hold just those, and a record of the base: file name, SHA-256, variant
and image size. Loading them needs that very base: :meth:`MedSA.load_state_dict` refuses another one, naming both
hashes, and a network built without one, naming the file to fetch. ``trainable="full"`` (and a network with no
base checkpoint, whose frozen weights are random) saves the whole state dict, as earlier versions did, and such
files still load.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.hashing import file_sha256
from .checkpoint import CheckpointMismatchError, describe_state_dict, load_checkpoint_file
from .presets import SAM_GROUPS, TRAINABLE_PRESETS, parameter_group
from .variants import SAM_VARIANTS

__all__ = ["BaseCheckpoint", "BaseMismatchError", "TrainedWeights", "WEIGHTS_RECORD", "base_for_weights",
           "describe_base", "is_trained_weights", "load_trained_weights", "read_weights_record", "saved_keys",
           "trained_weights", "trained_weights_bytes"]

logger = logging.getLogger(__name__)

WEIGHTS_RECORD = "medsa_weights"
"""The key of the record in a shared-weights file, beside the saved tensors' own keys (so that loaders that copy by
key, as ``monai.bundle.load``, find them); a plain state dict has no such key."""
FORMAT_VERSION = 1


class BaseMismatchError(CheckpointMismatchError):
    """Shared weights loaded onto another base checkpoint than the one they were trained on, or onto none."""


@dataclass(frozen=True)
class BaseCheckpoint:
    """The SAM checkpoint a network was built from: file name, SHA-256, variant and image size (pixels)."""

    file: str
    sha256: str
    variant: str
    image_size: int | None

    def official_url(self) -> str | None:
        """Where to download this file, when it is an official SAM release (by file name)."""
        return next((v.official_url for v in SAM_VARIANTS.values() if v.official_file == self.file), None)

    def how_to_get(self) -> str:
        url = self.official_url()
        if url:
            return f"download {url}"
        return (f"get '{self.file}' from whoever shared these weights (a foundation made by `medsa pretrain` has "
                f"'{Path(self.file).stem}.json' beside it, with the same SHA-256)")


def describe_base(path: str | Path, state: Mapping[str, torch.Tensor]) -> BaseCheckpoint:
    """The record of the checkpoint file at ``path`` whose state dict is ``state``."""
    pos_embed = state.get("image_encoder.pos_embed")
    patch = state.get("image_encoder.patch_embed.proj.weight")
    image_size = (int(pos_embed.shape[1]) * int(patch.shape[-1])
                  if pos_embed is not None and patch is not None and pos_embed.ndim == 4 else None)
    return BaseCheckpoint(Path(path).name, file_sha256(path), describe_state_dict(state), image_size)


def _base_of(network: nn.Module) -> BaseCheckpoint | None:
    return getattr(network, "base_checkpoint", None)


def saved_keys(network: nn.Module) -> list[str]:
    """The state-dict keys that a frozen base does not give: the preset's trained groups and every part that SAM
    does not have (trained or not: an untrained adapter's initial values are not in the base either)."""
    trained = TRAINABLE_PRESETS[network.trainable]
    return [k for k in network.state_dict() if parameter_group(k) not in SAM_GROUPS or parameter_group(k) in trained]


def trained_weights(network: nn.Module) -> dict:
    """What to save of ``network`` (a :class:`~medsa_monai.networks.MedSA`): the saved keys (:func:`saved_keys`)
    and ``"medsa_weights"``, the record of the preset and the base checkpoint, when it has a frozen base
    checkpoint; else its whole state dict."""
    base = _base_of(network)
    state = network.state_dict()
    if network.trainable == "full" or base is None:
        return state
    record = {"format_version": FORMAT_VERSION, "trainable": network.trainable, "sam_variant": network.sam_variant,
              "image_size": int(network.image_size), "base": asdict(base)}
    return {**{k: state[k] for k in saved_keys(network)}, WEIGHTS_RECORD: record}


def trained_weights_bytes(network: nn.Module) -> int:
    """Bytes of the tensors :func:`trained_weights` saves (works on the meta device; the file adds a few KiB)."""
    state = network.state_dict()
    keys = state if network.trainable == "full" else saved_keys(network)
    return sum(state[k].numel() * state[k].element_size() for k in keys)


def is_trained_weights(obj) -> bool:
    """Whether ``obj`` (a loaded file) holds shared weights with their base's record, not a plain state dict."""
    return isinstance(obj, Mapping) and isinstance(obj.get(WEIGHTS_RECORD), Mapping)


def read_weights_record(path: str | Path) -> dict | None:
    """The record of the shared-weights file at ``path``, or ``None`` for a plain state dict (whole network)."""
    obj = load_checkpoint_file(path, map_location="meta")
    return dict(obj[WEIGHTS_RECORD]) if is_trained_weights(obj) else None


def load_trained_weights(network: nn.Module, weights: Mapping, source: str = "the weights"):
    """Load shared weights (see :func:`trained_weights`) into ``network``, built on their base checkpoint; returns
    ``nn.Module.load_state_dict``'s keys (its ``missing_keys`` are those that the base gave).

    Raises:
        BaseMismatchError: ``network`` was built on another base checkpoint, or on none; the message names both
            SHA-256 hashes, or the file to fetch.
        CheckpointMismatchError: the weights' keys are not the parts ``network`` needs from them (another preset
            or architecture); a part left out would keep random values, so this is never only a warning.
    """
    record = weights[WEIGHTS_RECORD]
    state = {k: v for k, v in weights.items() if k != WEIGHTS_RECORD}
    wanted = BaseCheckpoint(**record["base"])
    base = _base_of(network)
    if base is None:
        raise BaseMismatchError(
            f"{source} hold only what trained ({record['trainable']} preset) and need the base checkpoint "
            f"'{wanted.file}' (sha256 {wanted.sha256}, {wanted.variant}); the network was built without one: "
            f"{wanted.how_to_get()} and build it with sam_checkpoint=<that file> (bundles: --sam_checkpoint <file>, "
            f"default models/{wanted.file})")
    if base.sha256 != wanted.sha256:
        raise BaseMismatchError(
            f"{source} were trained on the base checkpoint '{wanted.file}' (sha256 {wanted.sha256}), but the "
            f"network was built on '{base.file}' (sha256 {base.sha256}): build it on the right base "
            f"({wanted.how_to_get()})")
    target = network.state_dict()
    needed = set(saved_keys(network))
    missing = sorted(needed - set(state))
    unexpected = sorted(set(state) - needed)
    mismatched = [f"{k}: file {tuple(v.shape)} vs network {tuple(target[k].shape)}" for k, v in state.items()
                  if k in target and v.shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{source} (trainable={record['trainable']!r}) do not fit the network "
                 f"(trainable={network.trainable!r}, {network.sam_variant} at {network.image_size})"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)):
            if keys:
                parts.append(f"{label}: " + ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6
                                                                    else ""))
        raise CheckpointMismatchError("; ".join(parts))
    return nn.Module.load_state_dict(network, dict(state), strict=False)  # the others are the base's, checked above


def base_for_weights(weights: str | Path, sam_checkpoint: str | Path | None) -> str | None:
    """The base checkpoint a network must be built on to load the weights file ``weights``: ``sam_checkpoint``
    when ``weights`` holds shared weights (checked to exist and to be the right file; when it is not given, or is
    a missing file in the folder of ``weights``, the base's own file there), ``None`` when it holds a
    whole network, or does not exist (a warning: e.g. ``monai.bundle.load`` without ``bundle_root``, whose copy of
    the weights by key would then land on a network without its base)."""
    weights = Path(weights)
    if not weights.is_file():
        logger.warning("no trained weights at '%s' (is bundle_root the bundle's folder?): the network is built "
                       "without them", weights)
        return None
    record = read_weights_record(weights)
    if record is None:
        return None
    wanted = BaseCheckpoint(**record["base"])
    beside = weights.parent / wanted.file  # where a packed bundle's large_files.yml puts the base
    default = sam_checkpoint is None or Path(sam_checkpoint).parent.resolve() == weights.parent.resolve()
    if default and beside.is_file() and (sam_checkpoint is None or not Path(sam_checkpoint).is_file()):
        sam_checkpoint = beside
    if sam_checkpoint is None or not Path(sam_checkpoint).is_file():
        raise FileNotFoundError(
            f"'{weights}' holds only what trained ({record['trainable']} preset) and needs its base checkpoint "
            f"'{wanted.file}' (sha256 {wanted.sha256}), " + (f"not found at '{sam_checkpoint}'" if sam_checkpoint
                                                            else "but no sam_checkpoint is given")
            + f": {wanted.how_to_get()}" + (f" to '{sam_checkpoint}'" if sam_checkpoint else "")
            + ", or pass --sam_checkpoint <file>")
    actual = file_sha256(sam_checkpoint)
    if actual != wanted.sha256:
        raise BaseMismatchError(
            f"'{weights}' was trained on the base checkpoint '{wanted.file}' (sha256 {wanted.sha256}), but "
            f"'{sam_checkpoint}' has sha256 {actual}: {wanted.how_to_get()}, or pass --sam_checkpoint <file>")
    return str(sam_checkpoint)


class TrainedWeights:
    """A network's shared weights as a checkpointable object, for ignite's and MONAI's checkpoint handlers:
    ``"save_dict": {"model": "$medsa_monai.networks.TrainedWeights(@network)"}`` writes :func:`trained_weights`."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def _module(self) -> nn.Module:
        return self.network.module if isinstance(self.network, (nn.DataParallel,
                                                                nn.parallel.DistributedDataParallel)) else self.network

    def state_dict(self) -> dict:
        return trained_weights(self._module())

    def load_state_dict(self, state: Mapping) -> None:
        self._module().load_state_dict(state)
