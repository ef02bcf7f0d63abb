"""What each iterative click changes, and where: the voxels it fixes and breaks on its own slice, on the slices its
copies correct (``correction_depth_radius``) and elsewhere, against how thick the error it was placed in is.

    python benchmarks/click_steps.py --bundle bundles/medsa_hippocampus_mri \\
        --data ../shared/data/Task04_Hippocampus --model runs/hippocampus/medsa/models/checkpoint_epoch=9.pt \\
        --seed 0 --set sam_variant=vit_nano trainable=full image_size=128

The protocol is the bundles' iterative one (:func:`~medsa_monai.evaluation.iterative_clicks.simulate_clicks`: each
click at the centre of the largest error, the previous prediction fed back, the predictor's calibrated settings),
observed through the predictor's ``decode``. For click ``t >= 2`` of each (case, class):

- ``depth``: the click's distance to the nearest right voxel (the distance transform of the error, in voxels, at
  the click: the protocol places it where that is largest, so 1 means the error left is one voxel thick);
- ``fixed`` / ``broken``: voxels wrong before the click and right after it / right before and wrong after, on the
  click's slice, on the other slices within ``correction_depth_radius`` of it (its copies) and elsewhere (slices
  decoded again for earlier clicks the prediction does not show yet); ``overshoot``: the broken voxels next to fixed
  ones (26-connected), the same change reaching past the error;
- ``falls``: the share of (case, class) steps whose Dice fell.

Rows group the clicks; figures are means over (case, class) steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from trained_bundle import (
    add_case_arguments,
    add_model_arguments,
    set_predictor_settings,
    split_cases,
    trained_predictor,
)

from medsa_monai.bundle.overrides import parse_overrides
from medsa_monai.evaluation.iterative_clicks import simulate_clicks
from medsa_monai.evaluation.metrics import dice_score
from medsa_monai.evaluation.output_masks import predicted_masks, reference_masks

GROUPS = ((2, 5), (6, 10), (11, 15), (16, 20))
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)


class ObservedPredictor:
    """A predictor whose ``decode`` records each call's clicks and logits; everything else is the predictor's."""

    def __init__(self, predictor) -> None:
        self._predictor = predictor
        self.calls: list[tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]] = []

    def __getattr__(self, name):
        return getattr(self._predictor, name)

    def decode(self, embeddings, shape, points=None, labels=None, **kwargs):
        low_res = self._predictor.decode(embeddings, shape, points, labels, **kwargs)
        if kwargs.get("boxes") is None and points is not None:
            self.calls.append((points.clone(), labels.clone(), low_res.clone()))
        return low_res


def step_records(predictor, image: torch.Tensor, reference: np.ndarray, num_clicks: int) -> list[dict]:
    """One record per (click ``t >= 2``, class) of the iterative protocol on one case."""
    observed = ObservedPredictor(predictor)
    simulate_clicks(observed, image, reference, num_clicks, True, with_box=False)
    spatial = tuple(image.shape[2:])
    references = reference_masks(reference, predictor.num_classes, spatial)
    radius = getattr(predictor, "correction_depth_radius", 0)
    masks = [predicted_masks(predictor, low_res, spatial) for _, _, low_res in observed.calls]
    records = []
    for step in range(1, len(observed.calls)):
        points, labels, _ = observed.calls[step]
        for k, truth in enumerate(references):
            given = int((labels[0, k] != -1).sum())
            if not truth.any() or given <= int((observed.calls[step - 1][1][0, k] != -1).sum()):
                continue  # absent class, or no new click (the prediction was right)
            click = points[0, k, given - 1].long().cpu().numpy()
            before, after = masks[step - 1][k], masks[step][k]
            error = before != truth
            fixed, broken = error & (after == truth), ~error & (after != truth)
            slice_index = np.arange(truth.shape[-1])
            own = slice_index == click[-1]
            near = (np.abs(slice_index - click[-1]) <= radius) & ~own
            overshoot = broken & ndimage.binary_dilation(fixed, _NEIGHBOURS)
            records.append({
                "click": step + 1,
                "depth": float(ndimage.distance_transform_edt(error)[tuple(click)]),
                "fixed own": int(fixed[..., own].sum()), "broken own": int(broken[..., own].sum()),
                "fixed copies": int(fixed[..., near].sum()), "broken copies": int(broken[..., near].sum()),
                "fixed elsewhere": int(fixed[..., ~(own | near)].sum()),
                "broken elsewhere": int(broken[..., ~(own | near)].sum()),
                "overshoot": int(overshoot.sum()),
                "step": dice_score(after, truth) - dice_score(before, truth),
            })
    return records


def summarise(records: list[dict]) -> dict[str, dict]:
    rows = {}
    for first, last in GROUPS:
        group = [r for r in records if first <= r["click"] <= last]
        if not group:
            continue
        row = {key: float(np.mean([r[key] for r in group])) for key in group[0] if key != "click"}
        row["thin (depth <= 1)"] = float(np.mean([r["depth"] <= 1 for r in group]))
        row["falls"] = float(np.mean([r["step"] < 0 for r in group]))
        row["steps"] = len(group)
        rows[f"clicks {first}-{last}"] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    add_case_arguments(parser)
    parser.add_argument("--predictor-settings", nargs="*", default=[], metavar="NAME=VALUE",
                        help="predictor attributes to set, e.g. obey_clicks=false correction_depth_radius=0")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    predictor, config = trained_predictor(args)
    set_predictor_settings(predictor, parse_overrides(args.predictor_settings))
    cases = split_cases(args, config, predictor)
    records = []
    with torch.no_grad():
        for image, reference in cases:
            records += step_records(predictor, image, reference, args.clicks)

    rows = summarise(records)
    columns = ["depth", "thin (depth <= 1)", "fixed own", "broken own", "fixed copies", "broken copies",
               "fixed elsewhere", "broken elsewhere", "overshoot", "step", "falls"]
    print(f"\n{len(cases)} {args.part} cases, model {args.model}, "
          f"correction_depth_radius {predictor.correction_depth_radius}, obey_clicks {predictor.obey_clicks}\n")
    print("| clicks | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:+.4f}" if c == "step" else f"{row[c]:.2f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
