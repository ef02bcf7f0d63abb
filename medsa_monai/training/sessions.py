"""Interactive training sessions: SAM's click-simulation loop, with the network's own predictions fed back.

SAM (Kirillov et al. 2023, section 3 and appendix A), RITM (Sofiiuk et al. 2022) and nnInteractive train a promptable
model on sessions, not on single prompts: a first prompt, then rounds in which the next click is placed on the
error of the network's *own* current prediction and its previous logits come back as the mask prompt. A model
trained only on prompts simulated from the reference learns to copy a mask prompt and never to correct itself.
:class:`InteractiveSessions` simulates the rounds; :class:`~medsa_monai.training.InteractiveTrainer` runs them in its
iteration and takes the loss on the last round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from monai.transforms import Randomizable

from ..networks.medsa import MedSA
from ..networks.prompt_mapping import SamPrompts, index_to_sam_xy, to_sam_prompts
from ..predictor.propagation import low_res_boxes
from ..prompts.sampling import error_click

__all__ = ["InteractiveSessions", "Session", "winner_masks"]

Decode = Callable[[SamPrompts], torch.Tensor]
"""Decodes SAM-frame prompts of the batch's (detached) embeddings into low-resolution logits, without gradients."""


@dataclass
class Session:
    """The outcome of the simulated rounds of one batch.

    Attributes:
        prompts: the last round's prompts per (row, class), to decode with gradients.
        automatic: the rows (every slice) of the samples that are also decoded in automatic mode, as prompts without
            any, or ``None`` when none is.
        automatic_samples: indices of those samples in the batch.
    """

    prompts: SamPrompts
    automatic: SamPrompts | None
    automatic_samples: np.ndarray


class InteractiveSessions(Randomizable):
    """A simulated interactive session per training sample: the first prompt, then rounds of corrections.

    The first prompt comes from :class:`~medsa_monai.prompts.SamplePromptsd` (none, a box, clicks, or a box and
    clicks per class). Then each sample gets a random number of further rounds, up to ``max_rounds`` (a sample
    without a first prompt, in automatic mode, gets none with probability ``1 - automatic_rounds_probability``, so
    automatic segmentation keeps being trained). Each round, per (sample, class):

    - a correction round adds one click drawn from the error of the current prediction
      (:func:`~medsa_monai.prompts.error_click`: in the largest error component, drawn towards its interior; in 3D on
      the click's own slice) and feeds every slice's previous low-resolution logits back as its mask prompt;
    - in 3D, with probability ``propagation_probability``, a propagation round instead gives each slice without a
      click the previous logits of its neighbour (the slice below or above, one direction per round) as the mask
      prompt and the bounding box of that neighbour's foreground as the box, which is how
      :func:`~medsa_monai.predictor.propagate_prompts` prompts slices at inference.

    Boxes are those a user draws: in 3D, a box given to a class becomes, on every slice of its range that holds the
    class, the class's tight box on that slice, as propagation and the evaluation protocol prompt a slice; in 2D
    and 3D each side is moved outwards by a random fraction (up to ``box_jitter``) of the box's extent.

    The rounds run without gradients; the trainer takes the loss on the last round only (as RITM): one backward
    pass per sample whatever the number of rounds, and, the number of rounds being random, the last round covers
    every stage of a session, from the first prompt to the eighth correction. In the rounds after the first, only
    the (slice, class) pairs whose prompt changed (a new click, a propagated neighbour) are decoded again; the
    others keep their logits. Every sample whose session was prompted is also listed for an automatic decoding from
    the same embedding, so that the trainer can keep automatic mode trained.

    Args:
        max_rounds: the largest number of rounds after the first prompt (drawn uniformly in ``0..max_rounds``).
        automatic_rounds_probability: probability that a sample in automatic mode also gets rounds.
        propagation_probability: in 3D, probability that a round is a propagation round.
        click_power: interior weighting of the drawn clicks (see :func:`~medsa_monai.prompts.error_click`).
        box_jitter: largest outward move of each side of a box, as a fraction of the box's extent.
        class_token_dropout: probability that a (sample, class) session is decoded without the class's prompt
            token beside its prompts (with a network built with ``prompt_class_token``): the prompt alone must then
            say what to segment, and prompted rows do not learn to follow the token and ignore boxes and clicks.
        seed: seed of the rounds, clicks and jitter (``set_random_state`` also works).
    """

    def __init__(self, max_rounds: int = 8, automatic_rounds_probability: float = 0.25,
                 propagation_probability: float = 0.3, click_power: float = 1.0, box_jitter: float = 0.1,
                 class_token_dropout: float = 0.0, seed: int = 0) -> None:
        if max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {max_rounds}")
        if not 0.0 <= class_token_dropout <= 1.0:
            raise ValueError(f"class_token_dropout must be in [0, 1], got {class_token_dropout}")
        self.max_rounds = max_rounds
        self.automatic_rounds_probability = automatic_rounds_probability
        self.propagation_probability = propagation_probability
        self.click_power = click_power
        self.box_jitter = box_jitter
        self.class_token_dropout = class_token_dropout
        self.set_random_state(seed)

    def randomize(self, data=None) -> None:
        pass

    def run(self, network: MedSA, decode: Decode, image_shape: tuple[int, ...], targets: torch.Tensor,
            points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
            boxes: torch.Tensor | None = None, mask_inputs: torch.Tensor | None = None) -> Session:
        """Simulate the rounds of a batch.

        Args:
            network: the network being trained (its prompt mapping, ``postprocess`` and sizes).
            decode: decodes prompts of the batch's embeddings without gradients (see :data:`Decode`).
            image_shape: ``(B, C, H, W[, D])`` of the batch.
            targets: the label ``(B, 1, ...)`` class indices or ``(B, K, ...)`` region channels.
            points, point_labels, boxes, mask_inputs: the first prompts, as for
                :class:`~medsa_monai.networks.MedSA`.
        """
        batch, spatial = image_shape[0], tuple(image_shape[2:])
        depth = spatial[2] if network.spatial_dims == 3 else 1
        classes = network.num_classes
        references = _references(targets, classes)  # (B, K, *spatial) bool, numpy
        prompts = to_sam_prompts(points, point_labels, boxes, mask_inputs, spatial_shape=spatial,
                                 image_size=network.image_size, num_classes=classes, batch=batch,
                                 click_depth_radius=network.click_depth_radius)
        prompts = self._user_boxes(prompts, references, spatial, network.image_size, depth)
        if self.class_token_dropout > 0:  # one draw per (sample, class): a whole session with or without it
            keep = torch.as_tensor(self.R.rand(batch, classes) >= self.class_token_dropout, device=targets.device)
            prompts = replace(prompts, class_token=keep.repeat_interleave(depth, 0))
        first_prompted = _prompted(prompts, batch, depth, classes)
        rounds = self.R.randint(0, self.max_rounds + 1, size=batch)
        rounds[~first_prompted & (self.R.rand(batch) >= self.automatic_rounds_probability)] = 0
        prompts = self._rounds(network, decode, prompts, references, rounds, spatial, depth, targets.device)
        needs_automatic = first_prompted | (rounds > 0)
        automatic = None
        if needs_automatic.any():
            rows = torch.as_tensor(needs_automatic, device=targets.device).repeat_interleave(depth)
            automatic = SamPrompts(None, None, None, None, active=rows[:, None].expand(-1, classes))
        return Session(prompts, automatic, np.flatnonzero(needs_automatic))

    def _rounds(self, network: MedSA, decode: Decode, prompts: SamPrompts, references: np.ndarray,
                rounds: np.ndarray, spatial: tuple[int, ...], depth: int, device: torch.device) -> SamPrompts:
        """Run ``rounds[b]`` rounds for each sample ``b``; return the prompts of each one's last round."""
        classes = references.shape[1]
        low_res, changed = None, None
        for step in range(int(rounds.max(initial=0))):
            going_on = torch.as_tensor(rounds > step, device=device)
            with torch.no_grad():  # only the samples still in session, and only their rows whose prompt changed
                active = going_on.repeat_interleave(depth)[:, None].expand(-1, classes)
                if changed is not None:
                    active = active & changed
                fresh = decode(replace(prompts, active=active))
                low_res = fresh if low_res is None else torch.where(torch.isnan(fresh), low_res, fresh)
                logits = network.postprocess(low_res.nan_to_num(0.0), spatial)
            propagate = network.spatial_dims == 3 and self.R.rand() < self.propagation_probability
            prompts, changed = self.next_round(network, prompts, low_res, logits, references, going_on, propagate,
                                               spatial, depth)
        return prompts

    def _user_boxes(self, prompts: SamPrompts, references: np.ndarray, spatial: tuple[int, ...], image_size: int,
                    depth: int) -> SamPrompts:
        """Replace each given box by the tight box of the class on the row (slice), jittered outwards."""
        if prompts.boxes is None:
            return prompts
        boxes = prompts.boxes.clone()
        given = torch.isfinite(boxes).all(-1).cpu().numpy()
        scale = torch.tensor([image_size / spatial[0], image_size / spatial[1]])
        for row, k in zip(*np.nonzero(given), strict=True):
            b, z = divmod(int(row), depth)
            plane = references[b, k] if len(spatial) == 2 else references[b, k][..., z]
            if not plane.any():
                boxes[row, k] = float("nan")
                continue
            coords = np.argwhere(plane)
            low, high = coords.min(0).astype(np.float32), coords.max(0).astype(np.float32)
            extent = high - low + 1
            low = np.clip(low - self.R.uniform(0, self.box_jitter, 2) * extent, 0, None)
            high = np.minimum(high + self.R.uniform(0, self.box_jitter, 2) * extent, np.array(plane.shape) - 1)
            corners = index_to_sam_xy(torch.tensor(np.stack([low, high])), scale)
            boxes[row, k] = corners.flatten().to(boxes)
        return replace(prompts, boxes=boxes)

    def next_round(self, network: MedSA, prompts: SamPrompts, low_res: torch.Tensor, logits: torch.Tensor,
                   references: np.ndarray, going_on: torch.Tensor, propagate: bool, spatial: tuple[int, ...],
                   depth: int) -> tuple[SamPrompts, torch.Tensor]:
        """The prompts of the next round and which (row, class) pairs changed (to decode again): a click from each
        ongoing (sample, class)'s error, the previous logits fed back, and with ``propagate`` the neighbours'."""
        rows = references.shape[0] * depth
        coords, labels, offsets, changed = self._new_clicks(network, prompts, logits, references, going_on, spatial,
                                                            depth)
        flat = low_res.permute(0, 4, 1, 2, 3) if network.spatial_dims == 3 else low_res[:, None]
        flat = flat.reshape(rows, references.shape[1], *low_res.shape[2:4])  # (rows, K, m, m)
        masks = flat.clone()
        boxes, derived = prompts.boxes, prompts.derived_boxes
        row_on = going_on.repeat_interleave(depth)[:, None]
        if propagate:
            masks, boxes, derived, use = self._propagation_round(flat, labels, boxes, derived, row_on, depth)
            changed = changed | use

        # samples whose session has ended keep their prompts unchanged
        if prompts.masks is not None:
            masks = torch.where(row_on[..., None, None], masks, prompts.masks[:, :, 0])
        else:
            masks = torch.where(row_on[..., None, None], masks, torch.full_like(masks, float("nan")))
        if boxes is not None and prompts.boxes is not None:
            boxes = torch.where(row_on[..., None], boxes, prompts.boxes)
        elif boxes is not None:
            boxes = torch.where(row_on[..., None], boxes, torch.full_like(boxes, float("nan")))
        return replace(prompts, coords=coords, labels=labels, boxes=boxes, masks=masks[:, :, None],
                       depth_offsets=offsets, active=None, derived_boxes=derived), changed & row_on

    def _new_clicks(self, network: MedSA, prompts: SamPrompts, logits: torch.Tensor, references: np.ndarray,
                    going_on: torch.Tensor, spatial: tuple[int, ...], depth: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One click per (sample, class) still in session, appended to the prompts' clicks; the pairs clicked."""
        batch, classes = references.shape[:2]
        rows, device = batch * depth, logits.device
        foreground = logits[:, 1:] if network.background_channel else logits
        predictions = (winner_masks(foreground) if network.background_channel else foreground > 0).cpu().numpy()
        scale = torch.tensor([network.image_size / spatial[0], network.image_size / spatial[1]], device=device)
        new_xy = torch.zeros(rows, classes, 1, 2, device=device)
        new_label = torch.full((rows, classes, 1), -1, dtype=torch.long, device=device)
        for b in np.flatnonzero(going_on.cpu().numpy()):
            for k in range(classes):
                click = error_click(predictions[b, k], references[b, k], draw=self.R, power=self.click_power)
                if click is None:
                    continue
                index, positive = click
                row = b * depth + (int(index[2]) if len(spatial) == 3 else 0)
                new_xy[row, k, 0] = index_to_sam_xy(torch.as_tensor(index[:2], dtype=torch.float32, device=device),
                                                    scale)
                new_label[row, k, 0] = int(positive)
        if prompts.labels is None:
            offsets = torch.zeros_like(new_label) if network.click_depth_radius else None
            return new_xy, new_label, offsets, new_label[..., 0] != -1
        coords = torch.cat([prompts.coords, new_xy], dim=2)
        labels = torch.cat([prompts.labels, new_label], dim=2)
        offsets = None if prompts.depth_offsets is None else torch.cat(
            [prompts.depth_offsets, torch.zeros_like(new_label)], dim=2)
        return coords, labels, offsets, new_label[..., 0] != -1

    def _propagation_round(self, flat: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor | None,
                           derived: torch.Tensor | None, row_on: torch.Tensor, depth: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each slice without a click takes its neighbour's (one direction) logits as mask and their box; returns
        the masks, boxes, which boxes were derived, and the pairs that took them."""
        rows, classes = flat.shape[:2]
        direction = 1 if self.R.rand() < 0.5 else -1
        slice_of_row = torch.arange(rows, device=flat.device) % depth
        has_neighbour = (slice_of_row >= 1) if direction == 1 else (slice_of_row <= depth - 2)
        neighbour = torch.roll(flat, direction, dims=0)
        neighbour_boxes, present = low_res_boxes(neighbour.flatten(0, 1))
        neighbour_boxes, present = neighbour_boxes.view(rows, classes, 4), present.view(rows, classes)
        clicked = (labels != -1).any(-1)
        use = has_neighbour[:, None] & present & ~clicked
        masks = torch.where(use[..., None, None], neighbour, flat.clone())
        old = boxes if boxes is not None else torch.full_like(neighbour_boxes, float("nan"))
        boxes = torch.where(use[..., None], neighbour_boxes, old)
        use_on = use & row_on  # samples whose session has ended keep their prompts
        derived = use_on if derived is None else derived | use_on
        return masks, boxes, derived, use


def _references(targets: torch.Tensor, classes: int) -> np.ndarray:
    """The label as ``(B, K, *spatial)`` boolean masks, one per class or region."""
    label = np.asarray(targets.detach().cpu())
    if label.shape[1] == 1:
        return np.stack([label[:, 0] == k + 1 for k in range(classes)], axis=1)
    return label > 0


def _prompted(prompts: SamPrompts, batch: int, depth: int, classes: int) -> np.ndarray:
    """``(B,)`` whether a sample has any first prompt (a click or a box of any class on any slice)."""
    any_prompt = torch.zeros(batch * depth, classes, dtype=torch.bool)
    if prompts.labels is not None:
        any_prompt |= (prompts.labels != -1).any(-1).cpu()
    if prompts.boxes is not None:
        any_prompt |= torch.isfinite(prompts.boxes).all(-1).cpu()
    return any_prompt.view(batch, -1).any(1).numpy()


def winner_masks(foreground: torch.Tensor) -> torch.Tensor:
    """Foreground logits ``(B, K, ...)`` beside an implicit zero background -> ``(B, K, ...)`` bool, class k where
    it wins ``argmax`` (first index on ties); elementwise, as ``argmax`` over a short channel axis is slow on CPU."""
    classes = foreground.shape[1]
    wins = []
    for k in range(classes):
        win = foreground[:, k] > 0
        for j in range(classes):
            if j != k:
                win &= foreground[:, k] > foreground[:, j] if j < k else foreground[:, k] >= foreground[:, j]
        wins.append(win)
    return torch.stack(wins, dim=1)
