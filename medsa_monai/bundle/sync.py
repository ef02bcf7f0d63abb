"""Every bundle kept in step with the package's template.

Every bundle's configs are the template in ``medsa_monai/bundle/template`` (one train, evaluate, inference and
multi-GPU config for 2D and 3D, classes and regions) with some *settings*: top-level keys whose value is a scalar,
a list of scalars, an expression, or the ``bundle_plan`` (what ``medsa plan`` decided for the data set). Components
and sections (``train``, ``network_def``, ...) are the template's alone, so a fix to them reaches every bundle by
:func:`sync_bundle` (``medsa bundle sync``), and the test suite checks that the shipped bundles are in step. What each
config was rendered with is recorded in the bundle's ``medsa_template.json``, so that a later sync tells a template
change from a hand edit.

MONAI bundles are self-contained (``python -m monai.bundle run --config_file configs/train.json`` and MONAI Label
read the bundle's own files), so the template is copied, not referenced; MONAI's config merging (several
``--config_file``) would tie a bundle to the paths of the package that made it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TEMPLATE_DIR", "TEMPLATE_CONFIGS", "RECORD_FILE", "bundle_settings", "render_config", "record_configs",
           "sync_bundle", "write_json"]

TEMPLATE_DIR = Path(__file__).parent / "template"
TEMPLATE_CONFIGS = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "tta.json")
TWO_D_ONLY = ("tta.json",)  # SAM-DA's test-time adaptation works on images
RECORD_FILE = "medsa_template.json"  # beside configs/: what each config was rendered with (see _record)
_LEGACY_RECORD = "medsa_template"  # where bundles of medsa-monai 0.1 kept it: a key of metadata.json


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
    """What ``medsa_template.json`` keeps of a rendered config: a fingerprint of its components, the settings the
    bundle chose, and a fingerprint of every setting's value, so a later sync can tell a hand edit from a template
    change."""
    settings = {k: v for k, v in config.items() if _is_setting(k, v)}
    components = {k: v for k, v in config.items() if k not in settings}
    return {"components": _digest(components), "settings": sorted(explicit),
            "values": {k: _digest(v) for k, v in settings.items()}}


def _recorded(bundle_dir: Path) -> dict[str, dict]:
    """What each config was rendered with: ``medsa_template.json``, or the ``metadata.json`` key where medsa-monai
    0.1 kept it."""
    record, meta = bundle_dir / RECORD_FILE, bundle_dir / "configs" / "metadata.json"
    if record.is_file():
        return json.loads(record.read_text())
    return json.loads(meta.read_text()).get(_LEGACY_RECORD, {}) if meta.is_file() else {}


def record_configs(configs: Mapping[str, Mapping], settings: Mapping[str, Mapping]) -> dict[str, dict]:
    """The record of rendered ``configs`` (by file name) with the ``settings`` each chose, as ``medsa_template.json``
    holds it."""
    return {file: _record(config, settings.get(file, {})) for file, config in configs.items()}


def bundle_settings(bundle_dir: str | Path) -> dict[str, dict]:
    """Per config file of a bundle, its settings (none for a config the bundle lacks, e.g. one a newer template
    added): the values it chose when it was made or last synced, and any setting changed by hand since; every other
    setting follows the template, and a setting the template no longer has is dropped.

    The rest of a config (its components and sections) must be what the template rendered then (its fingerprint is
    in ``medsa_template.json``) or today's template; anything else was edited by hand.

    Raises:
        ValueError: naming the configs and keys edited by hand.
    """
    configs = Path(bundle_dir) / "configs"
    recorded = _recorded(Path(bundle_dir))
    settings: dict[str, dict] = {}
    problems = []
    train = json.loads((configs / "train.json").read_text()) if (configs / "train.json").is_file() else {}
    dims = train.get("bundle_plan", {}).get("spatial_dims", 3)
    for name in TEMPLATE_CONFIGS:
        path = configs / name
        if not path.is_file():
            if dims == 2 or name not in TWO_D_ONLY:
                settings[name] = {}
            continue
        chosen, edited = _own_settings(_template(name), json.loads(path.read_text()), recorded.get(name))
        settings[name] = chosen
        problems += [f"{path}: {problem}" for problem in edited]
    if problems:
        raise ValueError("the bundle's components were edited by hand, so a sync would lose the edits; move each "
                         "change into the template (medsa_monai/bundle/template) or into a setting:\n  "
                         + "\n  ".join(problems))
    return settings


def _own_settings(template: Mapping, own: Mapping, record: Mapping | None) -> tuple[dict, list[str]]:
    """The settings a config chose, and what of it was edited by hand. With a record, what was a setting when it
    was rendered is read from the record (the template may have turned a setting into a component since)."""
    if record is None:  # not made by create or sync: what differs from the template is its own
        mine = {k: v for k, v in own.items() if _is_setting(k, template.get(k, v))}
        chosen = {k: v for k, v in mine.items() if template.get(k) != v}
    else:
        mine = {k: v for k, v in own.items() if k in record["values"]}
        chosen = {k: v for k, v in mine.items() if k in record["settings"] or _digest(v) != record["values"][k]}
    components = {k: v for k, v in own.items() if k not in mine}
    template_components = {k: v for k, v in template.items() if not _is_setting(k, v)}
    edited = []
    if _digest(components) not in ((record or {}).get("components"), _digest(template_components)):
        unknown = [k for k in components if k not in template]
        keys = [k for k in components if k in template and template[k] != components[k]]
        edited = [f"'{k}' is not a key of the template" for k in unknown]
        if keys or not unknown:
            edited.append(f"{', '.join(repr(k) for k in keys) or 'its keys'} edited by hand")
    if record is None:
        edited += [f"'{k}' is not a key of the template" for k in mine if k not in template]
    # a setting the template dropped, or made a component, goes
    chosen = {k: v for k, v in chosen.items() if k in template and _is_setting(k, template[k])}
    return chosen, edited


def sync_bundle(bundle_dir: str | Path, check: bool = False) -> list[str]:
    """Rewrite a bundle's configs from the current template, keeping its settings, and record them in
    ``medsa_template.json`` (moving a record that ``metadata.json`` held there); with ``check``, write nothing.

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
                write_json(path, rendered)
    if (configs / "logging.conf").read_text() != (TEMPLATE_DIR / "logging.conf").read_text():
        changed.append("logging.conf")
        if not check:
            shutil.copy(TEMPLATE_DIR / "logging.conf", configs / "logging.conf")
    record_path = Path(bundle_dir) / RECORD_FILE
    if not record_path.is_file() or json.loads(record_path.read_text()) != records:
        changed.append(RECORD_FILE)
        if not check:
            write_json(record_path, records)
    meta_path = configs / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if _LEGACY_RECORD in meta:
        changed.append("metadata.json")
        if not check:
            write_json(meta_path, {k: v for k, v in meta.items() if k != _LEGACY_RECORD})
    return changed


def write_json(path: Path, data: Mapping) -> None:
    """A config or metadata file as the bundles keep them (4-space indent, a final newline)."""
    path.write_text(json.dumps(data, indent=4) + "\n")
