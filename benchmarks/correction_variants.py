"""How a trained 3D model's corrections behave on its training cases: the CVPR 2025 protocol (a box, then five
clicks) with the ways a click can be applied, so that a choice is made without the held-out cases.

    python benchmarks/correction_variants.py --bundle bundles/medsa_hippocampus_mri \\
        --data ../shared/data/Task04_Hippocampus --model runs/hippocampus/medsa/models/checkpoint_epoch=9.pt \\
        --seed 0 --set sam_variant=vit_tiny trainable=full image_size=128

For the demo's models add ``image_size=96 patch_size=[32,40,28] 'bundle_plan#labels={"0":"background","1":"head",
"2":"tail"}'``
and point ``--data`` at the run's ``data`` folder. ``--seed`` must be the training run's: it draws the split, and
the cases scored are the first ``--cases`` of its training part (``--part held-out``: of its held-out part, to
report a choice made on the training part). Variants: ``whole`` (each clicked slice decoded
again whole, SAM's way), ``every-click`` (confined to the regions the clicks touch, but every clicked slice decoded
again at each click, as before :func:`~medsa_monai.predictor.corrections.pending_clicks`), ``pending`` (the
bundles' way with ``removal_radius`` None, before ``obey_clicks``), ``radius=R`` (that, background clicks removing
within R low-resolution pixels) and ``obeyed`` (``pending`` with each click shown where it was placed,
``obey_clicks``, the bundles' way since). For a 2D model, ``whole``, ``pending`` and ``obeyed`` are its sessions
decoded whole at each click, corrected, and corrected with the clicks obeyed. Prints per class the mean Dice after
the box and each click, and the number of (case, class, click) steps that lowered Dice.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from trained_bundle import add_case_arguments, add_model_arguments, split_cases, trained_predictor

import medsa_monai.predictor.propagation as propagation
from medsa_monai.evaluation.interactive_protocol import run_protocol

PENDING_CLICKS = propagation.pending_clicks


def configure(predictor, variant: str) -> None:
    """Set ``predictor`` (and, for ``every-click``, the propagation module) up for one variant."""
    predictor.confine_corrections = variant != "whole"
    predictor.removal_radius = float(variant.split("=", 1)[1]) if variant.startswith("radius=") else None
    predictor.obey_clicks = variant == "obeyed"
    every_click = variant in ("whole", "every-click")
    propagation.pending_clicks = (lambda previous, coords, labels, exclusive: labels) if every_click \
        else PENDING_CLICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    add_case_arguments(parser, part="training", cases=40, clicks=5)
    parser.add_argument("--variants", nargs="+", default=["every-click", "pending", "radius=2"])
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    predictor, config = trained_predictor(args)
    print(f"propagation_automatic_weight {predictor.propagation_automatic_weight} (from {args.model.parent})")
    cases = split_cases(args, config, predictor)
    classes = config.get_parsed_content("plan").class_names
    for variant in args.variants:
        configure(predictor, variant)
        start, curves = time.time(), []
        with torch.no_grad():
            for image, reference in cases:
                curves.append(run_protocol(predictor, image, reference, num_clicks=args.clicks).dice)
        curves = np.stack(curves)  # (cases, steps, classes)
        steps = np.diff(curves, axis=1)
        mean = np.nanmean(curves, 0)
        print(f"{variant}: {len(cases)} {args.part} cases, {time.time() - start:.0f} s; steps that lowered Dice "
              f"{int(np.nansum(steps < -1e-4))} of {int(np.isfinite(steps).sum())}, raised it "
              f"{int(np.nansum(steps > 1e-4))}; final Dice summed over classes {np.nansum(mean[-1]):.4f}")
        for k, name in enumerate(classes):
            print(f"  {name}: " + " / ".join(f"{v:.4f}" for v in mean[:, k]))
    propagation.pending_clicks = PENDING_CLICKS


if __name__ == "__main__":
    main()
