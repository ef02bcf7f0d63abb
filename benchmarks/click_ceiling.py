"""Where iterative clicks stop, and why: a trained model's Dice after 1 to 20 clicks at several ``image_size`` values
(the same weights, position tables resized; no retraining), beside two ceilings that need no model.

    python benchmarks/click_ceiling.py --bundle bundles/medsa_hippocampus_mri \\
        --data ../shared/data/Task04_Hippocampus --model runs/hippocampus/medsa/models/checkpoint_epoch=9.pt \\
        --seed 0 --image-sizes 128 256 512 --set sam_variant=vit_tiny trainable=full

Rows:

- ``model, image_size=S``: the iterative protocol of the bundles' evaluation (each click at the centre of the
  largest error, connectivity 1; the previous prediction fed back; the predictor's calibrated settings), the
  network built at ``S`` with the trained weights (``S`` other than the training's: the encoder's position tables
  interpolated, as for loading SAM at another size). Slices are resized to ``S`` whole, so ``S`` sets the grid the
  decoder predicts on (``S / 4``) and the scale the encoder sees.
- ``grid ceiling`` (of the ``S`` row): the reference itself taken to the decoder's ``S / 4`` grid (area average per
  slice) and back as the network's logits are (bilinear, threshold at 0.5): the best Dice a prediction on that grid
  can show, whatever the clicks.
- ``oracle, ...``: the model's automatic prediction (prompts' frame, at the first ``S``), then each click (placed
  as above) pastes the reference over a region around it: a disk of ``r`` voxels on its slice, a ball of ``r``
  voxels, its error component on its slice (what a perfect correction of the clicked slice alone gives: the bundles
  decode again only the clicked slices of a session under way), or its whole 3D error component: what clicks that
  fix exactly that region would reach.

Dice is the mean over cases, then classes; NoC@T counts clicks until Dice >= T (the budget when never). ``--part``
picks the split's held-out (default, the bundle evaluation's) or training cases; ``--seed`` must be the training
run's (it draws the split).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from trained_bundle import (
    add_case_arguments,
    add_model_arguments,
    set_predictor_settings,
    split_cases,
    trained_predictor,
)

from medsa_monai.bundle.overrides import parse_overrides
from medsa_monai.evaluation.iterative_clicks import clicks_to_reach, simulate_clicks
from medsa_monai.evaluation.metrics import dice_score
from medsa_monai.evaluation.output_masks import predicted_masks, reference_masks
from medsa_monai.predictor import ZoomPredictor
from medsa_monai.prompts.sampling import error_click

REPORTED_CLICKS = (1, 3, 5, 10, 20)
THRESHOLDS = (0.80, 0.85, 0.90)


def click_curves(predictor, cases: list[tuple], clicks: int) -> tuple[list[np.ndarray], list]:
    """Dice ``(clicks, K)`` of the iterative protocol on each ``(image, reference)`` case, and each session's zoom
    (``None`` unzoomed)."""
    curves, zooms = [], []
    with torch.no_grad():
        for image, reference in cases:
            result = simulate_clicks(predictor, image, reference, clicks, True, with_box=False)
            curves.append(result.click_dice)
            zooms.append(result.zoom)
    return curves, zooms


def grid_ceiling(predictor, references: list[np.ndarray], spatial: tuple[int, ...]) -> np.ndarray:
    """Dice of the references taken to the decoder's ``S / 4`` grid and back; ``(K,)``, NaN for absent classes."""
    side = predictor.image_size // 4
    stack = torch.as_tensor(np.stack(references), dtype=torch.float32)[None]  # (1, K, H, W[, D])
    if stack.ndim == 5:
        b, k, h, w, d = stack.shape
        slices = stack.permute(0, 4, 1, 2, 3).reshape(d, k, h, w)
        low = F.interpolate(slices, size=(side, side), mode="area").view(1, d, k, side, side).permute(0, 2, 3, 4, 1)
    else:
        low = F.interpolate(stack, size=(side, side), mode="area")
    masks = predicted_masks(predictor, (low - 0.5) * 20, spatial)
    return np.array([dice_score(m, r) if r.any() else math.nan for m, r in zip(masks, references, strict=True)])


def _disk(shape: tuple[int, ...], index: np.ndarray, radius: float, ball: bool) -> np.ndarray:
    """Voxels within ``radius`` of ``index``: on its slice (a disk), or in 3D (a ball, ``ball``)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    axes = len(shape) if ball else 2
    distance = sum((grids[a] - index[a]) ** 2 for a in range(axes))
    inside = np.broadcast_to(distance <= radius ** 2, shape).copy()
    if len(shape) == 3 and not ball:
        inside[..., np.arange(shape[2]) != int(index[2])] = False
    return inside


def _component(error: np.ndarray, index: np.ndarray, on_slice: bool) -> np.ndarray:
    """The error component (faces connected) holding ``index``: in 3D, or within its slice (``on_slice``)."""
    from scipy import ndimage

    if on_slice and error.ndim == 3:
        plane = np.zeros_like(error)
        plane[..., int(index[2])] = _component(error[..., int(index[2])], index[:2], False)
        return plane
    components, _ = ndimage.label(error, structure=ndimage.generate_binary_structure(error.ndim, 1))
    return components == components[tuple(int(i) for i in index)]


ORACLES = {"disk": "disk r={r:g} voxels on the click's slice", "ball": "ball r={r:g} voxels",
           "slice": "the click's error component on its slice", "component": "the click's whole error component"}


def oracle_clicks(start: list[np.ndarray], references: list[np.ndarray], num_clicks: int, kind: str,
                  radius: float = 0.0) -> np.ndarray:
    """Dice ``(num_clicks, K)`` of clicks (placed as the protocol's) that paste the reference over a region around
    themselves: a ``disk`` or ``ball`` of ``radius`` voxels, their error component on their ``slice``, or their
    whole error ``component``."""
    dice = np.full((num_clicks, len(references)), math.nan)
    for k, (mask, reference) in enumerate(zip(start, references, strict=True)):
        if not reference.any():
            continue
        mask = mask.copy()
        for step in range(num_clicks):
            click = error_click(mask, reference, connectivity=1)
            if click is not None:
                index = click[0]
                if kind in ("disk", "ball"):
                    region = _disk(mask.shape, index, radius, kind == "ball")
                else:
                    region = _component(mask != reference, index, kind == "slice")
                mask[region] = reference[region]
            dice[step, k] = dice_score(mask, reference)
    return dice


def summarise(curves: list[np.ndarray]) -> dict:
    """Mean Dice after the reported clicks and mean NoC, over cases then classes."""
    stack = np.stack(curves)  # (cases, clicks, K)
    budget = stack.shape[1]
    per_class = np.nanmean(stack, 0)  # (clicks, K)
    row = {f"dice@{n}": float(np.nanmean(per_class[n - 1])) for n in REPORTED_CLICKS if n <= budget}
    for threshold in THRESHOLDS:
        noc = np.stack([clicks_to_reach(curve, threshold) for curve in stack])  # (cases, K)
        row[f"noc@{round(threshold * 100)}"] = float(np.nanmean(np.nanmean(noc, 0)))
    steps = np.diff(per_class, axis=0)
    row["worst step"] = float(np.nanmin(steps)) if steps.size else math.nan
    return row


def setting_row(args: argparse.Namespace, cases: list[tuple], settings: dict) -> dict:
    """The iterative protocol's row of the model at the first image size with the predictor's ``settings`` set."""
    predictor, _ = trained_predictor(args, image_size=args.image_sizes[0])
    set_predictor_settings(predictor, settings)
    start = time.time()
    curves, _ = click_curves(predictor, cases, args.clicks)
    return {**summarise(curves), "seconds": round(time.time() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    add_case_arguments(parser)
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--zoom-margins", type=float, nargs="*", default=[],
                        help="also the model at the first image size through ZoomPredictor with these margins")
    parser.add_argument("--zoom-min-fraction", type=float, default=0.25)
    parser.add_argument("--correction-depths", type=int, nargs="*", default=[],
                        help="also the model at the first image size with these correction_depth_radius values")
    parser.add_argument("--predictor-settings", nargs="*", default=[], metavar="NAME=VALUE",
                        help="also the model at the first image size with these predictor attributes set (one row "
                             "each; several in a row joined by commas), e.g. "
                             "obey_clicks=false,correction_depth_radius=0")
    parser.add_argument("--oracles", nargs="*", default=["disk:2", "disk:4", "ball:2", "ball:4", "slice", "component"],
                        help="KIND[:RADIUS] with KIND in " + ", ".join(ORACLES))
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    rows: dict[str, dict] = {}
    cases = None
    automatic: list[list[np.ndarray]] = []
    for size in args.image_sizes:
        predictor, config = trained_predictor(args, image_size=size)
        if cases is None:
            cases = split_cases(args, config, predictor)
        start, model_curves, ceilings = time.time(), [], []
        with torch.no_grad():
            for image, reference in cases:
                spatial = tuple(image.shape[2:])
                references = reference_masks(reference, predictor.num_classes, spatial)
                result = simulate_clicks(predictor, image, reference, args.clicks, True, with_box=False)
                model_curves.append(result.click_dice)
                ceilings.append(grid_ceiling(predictor, references, spatial))
                if len(automatic) < len(cases):
                    present = np.array([r.any() for r in references])
                    low_res = predictor.decode(predictor.encode(image), image.shape)
                    automatic.append((predicted_masks(predictor, low_res, spatial, present), references))
        seconds = time.time() - start
        rows[f"model, image_size={size}"] = {**summarise(model_curves), "seconds": round(seconds, 1)}
        rows[f"model, image_size={size}"]["grid ceiling"] = float(np.nanmean(np.nanmean(np.stack(ceilings), 0)))
        print(f"image_size {size}: {len(cases)} cases in {seconds:.0f} s", flush=True)
    for margin in args.zoom_margins:
        predictor, _ = trained_predictor(args, image_size=args.image_sizes[0])
        zooming = ZoomPredictor(predictor, margin=margin, min_fraction=args.zoom_min_fraction)
        start = time.time()
        curves, factors = click_curves(zooming, cases, args.clicks)
        name = f"model, image_size={args.image_sizes[0]}, zoom margin {margin:g}"
        rows[name] = {**summarise(curves), "seconds": round(time.time() - start, 1),
                      "zoom": float(np.nanmean(np.stack(factors)))}
        print(f"{name}: mean zoom {rows[name]['zoom']:.2f}, {rows[name]['seconds']:.0f} s", flush=True)
    first = f"model, image_size={args.image_sizes[0]}"
    for depth in args.correction_depths:
        rows[f"{first}, correction_depth_radius {depth}"] = setting_row(args, cases, {"correction_depth_radius": depth})
    for setting in args.predictor_settings:  # one row each: a name may come twice
        settings = parse_overrides(setting.split(","))
        rows[f"{first}, " + ", ".join(f"{n}={v}" for n, v in settings.items())] = setting_row(args, cases, settings)
    for oracle in args.oracles:
        kind, _, radius = oracle.partition(":")
        radius = float(radius or 0)
        curves = [oracle_clicks(masks, references, args.clicks, kind, radius) for masks, references in automatic]
        rows["oracle, " + ORACLES[kind].format(r=radius)] = summarise(curves)

    columns = [f"dice@{n}" for n in REPORTED_CLICKS if n <= args.clicks] + [
        f"noc@{round(t * 100)}" for t in THRESHOLDS] + ["worst step", "grid ceiling", "zoom"]
    print(f"\n{len(cases)} {args.part} cases, {args.clicks} clicks, model {args.model}\n")
    print("| row | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = ["-" if c not in row else f"{row[c]:.1f}" if c.startswith("noc") or c == "zoom" else f"{row[c]:.3f}"
                 for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
