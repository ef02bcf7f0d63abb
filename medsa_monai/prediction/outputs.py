"""From logits to what a user keeps: discrete classes or regions for metrics, label maps in the data set's own values
and each input's own geometry, written as files (NIfTI, PNG) or handed to a viewer."""

from __future__ import annotations

from pathlib import Path

import monai.transforms as mt
import torch

from ..data.labels import LabelSpec, TargetToLabelsd
from ..data.writers import SaveLabelMapd, SaveProbabilitiesd

__all__ = ["discrete_output_transforms", "label_map_transforms", "inference_output_transforms"]


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


def inference_output_transforms(label_spec: LabelSpec, preprocessing: mt.Compose | None, output_dir: str | Path,
                                output_postfix: str = "seg", probabilities_dir: str | Path | None = None,
                                spatial_dims: int = 3) -> list:
    """Logits -> a label map file in the data set's own values and the input's geometry
    (:class:`~medsa_monai.data.SaveLabelMapd`), and ``pred`` as a viewer wants it.

    MONAI Label drops the writer (a ``SaveImaged``) and writes ``pred`` itself, naming the labels by the channels of
    ``metadata.json``'s ``channel_def``: so with classes ``pred`` keeps the network's class indices (a data set
    with 0 / 255 masks gives 0 / 1, the file 0 / 255; with consecutive values the two are the same), with regions
    the painted label map; and a 2D image's ``pred`` loses its channel axis, to be written as a 2D label image.
    """
    classes = not label_spec.has_regions
    steps = label_map_transforms(label_spec, preprocessing, probabilities_dir, to_values=not classes)
    steps.append(SaveLabelMapd("pred", output_dir, output_postfix, print_log=True,
                               label_spec=label_spec if classes else None))
    if spatial_dims == 2:
        steps.append(mt.SqueezeDimd("pred", dim=0))
    return steps
