"""Prompt-centred zoom: a prompted structure is decoded in a window around it, resized to the encoder's input size,
and pasted back at the image's resolution.

The network resizes every slice whole to ``image_size`` and its decoder predicts on a quarter of that, so a small
structure in a large slice is decided on a few low-resolution pixels. As nnInteractive's AutoZoom, SAM-Med3D's crop
around the prompt and MedSAM's box crop do, :class:`ZoomPredictor` crops each prompted image around what its
prompts point at (the boxes, the clicks and the previous prediction of the prompted classes; for clicks alone
without a previous prediction, their prediction on the whole image first), in-plane, over every
slice of a volume (SD-Trans and propagation see the whole depth), with a margin, keeping the slice's aspect ratio so
that the structure is magnified, not distorted; decodes the prompts there; and returns logits at the image's own
resolution, which it takes back as the mask prompt of the next call. Where the prediction reaches the window's
border (inside the image), the window grows and the prompts are decoded again. Automatic mode (no prompt) decodes
the whole image, unchanged. When a call takes back the logits of the call before it and decodes in the same window,
the decoder's own low-resolution logits of that call are its mask prompt, as a plain predictor's session feeds
them back, rather than the logits resampled from the image's resolution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..prompts.zoom import ZoomWindow, zoom_window
from .embedding_cache import EmbeddingCache
from .predictor import MedSAPredictor
from .propagation import EMPTY_LOGIT

__all__ = ["ZoomPredictor", "ZoomSession"]


@dataclass
class ZoomSession:
    """What :meth:`ZoomPredictor.encode` returns: the image and the whole image's embeddings; windows are encoded
    when prompts ask for them (through the predictor's embedding cache)."""

    image: torch.Tensor
    embeddings: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.embeddings.device


@dataclass
class _Decoded:
    """One image's last call: its window, the logits it returned and the decoder's low-resolution logits there."""

    window: ZoomWindow
    logits: torch.Tensor
    low_res: torch.Tensor

    def fed_back(self, previous: torch.Tensor | None, window: ZoomWindow) -> torch.Tensor | None:
        """These low-resolution logits where ``previous`` is what this call returned and ``window`` is its window;
        else ``None``."""
        if previous is None or window != self.window or previous.shape != self.logits.shape:
            return None
        return self.low_res if torch.equal(self.logits.to(previous.device), previous) else None


def _resize_slices(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, K, h, w[, D])`` -> ``(B, K, *size[, D])``, bilinear per slice (antialiased when shrinking)."""
    if tensor.shape[2:4] == size:
        return tensor
    if tensor.ndim == 5:
        b, k, h, w, d = tensor.shape
        flat = tensor.permute(0, 4, 1, 2, 3).reshape(b * d, k, h, w)
        flat = F.interpolate(flat.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        return flat.view(b, d, k, *size).permute(0, 2, 3, 4, 1).to(tensor.dtype)
    return F.interpolate(tensor.float(), size=size, mode="bilinear", align_corners=False,
                         antialias=True).to(tensor.dtype)


def _plain(tensor):
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


class ZoomPredictor:
    """A :class:`~medsa_monai.predictor.MedSAPredictor` whose prompts are decoded in a window around the prompted
    structures (see the module's description), with the same ``encode`` / ``decode`` / ``postprocess`` /
    ``predict`` calls; ``decode`` returns foreground logits at the image's resolution ``(B, K, H, W[, D])``, which
    it also takes back as ``mask_inputs``.

    Args:
        predictor: the predictor that encodes and decodes (its cache, propagation and corrections serve inside each
            window; one without a cache is used through a copy with a new :class:`EmbeddingCache`, so that a
            session's clicks in the same window encode it once).
        margin: room around the prompted region, as a fraction of its size per side.
        min_fraction: the smallest window as a fraction of the slice (``0.25``: at most 4 times larger).
        max_grow: how many times a window may grow when the prediction reaches its border.
    """

    def __init__(self, predictor: MedSAPredictor, margin: float = 0.5, min_fraction: float = 0.25,
                 max_grow: int = 2) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not 0 < min_fraction <= 1:
            raise ValueError(f"min_fraction must lie in (0, 1], got {min_fraction}")
        if predictor.embedding_cache is None:
            predictor = copy.copy(predictor)
            predictor.embedding_cache = EmbeddingCache()
        self.predictor = predictor
        self.margin = float(margin)
        self.min_fraction = float(min_fraction)
        self.max_grow = int(max_grow)
        self.last_windows: list[ZoomWindow] = []
        self._decoded: list[_Decoded | None] = []

    def __getattr__(self, name: str):  # the wrapped predictor's description and settings
        if name == "predictor":
            raise AttributeError(name)
        return getattr(self.predictor, name)

    # -- the calls of a predictor ---------------------------------------------------------------------------------

    def encode(self, image: torch.Tensor) -> ZoomSession:
        return ZoomSession(_plain(image), _plain(self.predictor.encode(image)))  # windows slice them

    def postprocess(self, logits: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """Foreground logits of :meth:`decode` -> ``(B, out_channels, *spatial_shape)`` (a background channel of
        zeros added where the network has one)."""
        if tuple(logits.shape[2:]) != tuple(spatial_shape):
            logits = _resize_slices(logits, tuple(spatial_shape[:2]))
        if self.predictor.background_channel:
            logits = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1)
        return logits

    def predict(self, image: torch.Tensor, points: torch.Tensor | None = None,
                point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, out_channels, H, W[, D])`` of ``image`` and its prompts, and the foreground logits to feed
        back as ``mask_inputs``."""
        image, points, point_labels = self.predictor.split_guidance(image, points, point_labels)
        logits = self.decode(self.encode(image), tuple(image.shape), points, point_labels, boxes, mask_inputs)
        return self.postprocess(logits, tuple(image.shape[2:])), logits

    def __call__(self, image: torch.Tensor, points: torch.Tensor | None = None,
                 point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                 mask_inputs: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict(image, points, point_labels, boxes, mask_inputs)[0]

    def decode(self, session: ZoomSession, image_shape: tuple[int, ...], points: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Prompts (as for :meth:`MedSAPredictor.decode`, in the image's array-index order) -> foreground logits
        ``(B, K, H, W[, D])``; ``mask_inputs`` are such logits of an earlier call. :attr:`last_windows` holds the
        window each image of the batch was decoded in."""
        spatial = tuple(image_shape[2:])
        base = self.predictor
        points, point_labels, boxes = self._with_class_axis(points, point_labels, boxes)
        if mask_inputs is not None and tuple(mask_inputs.shape[2:]) != spatial:
            raise ValueError(f"ZoomPredictor takes back its own logits as mask_inputs, of the image's shape "
                             f"{spatial}; got {tuple(mask_inputs.shape)}")
        if points is None and boxes is None:
            self.last_windows = [ZoomWindow((0, spatial[0]), (0, spatial[1]), *spatial[:2])] * image_shape[0]
            self._decoded = []
            low = base.decode(session.embeddings, image_shape, mask_inputs=self._low_res(mask_inputs))
            return self._foreground(base.postprocess(low, spatial))
        depth = spatial[2] if len(spatial) == 3 else 1
        results, windows, decoded = [], [], []
        for b in range(image_shape[0]):
            rows = slice(b * depth, (b + 1) * depth)
            one = [None if t is None else t[b:b + 1] for t in (points, point_labels, boxes, mask_inputs)]
            before = self._decoded[b] if b < len(self._decoded) and len(self._decoded) == image_shape[0] else None
            logits, window, low = self._decode_one(
                ZoomSession(session.image[b:b + 1], session.embeddings[rows]), (1, *image_shape[1:]), *one, before)
            results.append(logits)
            windows.append(window)
            decoded.append(_Decoded(window, logits, low))
        self.last_windows, self._decoded = windows, decoded
        return torch.cat(results)

    # -- one image ----------------------------------------------------------------------------------------------

    def _with_class_axis(self, points, point_labels, boxes):
        """Prompts as ``(B, K, P, dims)`` points with ``(B, K, P)`` labels and ``(B, K, 2 dims)`` boxes (a
        single-class network's may come without the class axis; labels default to foreground)."""
        classes = self.predictor.num_classes
        if points is not None:
            points = _plain(points)
            point_labels = torch.ones(points.shape[:-1], dtype=torch.long, device=points.device) \
                if point_labels is None else _plain(point_labels)
            if points.ndim == 3 and point_labels.ndim == 2 and classes == 1:
                points, point_labels = points[:, None], point_labels[:, None]
            if points.ndim != 4 or point_labels.shape != points.shape[:-1]:
                raise ValueError(f"points must be (B, K, P, dims) with labels (B, K, P); got "
                                 f"{tuple(points.shape)} and {tuple(point_labels.shape)}")
        if boxes is not None:
            boxes = _plain(boxes)
            if boxes.ndim == 2 and classes == 1:
                boxes = boxes[:, None]
            if boxes.ndim != 3:
                raise ValueError(f"boxes must be (B, K, 2 * dims), got {tuple(boxes.shape)}")
        return points, point_labels, boxes

    def _foreground(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 1:] if self.predictor.background_channel else logits

    def _low_res(self, logits: torch.Tensor | None) -> torch.Tensor | None:
        side = self.predictor.image_size // 4
        return None if logits is None else _resize_slices(_plain(logits), (side, side))

    def _prompted(self, points, point_labels, boxes) -> torch.Tensor:
        """``(K,)`` which classes of the one image carry a prompt."""
        classes = self.predictor.num_classes
        prompted = torch.zeros(classes, dtype=torch.bool)
        if points is not None:
            prompted |= (point_labels[0] != -1).any(-1).cpu()
        if boxes is not None:
            prompted |= torch.isfinite(boxes[0]).all(-1).cpu()
        return prompted

    def _region(self, points, point_labels, boxes, previous, prompted) -> list[float] | None:
        """``[i0, j0, i1, j1]`` in-plane extent of the prompts and of the previous foreground of prompted classes."""
        lows, highs = [], []
        if points is not None:
            valid = (point_labels != -1) & torch.isfinite(points).all(-1)
            chosen = points[valid][:, :2].float()
            if chosen.numel():
                lows.append(chosen.amin(0))
                highs.append(chosen.amax(0))
        if boxes is not None:
            dims = boxes.shape[-1] // 2
            finite = boxes[0][torch.isfinite(boxes[0]).all(-1)].float()
            if finite.numel():
                lows.append(finite[:, :2].amin(0))
                highs.append(finite[:, dims:dims + 2].amax(0))
        if previous is not None:
            foreground = previous[0][prompted.to(previous.device)] > 0  # (prompted classes, H, W[, D])
            if foreground.any():
                index = torch.nonzero(foreground)
                lows.append(index[:, 1:3].float().amin(0))
                highs.append(index[:, 1:3].float().amax(0))
        if not lows:
            return None
        low, high = torch.stack(lows).amin(0), torch.stack(highs).amax(0)
        return [float(low[0]), float(low[1]), float(high[0]), float(high[1])]

    def _decode_one(self, session: ZoomSession, image_shape, points, point_labels, boxes, mask_inputs,
                    before: _Decoded | None) -> tuple[torch.Tensor, ZoomWindow, torch.Tensor]:
        """One image's logits ``(1, K, H, W[, D])``, its window and the decoder's low-resolution logits there;
        ``before`` is the image's previous call."""
        base = self.predictor
        spatial = tuple(image_shape[2:])
        height, width = spatial[:2]
        prompted = self._prompted(points, point_labels, boxes)
        previous = None if mask_inputs is None else _plain(mask_inputs)
        coarse = previous
        if previous is None and not (boxes is not None and torch.isfinite(boxes).all(-1).any()):
            # clicks alone say where, not how far: the structure's extent comes from a first pass on the whole image
            low = base.decode(session.embeddings, image_shape, points, point_labels)
            coarse = self._foreground(base.postprocess(low, spatial))
        region = self._region(points, point_labels, boxes, coarse, prompted)
        if region is None:  # prompts that point nowhere: the whole image
            region = [0.0, 0.0, height - 1.0, width - 1.0]
        window = zoom_window(region, height, width, self.margin, self.min_fraction)
        for grow in range(self.max_grow + 1):
            fed_back = None if before is None else before.fed_back(previous, window)
            inside, low = self._decode_window(session, image_shape, window, points, point_labels, boxes, previous,
                                              fed_back)
            reached = self._reaches_border(inside[:, prompted.to(inside.device)], window)
            if window.whole or not reached or grow == self.max_grow:
                break
            found = torch.nonzero(inside[0][prompted.to(inside.device)] > 0)
            region = [min(region[0], window.rows[0] + float(found[:, 1].min())),
                      min(region[1], window.cols[0] + float(found[:, 2].min())),
                      max(region[2], window.rows[0] + float(found[:, 1].max())),
                      max(region[3], window.cols[0] + float(found[:, 2].max()))]
            wider = zoom_window(region, height, width, self.margin, self.min_fraction)
            if wider == window:
                break
            window = wider
        if previous is not None:
            start = previous.clone()
        else:
            start = torch.full((1, base.num_classes, *spatial), EMPTY_LOGIT, device=inside.device, dtype=inside.dtype)
        unprompted = ~prompted.to(start.device)
        if unprompted.any():  # classes without a prompt: automatic mode on the whole image
            whole = ZoomWindow((0, height), (0, width), height, width)
            fed_back = None if before is None else before.fed_back(previous, whole)
            automatic = base.decode(session.embeddings, image_shape,
                                    mask_inputs=self._mask_prompt(previous, fed_back))
            start[:, unprompted] = self._foreground(base.postprocess(automatic, spatial))[:, unprompted].to(
                start.dtype)
            if window.whole:  # the next call's mask prompt for every class
                low = torch.where(unprompted.to(low.device).view(1, -1, *[1] * (low.ndim - 2)), automatic, low)
        rows, cols = slice(*window.rows), slice(*window.cols)
        chosen = prompted.to(start.device)
        start[:, chosen, rows, cols] = inside[:, chosen].to(start.dtype)
        return start, window, low

    def _mask_prompt(self, crop: torch.Tensor | None, fed_back: torch.Tensor | None) -> torch.Tensor | None:
        """The low-resolution mask prompt of ``crop`` (previous logits at the image's resolution): the decoder's
        own logits where the previous call left them (``fed_back``), else ``crop`` resampled."""
        resampled = self._low_res(crop)
        if fed_back is None or resampled is None:
            return resampled
        return torch.where(torch.isfinite(fed_back), fed_back.to(resampled), resampled)

    def _decode_window(self, session: ZoomSession, image_shape, window: ZoomWindow, points, point_labels, boxes,
                       previous, fed_back: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground logits of the window ``(1, K, h, w[, D])`` and the decoder's low-resolution logits: the
        window's image encoded, prompts shifted into it, the previous logits inside it as the mask prompt (see
        :meth:`_mask_prompt`); where the decoder leaves the mask prompt as it was, the previous logits exactly (no
        resampling drift across a session's calls)."""
        base = self.predictor
        rows, cols = slice(*window.rows), slice(*window.cols)
        if window.whole:
            image, embeddings = session.image, session.embeddings
        else:
            image = session.image[:, :, rows, cols]
            embeddings = base.encode(image)
        offset = torch.tensor([window.rows[0], window.cols[0]], dtype=torch.float32)
        top = torch.tensor([window.rows[1] - window.rows[0] - 1, window.cols[1] - window.cols[0] - 1],
                           dtype=torch.float32)
        if points is not None:  # inside the window by its making; clamped against rounding at its border
            points = points.clone().float()
            points[..., :2] = torch.minimum(torch.clamp(points[..., :2] - offset.to(points.device), min=0),
                                            top.to(points.device))
        if boxes is not None:
            dims = boxes.shape[-1] // 2
            boxes = boxes.clone().float()
            for first in (0, dims):
                shifted = boxes[..., first:first + 2] - offset.to(boxes.device)
                boxes[..., first:first + 2] = torch.minimum(torch.clamp(shifted, min=0), top.to(boxes.device))
        crop = None if previous is None else previous[:, :, rows, cols]
        mask_low = self._mask_prompt(crop, fed_back)
        low = base.decode(embeddings, tuple(image.shape), points, point_labels, boxes, mask_low)
        size = tuple(image.shape[2:])
        if crop is None:
            return self._foreground(base.postprocess(low, size)), low
        change = torch.where(torch.isfinite(mask_low), low - mask_low, low)
        return crop + _resize_slices(torch.nan_to_num(change, nan=0.0), size[:2]), low

    @staticmethod
    def _reaches_border(logits: torch.Tensor, window: ZoomWindow) -> bool:
        """Whether foreground touches a side of the window that is not the image's."""
        foreground = logits > 0
        sides = []
        if window.rows[0] > 0:
            sides.append(foreground[:, :, 0])
        if window.rows[1] < window.height:
            sides.append(foreground[:, :, -1])
        if window.cols[0] > 0:
            sides.append(foreground[:, :, :, 0])
        if window.cols[1] < window.width:
            sides.append(foreground[:, :, :, -1])
        return any(bool(side.any()) for side in sides)
