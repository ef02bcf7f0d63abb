"""``medsa``: the project's command line. Each sub-command calls one function of the package."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .networks.presets import TRAINABLE_PRESETS
from .networks.variants import SAM_VARIANTS


def _params(args: argparse.Namespace) -> None:
    from .networks.summary import format_parameter_table, parameter_table

    rows = parameter_table(args.variants, args.presets, args.dims, adapter_ratio=args.adapter_ratio)
    print(format_parameter_table(rows))


def _demo(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .demo import run_demo

    overrides = {"image_size": args.image_size} if args.image_size else {}
    summary = run_demo(args.output_dir, num_cases=args.cases, epochs=args.epochs, seed=args.seed,
                       bundle=args.bundle, **overrides)
    print(f"\nmedsa demo: {summary['num_cases']} held-out synthetic cases, {summary['seconds']:.0f} s in all")
    for name, metrics in summary["classes"].items():
        dice, hd = metrics["dice"], metrics["hd95"]
        print(f"  {name:>6}: Dice {dice['mean']:.3f} +- {dice['std']:.3f}   HD95 {hd['mean']:.2f} mm")
    interactive = Path(args.output_dir) / "eval" / "interactive_summary.json"
    if interactive.is_file():
        mean = json.loads(interactive.read_text())["classes"]["mean"]
        clicks = ", ".join(f"{k} click(s) {v:.3f}" for k, v in mean["dice_after_clicks"].items())
        print(f"  clicks: Dice after {clicks}; box {mean.get('box_dice', float('nan')):.3f}; "
              f"NoC@85 {mean['noc']['85']:.1f}, NoC@90 {mean['noc']['90']:.1f}")
    print(f"  predictions: {Path(args.output_dir) / 'eval' / 'predictions'}\n  overlay: {summary['overlay']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsa", description="Adapt a frozen SAM to medical images (MONAI).")
    commands = parser.add_subparsers(dest="command", required=True)

    params = commands.add_parser("params", help="print trainable parameters per SAM variant and preset")
    params.add_argument("--variants", nargs="+", default=["vit_b", "vit_l", "vit_h"], choices=sorted(SAM_VARIANTS))
    params.add_argument("--presets", nargs="+", default=list(TRAINABLE_PRESETS), choices=list(TRAINABLE_PRESETS))
    params.add_argument("--dims", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    params.add_argument("--adapter-ratio", type=float, default=0.25, help="adapter bottleneck width / token width")
    params.set_defaults(func=_params)

    demo = commands.add_parser("demo", help="train, evaluate and infer the hippocampus bundle on synthetic data "
                                            "with a tiny SAM (a few minutes on a CPU)")
    demo.add_argument("--output-dir", default="demo_output")
    demo.add_argument("--cases", type=int, default=24, help="synthetic volumes (80%% train, 20%% held out)")
    demo.add_argument("--epochs", type=int, default=60)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--image-size", type=int, default=None, help="SAM input side (default 96)")
    demo.add_argument("--bundle", default=None, help="bundle folder (default: bundles/medsa_hippocampus_mri)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
