"""Data set layouts: find the cases of an MSD, nnU-Net v2 raw or plain-folder data set, without reading images.

Each reader says why it found no training case; :func:`read_raw_dataset` picks the layout. See
:mod:`medsa_monai.conversion.ingest` for the layouts in full.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..data.labels import LabelSpec
from .image_files import IMAGE_ENDINGS, _ending, _strip_ending

__all__ = ["Case", "DatasetError", "RawDataset", "read_raw_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class Case:
    """One case: its image files (one per channel, or one multi-channel file; a folder is a DICOM series)."""

    name: str
    images: list[Path]
    label: Path | None = None
    missing_channels: list[str] = field(default_factory=list)  # nnU-Net channel files not found


@dataclass
class RawDataset:
    """A data set as found on disk, before any check.

    ``channels`` is the declared modality per channel (empty for a plain folder: taken from the data);
    ``labels`` the declared ``{value: name}`` (empty: the values found); ``regions`` ``{name: [values]}``.
    """

    root: Path
    layout: str
    name: str
    channels: dict[int, str]
    labels: dict[int, str]
    training: list[Case]
    test: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # found while reading the layout
    regions: dict[str, list[int]] = field(default_factory=dict)
    regions_class_order: list[int] | None = None
    empty_reason: str = ""  # why no training case was found


class DatasetError(ValueError):
    """A data set with problems; ``problems`` lists them all, each naming its case and file."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the data set '{root}':\n  " + "\n  ".join(problems))


def _declared_labels(description: Mapping, problems: list[str]) -> tuple[dict[int, str], dict[str, list[int]]]:
    """Labels ``{value: name}`` and regions of a ``dataset.json`` (MSD, nnU-Net v2 or ingest's own form)."""
    try:
        spec = LabelSpec.from_description(description)
    except (ValueError, KeyError, TypeError) as err:
        problems.append(f"dataset.json: labels: {err}")
        return {}, {}
    return (dict(zip(spec.values, spec.names, strict=True)),
            {n: list(r) for n, r in zip(spec.region_names, spec.regions, strict=True)})


def _read_msd(root: Path, description: dict) -> RawDataset:
    problems: list[str] = []
    channels = {int(k): str(v) for k, v in description.get("modality", {"0": "unknown"}).items()}
    labels, regions = _declared_labels(description, problems)

    def entry(item) -> Path:
        return root / (item if isinstance(item, str) else item["image"])

    training = [Case(_strip_ending(entry(item).name), [entry(item)], root / item["label"])
                for item in description.get("training", [])]
    test = [Case(_strip_ending(entry(item).name), [entry(item)]) for item in description.get("test", [])]
    return RawDataset(root, "msd", description.get("name", root.name), channels, labels, training, test, problems,
                      regions, description.get("regions_class_order"), "dataset.json lists no training cases")


def _read_nnunet(root: Path, description: dict) -> RawDataset:
    ending = description.get("file_ending", ".nii.gz")
    channels = {int(k): str(v) for k, v in description["channel_names"].items()}
    problems: list[str] = []
    labels, regions = _declared_labels(description, problems)
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")

    def cases(image_dir: Path, label_dir: Path | None) -> list[Case]:
        grouped: dict[str, dict[int, Path]] = {}
        for path in sorted(image_dir.glob(f"*{ending}")) if image_dir.is_dir() else []:
            match = pattern.match(path.name)
            if match is None:
                problems.append(f"{path.name}: not named <case>_<XXXX>{ending}")
                continue
            grouped.setdefault(match.group(1), {})[int(match.group(2))] = path
        found = []
        for name, files in grouped.items():
            missing = [f"{name}_{c:04d}{ending}" for c in channels if c not in files]
            label = label_dir / f"{name}{ending}" if label_dir is not None else None
            found.append(Case(name, [files[c] for c in sorted(files)], label, missing))
        return found

    training = cases(root / "imagesTr", root / "labelsTr")
    test = cases(root / "imagesTs", None)
    return RawDataset(root, "nnunet", description.get("name", root.name), channels, labels, training, test, problems,
                      regions, description.get("regions_class_order"), _nnunet_empty_reason(root, ending))


def _nnunet_empty_reason(root: Path, ending: str) -> str:
    folder = root / "imagesTr"
    if not folder.is_dir():
        return "no imagesTr/ folder"
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not files:
        return "imagesTr/ is empty"
    return f"imagesTr/ holds {len(files)} file(s), none named <case>_<XXXX>{ending} (dataset.json file_ending)"


def _listing(folder: Path) -> tuple[dict[str, Path], list[Path], list[str]]:
    """Case name -> file (or DICOM folder) of a plain folder; the files of unsupported formats; duplicate names."""
    found: dict[str, Path] = {}
    unsupported, problems = [], []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        if not path.is_dir() and _ending(path.name) is None:
            unsupported.append(path)
            continue
        name = _strip_ending(path.name)
        if name in found:
            problems.append(f"{name}: two files in {folder.name}/ for one case, '{found[name].name}' and "
                            f"'{path.name}'")
            continue
        found[name] = path
    return found, unsupported, problems


def _label_folder(root: Path) -> tuple[Path | None, str]:
    """The folder of a plain layout's labels: ``labels/`` or ``masks/``; else why there is none."""
    candidates = [root / name for name in ("labels", "masks") if (root / name).is_dir()]
    if not candidates:
        return None, "no labels/ or masks/ folder beside images/"
    filled = [c for c in candidates if any(not p.name.startswith(".") for p in c.iterdir())]
    if len(filled) > 1:
        return None, "both labels/ and masks/ hold files: keep the labels in one of them"
    return (filled or candidates)[0], ""


def _unsupported_reason(folder: Path, unsupported: list[Path]) -> str:
    if not unsupported:
        return f"{folder.name}/ is empty"
    kinds = sorted({p.suffix.lower() or p.name for p in unsupported})
    return (f"{folder.name}/ holds {len(unsupported)} file(s) ({', '.join(kinds[:8])}), none in a supported format "
            f"({', '.join(IMAGE_ENDINGS)}) or a DICOM series folder")


def _read_folder(root: Path, labels: Mapping | None) -> RawDataset:
    image_dir = root / "images"
    images, unsupported, problems = _listing(image_dir)
    if unsupported and images:
        logger.warning("ignoring %d file(s) of unsupported formats in %s (e.g. '%s')", len(unsupported), image_dir,
                       unsupported[0].name)
    label_dir, no_labels = _label_folder(root)
    label_files, _, label_problems = _listing(label_dir) if label_dir else ({}, [], [])
    problems += label_problems
    problems += [f"{name}: label '{path}' has no image in images/" for name, path in label_files.items()
                 if name not in images]
    training = []
    for name, path in images.items():
        if name in label_files:
            training.append(Case(name, [path], label_files[name]))
        elif label_dir is not None:
            problems.append(f"{name}: image '{path.name}' has no label in {label_dir.name}/ (a file named "
                            f"'{name}' with a supported ending)")
    if labels is None and (root / "labels.json").is_file():
        labels = json.loads((root / "labels.json").read_text())
    declared = {int(k): str(v) for k, v in labels.items()} if labels is not None else {}
    if not images:
        reason = _unsupported_reason(image_dir, unsupported)
    elif label_dir is None:
        reason = f"{no_labels} (plain layout: images/ and labels/ or masks/ with files of the same case names)"
    else:
        reason = f"none of the {len(images)} image(s) has a label of the same case name in {label_dir.name}/"
    return RawDataset(root, "folder", root.name, {}, declared, training, [], problems, empty_reason=reason)


def read_raw_dataset(root: str | Path, labels: Mapping | None = None) -> RawDataset:
    """Read the layout of the data set at ``root`` (MSD, nnU-Net v2 or plain folder), without checking images.

    ``labels`` (``{value: name}``) applies to plain folders, which declare none (a plain folder's channel names are
    chosen by :func:`~medsa_monai.conversion.ingest`, once the channels are known).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder '{root}' does not exist")
    description_file = root / "dataset.json"
    if description_file.is_file():
        try:
            description = json.loads(description_file.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(root, [f"dataset.json: not valid JSON ({err})"]) from err
        if "channel_names" in description:
            return _read_nnunet(root, description)
        if "training" in description and "labels" in description:
            return _read_msd(root, description)
        raise DatasetError(root, ["dataset.json: neither the MSD layout ('training', 'labels') nor nnU-Net v2's "
                                  "('channel_names', 'labels', 'file_ending')"])
    if (root / "images").is_dir():
        return _read_folder(root, labels)
    raise DatasetError(root, ["no dataset.json (MSD or nnU-Net v2 layout) and no images/ folder (plain layout)"])
