"""The transforms, loss pieces and inferer a plan implies, for 2D and 3D alike, so that every bundle builds them
the same way from ``plan.json`` (or from its own defaults) and a fix reaches every bundle.

2D images (PNG, JPEG, ... read by MONAI's ``PILReader``, or 2D NIfTI) are resized whole to the plan's patch for
training and seen at their own size otherwise (SAM resizes every image to its frame anyway). Volumes are oriented to
RAS, resampled to the plan's spacing and transposed so that the acquisition's through-plane axis (``slice_axis``)
is last, the axis MedSA slices along; training crops patches, inference slides a window. Every spatial step is
inverted (``Invertd``) before predictions are written, so they are in each input's own geometry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import monai.transforms as mt
import torch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

from ..data.checks import CheckImageChannelsd, CheckImageLabeld
from ..data.labels import LabelSpec, LabelsToTargetd, TargetToLabelsd
from ..data.loading import LoadImaged
from ..data.spacing import Spacingd
from ..data.writers import SaveProbabilitiesd
from ..planning.normalization import PlannedNormalized
from ..planning.plan import slice_last_indices

__all__ = ["label_spec_from", "loading_transforms", "spatial_augmentation", "planned_inferer",
           "discrete_output_transforms", "label_map_transforms"]

def label_spec_from(plan: Mapping | None, default: Mapping) -> LabelSpec:
    """The labels of a plan (``labels``, ``regions``, ``regions_class_order``), else ``default``, a bundle's own
    (``{"labels": {value: name}}``)."""
    return LabelSpec.from_description(plan if plan and "labels" in plan else default)


def loading_transforms(
    keys: Sequence[str] = ("image", "label"),
    spatial_dims: int = 3,
    label_spec: LabelSpec | None = None,
    pixdim: Sequence[float] | None = None,
    slice_axis: int | None = 2,
    normalization: Sequence[Mapping] | None = None,
    image_channels: int | None = None,
    to_target: bool = True,
    transform_label: bool = True,
) -> list:
    """Load an image (and its label), check them, bring a volume to RAS, the plan's spacing and slicing axis, and
    normalise intensities; with ``to_target``, map the label to the training target (consecutive classes or one
    channel per region).

    Args:
        keys: ``("image",)`` or ``("image", "label")``.
        spatial_dims: 2 for images, 3 for volumes.
        label_spec: the data set's labels, needed with a label (checked: an undeclared value is an error naming the
            file).
        pixdim: target spacing of volumes (RAS order); ``None`` keeps each volume's own.
        slice_axis: the RAS axis of a volume that becomes its last, the axis MedSA slices along
            (:func:`~medsa_monai.planning.slice_last_indices`).
        normalization: per-channel schemes of the plan; ``None``: per-image z-score on non-zero voxels.
        image_channels: the channels an image must have (``None``: any).
        to_target: map the label to the training target.
        transform_label: whether the label follows the image's spatial steps (training, validation), or stays in
            its file's geometry and values, for metrics in the original space (with ``Invertd`` on predictions).
    """
    keys = list(keys)
    has_label = "label" in keys
    if has_label and label_spec is None:
        raise ValueError("loading labels needs the data set's label_spec (the values to check and map)")
    label_dtype = torch.uint8 if has_label and max(label_spec.values) <= 255 else torch.int32
    transforms: list = [LoadImaged(keys, image_only=True), mt.EnsureChannelFirstd(keys)]
    if has_label:
        transforms.append(CheckImageLabeld(labels=label_spec.values, image_channels=image_channels))
    else:
        transforms.append(CheckImageChannelsd("image", image_channels))
    transforms.append(mt.EnsureTyped(keys, dtype=[torch.float32, label_dtype][: len(keys)]))
    spatial_keys = keys if transform_label else ["image"]
    if spatial_dims == 3:
        modes = ["bilinear", "nearest"][: len(spatial_keys)]
        transforms.append(mt.Orientationd(spatial_keys, axcodes="RAS"))
        if pixdim is not None:
            transforms.append(Spacingd(spatial_keys, pixdim=list(pixdim), mode=modes))
    transforms.append(PlannedNormalized("image", normalization))
    if spatial_dims == 3 and slice_axis is not None and int(slice_axis) != 2:
        transforms.append(mt.Transposed(spatial_keys, indices=slice_last_indices(int(slice_axis))))
    if has_label and to_target and transform_label:
        transforms.append(LabelsToTargetd("label", label_spec))
    return transforms


def spatial_augmentation(spatial_dims: int, patch_size: Sequence[int], keys: Sequence[str] = ("image", "label")
                         ) -> list:
    """Training's spatial steps: a 2D image is resized whole to ``patch_size``; a volume is padded to it and a patch
    cropped (two of three centred on foreground); then random flips along every spatial axis."""
    keys = list(keys)
    if spatial_dims == 2:
        steps: list = [mt.Resized(keys, spatial_size=list(patch_size), mode=["bilinear", "nearest"])]
    else:
        steps = [mt.SpatialPadd(keys, spatial_size=list(patch_size)),
                 mt.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=list(patch_size), pos=2, neg=1,
                                           num_samples=1)]
    return steps + [mt.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]


def planned_inferer(spatial_dims: int, patch_size: Sequence[int], sw_batch_size: int = 1, overlap: float = 0.5
                    ) -> Inferer:
    """The whole image at once in 2D (MedSA resizes it to SAM's frame); a Gaussian-weighted sliding window of the
    plan's patch over volumes."""
    if spatial_dims == 2:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=list(patch_size), sw_batch_size=int(sw_batch_size), overlap=overlap,
                                mode="gaussian")


def discrete_output_transforms(label_spec: LabelSpec, with_label: bool = True) -> list:
    """Logits -> discrete one-hot classes (softmax, argmax) or binary regions (sigmoid, 0.5), and the label's
    target to the same layout, for metrics such as ``MeanDice`` during training and validation."""
    if label_spec.has_regions:
        return [mt.Activationsd("pred", sigmoid=True), mt.AsDiscreted("pred", threshold=0.5)]
    keys = ["pred", "label"] if with_label else ["pred"]
    return [mt.Activationsd("pred", softmax=True),
            mt.AsDiscreted(keys, argmax=[True, False][: len(keys)], to_onehot=label_spec.num_outputs)]


def label_map_transforms(label_spec: LabelSpec, preprocessing: mt.Compose | None = None,
                         probabilities_dir: str | Path | None = None, to_values: bool = True) -> list:
    """Logits -> a label map in the data set's own values and, given the ``preprocessing`` to invert, in the
    input's own geometry: activation, ``Invertd`` (probabilities are resampled, not labels), optionally the
    probabilities saved to ``probabilities_dir`` (for ensembles), discretisation and, with ``to_values``,
    :class:`~medsa_monai.data.TargetToLabelsd` (else class indices or binary region channels stay)."""
    steps: list = [mt.Activationsd("pred", sigmoid=True) if label_spec.has_regions else
                   mt.Activationsd("pred", softmax=True)]
    if preprocessing is not None:
        steps.append(mt.Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False,
                                to_tensor=True))
    if probabilities_dir is not None:
        steps.append(SaveProbabilitiesd("pred", probabilities_dir))
    dtype = torch.uint8 if max(label_spec.values) <= 255 else torch.int32  # viewers write 8-bit PNG results
    steps.append(mt.AsDiscreted("pred", threshold=0.5, dtype=dtype) if label_spec.has_regions else
                 mt.AsDiscreted("pred", argmax=True, dtype=dtype))
    if to_values:
        steps.append(TargetToLabelsd("pred", label_spec))
    return steps
