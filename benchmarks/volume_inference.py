"""Automatic inference on CT-sized volumes: seconds and peak memory of MedSA (SD-Trans slabs in a sliding window)
beside MONAI's SwinUNETR and DynUNet, on the same volumes in the same run, as the number of slices grows.

    python benchmarks/volume_inference.py                          # CPU: vit_tiny, 512 x 512 x 32/64/128/256
    python benchmarks/volume_inference.py --device cuda            # GPU: vit_b at 1024, mixed precision

Each (network, volume) runs in its own process, so one measurement's memory does not hide in another's. Volumes are
``1 x 512 x 512 x D`` random tensors (inference cost does not depend on the content), 14 output channels (BTCV's
13 organs and background). Every network slides the same way as its bundle would: a Gaussian-weighted window with
``--overlap``, ``--sw-batch-size`` windows per forward pass, the stitched logits on the host.

- MedSA: the BTCV bundle's plan, windows of ``--patch`` (256 x 256 in-plane, 11-slice SD-Trans slabs), each slice
  resized to ``--image-size``; random weights (speed does not depend on them).
- SwinUNETR (feature size 48) and DynUNet (nnU-Net-like, filters 32-320, 5 levels) on 96 x 96 x 96 windows, the
  ROI of MONAI's BTCV tutorials.

Peak memory: on CUDA the peak of allocated memory during inference (``torch.cuda.max_memory_allocated``); on the
CPU the peak resident set size above the one just before inference (sampled every 5 ms from ``/proc/self/statm``),
which includes the stitched output (14 x 512 x 512 x D floats: 3.5 GiB at 256 slices) and the volume's copies.
Prints one table per run with seconds, milliseconds per slice, peak MiB and MedSA's ratio to each baseline;
``--output`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

NETWORKS = ("medsa", "swinunetr", "dynunet")
CLASSES = 14


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The largest resident set size seen while the ``with`` block runs, sampled by a thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def build(name: str, args: argparse.Namespace) -> tuple[torch.nn.Module, list[int]]:
    """The network and its sliding-window ROI."""
    if name == "medsa":
        from medsa_monai.networks import MedSA

        network = MedSA(spatial_dims=3, in_channels=1, out_channels=CLASSES, sam_variant=args.sam_variant,
                        image_size=args.image_size, sam_checkpoint=None, depth_attention=True)
        return network, list(args.patch)
    if name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=1, out_channels=CLASSES, feature_size=48), [96, 96, 96]
    from monai.networks.nets import DynUNet

    return DynUNet(3, 1, CLASSES, kernel_size=[[3, 3, 3]] * 5, strides=[[1, 1, 1]] + [[2, 2, 2]] * 4,
                   upsample_kernel_size=[[2, 2, 2]] * 4, filters=[32, 64, 128, 256, 320],
                   norm_name="instance"), [96, 96, 96]


def window_count(roi: list[int], shape: tuple[int, ...], overlap: float) -> int:
    """Sliding windows MONAI's inferer runs over ``shape`` (after padding to the ROI)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = [max(s, r) for s, r in zip(shape, roi, strict=True)]
    return len(dense_patch_slices(padded, roi, _get_scan_interval(padded, roi, len(roi), [overlap] * len(roi))))


def measure(name: str, slices: int, args: argparse.Namespace) -> dict:
    """Seconds and peak memory of one automatic inference of a ``512 x 512 x slices`` volume (run in a child)."""
    from medsa_monai.predictor import planned_inferer

    device = torch.device(args.device)
    torch.manual_seed(0)
    network, roi = build(name, args)
    network = network.to(device).eval()
    inferer = planned_inferer(3, roi, args.sw_batch_size, args.overlap, output_device="cpu")
    volume = torch.randn(1, 1, args.in_plane, args.in_plane, slices, device=device)
    amp = device.type == "cuda"
    with torch.no_grad(), torch.autocast(device.type, enabled=amp):
        inferer(volume[..., : min(slices, roi[2])], network)  # warm-up: kernels, autotuning, allocator
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            before = _rss_bytes()
        with PeakRSS() as rss:
            start = time.perf_counter()
            output = inferer(volume, network)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak) - before
    assert tuple(output.shape) == (1, CLASSES, args.in_plane, args.in_plane, slices)
    return {"network": name, "slices": slices, "seconds": seconds, "ms_per_slice": 1000 * seconds / slices,
            "peak_mib": peak / 2**20, "roi": roi, "device": str(device),
            "windows": window_count(roi, (args.in_plane, args.in_plane, slices), args.overlap)}


def child_command(name: str, slices: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--network", name, "--one", str(slices), "--device", args.device,
            "--in-plane", str(args.in_plane), "--sam-variant", args.sam_variant, "--image-size", str(args.image_size),
            "--patch", *map(str, args.patch), "--overlap", str(args.overlap), "--sw-batch-size",
            str(args.sw_batch_size), "--threads", str(args.threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--slices", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--in-plane", type=int, default=512)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--sam-variant", default=None, help="default: vit_b on CUDA, vit_tiny on the CPU")
    parser.add_argument("--image-size", type=int, default=None, help="default: 1024 on CUDA, 256 on the CPU")
    parser.add_argument("--patch", type=int, nargs=3, default=[256, 256, 11], help="MedSA's window (the BTCV plan)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--sw-batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--baseline-max-slices", type=int, default=None,
                        help="run SwinUNETR and DynUNet only up to this many slices (a 2-core CPU needs ~10 min "
                             "per 32 slices for SwinUNETR); the table still gives their window counts")
    parser.add_argument("--output", default=None, help="write the rows to this JSON file")
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.sam_variant = args.sam_variant or ("vit_b" if cuda else "vit_tiny")
    args.image_size = args.image_size or (1024 if cuda else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.network:
        print(json.dumps(measure(args.network, args.one, args)))
        return

    rows = []
    for slices in args.slices:
        for name in args.networks:
            if name != "medsa" and args.baseline_max_slices and slices > args.baseline_max_slices:
                continue
            done = subprocess.run(child_command(name, slices, args), capture_output=True, text=True)
            if done.returncode:
                print(f"{name} at {slices} slices failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {name:9s} {slices:4d} slices: {rows[-1]['seconds']:8.1f} s, "
                  f"{rows[-1]['peak_mib']:8.0f} MiB", flush=True)
            if args.output:  # after every row: a long run stopped early keeps what it measured
                Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows, args))


def table(rows: list[dict], args: argparse.Namespace) -> str:
    by = {(r["network"], r["slices"]): r for r in rows}
    names = list(args.networks)
    rois = {"medsa": list(args.patch), "swinunetr": [96, 96, 96], "dynunet": [96, 96, 96]}
    lines = [f"\nautomatic inference of 1 x {args.in_plane} x {args.in_plane} x D volumes on {args.device} "
             f"({torch.get_num_threads()} threads), overlap {args.overlap}, {args.sw_batch_size} windows per pass; "
             f"MedSA {args.sam_variant} at {args.image_size}, window {' x '.join(map(str, args.patch))}",
             "| slices | " + " | ".join(f"{n} windows | {n} s | {n} ms/slice | {n} peak MiB" for n in names)
             + "".join(f" | medsa / {n} per slice" for n in names if n != "medsa") + " |",
             "|---" * (1 + 4 * len(names) + sum(n != "medsa" for n in names)) + "|"]
    for slices in args.slices:
        cells = []
        for n in names:
            r = by.get((n, slices))
            cells.append(str(window_count(rois[n], (args.in_plane, args.in_plane, slices), args.overlap)))
            cells += [f"{r['seconds']:.1f}", f"{r['ms_per_slice']:.0f}", f"{r['peak_mib']:.0f}"] if r else ["-"] * 3
        for n in names:
            if n != "medsa":
                a, b = by.get(("medsa", slices)), by.get((n, slices))
                cells.append(f"{a['ms_per_slice'] / b['ms_per_slice']:.2f}" if a and b else "-")
        lines.append(f"| {slices} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
