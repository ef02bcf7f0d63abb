"""SAM-DA on a simulated change of dermatoscope: PH2 source model, then five ways to the target domain.

    python benchmarks/samda_experiment.py --data ../shared/data/PH2 --out runs/samda

1. A seeded split of the images: ``--source`` images train the source model, ``--few`` shifted images are the
   labelled target set, the rest (shifted) are the target test set.
2. The target domain is an acquisition change, :func:`dermatoscope_shift`: a warmer light (red x1.12, blue x0.80),
   optical blur (Gaussian, sigma 1.2 px), vignetting (brightness falling to 55% in the corners) and JPEG
   compression at quality 25, as a cheaper dermatoscope and camera would give.
3. The source model is the tiny SAM (``vit_tiny``) trained from scratch in full (no SAM checkpoint here), with a
   SAM-DA adapter from the start (zero-initialised, so it trains along).
4. Rows: the source model as is (on the unshifted and on the shifted test images); SAM-DA supervised on the few
   labelled target images (adapter and output heads); SAM-DA test-time adaptation with no target labels (episodic
   entropy minimisation on the adapter); the same with every decoder parameter (TENT-like); decoder fine-tuning; full
   fine-tuning. Each evaluated on the shifted test images, in the original image resolution.

Everything runs through the bundle ``bundles/samda_skin_lesion`` (``train.json``, and ``tta.json`` with it) with
overrides. The figures in the bundle's model card were measured with its version 0.1.0 configs.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from PIL import Image
from scipy import ndimage

from medsa_monai.networks import MedSA, count_parameters

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "samda_skin_lesion" / "configs"


def dermatoscope_shift(rgb: np.ndarray) -> np.ndarray:
    """The target domain's acquisition: warmer light, blur, vignetting, JPEG at quality 25 (uint8 RGB in and out)."""
    x = rgb.astype(np.float64) / 255.0
    x = x * np.array([1.12, 1.0, 0.80])
    x = ndimage.gaussian_filter(x, sigma=(1.2, 1.2, 0))
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    x = x * (1 - 0.45 * r**2)[..., None]
    buffer = io.BytesIO()
    Image.fromarray(np.clip(x * 255, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=25)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def write_split(data: Path, out: Path, names: list[str], shift: bool) -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for name in names:
        rgb = np.asarray(Image.open(data / "images" / name).convert("RGB"))
        Image.fromarray(dermatoscope_shift(rgb) if shift else rgb).save(out / "images" / name)
        Image.open(data / "masks" / name).save(out / "masks" / name)
    return out


def all_lesion_dice(folder: Path) -> dict:
    """Dice of predicting every pixel as lesion: the floor that a collapsed (all-foreground) model reaches."""
    dice = []
    for mask_file in sorted((folder / "masks").glob("*.png")):
        mask = np.asarray(Image.open(mask_file)) > 0
        dice.append(2 * mask.sum() / (mask.sum() + mask.size))
    return {"mean": float(np.mean(dice)), "std": float(np.std(dice))}


def bundle(files: list[str], overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    parser.update(overrides)
    return parser


def load_model(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


def train(common: dict, out: Path, data: Path, trainable: str, epochs: int, lr: float, init: Path | None,
          val_fraction: float) -> Path:
    parser = bundle(["train.json"], {**common, "dataset_dir": str(data), "bundle_root": str(out),
                                     "trainable": trainable, "max_epochs": epochs, "learning_rate": lr,
                                     "val_interval": epochs, "val_fraction": val_fraction})
    network = parser.get_parsed_content("network")
    if init is not None:
        network.load_state_dict(load_model(init))
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")
    return sorted((out / "models").glob("checkpoint_epoch=*.pt"))[-1]


def evaluate(common: dict, out: Path, data: Path, checkpoint: Path, trainable: str, steps: int = 0,
             adapt: str = "adapter", seconds: dict | None = None, **tta: object) -> dict:
    parser = bundle(["train.json", "tta.json"], {**common, "dataset_dir": str(data), "bundle_root": str(out),
                                                 "trainable": trainable, "tta#checkpoint#load_path": str(checkpoint),
                                                 "tta_steps": steps, "tta_adapt": adapt, **tta})
    parser.get_parsed_content("initialize")
    start = time.time()
    parser.get_parsed_content("run")
    if seconds is not None:
        seconds["seconds"] = time.time() - start
    return json.loads((out / "eval" / "tta" / "summary.json").read_text())["classes"]["lesion"]["dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with images/ and masks/ (PH2)")
    parser.add_argument("--out", default="runs/samda")
    parser.add_argument("--source", type=int, default=90)
    parser.add_argument("--few", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--source-epochs", type=int, default=40)
    parser.add_argument("--adapt-epochs", type=int, default=30)
    parser.add_argument("--tta-steps", type=int, default=10)
    parser.add_argument("--tta-views", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta-grid", default="", help="more SAM-DA test-time adaptation settings to report, "
                        "steps:learning_rate:mode items, e.g. 3:1e-3:episodic,10:1e-4:episodic,3:1e-4:continual")
    parser.add_argument("--reuse-source", action="store_true", help="keep a source model that --out already holds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data, out = Path(args.data), Path(args.out).resolve()
    names = sorted(p.name for p in (data / "images").glob("*.png"))
    order = np.random.RandomState(args.seed).permutation(len(names))
    source = [names[i] for i in order[: args.source]]
    few = [names[i] for i in order[args.source: args.source + args.few]]
    test = [names[i] for i in order[args.source + args.few:]]
    folders = {
        "source": write_split(data, out / "data" / "source", source, shift=False),
        "few": write_split(data, out / "data" / "target_few", few, shift=True),
        "test": write_split(data, out / "data" / "target_test", test, shift=True),
        "test_unshifted": write_split(data, out / "data" / "test_unshifted", test, shift=False),
    }
    common = {"sam_variant": "vit_tiny", "sam_checkpoint": "none", "image_size": args.image_size, "seed": args.seed,
              "network_def#architecture": {"samda_tokens": 2}, "num_workers": 0, "batch_size": 4, "progress_bar": False,
              "tta_views": args.tta_views, "embedding_cache_gib": 2}

    def params(trainable: str) -> str:
        counts = count_parameters(MedSA(2, 3, 2, "vit_tiny", image_size=args.image_size, trainable=trainable,
                                        architecture={"samda_tokens": 2}))
        return f"{counts.trainable / 1e6:.3f} M ({counts.percent:.1f}%)"

    rows, timing = [("every pixel lesion (reference floor, no model)", "-", all_lesion_dice(folders["test"]))], {}
    start = time.time()
    trained = sorted((out / "source" / "models").glob("checkpoint_epoch=*.pt"))
    if args.reuse_source and trained:
        source_ckpt = trained[-1]
    else:
        source_ckpt = train(common, out / "source", folders["source"], "full", args.source_epochs, 2e-3, None, 0.1)
        timing["source training"] = time.time() - start
    rows.append(("source model, unshifted test images (no domain change)", "-",
                 evaluate(common, out / "eval_source_unshifted", folders["test_unshifted"], source_ckpt, "samda")))
    rows.append(("source model as is", "0",
                 evaluate(common, out / "eval_source", folders["test"], source_ckpt, "samda")))
    for label, trainable, lr in (("SAM-DA, supervised on the few target images", "samda", 1e-3),
                                 ("decoder fine-tuning on the few target images", "decoder", 5e-4),
                                 ("full fine-tuning on the few target images", "full", 2e-4)):
        start = time.time()
        ckpt = train(common, out / f"adapt_{trainable}", folders["few"], trainable, args.adapt_epochs, lr,
                     source_ckpt, 0.2)
        timing[label] = time.time() - start
        rows.append((label, params(trainable), evaluate(common, out / f"eval_{trainable}", folders["test"], ckpt,
                                                        "samda")))
    for label, adapt, trainable in (("SAM-DA test-time adaptation (no target labels)", "adapter", "samda"),
                                    ("TENT-like test-time adaptation, all decoder parameters", "decoder", "decoder")):
        seconds: dict = {}
        rows.append((label, params(trainable), evaluate(common, out / f"eval_tta_{adapt}", folders["test"],
                                                        source_ckpt, "samda", args.tta_steps, adapt, seconds)))
        timing[label] = seconds["seconds"]

    grid = []
    for item in filter(None, args.tta_grid.split(",")):
        steps, lr, mode = item.split(":")
        dice = evaluate(common, out / f"eval_tta_grid_{steps}_{lr}_{mode}", folders["test"], source_ckpt, "samda",
                        int(steps), "adapter", tta_learning_rate=float(lr), tta_mode=mode)
        grid.append((int(steps), float(lr), mode, dice))

    print(f"\nPH2, {len(source)} source / {len(few)} labelled target / {len(test)} target test images, vit_tiny at "
          f"{args.image_size}, seed {args.seed}\n")
    print("| method | trainable parameters | Dice on target test (mean +- std) |")
    print("|---|---|---|")
    for label, count, dice in rows:
        print(f"| {label} | {count} | {dice['mean']:.3f} +- {dice['std']:.3f} |")
    if grid:
        print("\nSAM-DA test-time adaptation settings (views and keep as above)\n")
        print("| steps | learning rate | mode | Dice on target test (mean +- std) |")
        print("|---|---|---|---|")
        for steps, lr, mode, dice in grid:
            print(f"| {steps} | {lr:g} | {mode} | {dice['mean']:.3f} +- {dice['std']:.3f} |")
    print("\nwall time (s): " + ", ".join(f"{k}: {v:.0f}" for k, v in timing.items()))
    (out / "results.json").write_text(json.dumps({"rows": [{"method": r[0], "trainable": r[1], "dice": r[2]}
                                                           for r in rows],
                                                 "tta_grid": [{"steps": g[0], "learning_rate": g[1], "mode": g[2],
                                                               "dice": g[3]} for g in grid],
                                                 "seconds": timing}, indent=2))


if __name__ == "__main__":
    main()
