"""The plan as a type: read, checked, written and defaulted in one place, what every stage reads.

``medsa plan`` writes ``plan.json`` (:func:`~medsa_monai.planning.make_plan`); a bundle holds the plan it was made
from (its ``bundle_plan`` setting) and may be given another (``--plan_file``). :class:`Plan` reads either, names the
key and the file of any value that does not fit, fills what a plan leaves out with the defaults below (the only
place they are written), and gives the values the configs use (``@plan.patch_size``, ``@plan.label_spec``...).
A plan also reads like its JSON (``plan["patch_size"]``), so code written for the plain dictionary keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.io import write_json
from ..data.labels import LabelSpec

__all__ = ["MODEL_KEYS", "TRAINED_PLAN", "Plan", "PlanError", "load_plan", "slice_last_indices", "PLAN_VERSION",
           "CONFIGURATIONS", "OVERRIDABLE", "model_plan_file", "check_model_plan", "record_trained_plan"]

PLAN_VERSION = 2
CONFIGURATIONS = ("3d", "2d")
INTENSITIES = ("unit", "uint8", "zscore")
CACHE_KINDS = ("memory", "disk")
OVERRIDABLE = ("sam_variant", "image_size", "patch_size", "batch_size", "pixdim", "sw_batch_size", "sw_overlap",
               "datalist_file")
"""The plan's values a bundle run may override (``--image_size 96``; ``None`` keeps the planned one)."""

_DERIVED = ("num_classes", "label_values", "class_names", "has_regions")  # written for readers, recomputed here
RECORD_KEYS = ("memory", "median_shape_at_target_spacing", "notes")  # the planner's notes beside the settings


class PlanError(ValueError):
    """A plan that cannot be used; the message names the file and the key."""


def slice_last_indices(axis: int) -> list[int]:
    """Channel-inclusive ``Transposed`` indices that move the volume's ``axis`` (of ``(C, X, Y, Z)``) last, where
    the network slices, keeping the order of the other two: ``0 -> [0, 2, 3, 1]``, ``1 -> [0, 1, 3, 2]``,
    ``2 -> [0, 1, 2, 3]``."""
    if axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {axis!r}")
    return [0] + [1 + a for a in (0, 1, 2) if a != axis] + [1 + axis]


@dataclass(frozen=True)
class Plan(Mapping):
    """The settings a bundle trains and infers with for one data set (see :func:`~medsa_monai.planning.make_plan`
    for how each is decided). Array axes of volumes are in RAS order, as ``Orientationd`` / ``Spacingd`` leave
    them; ``patch_size`` is in the network's order (the slicing axis last).

    Attributes:
        labels: ``{value: name}`` of the label files, background included.
        regions: ``{name: [values]}`` when the network outputs (nested or overlapping) regions; empty for classes.
        regions_class_order: the values painted, in order, when regions become a label map.
        label_aliases: ``{alias: value}``: values a label file may hold for a declared one (e.g. 1 for 255).
        modality: ``{channel: name}``, as the data set describes its channels.
        spatial_dims: 2 for images, 3 for volumes (the network's too).
        in_channels: the image's channels.
        configuration: ``"3d"`` (SD-Trans on slabs of a volume) or ``"2d"`` (each image or slice on its own).
        depth_attention: SD-Trans; ``None`` lets the trainable preset decide (always off for ``"2d"``).
        slice_axis: the RAS axis a volume is sliced along (moved last); ``None`` in 2D.
        pixdim: target spacing of volumes; ``None`` keeps each volume's own.
        intensity: the network's input mapping (``unit``, ``uint8``, ``zscore``).
        normalization: per-channel schemes (:class:`~medsa_monai.preprocessing.PlannedNormalized`); ``None``:
            per-image z-score on non-zero voxels.
        sam_variant, image_size: the SAM backbone and its input side.
        patch_size, batch_size: the training patch and batch; 2D images are resized to the patch (default: SAM's
            ``image_size`` square).
        keep_aspect: 2D: every image (training, validation, inference) is resized so that its longer side is the
            patch's side and padded to the square patch, keeping its aspect ratio, as SAM's ``ResizeLongestSide``
            and padding do (the padding is inverted before outputs are written); ``False`` (plans written before
            this key) resizes each image whole, so the network squeezes it into its square frame.
        sw_batch_size, sw_overlap: the sliding window of volume inference.
        dataset_cache: where the preprocessed training cases are cached (``{"kind": "memory" | "disk", ...}``).
        dataset, dataset_json, datalist_file, num_folds: where the plan came from and its folds.
        record: what the planner noted beside the settings (memory model, median shape, notes), kept as written.
    """

    labels: Mapping[str, str]
    regions: Mapping[str, Sequence[int]] = field(default_factory=dict)
    regions_class_order: Sequence[int] = ()
    label_aliases: Mapping[str, int] = field(default_factory=dict)
    modality: Mapping[str, str] | None = None
    spatial_dims: int = 3
    in_channels: int = 1
    configuration: str | None = None
    depth_attention: bool | None = None
    slice_axis: int | None = 2
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0)
    intensity: str = "zscore"
    normalization: Sequence[Mapping] | None = None
    sam_variant: str = "vit_b"
    image_size: int = 256
    patch_size: Sequence[int] | None = None
    keep_aspect: bool = False
    batch_size: int = 2
    sw_batch_size: int = 1
    sw_overlap: float = 0.5
    dataset_cache: Mapping[str, Any] = field(default_factory=lambda: {"kind": "memory"})
    dataset: str | None = None
    dataset_json: str | None = None
    datalist_file: str | None = None
    num_folds: int | None = None
    plan_version: int = PLAN_VERSION
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        configuration = self.configuration or ("3d" if self.spatial_dims == 3 else "2d")
        object.__setattr__(self, "configuration", configuration)
        if self.spatial_dims == 2:
            object.__setattr__(self, "slice_axis", None)
        if self.patch_size is None:  # 2D: images are resized to SAM's square frame
            object.__setattr__(self, "patch_size", (40, 56, 40) if self.spatial_dims == 3 else
                               (self.image_size, self.image_size))

    # -- reading and writing ----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "the plan") -> Plan:
        """A plan from its JSON form (``plan.json`` of version :data:`PLAN_VERSION`, or a bundle's ``bundle_plan``,
        which may leave keys out).

        Raises:
            PlanError: naming ``source`` and the key at fault, and what would fit.
        """
        if not isinstance(data, Mapping):
            raise PlanError(f"{source}: a plan is a JSON object, got {type(data).__name__}")
        version = data.get("plan_version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise PlanError(f"{source} has plan_version {version}, this medsa-monai reads version {PLAN_VERSION}; "
                            f"run `medsa plan` again")
        names = {f.name for f in fields(cls)} - {"record"}
        unknown = sorted(set(data) - names - set(_DERIVED) - set(RECORD_KEYS) - {"record"})
        if unknown:
            raise PlanError(f"{source}: unknown key {', '.join(map(repr, unknown))}; a plan's keys are "
                            f"{sorted(names)} (and the planner's record {list(RECORD_KEYS)})")
        values = {k: v for k, v in data.items() if k in names}
        record = {**dict(data.get("record") or {}), **{k: data[k] for k in RECORD_KEYS if k in data}}
        if "labels" not in values:
            raise PlanError(f"{source}: key 'labels' is missing ({{value: name}} of the label files, background "
                            f"included)")
        plan = cls(**values, record=record)
        plan.check(source)
        return plan

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """The plan in ``path`` (``plan.json``).

        Raises:
            FileNotFoundError: no such file.
            PlanError: a file that is not JSON (with line and column) or not a usable plan (with the key).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plan file '{path}' does not exist (create it with `medsa plan`)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise PlanError(f"plan file '{path}' is not valid JSON: {error.msg} at line {error.lineno} column "
                            f"{error.colno}; write it again with `medsa plan`") from None
        return cls.from_dict(data, source=f"plan file '{path}'")

    @classmethod
    def for_bundle(cls, plan_file: str | Path | None = None, bundled: Mapping | None = None,
                   model_file: str | Path | None = None, **overrides) -> Plan:
        """The plan a bundle runs with: ``plan_file`` when given (``--plan_file``, ``medsa train --plan``), else the
        plan the bundle was made from (``bundled``, its ``bundle_plan`` setting), with the :data:`OVERRIDABLE`
        values given in ``overrides`` (``None``: as planned) in place of the planned ones; checked against the plan
        ``model_file`` was trained with (:func:`model_plan_file`), when it carries one.

        Raises:
            PlanError: a value that does not fit, or a plan that differs from the one the model was trained with in
                a key the model depends on (:data:`MODEL_KEYS`), naming both files and the first such key.
        """
        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise PlanError(f"{', '.join(map(repr, unknown))} cannot override a plan; these can: {list(OVERRIDABLE)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        given = _given(plan_file)
        data = cls.load(plan_file).to_dict() if given else dict(bundled or {})
        source = f"plan file '{plan_file}'" if given else "the bundle's bundle_plan"
        if chosen:
            source += " with " + ", ".join(f"{k}={v!r}" for k, v in chosen.items())
        plan = cls.from_dict({**data, **chosen}, source=source)
        trained = model_plan_file(model_file) if _given(model_file) else None
        if trained is not None:
            check_model_plan(model_file, plan, source, trained,
                             advice=f"give --plan_file '{trained}' to run with the plan it was trained with")
        return plan

    def to_dict(self) -> dict:
        """The JSON form, with the derived keys a reader of ``plan.json`` expects (``num_classes``, ``class_names``,
        ``label_values``, ``has_regions``) and the planner's record."""
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "record"}
        data.update(num_classes=self.num_outputs, label_values=list(self.label_values),
                    class_names=list(self.class_names), has_regions=self.has_regions)
        data.update(_plain(dict(self.record)))
        return data

    def bundled(self) -> dict:
        """The plan as a bundle keeps it (its ``bundle_plan`` setting): the settings, without the planner's record,
        the plan's version and where its ``dataset.json`` was."""
        left_out = ("record", "plan_version", "dataset_json")
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in left_out}

    def save(self, path: str | Path) -> Path:
        """Write ``plan.json`` (atomically)."""
        return write_json(path, self.to_dict())

    def first_difference(self, other: Plan) -> tuple[str, Any, Any] | None:
        """The first of :data:`MODEL_KEYS` (what a trained model depends on) whose value differs between the two
        plans, with both values; ``None`` when a model of one fits the other."""
        for key in MODEL_KEYS:
            mine, theirs = _plain(getattr(self, key)), _plain(getattr(other, key))
            if mine != theirs:
                return key, mine, theirs
        return None

    # -- what the configs read --------------------------------------------------------------------------------

    @property
    def label_spec(self) -> LabelSpec:
        return LabelSpec.from_description({"labels": self.labels, "regions": self.regions,
                                           "regions_class_order": list(self.regions_class_order),
                                           "label_aliases": self.label_aliases})

    @property
    def has_regions(self) -> bool:
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        """The network's output channels: the classes with background, or the regions."""
        return self.label_spec.num_outputs

    @property
    def class_names(self) -> list[str]:
        """The foreground outputs' names."""
        return list(self.label_spec.output_names)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(self.label_spec.values)

    @property
    def network_depth_attention(self) -> bool | None:
        """SD-Trans for the network: off for ``"2d"``, else the plan's choice (``None``: the preset's)."""
        return False if self.configuration == "2d" else self.depth_attention

    @property
    def cache_kind(self) -> str:
        return str(self.dataset_cache.get("kind", "memory"))

    @property
    def frame_size(self) -> list[int] | None:
        """The in-plane size whole volumes are padded to (:func:`~medsa_monai.preprocessing.training_frame_size`)."""
        return [int(s) for s in self.patch_size[:2]] if self.spatial_dims == 3 else None

    # -- checks -------------------------------------------------------------------------------------------------

    def check(self, source: str = "the plan") -> None:
        """Raise :class:`PlanError` naming ``source`` and the first key whose value does not fit."""
        problems = list(self._problems())
        if problems:
            raise PlanError(f"{source}: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        dims = self.spatial_dims
        if dims not in (2, 3):
            yield f"key 'spatial_dims' is {dims!r}; it must be 2 or 3"
            return
        if not _positive_int(self.in_channels):
            yield f"key 'in_channels' is {self.in_channels!r}; it must be a positive integer"
        if self.configuration not in CONFIGURATIONS or (dims == 2 and self.configuration == "3d"):
            yield (f"key 'configuration' is {self.configuration!r}; it must be one of {CONFIGURATIONS} ('2d' for 2D "
                   f"data)")
        if dims == 3 and self.slice_axis not in (0, 1, 2):
            yield f"key 'slice_axis' is {self.slice_axis!r}; a volume's must be 0, 1 or 2"
        if self.intensity not in INTENSITIES:
            yield f"key 'intensity' is {self.intensity!r}; it must be one of {INTENSITIES}"
        if not (_positive_int(self.image_size) and self.image_size % 16 == 0):
            yield f"key 'image_size' is {self.image_size!r}; it must be a positive multiple of 16"
        if len(self.patch_size) != dims or not all(_positive_int(p) for p in self.patch_size):
            yield f"key 'patch_size' is {list(self.patch_size)!r}; it must hold {dims} positive integers"
        elif self.keep_aspect not in (True, False):
            yield f"key 'keep_aspect' is {self.keep_aspect!r}; it must be true or false"
        elif self.keep_aspect and (dims != 2 or self.patch_size[0] != self.patch_size[1]):
            yield (f"key 'keep_aspect' is true with patch_size {list(self.patch_size)!r}; keeping the aspect "
                   f"pads 2D images to a square patch (e.g. [{max(self.patch_size)}, {max(self.patch_size)}])"
                   + ("" if dims == 2 else "; volumes keep theirs by cropping patches: set it false"))
        if self.pixdim is not None and dims == 3 and (
                len(self.pixdim) != 3 or not all(isinstance(p, (int, float)) and p > 0 for p in self.pixdim)):
            yield f"key 'pixdim' is {list(self.pixdim)!r}; a volume's must hold 3 positive spacings"
        for key in ("batch_size", "sw_batch_size"):
            if not _positive_int(getattr(self, key)):
                yield f"key '{key}' is {getattr(self, key)!r}; it must be a positive integer"
        if not (isinstance(self.sw_overlap, (int, float)) and 0 <= self.sw_overlap < 1):
            yield f"key 'sw_overlap' is {self.sw_overlap!r}; it must lie in [0, 1)"
        if self.cache_kind not in CACHE_KINDS:
            yield f"key 'dataset_cache' has kind {self.cache_kind!r}; it must be one of {CACHE_KINDS}"
        if self.normalization is not None and len(self.normalization) != self.in_channels:
            yield (f"key 'normalization' has {len(self.normalization)} schemes for {self.in_channels} channel(s); "
                   f"it needs one per channel")
        try:
            self.label_spec  # noqa: B018 - built to check the labels
        except (ValueError, KeyError, TypeError) as error:
            yield f"keys 'labels' / 'regions': {error}"

    # -- Mapping: a plan reads like its JSON -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value):
    """The JSON form of a dataclass value: tuples as lists, mapping keys as strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_plan(path: str | Path | None) -> Plan | dict:
    """The plan in ``path`` (:meth:`Plan.load`), or ``{}`` for ``None`` (bundles then use their own plan)."""
    if not _given(path):
        return {}
    return Plan.load(path)


TRAINED_PLAN = "plan.json"
"""The copy of the plan training writes beside the models it saves (``models/plan.json``; ``medsa train`` of earlier
versions wrote it into the run folder, beside ``models/`` and ``training_overrides.json``): what the models were
trained with."""
TRAINING_OVERRIDES = "training_overrides.json"  # `medsa train --set` values, in the run folder


def _given(path: str | Path | None) -> bool:
    return path is not None and str(path).strip().lower() not in ("", "none", "null")


def model_plan_file(model_file: str | Path) -> Path | None:
    """The plan a model file was trained with: :data:`TRAINED_PLAN` in the model's folder (what training writes
    beside ``model.pt`` and the ``checkpoint_epoch=N.pt`` files) or in the folder above it (a run folder of an
    earlier ``medsa train``); ``None`` for a model that carries none."""
    folder = Path(model_file).resolve().parent
    for candidate in (folder / TRAINED_PLAN, folder.parent / TRAINED_PLAN):
        if candidate.is_file():
            return candidate
    return None


def check_model_plan(model_file: str | Path, plan: Plan, source: str, trained: str | Path | None = None,
                     advice: str = "use the plan it was trained with") -> None:
    """Refuse to use ``model_file`` with ``plan`` (read from ``source``) when the plan the model was trained with
    (``trained``, default :func:`model_plan_file`) differs in a key the model depends on; ``advice`` ends the
    message.

    Raises:
        PlanError: naming the model, both plans and the first differing key with both values.
    """
    trained = Path(trained) if trained is not None else model_plan_file(model_file)
    if trained is None:
        return
    difference = _trained_plan(trained).first_difference(plan)
    if difference is not None:
        key, trained_value, given_value = difference
        raise PlanError(f"model '{model_file}' was trained with the plan '{trained}', whose {key} is "
                        f"{json.dumps(trained_value)}; {source} has {json.dumps(given_value)}: {advice}")


def _trained_plan(path: Path) -> Plan:
    """The plan in ``path``; one an earlier ``medsa train`` wrote beside its ``training_overrides.json`` (before
    its ``--set`` values were applied) with those values applied, as its models were trained."""
    plan = Plan.load(path)
    overrides = path.parent / TRAINING_OVERRIDES
    if not overrides.is_file():
        return plan
    given = {k: v for k, v in json.loads(overrides.read_text()).items() if k in OVERRIDABLE and v is not None}
    return Plan.from_dict({**plan.to_dict(), **given}, source=f"plan file '{path}' with the values of '{overrides}'")


def record_trained_plan(plan: Plan, ckpt_dir: str | Path, resume: bool = False) -> Path:
    """Write ``plan`` as :data:`TRAINED_PLAN` into ``ckpt_dir``, beside the models a training saves there, before
    it starts (bundles' ``train.json``); in a distributed run, rank 0 alone writes, as it alone saves models. A
    resumed training must go on with the plan its checkpoints were trained with.

    Raises:
        PlanError: resuming with a plan that differs from the recorded one in a key the models depend on.
    """
    path = Path(ckpt_dir) / TRAINED_PLAN
    if resume and path.is_file():
        difference = Plan.load(path).first_difference(plan)
        if difference is not None:
            key, recorded, given = difference
            raise PlanError(f"the checkpoints in '{ckpt_dir}' were trained with the plan '{path}', whose {key} is "
                            f"{json.dumps(recorded)}; resuming with a plan whose {key} is {json.dumps(given)} "
                            f"would mix them: resume with that plan, or train into another folder")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return path
    return plan.save(path)


MODEL_KEYS = ("labels", "regions", "regions_class_order", "label_aliases", "spatial_dims", "in_channels",
              "configuration", "slice_axis", "pixdim", "intensity", "normalization", "sam_variant", "image_size",
              "patch_size", "keep_aspect")
"""What a trained model depends on: label values and names, regions, channels and their normalisation, the
configuration and geometry (2D images padded to keep their aspect or not), the SAM variant and image size. A model
used with a plan that differs in one of them computes something else than it was trained for (another label order,
other intensities), without a shape error."""
