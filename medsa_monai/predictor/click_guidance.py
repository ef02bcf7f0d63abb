"""Clicks that arrive with the image as channels, the DeepEdit convention of MONAI Label.

MONAI Label's bundle infer task calls ``inferer(image, network)`` with nothing but the image, as MONAI's inferers
do. To get a viewer's clicks to a promptable network through that call, :class:`AddClickGuidanced` appends them to
the image as extra channels (after the spatial transforms, mapped to the transformed image's voxels), and
:func:`guidance_to_points` reads them back as point prompts
(:class:`~medsa_monai.predictor.MedSAPredictor` with ``click_guidance``). The clicks travel with the image through
``SlidingWindowInferer`` too: a window's guidance channels hold the clicks inside that window, at window indices.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["AddClickGuidanced", "clicks_from_request", "guidance_to_points", "index_mapping"]

logger = logging.getLogger(__name__)



def clicks_from_request(data: Mapping, label_names: Mapping[str, int], foreground_key: str = "foreground",
                        background_key: str = "background", label_key: str = "label") -> dict[int, list]:
    """The clicks of a MONAI Label request, by label value (0 for background).

    DeepEdit's convention (what MONAI Label's viewers send to a ``deepedit`` model): one list of clicks per label
    name, ``{"anterior": [[i, j, k], ...], "background": [[i, j, k]]}``; names match case-insensitively. DeepGrow's
    convention is read too: ``{"foreground": [...], "background": [...]}``, the foreground clicks belonging to the
    class named by ``label`` (needed only when there is more than one class).
    """
    names = {str(name).lower(): int(value) for name, value in label_names.items()}
    given = {str(key).lower(): value for key, value in data.items() if isinstance(key, str)}
    clicks: dict[int, list] = {value: [] for value in names.values()}
    clicks.setdefault(0, [])
    for name, value in names.items():
        if given.get(name) is not None and name not in (foreground_key, label_key):
            clicks[value].extend(_as_list(given[name]))
    if background_key not in names and given.get(background_key) is not None:
        clicks[0].extend(_as_list(given[background_key]))
    foreground = given.get(foreground_key)
    if foreground is not None and foreground_key not in names and len(_as_list(foreground)):
        classes = {name: value for name, value in names.items() if value != 0}
        target = given.get(label_key)
        if isinstance(target, str) and target.lower() in classes:
            clicks[classes[target.lower()]].extend(_as_list(foreground))
        elif len(classes) == 1:
            clicks[next(iter(classes.values()))].extend(_as_list(foreground))
        else:
            raise ValueError(f"'{foreground_key}' clicks need '{label_key}' to name one of the classes "
                             f"{sorted(classes)}, got {target!r}")
    return clicks


def _as_list(clicks) -> list:
    if isinstance(clicks, torch.Tensor):
        clicks = clicks.tolist()
    clicks = np.asarray(clicks, dtype=np.float64).tolist() if len(clicks) else []
    if clicks and not isinstance(clicks[0], list):  # a single click given as a flat list
        clicks = [clicks]
    return clicks


def _square_affine(affine, dims: int) -> np.ndarray:
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if affine.shape == (dims + 1, dims + 1):
        return affine
    out = np.eye(dims + 1)
    out[:dims, :dims] = affine[:dims, :dims]
    out[:dims, dims] = affine[:dims, -1]
    return out


def index_mapping(image: torch.Tensor) -> np.ndarray:
    """``(dims + 1, dims + 1)`` homogeneous map from the array indices of the image as loaded to those of
    ``image`` now: through world coordinates (``original_affine``, then the inverse of the current ``affine``) when
    both are known, else by the ratio of the current to the loaded spatial shape (as DeepEdit does)."""
    dims = image.ndim - 1
    meta = image.meta if isinstance(image, MetaTensor) else {}
    original = meta.get("original_affine")
    if isinstance(image, MetaTensor) and original is not None:
        return np.linalg.inv(_square_affine(image.affine, dims)) @ _square_affine(original, dims)
    mapping = np.eye(dims + 1)
    loaded = meta.get("spatial_shape")
    if loaded is not None:
        loaded = np.asarray(loaded, dtype=np.float64).reshape(-1)[-dims:]
        mapping[:dims, :dims] = np.diag(np.asarray(image.shape[1:], dtype=np.float64) / loaded)
    return mapping


class AddClickGuidanced(MapTransform):
    """Clicks sent with an image -> ``1 + K`` click-guidance channels appended to the image.

    For MONAI Label's bundle infer task, which gives the network nothing but the image: the clicks ride along as
    channels (the DeepEdit convention) and :class:`~medsa_monai.predictor.MedSAPredictor` with ``click_guidance`` turns
    them back into point prompts. Channel ``1 + v`` after the image's holds the clicks of the label of value ``v``
    (``v = 0`` background, ``1..K`` the classes, as the network's output channels): 1 at each click's voxel, 0
    elsewhere. No clicks at all give zero channels, and the network runs in automatic mode.

    Clicks are array indices of the image as loaded (``LoadImage``'s order: voxel ``(i, j, k)`` of a NIfTI file,
    ``(x, y)`` of a PNG, which is what MONAI Label's viewers send), read from the data by label name
    (:func:`clicks_from_request`). Put this transform after the spatial ones: it maps each click through the image's
    ``original_affine`` and current ``affine`` (orientation, spacing, flips, crops) to the nearest voxel of the
    transformed image (the nearest voxel inside it, for a click on the border). Clicks that fall outside are dropped
    with a warning.

    Args:
        keys: the image key.
        label_names: ``{name: value}`` of every label, background (0) included, e.g.
            ``{"background": 0, "anterior": 1, "posterior": 2}``.
        allow_missing_keys: do nothing when the image is missing.
    """

    def __init__(self, keys: KeysCollection, label_names: Mapping[str, int], allow_missing_keys: bool = False
                 ) -> None:
        super().__init__(keys, allow_missing_keys)
        values = sorted(int(v) for v in label_names.values())
        if values != list(range(len(values))) or len(values) < 2:
            raise ValueError(f"label_names must give the values 0 (background), 1, ..., K once each, got "
                             f"{dict(label_names)}")
        self.label_names = dict(label_names)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        clicks = clicks_from_request(d, self.label_names)
        for key in self.key_iterator(d):
            d[key] = self.add_guidance(d[key], clicks)
        return d

    def add_guidance(self, image: torch.Tensor, clicks: Mapping[int, list]) -> torch.Tensor:
        """``image (C, *spatial)`` -> ``(C + 1 + K, *spatial)`` with the clicks (by label value) as channels."""
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(np.asarray(image))
        spatial = tuple(image.shape[1:])
        dims = len(spatial)
        guidance = torch.zeros((len(self.label_names), *spatial), dtype=image.dtype, device=image.device)
        mapping = index_mapping(image)
        for value, points in clicks.items():
            for point in points:
                if len(point) < dims:
                    raise ValueError(f"a click needs {dims} coordinates for this {dims}D image, got {point}")
                position = (mapping @ np.append(np.asarray(point[:dims], dtype=np.float64), 1.0))[:dims]
                if (position < -0.5).any() or (position > np.asarray(spatial) - 0.5).any():
                    logger.warning("click %s lies outside the image (at %s of spatial shape %s); dropped", point,
                                   np.round(position, 1).tolist(), spatial)
                    continue
                index = np.clip(np.rint(position), 0, np.asarray(spatial) - 1).astype(int)
                guidance[(value, *index)] = 1
        plain = image.as_tensor() if isinstance(image, MetaTensor) else image
        joined = torch.cat([plain, guidance])
        if isinstance(image, MetaTensor):
            joined = MetaTensor(joined, meta=dict(image.meta), applied_operations=list(image.applied_operations))
        return joined


def guidance_to_points(guidance: torch.Tensor, threshold: float = 0.5
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Click-guidance channels -> ``points (B, K, P, dims)`` and ``point_labels (B, K, P)`` for
    :class:`~medsa_monai.networks.MedSA`.

    Args:
        guidance: ``(B, 1 + K, *spatial)``: channel 0 holds the background clicks, channel ``k`` the clicks of
            class ``k``; a click is a voxel above ``threshold`` (the transform writes 1 at each click, 0 elsewhere).
        threshold: the value above which a voxel is a click.

    A class with at least one click of its own gets its clicks as positive points and the background clicks as
    negative points. A class without a click of its own gets only padding (-1) and stays in automatic mode (its
    learned prompt), so a background click refines the classes that were clicked and leaves the others alone.
    Returns ``(None, None)`` when no class has a click (then the network runs in automatic mode).
    """
    if guidance.ndim < 4:
        raise ValueError(f"guidance must be (B, 1 + K, *spatial), got shape {tuple(guidance.shape)}")
    batch, channels = guidance.shape[:2]
    dims = guidance.ndim - 2
    clicked = guidance > threshold
    per_case: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    width = 0
    for b in range(batch):
        negatives = torch.nonzero(clicked[b, 0]).float()
        classes = []
        for k in range(1, channels):
            positives = torch.nonzero(clicked[b, k]).float()
            if len(positives):
                coords = torch.cat([positives, negatives])
                labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]).long()
            else:
                coords, labels = positives, torch.zeros(0, dtype=torch.long)
            classes.append((coords, labels.to(guidance.device)))
            width = max(width, len(labels))
        per_case.append(classes)
    if not width:
        return None, None
    points = torch.zeros(batch, channels - 1, width, dims, device=guidance.device)
    point_labels = torch.full((batch, channels - 1, width), -1, dtype=torch.long, device=guidance.device)
    for b, classes in enumerate(per_case):
        for k, (coords, labels) in enumerate(classes):
            points[b, k, : len(labels)] = coords
            point_labels[b, k, : len(labels)] = labels
    return points, point_labels
