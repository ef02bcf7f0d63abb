"""A small seeded synthetic 3D data set in the MSD layout, shaped like MSD Task04 Hippocampus.

Each volume holds one elongated, bent structure split across its long axis into two touching classes (as the
anterior and posterior hippocampus), in a textured background with a smooth bias field and Rician noise. Like
Task04, intensity ranges and data types differ between cases (8-bit, and float32 with arbitrary scales), so a
pipeline must normalise per volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = ["make_synthetic_dataset", "synthetic_case", "make_synthetic_lesion_folder", "synthetic_ct_case",
           "make_synthetic_ct_dataset"]

CLASS_NAMES = {"0": "background", "1": "head", "2": "tail"}


def _rotation(rng: np.random.RandomState, max_angle: float) -> np.ndarray:
    """A random 3D rotation matrix with angles up to ``max_angle`` radians about each axis."""
    a, b, c = rng.uniform(-max_angle, max_angle, size=3)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def synthetic_case(shape: tuple[int, int, int], rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image float32, label uint8)`` pair of ``shape``; label values 0, 1 (head), 2 (tail)."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    centre = np.array(shape) / 2 + rng.uniform(-0.12, 0.12, size=3) * np.array(shape)
    local = (grid - centre) @ _rotation(rng, 0.35)
    # An ellipsoid elongated along the second axis, bent by a quadratic term: a banana-like body.
    radii = np.array([rng.uniform(0.14, 0.2), rng.uniform(0.3, 0.4), rng.uniform(0.14, 0.2)]) * np.array(shape)
    bend = rng.uniform(-0.04, 0.04)
    local[..., 0] -= bend * local[..., 1] ** 2
    inside = ((local / radii) ** 2).sum(-1) <= 1.0
    split = rng.uniform(-0.2, 0.2) * radii[1]
    label = np.zeros(shape, dtype=np.uint8)
    label[inside & (local[..., 1] < split)] = 1
    label[inside & (local[..., 1] >= split)] = 2

    texture = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    texture = texture / (texture.std() + 1e-8)
    tissue = 100 + 12 * texture
    tissue[label == 1] += 45 + rng.uniform(-5, 5)
    tissue[label == 2] += 30 + rng.uniform(-5, 5)
    tissue = ndimage.gaussian_filter(tissue, sigma=0.7)  # partial-volume blur at the borders
    bias = np.exp(0.25 * ((grid - centre) / np.array(shape)) @ rng.uniform(-1, 1, size=3))
    signal = tissue * bias
    sigma = rng.uniform(6, 10)
    noisy = np.sqrt((signal + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
    return noisy.astype(np.float32), label


def _write_msd(output_dir: str | Path, cases, name: str, description: str, modality: str, labels: dict) -> Path:
    """Write ``cases`` (``(file name, image, label, affine)``) as ``imagesTr/`` / ``labelsTr/`` NIfTI files with an
    MSD ``dataset.json``; returns the folder."""
    output_dir = Path(output_dir)
    (output_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (output_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for file_name, image, label, affine in cases:
        nib.save(nib.Nifti1Image(image, affine), output_dir / "imagesTr" / file_name)
        nib.save(nib.Nifti1Image(label, affine), output_dir / "labelsTr" / file_name)
        training.append({"image": f"./imagesTr/{file_name}", "label": f"./labelsTr/{file_name}"})
    dataset = {"name": name, "description": description, "tensorImageSize": "3D", "modality": {"0": modality},
               "labels": labels, "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    (output_dir / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return output_dir


def make_synthetic_dataset(output_dir: str | Path, num_cases: int = 24, shape: tuple[int, int, int] = (32, 40, 28),
                           seed: int = 0) -> Path:
    """Write ``num_cases`` seeded volumes as ``imagesTr/`` / ``labelsTr/`` NIfTI files and a ``dataset.json``.

    Returns the data set folder. The same seed gives the same files.
    """
    rng = np.random.RandomState(seed)

    def cases():
        for i in range(num_cases):
            image, label = synthetic_case(shape, rng)
            if i % 3 == 0:  # some cases 8-bit, others float with arbitrary scales, as in Task04
                image = np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)
            else:
                image = (image * 10 ** rng.uniform(0, 3)).astype(np.float32)
            affine = np.diag([1.0, 1.0, 1.0, 1.0])
            affine[:3, 3] = rng.uniform(-50, 50, size=3)
            yield f"synth_{i:03d}.nii.gz", image, label, affine

    return _write_msd(output_dir, cases(), "SyntheticHippocampus",
                      "Seeded synthetic volumes shaped like MSD Task04 (medsa_monai.data.synthetic)", "MRI",
                      CLASS_NAMES)


def make_synthetic_lesion_folder(output_dir: str | Path, num_images: int = 8, size: tuple[int, int] = (72, 96),
                                 seed: int = 0) -> Path:
    """A folder of dermoscopy-like RGB images (``images/``) with lesion masks (``masks/``, 0 / 255), seeded: a
    brownish irregular blob on skin-coloured, textured background. For the skin-lesion bundle's tests and demos."""
    from PIL import Image

    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for i in range(num_images):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        angle = np.arctan2(yy - cy, xx - cx)
        radius = min(h, w) * rng.uniform(0.18, 0.3) * (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)))
        lesion = np.hypot(yy - cy, xx - cx) < radius
        skin = np.array([220, 170, 140]) + rng.uniform(-20, 20, size=3)
        texture = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0)[..., None] * 12
        image = np.broadcast_to(skin, (h, w, 3)) + texture
        image[lesion] = np.array([120, 70, 50]) + rng.uniform(-15, 15, size=3) + texture[lesion]
        image = ndimage.gaussian_filter(image, sigma=(1.0, 1.0, 0))
        name = f"lesion_{i:03d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(output_dir / "images" / name)
        Image.fromarray((lesion * 255).astype(np.uint8)).save(output_dir / "masks" / name)
    return output_dir


# organ: (centre as a fraction of the body's half-axes, radii in mm, mean HU), BTCV's values
_CT_ORGANS = {
    6: ((-0.35, -0.1, 0.1), (60.0, 50.0, 55.0), 60.0),  # liver, patient's right (array axis 0 towards L in RAS)
    1: ((0.45, 0.35, 0.15), (30.0, 25.0, 35.0), 45.0),  # spleen
    2: ((-0.3, 0.45, -0.25), (20.0, 18.0, 30.0), 150.0),  # right kidney
    3: ((0.3, 0.45, -0.25), (20.0, 18.0, 30.0), 150.0),  # left kidney
    8: ((0.05, 0.3, 0.0), (9.0, 9.0, 80.0), 200.0),  # aorta
}


def synthetic_ct_case(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.RandomState,
                      organs: tuple[int, ...] = (6, 1, 2, 3, 8)) -> tuple[np.ndarray, np.ndarray]:
    """One abdominal-CT-like ``(image int16 in HU, label uint8)`` pair of ``shape`` at ``spacing`` (mm, RAS array
    order): air (-1000 HU), an elliptic body of fat (-100) and muscle (40) around a vertebra (400), and organs
    with BTCV's label values (``organs``, any of 1 spleen, 2 / 3 kidneys, 6 liver, 8 aorta) at their own HU, with
    seeded jitter of position, size and contrast, noise of about 15 HU and a partial-volume blur."""
    spacing_ = np.asarray(spacing, dtype=float)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing_, strict=True)],
                                indexing="ij"), -1)
    half = np.array(shape) * spacing_ / 2
    body_axes = half[:2] * rng.uniform(0.8, 0.9, size=2)
    body = ((grid[..., :2] / body_axes) ** 2).sum(-1) <= 1.0
    image = np.full(shape, -1000.0)
    image[body] = -100.0
    image[((grid[..., :2] / (body_axes * 0.85)) ** 2).sum(-1) <= 1.0] = 40.0
    spine = ((grid[..., 0] / 15.0) ** 2 + ((grid[..., 1] - 0.6 * body_axes[1]) / 15.0) ** 2) <= 1.0
    image[spine] = 400.0
    label = np.zeros(shape, dtype=np.uint8)
    for value in organs:
        centre, radii, hu = _CT_ORGANS[value]
        centre = np.array([centre[0] * body_axes[0], centre[1] * body_axes[1], centre[2] * half[2]])
        centre = centre + rng.uniform(-5, 5, size=3)
        radii = np.array(radii) * rng.uniform(0.85, 1.15, size=3)
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        label[inside & body] = value
        image[inside & body] = hu + rng.uniform(-10, 10)
    image = ndimage.gaussian_filter(image, sigma=0.6 / spacing_ * spacing_.min())
    image += rng.normal(0.0, 15.0, size=shape)
    return np.clip(np.round(image), -1024, 3071).astype(np.int16), label


def make_synthetic_ct_dataset(output_dir: str | Path, num_cases: int = 6, shape: tuple[int, int, int] = (64, 64, 24),
                              spacing: tuple[float, float, float] = (3.0, 3.0, 5.0), seed: int = 0,
                              organs: tuple[int, ...] = (6, 1, 2, 3, 8)) -> Path:
    """Seeded abdominal-CT-like volumes (:func:`synthetic_ct_case`) in the MSD layout (``imagesTr`` /
    ``labelsTr``, ``dataset.json`` with modality CT and BTCV's names of ``organs``). Returns the folder."""
    from .btcv import BTCV_LABELS

    rng = np.random.RandomState(seed)

    def cases():
        for i in range(num_cases):
            image, label = synthetic_ct_case(shape, spacing, rng, organs)
            affine = np.diag([*spacing, 1.0])
            affine[:3, 3] = rng.uniform(-200, 200, size=3)
            yield f"ct_{i:03d}.nii.gz", image, label, affine

    return _write_msd(output_dir, cases(), "SyntheticAbdomenCT",
                      "Seeded abdominal-CT-like volumes in HU (medsa_monai.data.synthetic)", "CT",
                      {str(v): BTCV_LABELS[v] for v in (0, *sorted(organs))})
