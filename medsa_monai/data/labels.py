"""Label values, classes and regions.

A data set declares the values its label files hold; they may have gaps (BraTS: 0, 1, 2, 4) or be 0 / 255 (masks
saved as images). Two ways to train on them:

- **classes** (default): each declared value is a class; training uses consecutive class indices ``0 .. K`` (one
  softmax output per class, background first) and written predictions carry the original values;
- **regions**, as nnU-Net v2 declares them (a ``labels`` entry that is a list of values, and
  ``regions_class_order``): a region is a union of label values (BraTS whole tumour {1, 2, 4}; optic disc {1, 2}
  containing the cup {2}). Regions may overlap or nest, so each is its own sigmoid output (for SAM: one class prompt,
  one mask) and the target has one binary channel per region; a label map is written the nnU-Net way: the regions in
  order, each painting its ``regions_class_order`` value over the ones before it.

Label files may also hold *aliases*, further values that stand for a declared one (``label_aliases``, ``{"1": 255}``:
a mask saved as 0 / 1 by MONAI Label where the data set's masks are 0 / 255). An alias is read as its value
everywhere (checks, training targets, metrics); predictions are written in the declared values.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

__all__ = ["LabelSpec", "LabelsToTargetd", "TargetToLabelsd", "parse_regions"]


@dataclass(frozen=True)
class LabelSpec:
    """What the label values of a data set mean and how the network outputs map to them.

    Args:
        values: the values label files hold, sorted, background (0) first.
        names: the name of each value.
        regions: for region training, the label values each region is made of (empty: class training).
        region_names: the name of each region.
        regions_class_order: the label value each region writes into a label map (nnU-Net v2), in painting order.
        aliases: ``(alias, value)`` pairs: label files may hold ``alias`` where they mean the declared ``value``.
    """

    values: tuple[int, ...]
    names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...] = ()
    region_names: tuple[str, ...] = ()
    regions_class_order: tuple[int, ...] = ()
    aliases: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) != len(self.names):
            raise ValueError(f"{len(self.values)} label values but {len(self.names)} names")
        if list(self.values) != sorted(set(self.values)) or not self.values or self.values[0] != 0:
            raise ValueError(f"label values must be distinct, sorted and start with background 0, got "
                             f"{list(self.values)}")
        if len(self.regions) != len(self.region_names):
            raise ValueError(f"{len(self.regions)} regions but {len(self.region_names)} region names")
        if self.regions:
            if len(self.regions_class_order) != len(self.regions):
                raise ValueError(f"regions_class_order {list(self.regions_class_order)} must give one label value "
                                 f"per region ({len(self.regions)} regions)")
            for name, region in zip(self.region_names, self.regions, strict=True):
                unknown = sorted(set(region) - set(self.values[1:]))
                if not region or unknown:
                    raise ValueError(f"region '{name}' {list(region)}: values {unknown or '[]'} are not foreground "
                                     f"label values {list(self.values[1:])}")
        for alias, value in self.aliases:
            if alias in self.values or alias < 0 or value not in self.values:
                raise ValueError(f"label alias {alias} -> {value}: an alias must be a non-negative value that is not "
                                 f"declared, standing for a declared one ({list(self.values)})")

    # -- reading and writing ----------------------------------------------------------------------------------

    @classmethod
    def from_description(cls, description: Mapping) -> LabelSpec:
        """From a ``dataset.json`` (MSD ``{value: name}`` or nnU-Net v2 ``{name: value or [values]}`` labels, with
        ``regions_class_order``), the output of :meth:`to_description`, or a plan (which holds the latter)."""
        labels = description["labels"]
        order = description.get("regions_class_order")
        aliases = {int(k): int(v) for k, v in (description.get("label_aliases") or {}).items()}
        if "regions" in description:  # our own form: labels {value: name} and regions {name: [values]}
            return cls._build({int(k): str(v) for k, v in labels.items()}, description["regions"] or {}, order,
                              aliases)
        values: dict[int, str] = {}
        regions: dict[str, list[int]] = {}
        for key, item in labels.items():
            if isinstance(item, (list, tuple)):  # nnU-Net v2 region: name -> [values]
                regions[str(key)] = [int(v) for v in item]
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):  # nnU-Net v2: name -> value
                values[int(item)] = str(key)
            else:  # MSD: "value" -> name
                try:
                    values[int(key)] = str(item)
                except ValueError as err:
                    raise ValueError(f"labels: entry {key!r}: {item!r} is neither 'value': name, name: value nor "
                                     f"name: [values]") from err
        if regions:  # nnU-Net v2 lists background and the regions; the values are those the regions use
            for value in sorted({v for vs in regions.values() for v in vs} - set(values)):
                values[value] = f"label_{value}"
        return cls._build(values, regions, order, aliases)

    @classmethod
    def _build(cls, values: Mapping[int, str], regions: Mapping[str, Sequence[int]], order,
               aliases: Mapping[int, int] | None = None) -> LabelSpec:
        values = dict(values)
        values.setdefault(0, "background")
        if regions and order is None:
            order = _default_region_order(list(regions.values()))
        return cls(tuple(sorted(values)), tuple(values[v] for v in sorted(values)),
                   tuple(tuple(int(v) for v in r) for r in regions.values()), tuple(str(n) for n in regions),
                   tuple(int(v) for v in order) if regions else (), tuple(sorted((aliases or {}).items())))

    def to_description(self) -> dict:
        """``{"labels": {value: name}, "regions": {name: [values]}, "regions_class_order": [...]}`` (JSON-ready),
        with ``"label_aliases": {alias: value}`` when there are aliases."""
        description = {"labels": {str(v): n for v, n in zip(self.values, self.names, strict=True)},
                       "regions": {n: list(r) for n, r in zip(self.region_names, self.regions, strict=True)},
                       "regions_class_order": list(self.regions_class_order)}
        if self.aliases:
            description["label_aliases"] = {str(a): v for a, v in self.aliases}
        return description

    @property
    def accepted_values(self) -> tuple[int, ...]:
        """Every value a label file may hold: the declared values and their aliases, sorted."""
        return tuple(sorted({*self.values, *(alias for alias, _ in self.aliases)}))

    def canonical(self, label):
        """``label`` (a tensor or an array) with every alias replaced by the declared value it stands for."""
        for alias, value in self.aliases:
            if isinstance(label, torch.Tensor):
                label = torch.where(label == alias, torch.tensor(value, dtype=label.dtype, device=label.device),
                                    label)
            else:
                label = np.where(np.asarray(label) == alias, value, label)
        return label

    # -- what the network outputs -----------------------------------------------------------------------------

    @property
    def has_regions(self) -> bool:
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        """The network's output channels: one per region, or one per class with background."""
        return len(self.regions) if self.regions else len(self.values)

    @property
    def output_names(self) -> list[str]:
        """The foreground outputs' names: the regions, or the classes without background."""
        return list(self.region_names) if self.regions else list(self.names[1:])

    def output_masks(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """``{output name: boolean mask}`` of a label map in original values: what each output should segment."""
        label_map = self.canonical(label_map)
        if self.regions:
            return {n: np.isin(label_map, r) for n, r in zip(self.region_names, self.regions, strict=True)}
        return {n: label_map == v for v, n in zip(self.values[1:], self.names[1:], strict=True)}

    def to_target(self, label: torch.Tensor) -> torch.Tensor:
        """A label map ``(1, *spatial)`` in original values -> the training target: consecutive class indices
        ``(1, *spatial)``, or one binary channel per region ``(R, *spatial)``."""
        label = self.canonical(torch.as_tensor(label))
        if self.regions:
            lut_regions = [torch.isin(label[0], torch.tensor(r, device=label.device)) for r in self.regions]
            return torch.stack(lut_regions).to(torch.uint8)
        lut = torch.zeros(max(self.values) + 1, dtype=torch.long, device=label.device)
        lut[list(self.values)] = torch.arange(len(self.values), device=label.device)
        return lut[label.long()].to(torch.uint8)

    def to_label_map(self, prediction: torch.Tensor) -> torch.Tensor:
        """The network's discrete prediction -> a label map ``(1, *spatial)`` in original values.

        ``prediction`` is the class index map ``(1, *spatial)`` (after argmax) or the binary regions
        ``(R, *spatial)`` (after thresholding the sigmoid), which paint their ``regions_class_order`` value in order.
        """
        prediction = torch.as_tensor(prediction)
        if self.regions:
            out = torch.zeros_like(prediction[:1], dtype=torch.long)
            for channel, value in enumerate(self.regions_class_order):
                out[0][prediction[channel] > 0] = value
            return out
        lut = torch.tensor(self.values, dtype=torch.long, device=prediction.device)
        return lut[prediction.long()]


def _default_region_order(regions: list[Sequence[int]]) -> list[int]:
    """The value each region paints: its smallest value that no later region covers (disc {1, 2} then cup {2}:
    1, 2; BraTS {1, 2, 4}, {2, 4}, {4}: 1, 2, 4), so that painting in order gives back the label map; the
    largest value for a region that later ones cover entirely."""
    order = []
    for i, region in enumerate(regions):
        later = {v for other in regions[i + 1:] for v in other}
        own = sorted(set(region) - later)
        order.append(own[0] if own else max(region))
    return order


def parse_regions(text: str | Mapping, values: Sequence[int] | None = None) -> dict[str, list[int]]:
    """Regions from the command line: ``"disc=1,2;cup=2"`` or JSON ``{"disc": [1, 2], "cup": [2]}``."""
    if isinstance(text, Mapping):
        return {str(k): [int(v) for v in vs] for k, vs in text.items()}
    text = text.strip()
    if text.startswith("{"):
        import json

        return parse_regions(json.loads(text))
    regions = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, members = part.partition("=")
        if not name or not members:
            raise ValueError(f"region {part!r}: expected name=value,value (e.g. 'disc=1,2;cup=2')")
        regions[name.strip()] = [int(v) for v in members.split(",")]
    return regions


class _LabelSpecMapd(MapTransform):
    """Apply one of a :class:`LabelSpec`'s maps to each key; keeps MetaTensor meta data."""

    def __init__(self, keys: KeysCollection, spec: LabelSpec | Mapping, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spec = spec if isinstance(spec, LabelSpec) else LabelSpec.from_description(spec)

    def map(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.map(d[key])
        return d


class LabelsToTargetd(_LabelSpecMapd):
    """Map label maps in original values to the training target of a :class:`LabelSpec` (see
    :meth:`LabelSpec.to_target`)."""

    def map(self, labels: torch.Tensor) -> torch.Tensor:
        return convert_to_dst_type(self.spec.to_target(labels), labels, dtype=torch.uint8)[0]


class TargetToLabelsd(_LabelSpecMapd):
    """Map discrete predictions back to label maps in original values (see :meth:`LabelSpec.to_label_map`)."""

    def map(self, labels: torch.Tensor) -> torch.Tensor:
        return convert_to_dst_type(self.spec.to_label_map(labels), labels)[0]
