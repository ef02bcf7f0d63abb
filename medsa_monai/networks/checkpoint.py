"""Reading official SAM / MedSAM / Med-SA checkpoints and loading them with every key accounted for.

The official Med-SA code loads SAM with ``strict=False`` after renaming keys, which silently drops the
relative-position tables. Here a checkpoint key that the model does not use, a model key that the checkpoint
lacks (unless the model declares it optional, e.g. a new adapter), or a shape that cannot be reconciled is an
error that names the keys and the variant the file looks like.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .variants import identify_variant

__all__ = ["CheckpointMismatchError", "load_checkpoint_file", "state_mismatch", "read_state_dict",
           "describe_state_dict", "resize_position_tables", "load_state_dict_checked"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "network", "net")
_BLOCK_KEY = re.compile(r"image_encoder\.blocks\.(\d+)\.")


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu", what: str = "model file"):
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what it looks like: a missing
    file, a truncated or damaged one (an interrupted download or copy), one that holds Python objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "it holds Python objects"
        raise ValueError(f"{what} '{path}' cannot be read with weights_only=True ({reason}): it holds more than "
                         f"tensors; only state dicts (as models/model.pt) and training checkpoints load") from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{what} '{path}' ({path.stat().st_size:,} bytes) cannot be read as a PyTorch checkpoint: "
                         f"{reason}; a truncated or damaged file (an interrupted download or copy?): get it again") \
            from None


def state_mismatch(target: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                   needed: Iterable[str] | None = None, shown: int = 4) -> str:
    """How ``state`` does not fit a network whose state dict is ``target`` (``""`` when it fits): keys it has that
    the network lacks, ``needed`` keys (default: all of the network's) it lacks, and shapes that differ, a few of
    each with the counts, in one line."""
    needed = set(target) if needed is None else set(needed)
    problems = {
        "not in the network": sorted(set(state) - set(target)),
        "missing from the file": sorted(needed - set(state)),
        "of another shape": [f"{k}: file {tuple(v.shape)}, network {tuple(target[k].shape)}"
                             for k, v in state.items() if k in target and v.shape != target[k].shape],
    }
    return "; ".join(f"{label}: {', '.join(keys[:shown])}" + (f" ... ({len(keys)} in all)" if len(keys) > shown
                                                               else "")
                     for label, keys in problems.items() if keys)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` state dict, with ``weights_only=True``.

    Accepts a plain state dict (the official ``sam_vit_b_01ec64.pth`` and MedSAM's ``medsam_vit_b.pth``), a dict
    that wraps it under ``model`` / ``state_dict`` / ``network`` (training checkpoints), and keys prefixed by
    ``module.`` (saved from ``DistributedDataParallel``).
    """
    path = Path(path)
    obj = load_checkpoint_file(path, what="checkpoint file")
    if isinstance(obj, Mapping) and isinstance(obj.get("medsa_weights"), Mapping):
        raise ValueError(f"'{path}' holds shared weights (only what trained, for the base checkpoint "
                         f"'{obj['medsa_weights']['base']['file']}'), not a SAM checkpoint: give it as the trained "
                         f"model (models/model.pt) and that base as sam_checkpoint")
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"'{path}' is not a state dict of tensors: keys {bad[:5]} hold other objects")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Say which SAM variant a state dict looks like, from its patch embedding width and block count."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return "no SAM image encoder (no 'image_encoder.patch_embed.proj.weight')"
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    return identify_variant(int(weight.shape[0]), len(blocks))


def resize_position_tables(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Interpolate position tables of ``state`` whose size differs from ``target`` (another ``image_size``).

    ``*pos_embed`` ``(1, g, g, C)`` grids are resized bicubically; relative-position tables (``*rel_pos*``,
    ``(2 g - 1, head_dim)``) linearly along their length, as ``segment_anything`` itself does at run time when a
    table and the token grid disagree. Other tensors are returned unchanged.
    """
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key.endswith("pos_embed") and value.ndim == 4 and value.shape[-1] == want.shape[-1]:
            grid = F.interpolate(value.permute(0, 3, 1, 2).float(), size=tuple(want.shape[1:3]), mode="bicubic",
                                 align_corners=False)
            out[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif "rel_pos" in key.rsplit(".", 1)[-1] and value.ndim == 2 and value.shape[1] == want.shape[1]:
            table = F.interpolate(value.T[None].float(), size=want.shape[0], mode="linear", align_corners=False)
            out[key] = table[0].T.to(value.dtype)
        else:
            continue
        logger.info("resized %s from %s to %s", key, tuple(value.shape), tuple(want.shape))
    return out


def load_state_dict_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    variant: str,
    optional: Callable[[str], bool] = lambda key: False,
) -> list[str]:
    """Load ``state`` into ``module``, requiring every checkpoint key to be used and every model key to be given.

    Args:
        module: the model to load into.
        state: the checkpoint's state dict (see :func:`read_state_dict`).
        source: where the state came from, for messages (a file name).
        variant: the SAM variant the model was built as, for messages.
        optional: model keys that may be absent from the checkpoint and keep their initial values
            (adapters, LoRA, class prompts: parts that SAM does not have).

    Returns:
        The model keys that kept their initial values.

    Raises:
        CheckpointMismatchError: naming missing, unexpected and mis-shaped keys and the variant the file looks like.
    """
    target = module.state_dict()
    state = resize_position_tables(state, target)
    missing = [k for k in target if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in target]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"checkpoint '{source}' does not fit SAM variant '{variant}'; "
                 f"the file looks like {describe_state_dict(state)}."]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointMismatchError("\n  ".join(parts))
    module.load_state_dict(state, strict=False)  # every key was checked above; absent ones are `optional`
    kept = [k for k in target if k not in state]
    if kept:
        logger.info("%d parameters not in '%s' keep their initial values (e.g. %s)", len(kept), source, kept[0])
    return kept
