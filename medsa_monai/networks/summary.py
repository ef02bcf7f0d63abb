"""Tables of trainable parameters per SAM variant, preset and dimensionality, computed from the networks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .medsa import MedSA
from .presets import SAM_GROUPS, TRAINABLE_PRESETS, count_parameters, parameter_group
from .weights import trained_weights_bytes

__all__ = ["ParameterRow", "parameter_table", "format_parameter_table", "format_weights_table"]


class ParameterRow(NamedTuple):
    variant: str
    spatial_dims: int
    preset: str
    sam_total: int
    total: int
    trainable: int
    percent: float
    weights_bytes: int


def parameter_table(
    variants: Sequence[str] = ("vit_b", "vit_l", "vit_h"),
    presets: Sequence[str] = tuple(TRAINABLE_PRESETS),
    spatial_dims: Sequence[int] = (2, 3),
    out_channels: int = 2,
    adapter_ratio: float = 0.25,
) -> list[ParameterRow]:
    """Count parameters of ``MedSA`` for each combination, and the bytes of the weights training saves (with a
    frozen base, only what trained: :func:`~medsa_monai.networks.trained_weights`); networks are built on the meta
    device (no memory)."""
    rows = []
    with torch.device("meta"):
        for variant in variants:
            for dims in spatial_dims:
                for preset in presets:
                    net = MedSA(dims, 1, out_channels, variant, trainable=preset,
                                architecture={"adapter_ratio": adapter_ratio})
                    sam = sum(p.numel() for n, p in net.named_parameters() if parameter_group(n) in SAM_GROUPS)
                    rows.append(ParameterRow(variant, dims, preset, sam, *count_parameters(net),
                                             trained_weights_bytes(net)))
    return rows


def format_parameter_table(rows: Sequence[ParameterRow]) -> str:
    """A Markdown table: one line per variant and dimensionality, trainable millions and percent per preset.

    Percentages are of each network's own total (SAM plus the optional parts that preset builds).
    """
    presets = list(dict.fromkeys(r.preset for r in rows))
    header = "| variant | dims | SAM (M) | " + " | ".join(presets) + " |"
    lines = [header, "|" + "---|" * (3 + len(presets))]
    groups: dict[tuple[str, int], list[ParameterRow]] = {}
    for row in rows:
        groups.setdefault((row.variant, row.spatial_dims), []).append(row)
    for (variant, dims), group in groups.items():
        by_preset = {r.preset: r for r in group}
        cells = [f"{by_preset[p].trainable / 1e6:.2f} M ({by_preset[p].percent:.1f}%)" for p in presets]
        lines.append(f"| {variant} | {dims}D | {group[0].sam_total / 1e6:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_weights_table(rows: Sequence[ParameterRow]) -> str:
    """A Markdown table: the size of the saved ``model.pt`` (MiB) per variant, dimensionality and preset."""
    presets = list(dict.fromkeys(r.preset for r in rows))
    lines = ["| variant | dims | " + " | ".join(presets) + " |", "|" + "---|" * (2 + len(presets))]
    groups: dict[tuple[str, int], dict[str, ParameterRow]] = {}
    for row in rows:
        groups.setdefault((row.variant, row.spatial_dims), {})[row.preset] = row
    for (variant, dims), by_preset in groups.items():
        cells = [f"{by_preset[p].weights_bytes / 2**20:.1f} MiB" for p in presets]
        lines.append(f"| {variant} | {dims}D | " + " | ".join(cells) + " |")
    return "\n".join(lines)
