"""A second fundus camera made from the first, to develop domain adaptation without a second data set.

    python benchmarks/fundus_synthetic_camera.py --data ../shared/data/Fundus/DrishtiGS --out runs/fundus_camera

A seeded split of ``<data>/images`` (and ``labels/``): ``--target-fraction`` of the cases become the target domain,
the rest the source; no image is in both. Each target image is seen by :func:`camera_shift`: another camera's
white balance and gamma, lower optical resolution (blur), a smaller field of view with a dark rim, and another crop
scale (the central part of the crop, resized to another frame size); its label gets the same geometry (nearest
neighbour), so label values are kept. Writes ``<out>/source/{images,labels}`` and ``<out>/target/{images,labels}``.
A real second camera differs in more ways (illumination artefacts, other populations and annotators).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medsa_monai.data import find_datalist


def camera_shift(rgb: np.ndarray, label: np.ndarray, crop: float = 0.8, size: int = 384
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Another camera's view of a uint8 RGB crop ``(H, W, 3)`` and its label ``(H, W)``: the central ``crop``
    fraction resized to ``size`` x ``size``, warmer and greener white balance with gamma 0.8, Gaussian blur
    (sigma 1.5 px at the new size) and a circular field of view darkening beyond 85% of the half-diagonal."""
    h, w = label.shape
    ch, cw = int(round(h * crop)), int(round(w * crop))
    top, left = (h - ch) // 2, (w - cw) // 2
    rgb = np.asarray(Image.fromarray(rgb[top:top + ch, left:left + cw]).resize((size, size), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label[top:top + ch, left:left + cw]).resize((size, size), Image.NEAREST))
    x = (rgb.astype(np.float64) / 255.0) ** 0.8 * np.array([1.05, 1.10, 0.70])
    x = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0))
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - size / 2, xx - size / 2) / (size / 2 * np.sqrt(2))
    x = x * np.clip((1.0 - radius) / 0.15, 0.05, 1.0)[..., None]
    return np.clip(x * 255, 0, 255).astype(np.uint8), label


def write(cases: list[dict], out: Path, shift: bool) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for case in cases:
        rgb = np.asarray(Image.open(case["image"]).convert("RGB"))
        label = np.asarray(Image.open(case["label"]))
        if shift:
            rgb, label = camera_shift(rgb, label)
        name = Path(case["image"]).stem + ".png"
        Image.fromarray(rgb).save(out / "images" / name)
        Image.fromarray(label).save(out / "labels" / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with images/ and labels/ (or masks/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--target-fraction", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = find_datalist(args.data)
    order = np.random.RandomState(args.seed).permutation(len(cases))
    cut = int(round(len(cases) * (1 - args.target_fraction)))
    write([cases[i] for i in order[:cut]], Path(args.out) / "source", shift=False)
    write([cases[i] for i in order[cut:]], Path(args.out) / "target", shift=True)
    print(f"wrote {cut} source and {len(cases) - cut} target cases to {args.out}")


if __name__ == "__main__":
    main()
