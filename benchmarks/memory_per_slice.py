"""Memory per slice of MedSA training and inference, per SAM variant and input size: the table `medsa plan` uses.

Training: the activations autograd keeps for backward, counted on one encoder block of the variant at the real
token grid and multiplied by the number of blocks (see ``medsa_monai.planning.memory``). Inference: the peak of one
block's intermediates. Fixed costs: weights, gradients and AdamW state of a ``medsa`` network, CUDA context.

    python benchmarks/memory_per_slice.py [--sizes 256 512 1024] [--dims 3]
"""

from __future__ import annotations

import argparse

from medsa_monai.planning.memory import GIB, memory_per_slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--dims", type=int, default=3, choices=[2, 3])
    args = parser.parse_args()
    print(f"| variant | image_size | train, AMP (GiB/slice) | train, fp32 (GiB/slice) | inference, AMP (GiB/slice) "
          f"| fixed, {args.dims}D medsa (GiB) |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        for size in args.sizes:
            amp = memory_per_slice(variant, size, spatial_dims=args.dims, amp=True)
            fp32 = memory_per_slice(variant, size, spatial_dims=args.dims, amp=False)
            print(f"| {variant} | {size} | {amp['train_bytes_per_slice'] / GIB:.3f} | "
                  f"{fp32['train_bytes_per_slice'] / GIB:.3f} | {amp['infer_bytes_per_slice'] / GIB:.3f} | "
                  f"{amp['fixed_bytes'] / GIB:.2f} |")


if __name__ == "__main__":
    main()
