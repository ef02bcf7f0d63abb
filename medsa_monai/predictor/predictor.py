"""MedSAPredictor: a MedSA network in use, holding what belongs to an interactive session."""

from __future__ import annotations

import torch
from torch import nn

from ..networks.medsa import MedSA
from ..networks.prompt_mapping import SamPrompts, to_sam_prompts
from .boundary_edits import BoundaryEdits
from .click_guidance import guidance_to_points
from .dense_prompts import with_prompt_maps
from .embedding_cache import EmbeddingCache
from .propagation import propagate_prompts

__all__ = ["MedSAPredictor", "unwrap_network", "OBEY_MAX_PIXELS"]

OBEY_MAX_PIXELS = 2.0
"""``obey_clicks`` applies where a low-resolution pixel spans at most this many image pixels: there the pixels a click
is read from are about the voxel it was placed on; on a coarser grid they would paint a block far larger than it."""


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``network``)."""
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


class MedSAPredictor:
    """A :class:`~medsa_monai.networks.MedSA` in use, as ``segment_anything``'s ``SamPredictor`` is a ``Sam`` in
    use: it holds an image's embedding for many prompts and turns a user's prompts into calls of the network.

    What it adds to the network's ``encode`` / ``decode``:

    - an :class:`EmbeddingCache` (``embedding_cache``), keyed by the content of the image and of the encoder's
      weights, used whenever the encoder is frozen or the network is evaluated without gradients, so that each new
      prompt on an image costs one decoder pass (with SD-Trans a volume is cached whole);
    - slab encoding (``encode_depth``): a volume deeper than that is encoded in consecutive slabs (SD-Trans attends
      within a slab), so that a whole CT needs the memory of one training slab;
    - propagation (``propagation``, 3D): a click or a box on some slices segments the whole structure slice by
      slice (:func:`~medsa_monai.predictor.propagate_prompts`), a propagated slice's prompt mixing its own automatic
      logits by ``propagation_automatic_weight``;
    - corrections confined to the regions each click changes in a session under way (``confine_corrections``, a
      background click removing within ``removal_radius``): only the slices (in 2D, the images) with a click the
      previous prediction does not obey yet are decoded again, and keep their new logits only there; each click is
      shown where it was placed (``obey_clicks``); a click next to the shown boundary moves it by one voxel around
      itself instead of being decoded (``boundary_shift_radius``, :meth:`boundary_edits`);
    - prompts drawn as maps into SAM's mask prompt (``dense_prompts``, clicks as disks of ``click_radius``), as
      the network was trained;
    - clicks arriving as guidance channels after the image's (``click_guidance``), the way MONAI Label's
      DeepEdit-style infer task sends them.

    ``propagation_automatic_weight`` and ``removal_radius`` are chosen per model after training
    (:func:`~medsa_monai.training.calibrate_propagation`; :mod:`~medsa_monai.predictor.calibrated` reads them).

    Use it as ``SamPredictor``: :meth:`set_image`, then :meth:`predict` with prompts, each call decoding only; or
    call it with an image (and prompts) wherever a network is called, e.g. by a MONAI inferer. The stateless
    :meth:`encode` / :meth:`decode` / :meth:`postprocess` serve the interactive evaluation protocols.

    Args:
        network: the network (a ``DistributedDataParallel`` wrapper is looked through).
        embedding_cache: the cache of image embeddings, or ``None``.
        encode_depth: in 3D, encode a deeper volume in slabs of at most this many slices; ``None``: at once.
        propagation: propagate 3D prompts through the volume; ``None``: yes for a 3D network.
        propagation_automatic_weight: weight of a propagated slice's own automatic logits in its mask prompt.
        confine_corrections: confine a correction to the regions its clicks change (in a session under way: the
            previous prediction fed back as ``mask_inputs``), in 2D as in 3D; ``False``: each click decodes the
            image (in 3D, each clicked slice) again whole, as ``SamPredictor`` does.
        removal_radius: how far a background click may remove, in low-resolution pixels; ``None``: the whole
            region of change it touches.
        correction_depth_radius: in a 3D session under way (a previous prediction fed back), a click also corrects
            the slices within this many of its own, at the same in-plane position (each where the previous
            prediction does not obey it yet, confined as on its own slice); 0: its own slice only.
        obey_clicks: in a session under way, a slice (in 2D, image) decoded again shows each of its clicks where it
            was placed, whatever the decoder made of it (the 2 x 2 low-resolution pixels the click is read from,
            :func:`~medsa_monai.predictor.corrections.obey_clicks`), so that a click is not left undone and asked
            again; with propagation (3D) or confined corrections (2D), where a low-resolution pixel spans at most
            :data:`OBEY_MAX_PIXELS` image pixels (Task04's slices: 1.75; not a 512-pixel fundus photograph or CT
            slice). ``False``: the decoder's logits as they are.
        boundary_shift_radius: in a session under way, a click next to the shown boundary of its class is not
            decoded but moves that boundary by one voxel within this many voxels of itself on its slice, at the
            image's resolution (:mod:`~medsa_monai.predictor.boundary_edits`), where a low-resolution pixel spans
            at most :data:`OBEY_MAX_PIXELS` image pixels; ``None``: every click is decoded.
        boundary_shift_first_click: with ``boundary_shift_radius``, a class's clicks before this one (counting
            from 1) are decoded wherever they lie.
        dense_prompts: draw boxes and clicks into SAM's mask prompt.
        click_radius: radius of a click's disk in those maps, in low-resolution pixels.
        click_guidance: read ``1 + K`` guidance channels after the image's as clicks.
    """

    def __init__(
        self,
        network: nn.Module,
        embedding_cache: EmbeddingCache | None = None,
        encode_depth: int | None = None,
        propagation: bool | None = None,
        propagation_automatic_weight: float = 0.0,
        confine_corrections: bool = True,
        removal_radius: float | None = None,
        correction_depth_radius: int = 0,
        obey_clicks: bool = True,
        boundary_shift_radius: float | None = None,
        boundary_shift_first_click: int = 1,
        dense_prompts: bool = False,
        click_radius: float = 1.0,
        click_guidance: bool = False,
    ) -> None:
        self.network: MedSA = unwrap_network(network)
        dims = self.network.spatial_dims
        if encode_depth is not None and (dims != 3 or int(encode_depth) < 1):
            raise ValueError(f"encode_depth must be None, or a positive slab depth for a 3D network, got "
                             f"{encode_depth}")
        self.propagation = dims == 3 if propagation is None else bool(propagation)
        if self.propagation and dims != 3:
            raise ValueError("propagation is for 3D networks (spatial_dims=3)")
        if not 0.0 <= propagation_automatic_weight <= 1.0:
            raise ValueError(f"propagation_automatic_weight must lie in [0, 1], got {propagation_automatic_weight}")
        if removal_radius is not None and not removal_radius > 0:
            raise ValueError(f"removal_radius must be None or positive, got {removal_radius}")
        if int(correction_depth_radius) != correction_depth_radius or correction_depth_radius < 0:
            raise ValueError(f"correction_depth_radius must be a whole number of slices >= 0, got "
                             f"{correction_depth_radius}")
        if boundary_shift_radius is not None and not boundary_shift_radius >= 0:
            raise ValueError(f"boundary_shift_radius must be None or >= 0 voxels, got {boundary_shift_radius}")
        if int(boundary_shift_first_click) != boundary_shift_first_click or boundary_shift_first_click < 1:
            raise ValueError(f"boundary_shift_first_click must be a click number >= 1, got "
                             f"{boundary_shift_first_click}")
        if click_radius <= 0:
            raise ValueError(f"click_radius must be positive, got {click_radius}")
        self.embedding_cache = embedding_cache
        self.encode_depth = None if encode_depth is None else int(encode_depth)
        self.propagation_automatic_weight = float(propagation_automatic_weight)
        self.confine_corrections = bool(confine_corrections)
        self.removal_radius = None if removal_radius is None else float(removal_radius)
        self.correction_depth_radius = int(correction_depth_radius)
        self.obey_clicks = bool(obey_clicks)
        self.boundary_shift_radius = None if boundary_shift_radius is None else float(boundary_shift_radius)
        self.boundary_shift_first_click = int(boundary_shift_first_click)
        self.dense_prompts = bool(dense_prompts)
        self.click_radius = float(click_radius)
        self.click_guidance = bool(click_guidance)
        self.reset_image()

    # -- the network's description ----------------------------------------------------------------------------

    @property
    def spatial_dims(self) -> int:
        return self.network.spatial_dims

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @property
    def background_channel(self) -> bool:
        return self.network.background_channel

    @property
    def image_size(self) -> int:
        return self.network.image_size

    # -- a session ----------------------------------------------------------------------------------------------

    def set_image(self, image: torch.Tensor) -> None:
        """Encode ``image`` ``(B, C, H, W[, D])`` once; :meth:`predict` without an image then decodes its prompts."""
        self.image_shape = tuple(image.shape)
        self.embeddings = self.encode(image)

    def reset_image(self) -> None:
        self.image_shape: tuple[int, ...] | None = None
        self.embeddings: torch.Tensor | None = None

    @property
    def is_image_set(self) -> bool:
        return self.embeddings is not None

    def predict(
        self,
        image: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, out_channels, H, W[, D])`` and low-resolution logits (to feed back as ``mask_inputs``) of
        ``image``, or of the image of :meth:`set_image` when ``image`` is ``None``; prompts as for
        :class:`~medsa_monai.networks.MedSA`, in the image's array-index order."""
        if image is None:
            if not self.is_image_set:
                raise RuntimeError("no image: call set_image(image) first, or pass the image")
            embeddings, shape = self.embeddings, self.image_shape
        else:
            image, points, point_labels = self.split_guidance(image, points, point_labels)
            embeddings, shape = self.encode(image), tuple(image.shape)
        low_res = self.decode(embeddings, shape, points, point_labels, boxes, mask_inputs)
        return self.postprocess(low_res, shape[2:]), low_res

    def __call__(self, image: torch.Tensor, points: torch.Tensor | None = None,
                 point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                 mask_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``image`` and its prompts, wherever a network is called (e.g. by a MONAI inferer)."""
        return self.predict(image, points, point_labels, boxes, mask_inputs)[0]

    # -- the stages ---------------------------------------------------------------------------------------------

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, C, H, W[, D])`` -> embeddings ``(B * D, 256, S / 16, S / 16)``, through the cache and, for
        volumes deeper than ``encode_depth``, slab by slab."""
        network = self.network
        if network.spatial_dims == 3 and self.encode_depth is not None and image.shape[-1] > self.encode_depth:
            network.check_image(image)
            slabs = [self._encode(slab).unflatten(0, (image.shape[0], -1))
                     for slab in image.split(self.encode_depth, dim=-1)]
            return torch.cat(slabs, dim=1).flatten(0, 1)
        return self._encode(image)

    def uses_embedding_cache(self) -> bool:
        """Whether :meth:`encode` goes through the cache: when the encoder is frozen (training included), or when
        the network is evaluated without gradients, whatever its preset; never while tracing, where it would bake
        one image's embedding into the trace."""
        if self.embedding_cache is None or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        return self.network.encoder_is_frozen() or (not torch.is_grad_enabled() and not self.network.training)

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        network = self.network
        if not self.uses_embedding_cache():
            return network.encode(image)
        sam_input = network.sam_input(image)
        encoder = network.image_encoder
        if network.spatial_dims == 3 and network.architecture.depth_attention:  # a slice's embedding needs all
            depth = image.shape[-1]
            volumes = sam_input.unflatten(0, (-1, depth))
            return self.embedding_cache.embed(volumes, encoder, lambda v: encoder(
                v.flatten(0, 1), depth=depth).unflatten(0, (len(v), depth))).flatten(0, 1)
        return self.embedding_cache.embed(sam_input, encoder, encoder)

    def decode(
        self,
        embeddings: torch.Tensor,
        image_shape: tuple[int, ...] | torch.Size,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings of :meth:`encode` and prompts -> low-resolution logits ``(B, K, S / 4, S / 4[, D])``, 3D
        prompts propagated through the volume."""
        network = self.network
        batch, depth = network.rows_of(image_shape, embeddings)
        propagate = self.propagation and (points is not None or boxes is not None)
        depth_radius = network.click_depth_radius
        if propagate:  # a first click seeds its own slice; a correction reaches correction_depth_radius further
            depth_radius = self.correction_depth_radius if mask_inputs is not None else 0
        prompts = to_sam_prompts(points, point_labels, boxes, mask_inputs, spatial_shape=tuple(image_shape[2:]),
                                 image_size=network.image_size, num_classes=network.num_classes, batch=batch,
                                 click_depth_radius=depth_radius)
        # a 2D session under way with clicks is corrected as a volume of one slice (nothing to propagate to)
        flat = network.spatial_dims == 2 and self.confine_corrections and mask_inputs is not None and points is not None
        if not (propagate or flat):
            return self.decode_prompts(embeddings, prompts, batch, depth)
        plain = _plain(embeddings)

        def decode(sam_prompts: SamPrompts) -> torch.Tensor:
            low = self.decode_prompts(plain, sam_prompts, batch, depth)
            return low[..., None] if flat else low

        obey = self.obey_clicks and self.grid_is_fine(image_shape)
        low_res = propagate_prompts(decode, prompts, batch, depth, network.num_classes, network.background_channel,
                                    self.propagation_automatic_weight, self.confine_corrections, self.removal_radius,
                                    obey)
        return low_res[..., 0] if flat else low_res

    def boundary_edits(self, image_shape: tuple[int, ...] | torch.Size) -> BoundaryEdits | None:
        """A session's :class:`~medsa_monai.predictor.boundary_edits.BoundaryEdits` for an image of ``image_shape``
        ``(1, C, *spatial)``, or ``None`` where every click is decoded (no ``boundary_shift_radius``, or a
        low-resolution pixel spanning more than :data:`OBEY_MAX_PIXELS` image pixels)."""
        if self.boundary_shift_radius is None or not self.grid_is_fine(image_shape):
            return None
        return BoundaryEdits(self.num_classes, tuple(image_shape[2:]), self.boundary_shift_radius,
                             self.background_channel, self.boundary_shift_first_click)

    def grid_is_fine(self, image_shape: tuple[int, ...] | torch.Size) -> bool:
        """Whether a low-resolution pixel of an image of ``image_shape`` ``(B, C, H, W[, D])`` spans at most
        :data:`OBEY_MAX_PIXELS` image pixels (its slices are resized whole to ``image_size``, decoded at a quarter)."""
        return max(image_shape[2:4]) * 4 / self.image_size <= OBEY_MAX_PIXELS

    def decode_prompts(self, embeddings: torch.Tensor, prompts: SamPrompts, batch: int, depth: int = 1
                       ) -> torch.Tensor:
        """The network's :meth:`~medsa_monai.networks.MedSA.decode_prompts`, with boxes and clicks drawn into the
        mask prompt when ``dense_prompts``."""
        if self.dense_prompts:
            prompts = with_prompt_maps(prompts, self.network.image_size // 4, self.click_radius)
        return self.network.decode_prompts(embeddings, prompts, batch, depth)

    def postprocess(self, low_res: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        return self.network.postprocess(low_res, tuple(spatial_shape))

    def split_guidance(self, image: torch.Tensor, points: torch.Tensor | None, point_labels: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """With ``click_guidance``, an image with ``1 + K`` channels more than the network's carries clicks:
        return the image alone and the clicks as points."""
        network = self.network
        guided = network.in_channels + network.num_classes + 1
        if not self.click_guidance or image.ndim != network.spatial_dims + 2 or image.shape[1] == network.in_channels:
            return image, points, point_labels
        if image.shape[1] != guided:
            raise ValueError(f"MedSA(in_channels={network.in_channels}) got an image with {image.shape[1]} channels "
                             f"(shape {tuple(image.shape)}); expected {network.in_channels} (or {guided} with click "
                             f"guidance: the image, then 1 + {network.num_classes} guidance channels)")
        if points is not None:
            raise ValueError("clicks come either as guidance channels or as points, not both")
        points, point_labels = guidance_to_points(image[:, network.in_channels:])
        return image[:, : network.in_channels], points, point_labels
