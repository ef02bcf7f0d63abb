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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsa", description="Adapt a frozen SAM to medical images (MONAI).")
    commands = parser.add_subparsers(dest="command", required=True)

    params = commands.add_parser("params", help="print trainable parameters per SAM variant and preset")
    params.add_argument("--variants", nargs="+", default=["vit_b", "vit_l", "vit_h"], choices=sorted(SAM_VARIANTS))
    params.add_argument("--presets", nargs="+", default=list(TRAINABLE_PRESETS), choices=list(TRAINABLE_PRESETS))
    params.add_argument("--dims", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    params.add_argument("--adapter-ratio", type=float, default=0.25, help="adapter bottleneck width / token width")
    params.set_defaults(func=_params)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
