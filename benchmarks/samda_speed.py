"""SAM-DA speed and memory: training and test-time adaptation steps with and without the embedding cache, and the
peak memory of a training step for the ``samda``, ``medsa`` and ``full`` presets.

    python benchmarks/samda_speed.py                     # vit_b at 1024, batch 1, on this machine
    python benchmarks/samda_speed.py --variant vit_tiny --image-size 256   # a quick look

Step times are medians of ``--repeats`` steps after one warm-up step (which also fills the cache). A training step
is forward (image -> logits with a box prompt), Dice-CE loss, backward and an AdamW step; an adaptation step decodes
``--views`` augmented views, keeps the lowest-entropy 10% and takes one AdamW step on the adapter. Peak memory is
measured in a fresh process per preset, during a training step after a first one has allocated the optimizer
state: the peak resident set size above the one before the step on the CPU (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` above the allocated memory on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from monai.losses import DiceCELoss
from timing import median_seconds

from medsa_monai.networks import MedSA, count_parameters
from medsa_monai.prediction import TestTimeAdaptation
from medsa_monai.predictor import EmbeddingCache, MedSAPredictor


def build(preset: str, args, device: torch.device, cache: bool
          ) -> tuple[MedSA, torch.optim.Optimizer, MedSAPredictor]:
    """The network, its optimizer, and the predictor that encodes through the cache (when ``cache``)."""
    torch.manual_seed(0)
    net = MedSA(2, 3, 2, args.variant, image_size=args.image_size, trainable=preset).to(device)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    return net, optimizer, MedSAPredictor(net, embedding_cache=EmbeddingCache() if cache else None)


def training_step(net, optimizer, image, label, boxes, loss_fn):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(image, boxes=boxes), label).backward()
        optimizer.step()
    return step


def _rss(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak resident set size (Linux >= 4.0)
        f.write("5")


def measure_memory(preset: str, args) -> dict:
    """Run in a child process: one training step of ``preset``; peak memory above the model and optimizer."""
    device = torch.device(args.device)
    net, optimizer, _ = build(preset, args, device, cache=False)
    image, label, boxes = inputs(args, device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    training_step(net, optimizer, image, label, boxes, loss_fn)()  # allocates the optimizer state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        base = _rss("VmRSS")
    training_step(net, optimizer, image, label, boxes, loss_fn)()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss("VmHWM")
    counts = count_parameters(net)
    return {"preset": preset, "peak_bytes_above_model": peak - base, "trainable": counts.trainable,
            "total": counts.total}


def inputs(args, device):
    g = torch.Generator().manual_seed(0)
    size = args.image_size
    image = torch.rand(args.batch, 3, size, size, generator=g).to(device)
    label = torch.zeros(args.batch, 1, size, size, device=device)
    label[:, :, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 1
    boxes = torch.tensor([[[size / 4, size / 3, 3 * size / 4, 2 * size / 3]]] * args.batch, device=device)
    return image, label, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--views", type=int, default=4, help="augmented views per adaptation step")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        print(json.dumps(measure_memory(args.measure_memory, args)))
        return

    device = torch.device(args.device)
    print(f"{args.variant} at {args.image_size}, batch {args.batch}, {device} "
          f"({torch.get_num_threads()} CPU threads), torch {torch.__version__}")
    image, label, boxes = inputs(args, device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rows = {}
    for cache in (False, True):
        net, optimizer, predictor = build("samda", args, device, cache)
        rows[f"training step, {'with' if cache else 'without'} cache"] = median_seconds(
            training_step(predictor, optimizer, image, label, boxes, loss_fn), device, args.repeats)
        tta = TestTimeAdaptation(device, [], net, steps=1, views=args.views, keep=0.1, learning_rate=1e-3,
                                 embedding_cache=predictor.embedding_cache)
        views = tta.make_views(image, 0)
        rows[f"adaptation step ({args.views} views), {'with' if cache else 'without'} cache"] = median_seconds(
            lambda tta=tta, views=views: tta.adapt_to(image, 0), device, args.repeats)
        del net, optimizer, predictor, tta
    print(f"\n{'step':<42} {'seconds':>9}")
    for name, seconds in rows.items():
        print(f"{name:<42} {seconds:>9.3f}")
    for kind in ("training step", f"adaptation step ({args.views} views)"):
        print(f"  {kind}: the cache makes it {rows[f'{kind}, without cache'] / rows[f'{kind}, with cache']:.1f}x "
              f"faster")

    print(f"\n{'preset':<8} {'trainable':>12} {'share':>7} {'peak memory of a training step':>32}")
    for preset in ("samda", "medsa", "full"):
        command = [sys.executable, __file__, "--measure-memory", preset, "--variant", args.variant, "--image-size",
                   str(args.image_size), "--batch", str(args.batch), "--device", args.device]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(f"{preset:<8} {result['trainable'] / 1e6:>10.2f} M {100 * result['trainable'] / result['total']:>6.2f}% "
              f"{result['peak_bytes_above_model'] / 2**30:>27.2f} GiB")


if __name__ == "__main__":
    main()
