"""A complete MONAI bundle from a plan: configs rendered from the package's template with the plan as the bundle's
``bundle_plan``, metadata in the MONAI bundle specification, a model card, the licence and large-file list."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from ..planning.plan import Plan
from .sync import RECORD_FILE, TEMPLATE_CONFIGS, TEMPLATE_DIR, TWO_D_ONLY, record_configs, render_config, write_json

__all__ = ["create_bundle"]

_PACKAGES = ("medsa-monai", "segment-anything", "pytorch-ignite", "nibabel", "scipy", "pillow", "tensorboard")


def _channel_def(plan: Mapping, dataset: Mapping) -> dict[str, str]:
    names = [scheme.get("modality") for scheme in plan.get("normalization") or []]
    if not all(names) or len(names) != plan["in_channels"]:
        modality = dataset.get("modality") or {}
        names = [modality.get(str(c), f"channel_{c}") for c in range(plan["in_channels"])]
    return {str(c): str(name) for c, name in enumerate(names)}


def _output_def(plan: Mapping) -> dict[str, str]:
    if plan.get("regions"):
        return {str(i): name for i, name in enumerate(plan["regions"])}
    labels = {int(v): name for v, name in plan["labels"].items()}
    return {str(i): labels[v] for i, v in enumerate(sorted(labels))}


def _input_format(channels: Sequence[str]) -> tuple[str, str]:
    """The tensor format and modality of the MONAI bundle specification for these channel names."""
    upper = [c.upper() for c in channels]
    if "CT" in upper:
        return "hounsfield", "CT"
    if upper in (["R", "G", "B"], ["GREY"], ["GRAY"]) or set(upper) <= {"R", "G", "B"}:
        return "magnitude", "photograph"
    mr = ("MR", "MRI", "T1", "T2", "FLAIR", "T1W", "T2W", "T1GD", "ADC", "DWI", "PD")
    return "magnitude", "MR" if any(c in mr for c in upper) else ",".join(dict.fromkeys(channels))


def _versions() -> dict[str, str]:
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _metadata(plan: Mapping, dataset: Mapping, name: str, description: str) -> dict:
    channels = _channel_def(plan, dataset)
    outputs = _output_def(plan)
    regions = bool(plan.get("regions"))
    what = ", ".join(f"{k} = label values {v}" for k, v in plan["regions"].items()) if regions else ", ".join(
        f"{v} {n}" for v, n in plan["labels"].items())
    patch = list(plan["patch_size"])
    tensor_format, modality = _input_format(list(channels.values()))
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20240725.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"created by `medsa bundle create` from the plan of {plan.get('dataset', name)}"},
        "monai_version": metadata.version("monai"),
        "pytorch_version": metadata.version("torch"),
        "numpy_version": metadata.version("numpy"),
        "required_packages_version": _versions(),
        "supported_apps": {},
        "name": name,
        "task": description,
        "description": "A frozen Segment Anything Model (SAM) adapted by Med-SA (adapters in every image-encoder "
                       "block" + (", SD-Trans depth attention" if plan["spatial_dims"] == 3 else "") +
                       "); automatic (learned class prompts) and prompted (boxes, clicks).",
        "authors": "medsa-monai contributors",
        "copyright": "Copyright (c) medsa-monai contributors",
        "data_source": str(dataset.get("medsa_ingest", {}).get("source", plan.get("dataset", ""))),
        "data_type": "nibabel" if plan["spatial_dims"] == 3 else "png / jpeg (PIL)",
        "image_classes": f"{len(channels)} channel(s): {', '.join(channels.values())}",
        "label_classes": what,
        "pred_classes": ("one sigmoid channel per region: " if regions else "classes: ") + ", ".join(
            outputs.values()),
        "eval_metrics": {},
        "intended_use": "Research only; not for clinical use",
        "references": [
            "Wu, J. et al. Medical SAM Adapter: Adapting Segment Anything Model for Medical Image Segmentation. "
            "Medical Image Analysis, 2025",
            "Kirillov, A. et al. Segment Anything. ICCV 2023",
        ],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": tensor_format, "modality": modality, "num_channels": len(channels),
                "spatial_shape": patch,
                "dtype": "float32", "value_range": [], "is_patch_data": plan["spatial_dims"] == 3,
                "channel_def": channels}},
            "outputs": {"pred": {
                "type": "image", "format": "classes" if regions else "labels", "modality": "n/a",
                "num_channels": len(outputs),
                "spatial_shape": patch,
                "dtype": "float32", "value_range": [], "is_patch_data": plan["spatial_dims"] == 3,
                "channel_def": outputs}},
        },
    }


def create_bundle(plan_file: str | Path, output: str | Path, name: str | None = None,
                  dataset_json: str | Path | None = None, description: str | None = None,
                  settings: Mapping[str, Mapping] | None = None, overwrite: bool = False) -> Path:
    """Write a complete MONAI bundle for a planned data set.

    Args:
        plan_file: ``plan.json`` of ``medsa plan``.
        output: the bundle folder to write (refused if it exists, unless ``overwrite``).
        name: the bundle's name (default: the folder's name).
        dataset_json: the ingested ``dataset.json`` (default: the one the plan was made from, if it is still
            there); gives channel names, the number of cases and the data's source.
        description: the task, one line, for ``metadata.json`` and the model card.
        settings: further settings per config file, ``{"train.json": {"trainable": "lora"}}``.
        overwrite: replace an existing folder.

    Returns:
        The bundle folder. It is written beside ``output`` and moved there complete, so an error leaves nothing.
    """
    from .model_card import model_card

    plan = Plan.load(plan_file)
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"'{output}' exists (overwrite=True, or --overwrite, replaces it)")
    dataset_path = Path(dataset_json or plan.dataset_json or Path(plan_file).parent / "dataset.json")
    dataset = json.loads(dataset_path.read_text()) if dataset_path.is_file() else {}
    name = name or output.name
    bundled = plan.bundled()
    description = description or (f"Segmentation of {', '.join(_output_def(plan).values())} in "
                                  f"{plan.dataset or 'the data set'}")
    data_dir = str(dataset.get("medsa_ingest", {}).get("source") or Path(plan_file).resolve().parent)
    chosen = {"train.json": {"bundle_plan": bundled, "dataset_dir": data_dir},
              "inference.json": {"bundle_plan": bundled, "dataset_dir": data_dir}}
    for file, values in (settings or {}).items():
        chosen.setdefault(file, {}).update(values)
    unknown = set(chosen) - set(TEMPLATE_CONFIGS)
    if unknown:
        raise KeyError(f"settings for unknown config files {sorted(unknown)}; configs: {list(TEMPLATE_CONFIGS)}")
    configs = {file: render_config(file, chosen.get(file)) for file in TEMPLATE_CONFIGS
               if plan.spatial_dims == 2 or file not in TWO_D_ONLY}

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "configs").mkdir()
        (staging / "docs").mkdir()
        (staging / "models").mkdir()
        for file, config in configs.items():
            write_json(staging / "configs" / file, config)
        meta = _metadata(plan, dataset, name, description)
        write_json(staging / "configs" / "metadata.json", meta)
        write_json(staging / RECORD_FILE, record_configs(configs, chosen))
        shutil.copy(TEMPLATE_DIR / "logging.conf", staging / "configs" / "logging.conf")
        shutil.copy(TEMPLATE_DIR / "large_files.yml", staging / "large_files.yml")
        shutil.copy(TEMPLATE_DIR / "LICENSE", staging / "LICENSE")
        (staging / "docs" / "README.md").write_text(model_card(plan, dataset, meta, configs))
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
