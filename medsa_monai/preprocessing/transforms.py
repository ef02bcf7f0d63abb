"""The transforms a plan implies, for 2D and 3D alike, so that every bundle builds them the same way from its plan
and a fix reaches every bundle.

2D images (PNG, JPEG, ... read by MONAI's ``PILReader``, or 2D NIfTI) are, with the plan's ``keep_aspect``, resized
so that the longer side is the patch's side and padded to the square patch, everywhere (SAM's ``ResizeLongestSide``
and padding); without it (plans written before that key) resized whole to the patch for training and seen at their
own size otherwise, each squeezed into SAM's square frame. Volumes are oriented to
RAS, resampled to the plan's spacing and transposed so that the acquisition's through-plane axis (``slice_axis``)
is last, the axis MedSA slices along; training crops patches, inference slides a window. Every spatial step is
inverted (``Invertd``) before predictions are written, so they are in each input's own geometry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import monai.transforms as mt
import torch

from ..data.checks import CheckImageChannelsd, CheckImageLabeld
from ..data.labels import LabelSpec, LabelsToTargetd
from ..data.loading import LoadImaged
from ..data.spacing import Spacingd
from ..planning.plan import Plan, slice_last_indices
from ..prompts.zoom import RandPromptZoomd
from .normalization import PlannedNormalized

__all__ = ["loading_transforms", "planned_loading", "spatial_augmentation", "intensity_augmentation",
           "training_frame_size", "training_frame_padding"]

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
    square_side: int | None = None,
) -> list:
    """Load an image (and its label), check them, bring a volume to RAS, the plan's spacing and slicing axis, and
    normalise intensities; with ``to_target``, map the label to the training target (consecutive classes or one
    channel per region).

    Args:
        keys: ``("image",)`` or ``("image", "label")``.
        spatial_dims: 2 for images, 3 for volumes.
        label_spec: the data set's labels, needed with a label (checked: a value neither declared nor an alias is an
            error naming the file).
        pixdim: target spacing of volumes (RAS order); ``None`` keeps each volume's own.
        slice_axis: the RAS axis of a volume that becomes its last, the axis MedSA slices along
            (:func:`~medsa_monai.planning.slice_last_indices`).
        normalization: per-channel schemes of the plan; ``None``: per-image z-score on non-zero voxels.
        image_channels: the channels an image must have (``None``: any).
        to_target: map the label to the training target.
        transform_label: whether the label follows the image's spatial steps (training, validation), or stays in
            its file's geometry and values, for metrics in the original space (with ``Invertd`` on predictions).
        square_side: 2D: resize each image so that its longer side is this many pixels and pad it (centred, zeros
            after normalisation) to a square of that side, keeping its aspect ratio; ``None`` leaves 2D images as
            they are.
    """
    keys = list(keys)
    has_label = "label" in keys
    if has_label and label_spec is None:
        raise ValueError("loading labels needs the data set's label_spec (the values to check and map)")
    label_dtype = torch.uint8 if has_label and max(label_spec.accepted_values) <= 255 else torch.int32
    transforms: list = [LoadImaged(keys, image_only=True), mt.EnsureChannelFirstd(keys)]
    if has_label:
        transforms.append(CheckImageLabeld(labels=label_spec.accepted_values, image_channels=image_channels))
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
    if spatial_dims == 2 and square_side is not None:
        modes = ["bilinear", "nearest"][: len(spatial_keys)]
        transforms += [mt.Resized(spatial_keys, spatial_size=int(square_side), size_mode="longest", mode=modes),
                       mt.SpatialPadd(spatial_keys, spatial_size=[int(square_side)] * 2)]
    if spatial_dims == 3 and slice_axis is not None and int(slice_axis) != 2:
        transforms.append(mt.Transposed(spatial_keys, indices=slice_last_indices(int(slice_axis))))
    if has_label and to_target and transform_label:
        transforms.append(LabelsToTargetd("label", label_spec))
    return transforms


def planned_loading(plan: Plan, keys: Sequence[str] = ("image", "label"), transform_label: bool = True) -> list:
    """:func:`loading_transforms` with the plan's dimensions, labels, spacing, slicing axis, normalisation,
    channels and, with ``keep_aspect``, the square 2D patch."""
    return loading_transforms(keys, plan.spatial_dims, plan.label_spec, plan.pixdim, plan.slice_axis,
                              plan.normalization, plan.in_channels, transform_label=transform_label,
                              square_side=int(plan.patch_size[0]) if plan.keep_aspect else None)


def spatial_augmentation(spatial_dims: int, patch_size: Sequence[int], keys: Sequence[str] = ("image", "label"),
                         rotate90_prob: float = 0.0, zoom_prob: float = 0.0, zoom_margin: float = 0.5) -> list:
    """Training's spatial steps: a 2D image is resized whole to ``patch_size`` (an identity for the square images
    of a ``keep_aspect`` plan); a volume is padded to it and a patch
    cropped (two of three centred on foreground); with ``zoom_prob``, the window a prompt-centred zoom would decode
    one structure in (:class:`~medsa_monai.prompts.RandPromptZoomd`, its margin drawn between half and twice
    ``zoom_margin``); then random flips along every spatial axis and, with
    ``rotate90_prob`` and a patch square in its first two axes (so that every sample keeps the patch's shape), a
    random number of quarter turns in that plane (lesions and the like have no up or down)."""
    keys = list(keys)
    if spatial_dims == 2:
        steps: list = [mt.Resized(keys, spatial_size=list(patch_size), mode=["bilinear", "nearest"])]
    else:
        steps = [mt.SpatialPadd(keys, spatial_size=list(patch_size)),
                 mt.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=list(patch_size), pos=2, neg=1,
                                           num_samples=1)]
    if zoom_prob > 0:  # left out, not merely never drawn, at 0: no random stream changes
        steps.append(RandPromptZoomd(keys, label_key=keys[-1], prob=zoom_prob,
                                     margin=(zoom_margin / 2, zoom_margin * 2)))
    steps += [mt.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if rotate90_prob > 0 and patch_size[0] == patch_size[1]:
        steps.append(mt.RandRotate90d(keys, prob=rotate90_prob, spatial_axes=(0, 1)))
    return steps


def training_frame_size(spatial_dims: int, patch_size: Sequence[int]) -> list[int] | None:
    """The in-plane size a whole volume is padded to when decoded whole (prompts, propagation, interactive
    evaluation): the patch's first two axes in 3D, ``None`` in 2D.

    MedSA resizes each slice to SAM's ``image_size`` square, so the zoom depends on the slice's size. Training
    pads a volume to the patch and crops the patch, and the sliding window pads the same way, so both see slices at
    the patch's zoom; a whole volume smaller than the patch, decoded as it is, would be zoomed further (Task04's
    median 35 x 51 slice against its 40 x 56 patch: 14%, which cost automatic Dice, docs/interactive.md). Padding
    to this size (and not beyond: a larger slice stays whole, at a smaller zoom) gives whole volumes the training
    frame. A 2D image is resized whole in training too.
    """
    return [int(s) for s in patch_size[:2]] if spatial_dims == 3 else None


def training_frame_padding(spatial_dims: int, patch_size: Sequence[int],
                           keys: Sequence[str] = ("image", "label")) -> list:
    """Pad whole volumes in-plane to :func:`training_frame_size` (zeros, centred, as training's
    ``SpatialPadd``), for the pipelines that decode a volume whole: validation (prompted model selection) and the
    interactive evaluation. Nothing in 2D."""
    size = training_frame_size(spatial_dims, patch_size)
    return [] if size is None else [mt.SpatialPadd(list(keys), spatial_size=[*size, -1])]


def intensity_augmentation(prob: float, scale: float = 0.1, shift: float = 0.1,
                           gamma: Sequence[float] | None = None, noise_std: float = 0.05,
                           noise_prob: float | None = None, keys: Sequence[str] | str = "image") -> list:
    """Training's random intensity steps, each drawn with probability ``prob``: intensities scaled by a factor in
    ``[1 - scale, 1 + scale]``, shifted by up to ``shift``, a contrast (gamma) change in ``gamma = [low, high]``,
    then Gaussian noise of ``noise_std`` (with ``noise_prob``, default ``prob``). A step whose amount is 0 or
    ``None`` is left out, not merely never drawn, so it changes no random stream."""
    steps: list = []
    if scale:
        steps.append(mt.RandScaleIntensityd(keys, factors=scale, prob=prob))
    if shift:
        steps.append(mt.RandShiftIntensityd(keys, offsets=shift, prob=prob))
    if gamma:
        steps.append(mt.RandAdjustContrastd(keys, prob=prob, gamma=list(gamma)))
    if noise_std:
        steps.append(mt.RandGaussianNoised(keys, std=noise_std, prob=prob if noise_prob is None else noise_prob))
    return steps
