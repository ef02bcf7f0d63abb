"""Datalists: MSD-style ``dataset.json`` with absolute paths, checked for missing files, and seeded splits."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

logger = logging.getLogger(__name__)

__all__ = ["load_datalist", "find_datalist", "input_datalist", "has_labels",
           "check_files", "split_cases", "image_mask_pairs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_datalist(dataset_dir: str | Path, datalist_file: str | Path | None = None, key: str = "training",
                  keys: Sequence[str] = ("image", "label"), missing: str = "error") -> list[dict]:
    """Read the ``key`` list of a decathlon-format datalist with paths made absolute, and check the files exist.

    Args:
        dataset_dir: the data set's folder; relative paths in the datalist are relative to it.
        datalist_file: the datalist; ``None`` means ``<dataset_dir>/dataset.json`` (the MSD layout).
        key: which list to read (``training``, ``validation``, ``test``).
        keys: the file keys each item must have.
        missing: ``"error"`` (default) raises for missing files, naming them; ``"skip"`` leaves those cases out
            with a warning (e.g. the 260-case Task04 datalist on a subset of the data).
    """
    dataset_dir = Path(dataset_dir)
    path = Path(datalist_file) if datalist_file is not None else dataset_dir / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"datalist '{path}' does not exist (dataset_dir must hold an MSD-style dataset.json, "
                                f"or give datalist_file)")
    listed = json.loads(path.read_text()).get(key) if path.suffix == ".json" else None
    if listed is not None and not listed:  # MONAI's loader fails on an empty list with an IndexError
        raise ValueError(f"datalist '{path}' lists no '{key}' cases" + (
            " (for a folder of images, e.g. an MSD imagesTs/, give input_pattern, e.g. --input_pattern "
            "'imagesTs/*.nii.gz')" if key == "test" else ""))
    try:
        data = load_decathlon_datalist(str(path), is_segmentation="label" in keys, data_list_key=key,
                                       base_dir=str(dataset_dir))
    except ValueError as err:
        raise ValueError(f"datalist '{path}': {err}") from err
    if missing == "skip":
        kept = [item for item in data if all(Path(str(f)).is_file() for k in keys for f in _files(item.get(k)))]
        if len(kept) < len(data):
            logger.warning("%d of %d cases of '%s' have missing files and are left out", len(data) - len(kept),
                           len(data), path)
        data = kept
    elif missing != "error":
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    check_files(data, keys)
    return data


def _files(value) -> list:
    if value is None:
        return [None]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_files(data: Sequence[dict], keys: Sequence[str] = ("image", "label")) -> None:
    """Raise ``FileNotFoundError`` listing every missing key or file, by case."""
    problems = []
    for i, item in enumerate(data):
        first = _files(item.get("image", f"item {i}"))[0]
        case = Path(str(first)).name
        for key in keys:
            if key not in item:
                problems.append(f"{case}: no '{key}' entry")
            else:
                problems += [f"{case}: {key} file '{f}' does not exist" for f in _files(item[key])
                             if not Path(str(f)).is_file()]
    if problems:
        raise FileNotFoundError(f"{len(problems)} problem(s) in the datalist:\n  " + "\n  ".join(problems))


def split_cases(data: Sequence[dict], val_fraction: float = 0.2, seed: int = 0, fold: int | None = None
                ) -> tuple[list[dict], list[dict]]:
    """Split cases into training and validation.

    With ``fold`` and items that carry a ``fold`` key (see ``datalists/``, ``medsa plan``), the validation cases are
    that fold's. Otherwise a seeded random ``val_fraction`` of the cases, the same for the same case set and seed
    whatever the datalist's order (a ``fold`` given for items without ``fold`` keys is ignored, with a warning).

    Raises:
        ValueError: for a negative fold, a fold the datalist does not have, or a datalist where only some items
            carry a ``fold`` key.
    """
    if fold is not None:
        folded = _fold_split(data, int(fold))
        if folded is not None:
            return folded
        logger.warning("fold %s is ignored: the datalist's items carry no 'fold' key; validating on a seeded random "
                       "%g of the cases instead", fold, val_fraction)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(data, key=lambda item: str(item["image"]))
    order = np.random.RandomState(seed).permutation(len(ordered))
    n_val = int(round(len(ordered) * val_fraction))
    val = {int(i) for i in order[:n_val]}
    return [d for i, d in enumerate(ordered) if i not in val], [d for i, d in enumerate(ordered) if i in val]


def _fold_split(data: Sequence[dict], fold: int) -> tuple[list[dict], list[dict]] | None:
    """The split of ``fold`` by the items' ``fold`` keys; ``None`` when no item has one."""
    if fold < 0:
        raise ValueError(f"fold must be 0 or more, got {fold}")
    unfolded = [item for item in data if "fold" not in item]
    if len(unfolded) == len(data):
        return None
    if unfolded:
        raise ValueError(f"fold {fold}: {len(unfolded)} of the datalist's {len(data)} items have no 'fold' key "
                         f"(e.g. '{unfolded[0].get('image')}'); give every item a fold, or none")
    folds = sorted({int(item["fold"]) for item in data})
    if fold not in folds:
        contiguous = len(folds) > 1 and folds == list(range(folds[0], folds[-1] + 1))
        described = f"{folds[0]}..{folds[-1]}" if contiguous else ", ".join(map(str, folds))
        raise ValueError(f"fold {fold} is not in this datalist: it has folds {described}")
    return [d for d in data if int(d["fold"]) != fold], [d for d in data if int(d["fold"]) == fold]


def find_datalist(dataset_dir: str | Path, datalist_file: str | Path | None = None, key: str = "training",
                  keys: Sequence[str] = ("image", "label"), missing: str = "error") -> list[dict]:
    """The cases of a data set however it is laid out: ``datalist_file`` (a decathlon datalist, e.g. the plan's),
    else ``<dataset_dir>/dataset.json`` (MSD), else a plain folder of ``images/`` with ``labels/`` or ``masks/``
    matched by file name (:func:`image_mask_pairs`; without a label folder, the images alone when ``keys`` asks
    for no label)."""
    root = Path(dataset_dir)
    if datalist_file is not None or (root / "dataset.json").is_file():
        return load_datalist(root, datalist_file, key, keys, missing)
    if (root / "images").is_dir():
        wants_label = "label" in keys
        label_dir = next((d for d in ("labels", "masks") if (root / d).is_dir()), None)
        if wants_label and label_dir is None:
            raise FileNotFoundError(f"'{root}' has images/ but neither labels/ nor masks/")
        return image_mask_pairs(root, "images", label_dir if wants_label else None)
    raise FileNotFoundError(f"'{root}' is neither an MSD folder (dataset.json) nor a plain folder (images/ with "
                            f"labels/ or masks/); give datalist_file")


def input_datalist(dataset_dir: str | Path, input_pattern: str | None = None) -> list[dict]:
    """The images to infer: the files of ``dataset_dir`` matching ``input_pattern`` (a glob, e.g.
    ``"imagesTs/*.nii.gz"``), else the data set's test cases or images (:func:`find_datalist`).

    Raises:
        FileNotFoundError: when there is no image, naming the folder and the pattern.
    """
    if input_pattern:
        items = [{"image": str(f)} for f in sorted(Path(dataset_dir).glob(input_pattern)) if f.is_file()]
    else:
        items = find_datalist(dataset_dir, None, "test", ["image"])
    if not items:
        raise FileNotFoundError(f"no input images in {dataset_dir}" + (f" match {input_pattern}" if input_pattern
                                                                        else ""))
    return items


def has_labels(dataset_dir: str | Path, datalist_file: str | Path | None = None) -> bool:
    """Whether :func:`find_datalist` finds labels in a data set: a datalist (``datalist_file`` or
    ``<dataset_dir>/dataset.json``, whose training cases are labelled), or ``labels/`` or ``masks/`` beside a plain
    folder's ``images/``. A folder of images alone is unlabelled (test-time adaptation then only predicts)."""
    root = Path(dataset_dir)
    if datalist_file is not None or (root / "dataset.json").is_file():
        return True
    return any((root / folder).is_dir() for folder in ("labels", "masks"))


def image_mask_pairs(dataset_dir: str | Path, images: str = "images", masks: str | None = "masks") -> list[dict]:
    """``{"image", "label"}`` items of a folder of 2D images and masks matched by file name (any image suffix).

    ``masks=None`` (or a missing masks folder) lists the images alone, for inference. Raises
    ``FileNotFoundError`` naming every image without a mask and every mask without an image.
    """
    root = Path(dataset_dir)
    image_dir = root / images
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder '{image_dir}' does not exist")

    def listing(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
                and not p.name.startswith(".")}

    found = listing(image_dir)
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in '{image_dir}'")
    if masks is None or not (root / masks).is_dir():
        return [{"image": str(p)} for p in found.values()]
    mask_files = listing(root / masks)
    problems = [f"{p.name}: no mask in '{root / masks}'" for s, p in found.items() if s not in mask_files]
    problems += [f"{p.name}: a mask without an image in '{image_dir}'" for s, p in mask_files.items() if s not in found]
    if problems:
        raise FileNotFoundError(f"{len(problems)} problem(s) pairing images and masks:\n  " + "\n  ".join(problems))
    return [{"image": str(found[s]), "label": str(mask_files[s])} for s in found]
