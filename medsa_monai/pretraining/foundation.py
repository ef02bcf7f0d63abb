"""A foundation checkpoint: SAM's own state dict, loadable by ``segment_anything`` as the official files are, with a
small JSON record beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..data.atomic import atomic_path, atomic_write_text
from ..data.hashing import file_sha256
from ..networks.presets import SAM_GROUPS, parameter_group
from ..networks.sam import build_sam

__all__ = ["sam_state_dict", "save_foundation", "read_foundation_record"]


def sam_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a plain SAM (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) held by a
    :class:`~medsa_monai.networks.MedSA` without optional parts, keyed as ``segment_anything``'s ``Sam``.

    Raises:
        ValueError: the network has parts that SAM does not (adapters, LoRA, SAM-DA, SD-Trans, an input layer).
    """
    state = network.state_dict()
    sam = {k: v.detach().cpu().clone() for k, v in state.items() if parameter_group(k) in SAM_GROUPS}
    with torch.device("meta"):
        expected = set(build_sam(network.sam_variant, image_size=network.image_size).state_dict())
    extra = sorted(set(sam) - expected)
    if extra or set(sam) != expected:
        raise ValueError(f"a foundation is a plain SAM; this network also has {extra[:4] or 'other parts'}: build "
                         f"it with trainable='full', spatial_dims=2 and no adapters")
    return sam


def save_foundation(network: nn.Module, path: str | Path, record: Mapping) -> Path:
    """Write ``path`` (SAM's state dict, as ``sam_vit_b_01ec64.pth`` is written) and ``path`` with ``.json``: the
    ``record`` with the variant, image size, file name and SHA-256 added. Both appear whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(sam_state_dict(network), tmp)
    sidecar = {**dict(record), "format": "segment_anything state dict", "variant": network.sam_variant,
               "image_size": int(network.image_size), "file": path.name, "sha256": file_sha256(path)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=1) + "\n")
    return path


def read_foundation_record(path: str | Path) -> dict | None:
    """The JSON record beside a foundation checkpoint, or ``None`` when there is none."""
    sidecar = Path(path).with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None
