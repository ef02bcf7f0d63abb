"""The embedded default job: synthetic data, the hippocampus bundle with a tiny SAM, evaluation, an overlay PNG."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import run
from PIL import Image

from .data.synthetic import make_synthetic_dataset
from .training.checkpoints import latest_checkpoint

__all__ = ["find_bundle", "run_demo", "overlay_png"]

logger = logging.getLogger(__name__)

DEMO_EPOCHS = 60
"""Training epochs of ``medsa demo`` (5 to 6.5 minutes in all on a 2-core CPU)."""

DEMO_OVERRIDES = {
    "sam_variant": "vit_nano",
    "trainable": "full",
    "image_size": 96,
    "patch_size": [32, 40, 28],
    "batch_size": 2,
    "learning_rate": 2e-3,
    "warmup_epochs": 1,
    "val_interval": 5,
    "num_workers": 0,
    "progress_bar": False,
    "bundle_plan#labels": {"0": "background", "1": "head", "2": "tail"},
}


def find_bundle(name: str = "medsa_hippocampus_mri") -> Path:
    """The bundle folder in this source tree (``bundles/<name>``)."""
    path = Path(__file__).resolve().parents[1] / "bundles" / name
    if not (path / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"bundle '{name}' not found at '{path}'; run the demo from a source checkout "
                                f"(pip install -e .) or pass --bundle")
    return path


def overlay_png(image_file: Path, label_file: Path, prediction_file: Path, output: Path) -> Path:
    """Three panels of the slice with the most foreground: image, reference, prediction (classes in colour)."""
    image = np.asarray(nib.load(image_file).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(label_file).dataobj).astype(int)
    pred = np.asarray(nib.load(prediction_file).dataobj).astype(int)
    k = int(np.argmax((label > 0).sum(axis=(0, 1))))
    grey = image[:, :, k]
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    colours = np.array([[0, 0, 0], [230, 60, 60], [60, 160, 250], [250, 200, 50]], dtype=np.float32)

    def tinted(seg: np.ndarray) -> np.ndarray:
        out = rgb.astype(np.float32)
        mask = seg > 0
        out[mask] = 0.45 * out[mask] + 0.55 * colours[np.clip(seg[mask], 0, 3)]
        return out.astype(np.uint8)

    # Arrays are RAS (first axis left-right): rotate each panel so anterior is up, then set them side by side.
    panels = np.concatenate([np.rot90(p) for p in (rgb, tinted(label[:, :, k]), tinted(pred[:, :, k]))], axis=1)
    img = Image.fromarray(np.ascontiguousarray(panels))
    img = img.resize((img.width * 4, img.height * 4), Image.NEAREST)
    output.parent.mkdir(parents=True, exist_ok=True)
    img.save(output)
    return output


def run_demo(output_dir: str | Path = "demo_output", num_cases: int = 24, epochs: int = DEMO_EPOCHS, seed: int = 0,
             bundle: str | Path | None = None, **overrides) -> dict:
    """Generate the synthetic data set, train the bundle on 80% of it, evaluate the last epoch's model on the other
    20% (automatic and interactive), and write an overlay PNG of one held-out case.

    Returns the evaluation summary (``summary.json``) with ``"seconds"`` and ``"overlay"`` added.
    """
    start = time.time()
    output_dir = Path(output_dir).resolve()
    bundle_dir = Path(bundle) if bundle is not None else find_bundle()
    configs = bundle_dir / "configs"
    data_dir = make_synthetic_dataset(output_dir / "data", num_cases=num_cases, seed=seed)
    settings = {**DEMO_OVERRIDES, "dataset_dir": str(data_dir), "bundle_root": str(output_dir), "seed": seed,
                "max_epochs": epochs, **overrides}
    common = {"meta_file": str(configs / "metadata.json"), "logging_file": str(configs / "logging.conf")}

    logger.info("training on %d synthetic cases for %d epochs", num_cases, epochs)
    # The calibration after training scores the network as the last epoch left it, the model evaluated below.
    run("training", config_file=str(configs / "train.json"), sam_checkpoint="none", **common,
        **{"calibrate#load_path": "$None", **settings})
    # The model of the last epoch is evaluated: the held-out cases choose nothing.
    last = str(latest_checkpoint(output_dir / "models"))
    logger.info("evaluating %s", last)
    run("evaluating", config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], **common,
        **settings, **{"evaluate#handlers#0#load_path": last, "interactive#handlers#0#load_path": last})

    summary = json.loads((output_dir / "eval" / "summary.json").read_text())
    case = sorted(summary["cases"])[0]
    png = overlay_png(data_dir / "imagesTr" / f"{case}.nii.gz", data_dir / "labelsTr" / f"{case}.nii.gz",
                      output_dir / "eval" / "predictions" / f"{case}_seg.nii.gz", output_dir / "overlay.png")
    summary["seconds"] = time.time() - start
    summary["overlay"] = str(png)
    return summary
