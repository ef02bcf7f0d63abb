"""Image-encoder throughput: MedSA's encoder (with and without adapters) beside segment_anything's, in one run.

Prints images per second and achieved GFLOP/s of a SAM ViT encoder at several input sizes, and the ceiling of the
machine measured as a large fp32 matrix product, then the ratios. FLOPs are the useful arithmetic: those of
segment_anything's encoder (counted by ``torch.utils.flop_counter``), plus the adapters' own for the adapted one;
the extra work of our attention formulation is not credited.

    python benchmarks/encoder_speed.py                       # vit_b, 256 / 512 / 1024, on the CPU
    python benchmarks/encoder_speed.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse

import torch
from segment_anything.modeling import ImageEncoderViT
from timing import median_seconds
from torch.utils.flop_counter import FlopCounterMode

from medsa_monai.networks import MedSAImageEncoder, get_sam_variant
from medsa_monai.networks.sam import encoder_kwargs


def matmul_ceiling(device: torch.device, n: int, repeats: int) -> float:
    """GFLOP/s of an ``n x n`` fp32 matrix product: what the machine's cores can do at best."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / median_seconds(lambda: a @ b, device, repeats) / 1e9


def count_flops(model: torch.nn.Module, x: torch.Tensor, suffix: str | None = None) -> int:
    """FLOPs of one forward; with ``suffix``, only those of the sub-modules whose name ends with it."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    if suffix is None:
        return counter.get_total_flops()
    # Each module's count includes its children's: sum the named modules only, not their parents or children.
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith(suffix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--matmul-size", type=int, default=4096)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    variant = get_sam_variant(args.variant)
    torch.manual_seed(0)
    print(f"device {device} ({torch.get_num_threads()} CPU threads), {args.variant}, batch {args.batch}, {args.dtype}, "
          f"torch {torch.__version__}")
    ceiling = matmul_ceiling(device, args.matmul_size, args.repeats)
    print(f"ceiling: {args.matmul_size}x{args.matmul_size} fp32 matmul at {ceiling:.1f} GFLOP/s\n")
    print(f"{'size':>5} {'encoder':<28} {'ms/img':>9} {'img/s':>8} {'GFLOP/img':>10} {'GFLOP/s':>9} {'of ceil':>8}")

    summary = []
    for size in args.sizes:
        reference = ImageEncoderViT(**encoder_kwargs(variant, size)).eval()
        plain = MedSAImageEncoder(variant, size, adapters=False).eval()
        adapted = MedSAImageEncoder(variant, size, adapters=True).eval()
        plain.load_state_dict(reference.state_dict())
        adapted.load_state_dict(reference.state_dict(), strict=False)
        x = torch.randn(args.batch, 3, size, size)
        sam_flops = count_flops(reference, x) / args.batch
        adapter_flops = count_flops(adapted, x, suffix="_Adapter") / args.batch
        rows = [("segment_anything", reference, sam_flops),
                ("medsa, no adapters", plain, sam_flops),
                ("medsa, adapters (Space+MLP)", adapted, sam_flops + adapter_flops)]
        x = x.to(device)
        speeds = {}
        for name, model, flops in rows:
            model.to(device)

            def run(model=model, x=x):
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                    model(x)

            seconds = median_seconds(run, device, args.repeats) / args.batch
            speeds[name] = 1 / seconds
            achieved = flops / seconds / 1e9
            print(f"{size:>5} {name:<28} {seconds * 1e3:>9.1f} {1 / seconds:>8.2f} {flops / 1e9:>10.1f} "
                  f"{achieved:>9.1f} {achieved / ceiling:>7.1%}")
            model.cpu()
        summary.append((size, speeds))

    print("\nratios (images per second):")
    for size, speeds in summary:
        sam, plain, adapted = (speeds[k] for k in ("segment_anything", "medsa, no adapters",
                                                   "medsa, adapters (Space+MLP)"))
        print(f"  {size:>5}: medsa without adapters / segment_anything = {plain / sam:.2f}x, "
              f"with adapters / segment_anything = {adapted / sam:.2f}x, adapters cost {plain / adapted - 1:.1%}")


if __name__ == "__main__":
    main()
