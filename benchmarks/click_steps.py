"""What each iterative click changes, and where: the voxels it fixes and breaks on its own slice, on the slices its
copies correct (``correction_depth_radius``) and elsewhere, against how thick the error it was placed in is.

    python benchmarks/click_steps.py --bundle bundles/medsa_hippocampus_mri \\
        --data ../shared/data/Task04_Hippocampus --model runs/hippocampus/medsa/models/checkpoint_epoch=9.pt \\
        --seed 0 --set sam_variant=vit_nano trainable=full image_size=128

The protocol is the bundles' iterative one (:func:`~medsa_monai.evaluation.iterative_clicks.simulate_clicks`: each
click at the centre of the largest error, the previous prediction fed back, the predictor's calibrated settings),
comparing the masks shown before and after each click. For click ``t >= 2`` of each (case, class):

- ``depth``: the click's distance to the nearest right voxel (the distance transform of the error, in voxels, at
  the click: the protocol places it where that is largest, so 1 means the error left is one voxel thick);
- ``fixed`` / ``broken``: voxels wrong before the click and right after it / right before and wrong after, on the
  click's slice, on the other slices within ``correction_depth_radius`` of it (its copies) and elsewhere (slices
  decoded again for earlier clicks the prediction does not show yet); ``overshoot``: the broken voxels next to fixed
  ones (26-connected), the same change reaching past the error;
- ``moved``: the share of clicks that moved the shown boundary by a voxel rather than being decoded
  (``boundary_shift_radius``, :mod:`medsa_monai.predictor.boundary_edits`);
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
from medsa_monai.evaluation.output_masks import reference_masks

GROUPS = ((2, 5), (6, 10), (11, 15), (16, 20))
_NEIGHBOURS = np.ones((3, 3, 3), dtype=bool)


def step_records(predictor, image: torch.Tensor, reference: np.ndarray, num_clicks: int) -> list[dict]:
    """One record per (click ``t >= 2``, class) of the iterative protocol on one case."""
    result = simulate_clicks(predictor, image, reference, num_clicks, True, with_box=False, keep_masks=True)
    spatial = tuple(image.shape[2:])
    references = reference_masks(reference, predictor.num_classes, spatial)
    radius = getattr(predictor, "correction_depth_radius", 0)
    records = []
    for k, truth in enumerate(references):
        for number, click, _, moved in result.clicks[k]:
            if number == 1:
                continue
            before, after = result.masks[number - 2][k], result.masks[number - 1][k]
            error = before != truth
            fixed, broken = error & (after == truth), ~error & (after != truth)
            slice_index = np.arange(truth.shape[-1])
            own = slice_index == click[-1]
            near = (np.abs(slice_index - click[-1]) <= radius) & ~own
            overshoot = broken & ndimage.binary_dilation(fixed, _NEIGHBOURS)
            records.append({
                "click": number,
                "depth": float(ndimage.distance_transform_edt(error)[tuple(click)]),
                "moved": float(moved),
                "fixed own": int(fixed[..., own].sum()), "broken own": int(broken[..., own].sum()),
                "fixed copies": int(fixed[..., near].sum()), "broken copies": int(broken[..., near].sum()),
                "fixed elsewhere": int(fixed[..., ~(own | near)].sum()),
                "broken elsewhere": int(broken[..., ~(own | near)].sum()),
                "overshoot": int(overshoot.sum()),
                "step": dice_score(after, truth) - dice_score(before, truth),
            })
    return sorted(records, key=lambda record: record["click"])


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
    columns = ["depth", "thin (depth <= 1)", "moved", "fixed own", "broken own", "fixed copies", "broken copies",
               "fixed elsewhere", "broken elsewhere", "overshoot", "step", "falls"]
    print(f"\n{len(cases)} {args.part} cases, model {args.model}, "
          f"correction_depth_radius {predictor.correction_depth_radius}, obey_clicks {predictor.obey_clicks}, "
          f"boundary_shift_radius {predictor.boundary_shift_radius}\n")
    print("| clicks | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:+.4f}" if c == "step" else f"{row[c]:.2f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
