"""3D prompt propagation: a click or a box on some slices segments the whole structure, slice by slice.

A 2D network (SAM decodes one slice at a time) sees a 3D prompt only on the slices it touches. Propagation, as in
MedSAM2's and SAM 2's video mode, carries it further: the prompted slices (seeds) are decoded first; then each
slice next to a decoded one whose prediction is not empty is decoded with that neighbour's prediction as its
prompts (the neighbour's low-resolution logits as SAM's mask prompt, the bounding box of its foreground as a box),
outwards from the seeds until the structure ends. Every slice's image embedding is computed once beforehand, so
propagation costs one decoder pass per (slice, class), batched over all the slices and classes of a wave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from ..networks.prompt_mapping import SamPrompts
from .corrections import confine_to_clicked_regions, obey_clicks, pending_clicks

__all__ = ["propagate_prompts", "EMPTY_LOGIT", "low_res_boxes"]

EMPTY_LOGIT = -20.0
"""Low-resolution logit of the slices a propagated class does not reach (certain background)."""

Decode = Callable[[SamPrompts], torch.Tensor]
"""Decodes SAM-frame prompts per (row, class) of one batch of embeddings into ``(B, K, m, m, D)`` logits."""


def low_res_boxes(low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of the foreground (logit > 0) of low-resolution masks, in SAM's frame.

    Args:
        low_res: ``(M, m, m)`` logits at a quarter of SAM's ``image_size`` (row ``i``, column ``j``).

    Returns:
        ``(M, 4)`` boxes ``(x0, y0, x1, y1)`` in the ``image_size`` frame (each low-resolution pixel covers 4 x 4
        pixels of it) and ``(M,)`` whether the mask has any foreground (the box is NaN where not).
    """
    foreground = low_res > 0
    rows, cols = foreground.any(-1), foreground.any(-2)  # (M, m): which rows / columns hold foreground
    present = rows.any(-1)
    index = torch.arange(low_res.shape[-1], device=low_res.device, dtype=torch.float32)
    big = float(low_res.shape[-1])

    def first_last(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.where(hit, index, big).amin(-1)
        last = torch.where(hit, index, -1.0).amax(-1)
        return first, last

    i0, i1 = first_last(rows)
    j0, j1 = first_last(cols)
    boxes = torch.stack([j0 * 4, i0 * 4, j1 * 4 + 3, i1 * 4 + 3], dim=-1)
    return torch.where(present[:, None], boxes, torch.full_like(boxes, float("nan"))), present


def _plain(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A MONAI ``MetaTensor`` as a plain tensor: propagation slices and rolls rows, which batched metadata refuses."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _per_row(low_res: torch.Tensor) -> torch.Tensor:
    """``(B, K, m, m, D)`` -> ``(B * D, K, m, m)``, a row per slice."""
    return low_res.permute(0, 4, 1, 2, 3).reshape(-1, *low_res.shape[1:4])


@dataclass
class _Seeds:
    """Per (row, class): which rows are decoded with their own prompts and whether with the box; per (batch,
    class): the first and last slice propagation may reach."""

    seeds: torch.Tensor
    box_seeds: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor


def _seeds_and_bounds(prompts: SamPrompts, batch: int, depth: int, classes: int) -> _Seeds:
    device = prompts.masks.device if prompts.masks is not None else (
        prompts.labels.device if prompts.labels is not None else prompts.boxes.device)
    shape = (batch, depth, classes)
    clicked = (prompts.labels != -1).any(-1).view(shape) if prompts.labels is not None else torch.zeros(
        shape, dtype=torch.bool, device=device)
    boxed = torch.isfinite(prompts.boxes).all(-1).view(shape) if prompts.boxes is not None else torch.zeros_like(
        clicked)
    slices = torch.arange(depth, device=device)[None, :, None].expand(shape)
    box_first = torch.where(boxed, slices, depth).amin(1)  # (B, K)
    box_last = torch.where(boxed, slices, -1).amax(1)
    has_box = boxed.any(1)
    box_seed = (slices == ((box_first + box_last) // 2)[:, None]) & has_box[:, None]
    # a box spanning one slice is a box drawn on that slice: propagation is not bounded by it
    bounded = has_box & (box_last > box_first)
    first = torch.where(bounded, box_first, 0)
    last = torch.where(bounded, box_last, depth - 1)
    return _Seeds((clicked | box_seed).view(-1, classes), box_seed.view(-1, classes), first, last)


def _session_under_way(prompts: SamPrompts, seeds: _Seeds, prompted_rows: torch.Tensor, flat: torch.Tensor,
                       confine_corrections: bool, exclusive: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the previous prediction is fed back: only rows with a pending click are seeds again, every other row
    keeps its previous logits. Returns the rows fed back, the pending click labels and the starting logits."""
    fed_back = torch.isfinite(prompts.masks).flatten(2).all(-1) & prompted_rows
    pending = prompts.labels
    if pending is not None and confine_corrections:
        done = pending_clicks(prompts.masks[:, :, 0], prompts.coords, pending, exclusive)
        pending = torch.where(fed_back[..., None], done, pending)
    clicked = (pending != -1).any(-1) if pending is not None else torch.zeros_like(seeds.seeds)
    seeds.seeds = torch.where(fed_back, clicked, seeds.seeds)
    in_box = torch.isfinite(prompts.boxes).all(-1) if prompts.boxes is not None else torch.zeros_like(seeds.seeds)
    seeds.box_seeds = torch.where(fed_back, seeds.seeds & in_box, seeds.box_seeds)
    kept = fed_back & ~seeds.seeds
    flat = torch.where(kept[..., None, None], prompts.masks[:, :, 0].to(flat.dtype), flat)
    return fed_back, pending, flat


def _propagate_waves(decode: Decode, flat: torch.Tensor, decided: torch.Tensor, prompted_rows: torch.Tensor,
                     seeds: _Seeds, depth: int, automatic_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, wave by wave, the undecided slices next to decided ones with foreground, from their neighbour;
    return the logits and which rows were decided."""
    rows, classes = decided.shape
    own_automatic = None  # per (row, prompted class): its automatic logits, decoded once if a wave needs them
    slice_of_row = torch.arange(rows, device=flat.device) % depth
    row_first = seeds.first.repeat_interleave(depth, 0)  # (rows, K)
    row_last = seeds.last.repeat_interleave(depth, 0)
    inside = (slice_of_row[:, None] >= row_first) & (slice_of_row[:, None] <= row_last)
    while True:
        foreground = (flat > 0).flatten(2).any(-1) & decided  # (rows, K): decided slices with a structure
        from_below = torch.zeros_like(decided)
        from_above = torch.zeros_like(decided)
        from_below[1:] = foreground[:-1] & (slice_of_row[1:, None] > 0)
        from_above[:-1] = foreground[1:] & (slice_of_row[:-1, None] < depth - 1)
        wave = (from_below | from_above) & ~decided & inside & prompted_rows
        if not wave.any():
            return flat, decided
        below, above = torch.roll(flat, 1, dims=0), torch.roll(flat, -1, dims=0)
        source = torch.where(from_below[..., None, None], below, above)  # the decided neighbour's logits
        unset = torch.full_like(source, float("nan"))
        wave_boxes, _ = low_res_boxes(torch.where(wave[..., None, None], source, unset).nan_to_num(EMPTY_LOGIT)
                                      .flatten(0, 1))
        if automatic_weight > 0:
            if own_automatic is None:
                reachable = prompted_rows & ~decided
                own_automatic = _per_row(decode(SamPrompts(None, None, None, None, active=reachable)))
            source = (1 - automatic_weight) * source + automatic_weight * own_automatic
        masks = torch.where(wave[..., None, None], source, unset)
        wave_prompts = SamPrompts(None, None, wave_boxes.view(rows, classes, 4), masks[:, :, None], active=wave,
                                  derived_boxes=wave)
        flat = torch.where(wave[..., None, None], _per_row(decode(wave_prompts)), flat)
        decided = decided | wave


def _obey_own_clicks(flat: torch.Tensor, prompts: SamPrompts, pending: torch.Tensor | None, corrected: torch.Tensor,
                     exclusive: bool) -> torch.Tensor:
    """``flat`` with each corrected (row, class) pair showing its own slice's pending clicks where they were placed."""
    own = pending if pending is not None else prompts.labels
    if prompts.depth_offsets is not None:
        own = torch.where(prompts.depth_offsets == 0, own, torch.full_like(own, -1))
    own = torch.where(corrected[..., None], own, torch.full_like(own, -1))
    for row in torch.nonzero((own != -1).flatten(1).any(1)).flatten().tolist():
        flat[row] = obey_clicks(flat[row], prompts.coords[row], own[row], exclusive)
    return flat


def propagate_prompts(decode: Decode, prompts: SamPrompts, batch: int, depth: int, classes: int,
                      exclusive: bool = True, automatic_weight: float = 0.0, confine_corrections: bool = False,
                      removal_radius: float | None = None, obey: bool = False) -> torch.Tensor:
    """Decode 3D prompts by propagation from the prompted slices outwards.

    Per (volume, class) with a prompt: the seeds are the slices holding a click of that class and the middle slice
    of its box (``(k0 + k1) // 2``); a seed is decoded with its own clicks, the box if it is the box's seed, and its
    mask prompt if one is given (the previous prediction, as in iterative use). Then, wave by wave, every slice next
    to a decoded slice with foreground is decoded with that slice's logits as the mask prompt and their foreground's
    bounding box as the box prompt (a slice with decoded neighbours on both sides takes the one below); with
    ``automatic_weight`` the mask prompt is ``(1 - w)`` times the neighbour's logits plus ``w`` times the slice's
    own automatic logits (its class prompt, no mask), so that the neighbour says which structure and how far it
    reaches, and the slice's image says where its boundary lies there. Propagation stays within the box's slice range
    ``k0..k1`` (unbounded for a box drawn on one slice, ``k0 == k1``, and for clicks alone) and stops where a
    prediction is empty; slices never reached get :data:`EMPTY_LOGIT`. Classes without a prompt are decoded in
    automatic mode on every slice (with their mask prompt, if given).

    A session under way is corrected, not redone: where a prompted class has a mask prompt on a slice (the previous
    prediction fed back), only its slices with clicks are decoded again (with their clicks, their previous logits,
    and the box where the slice lies in its range), and every other slice keeps its previous logits; propagation
    reaches only the slices without one. With ``confine_corrections`` only the slices with a click the previous
    prediction does not obey yet are decoded again (:func:`~medsa_monai.predictor.corrections.pending_clicks`; the
    clicks sent are still all of them), and each keeps its new logits only in the regions of change those pending
    clicks touch (:func:`~medsa_monai.predictor.corrections.confine_to_clicked_regions`). Propagating again from
    every seed at each click would undo the earlier corrections. Interactive training decodes its correction rounds
    the same way (only the pairs whose prompt changed).

    Args:
        decode: decodes SAM-frame prompts of this batch's embeddings into ``(B, K, m, m, D)`` logits (NaN for
            pairs left out by ``active``), e.g. :meth:`~medsa_monai.predictor.MedSAPredictor.decode_prompts`.
        prompts: SAM-frame prompts per (slice, class), a click on its own slice only (``click_depth_radius=0``).
        batch: ``B``.
        depth: ``D``.
        classes: ``K``.
        exclusive: classes compete (a background channel) rather than overlap (regions); reads which clicks are
            done.
        automatic_weight: ``w`` in ``[0, 1]`` above; ``0`` propagates the neighbour's prediction alone.
        confine_corrections: confine a correction to the regions its clicks change (see above).
        removal_radius: with ``confine_corrections``, how far from a background click (low-resolution pixels) it
            may remove; ``None``: the whole region it touches.
        obey: in a session under way, a slice decoded again shows each of its own clicks where it was placed,
            whatever the decoder made of it (:func:`~medsa_monai.predictor.corrections.obey_clicks`); the copies of a
            click on other slices (``click_depth_radius``) and a first click, which seeds propagation, are not
            enforced.

    Returns:
        ``(B, K, m, m, D)`` low-resolution logits.
    """
    if not 0.0 <= automatic_weight <= 1.0:
        raise ValueError(f"automatic_weight must lie in [0, 1], got {automatic_weight}")
    prompts = SamPrompts(**{field.name: _plain(getattr(prompts, field.name)) for field in fields(prompts)})
    rows = batch * depth
    seeds = _seeds_and_bounds(prompts, batch, depth, classes)
    prompted = seeds.seeds.view(batch, depth, classes).any(1)  # (B, K)
    prompted_rows = prompted[:, None].expand(batch, depth, classes).reshape(rows, classes)

    flat = _per_row(decode(SamPrompts(None, None, None, prompts.masks, active=~prompted_rows)))  # NaN where prompted
    fed_back, pending = torch.zeros_like(seeds.seeds), prompts.labels
    if prompts.masks is not None:
        fed_back, pending, flat = _session_under_way(prompts, seeds, prompted_rows, flat, confine_corrections,
                                                     exclusive)

    boxes = None
    if prompts.boxes is not None:
        boxes = torch.where(seeds.box_seeds[..., None], prompts.boxes, torch.full_like(prompts.boxes, float("nan")))
    seeded = _per_row(decode(SamPrompts(prompts.coords, prompts.labels, boxes, prompts.masks, active=seeds.seeds)))
    flat = torch.where(seeds.seeds[..., None, None], seeded, flat)
    if confine_corrections and prompts.masks is not None and prompts.labels is not None:
        previous = prompts.masks[:, :, 0].to(flat.dtype)
        for row, cls in torch.nonzero(seeds.seeds & fed_back).tolist():
            flat[row, cls] = confine_to_clicked_regions(flat[row, cls], previous[row, cls], prompts.coords[row, cls],
                                                        pending[row, cls], removal_radius)
    if obey and prompts.labels is not None:
        flat = _obey_own_clicks(flat, prompts, pending, seeds.seeds & fed_back, exclusive)

    decided = seeds.seeds | fed_back
    flat, decided = _propagate_waves(decode, flat, decided, prompted_rows, seeds, depth, automatic_weight)
    flat = torch.where(prompted_rows[..., None, None] & ~decided[..., None, None],
                       torch.full_like(flat, EMPTY_LOGIT), flat)
    return flat.view(batch, depth, classes, *flat.shape[-2:]).permute(0, 2, 3, 4, 1)
