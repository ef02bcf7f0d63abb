"""A complete MONAI bundle from a plan, and every bundle kept in step with the package's template.

Every bundle's configs are the template in ``medsa_monai/bundle/template`` (one train, evaluate, inference and
multi-GPU config for 2D and 3D, classes and regions) with some *settings*: top-level keys whose value is a scalar,
a list of scalars, an expression, or the ``bundle_plan`` (what ``medsa plan`` decided for the data set). Components
and sections (``train``, ``network_def``, ...) are the template's alone, so a fix to them reaches every bundle by
:func:`sync_bundle` (``medsa bundle sync``), and the test suite checks that the shipped bundles are in step.

MONAI bundles are self-contained (``python -m monai.bundle run --config_file configs/train.json`` and MONAI Label
read the bundle's own files), so the template is copied, not referenced; MONAI's config merging (several
``--config_file``) would tie a bundle to the paths of the package that made it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from ..planning.plan import load_plan

__all__ = ["TEMPLATE_DIR", "TEMPLATE_CONFIGS", "bundle_plan", "bundle_settings", "render_config", "sync_bundle",
           "create_bundle"]

TEMPLATE_DIR = Path(__file__).parent / "template"
TEMPLATE_CONFIGS = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "tta.json")
_2D_ONLY = ("tta.json",)  # SAM-DA's test-time adaptation works on images
_RECORD = "medsa_template"  # metadata.json: what each config was rendered with (see _record)
_PLAN_KEYS = ("labels", "regions", "regions_class_order", "label_aliases", "spatial_dims", "in_channels", "modality",
              "configuration", "slice_axis", "depth_attention", "intensity", "normalization", "sam_variant",
              "image_size", "pixdim", "patch_size", "batch_size", "sw_overlap", "sw_batch_size", "dataset_cache",
              "datalist_file", "dataset", "num_folds")
_PACKAGES = ("medsa-monai", "segment-anything", "pytorch-ignite", "nibabel", "scipy", "pillow", "tensorboard")


def bundle_plan(plan_file: str | Path | None, bundled: Mapping) -> dict:
    """The plan a bundle runs with: ``plan_file`` when given (``medsa train --plan``), else the plan the bundle was
    made from (its ``bundle_plan`` setting)."""
    return load_plan(plan_file) or dict(bundled)


def _template(name: str) -> dict:
    return json.loads((TEMPLATE_DIR / name).read_text())


def _is_setting(key: str, template_value) -> bool:
    """A setting is a value, not a component: scalars, lists of scalars, expressions, and the bundled plan."""
    if key == "bundle_plan":
        return True
    if isinstance(template_value, dict):
        return False
    if isinstance(template_value, list):
        return all(not isinstance(v, (dict, list)) for v in template_value) and key not in ("imports", "run",
                                                                                           "initialize", "finalize")
    return True


def render_config(name: str, settings: Mapping | None = None) -> dict:
    """The template config ``name`` with ``settings`` (``{key: value}``) in place of its top-level values.

    Raises:
        KeyError: a setting the template does not have, or one that would replace a component or section.
    """
    config = _template(name)
    for key, value in (settings or {}).items():
        if key not in config:
            raise KeyError(f"{name}: '{key}' is not a top-level key of the template (settings: "
                           f"{', '.join(k for k, v in config.items() if _is_setting(k, v))})")
        if not _is_setting(key, config[key]):
            raise KeyError(f"{name}: '{key}' is a component or section of the template, not a setting; change the "
                           f"template ({TEMPLATE_DIR / name}) so that the fix reaches every bundle")
        config[key] = value
    return config


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _record(config: Mapping, explicit: Mapping) -> dict:
    """What ``metadata.json`` keeps of a rendered config: a fingerprint of its components, the settings the bundle
    chose, and a fingerprint of every setting's value, so a later sync can tell a hand edit from a template change."""
    settings = {k: v for k, v in config.items() if _is_setting(k, v)}
    components = {k: v for k, v in config.items() if k not in settings}
    return {"components": _digest(components), "settings": sorted(explicit),
            "values": {k: _digest(v) for k, v in settings.items()}}


def _recorded(configs: Path) -> dict[str, dict]:
    meta = configs / "metadata.json"
    return json.loads(meta.read_text()).get(_RECORD, {}) if meta.is_file() else {}


def bundle_settings(bundle_dir: str | Path) -> dict[str, dict]:
    """Per config file of a bundle, its settings (none for a config the bundle lacks, e.g. one a newer template
    added): the values it chose when it was made or last synced, and any setting changed by hand since; every other
    setting follows the template.

    The rest of a config (its components and sections) must be what the template rendered then (its fingerprint is
    in ``metadata.json``) or today's template; anything else was edited by hand.

    Raises:
        ValueError: naming the configs and keys edited by hand.
    """
    configs = Path(bundle_dir) / "configs"
    recorded = _recorded(configs)
    settings: dict[str, dict] = {}
    problems = []
    train = json.loads((configs / "train.json").read_text()) if (configs / "train.json").is_file() else {}
    dims = train.get("bundle_plan", {}).get("spatial_dims", 3)
    for name in TEMPLATE_CONFIGS:
        path = configs / name
        if not path.is_file():
            if dims == 2 or name not in _2D_ONLY:
                settings[name] = {}
            continue
        template, own = _template(name), json.loads(path.read_text())
        record = recorded.get(name)
        mine = {k: v for k, v in own.items() if _is_setting(k, template.get(k, v))}
        components = {k: v for k, v in own.items() if k not in mine}
        if record is None:  # not made by create or sync: what differs from the template is its own
            settings[name] = {k: v for k, v in mine.items() if template.get(k) != v}
        else:
            settings[name] = {k: v for k, v in mine.items() if k in record["settings"]
                              or _digest(v) != record["values"].get(k)}
        unknown = [k for k in mine if k not in template and k not in (record or {}).get("values", {})]
        problems += [f"{path}: '{k}' is not a key of the template" for k in unknown]
        settings[name] = {k: v for k, v in settings[name].items() if k in template}  # else the template dropped it
        template_components = {k: v for k, v in template.items() if not _is_setting(k, v)}
        if _digest(components) not in ((record or {}).get("components"), _digest(template_components)):
            edited = [k for k in components if template.get(k) != components[k]]
            problems.append(f"{path}: {', '.join(repr(k) for k in edited) or 'its keys'} edited by hand")
    if problems:
        raise ValueError("the bundle's components were edited by hand, so a sync would lose the edits; move each "
                         "change into the template (medsa_monai/bundle/template) or into a setting:\n  "
                         + "\n  ".join(problems))
    return settings


def sync_bundle(bundle_dir: str | Path, check: bool = False) -> list[str]:
    """Rewrite a bundle's configs from the current template, keeping its settings, and record them in
    ``metadata.json``; with ``check``, write nothing.

    Returns:
        The files that differ (were rewritten, or would be with ``check``).
    """
    configs = Path(bundle_dir) / "configs"
    changed = []
    records = {}
    for name, settings in bundle_settings(bundle_dir).items():
        rendered = render_config(name, settings)
        records[name] = _record(rendered, settings)
        path = configs / name
        if not path.is_file() or json.loads(path.read_text()) != rendered:
            changed.append(name)
            if not check:
                _write_json(path, rendered)
    if (configs / "logging.conf").read_text() != (TEMPLATE_DIR / "logging.conf").read_text():
        changed.append("logging.conf")
        if not check:
            shutil.copy(TEMPLATE_DIR / "logging.conf", configs / "logging.conf")
    meta_path = configs / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get(_RECORD) != records:
        changed.append("metadata.json")
        if not check:
            _write_json(meta_path, {**meta, _RECORD: records})
    return changed


def _write_json(path: Path, data: Mapping) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n")


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

    plan = load_plan(plan_file)
    if not plan:
        raise ValueError("create_bundle needs a plan file")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"'{output}' exists (overwrite=True, or --overwrite, replaces it)")
    dataset_path = Path(dataset_json or plan.get("dataset_json") or Path(plan_file).parent / "dataset.json")
    dataset = json.loads(dataset_path.read_text()) if dataset_path.is_file() else {}
    name = name or output.name
    plan_part = {k: plan[k] for k in _PLAN_KEYS if k in plan}
    description = description or (f"Segmentation of {', '.join(_output_def(plan).values())} in "
                                  f"{plan.get('dataset', 'the data set')}")
    data_dir = str(dataset.get("medsa_ingest", {}).get("source") or Path(plan_file).resolve().parent)
    chosen = {"train.json": {"bundle_plan": plan_part, "dataset_dir": data_dir},
              "inference.json": {"bundle_plan": plan_part, "dataset_dir": data_dir}}
    for file, values in (settings or {}).items():
        chosen.setdefault(file, {}).update(values)
    configs = {file: render_config(file, chosen.get(file)) for file in TEMPLATE_CONFIGS
               if plan["spatial_dims"] == 2 or file not in _2D_ONLY}
    unknown = set(chosen) - set(TEMPLATE_CONFIGS)
    if unknown:
        raise KeyError(f"settings for unknown config files {sorted(unknown)}; configs: {list(TEMPLATE_CONFIGS)}")

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "configs").mkdir()
        (staging / "docs").mkdir()
        (staging / "models").mkdir()
        for file, config in configs.items():
            _write_json(staging / "configs" / file, config)
        meta = _metadata(plan, dataset, name, description)
        meta[_RECORD] = {file: _record(config, chosen.get(file, {})) for file, config in configs.items()}
        _write_json(staging / "configs" / "metadata.json", meta)
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
