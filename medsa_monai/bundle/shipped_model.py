"""The trained model a packed bundle ships: checked against the bundle's network, small where the base was frozen.

``medsa bundle pack <bundle> --model <file>`` puts ``<file>`` in the archive as ``models/model.pt``. Before it does,
:func:`stage_model` reads the file (``weights_only=True``), builds the network of the bundle's
``configs/inference.json`` (on the meta device: shapes only, no weights, no SAM checkpoint needed) and checks that
every tensor of the file has a place of the same shape there, so a model of another label set, channel count or
variant is refused naming both files. Its SAM variant and image size come from the file (the record of shared
weights, which also names the trainable preset, or the shapes of a whole state dict) and are written into the
packed configs' ``sam_variant``, ``image_size`` (and ``trainable``) when the bundle's differ, so the unpacked bundle
builds the network the model was trained as.

A whole state dict of a preset that froze the base (every preset but ``full``) is saved as shared weights (only what
trained, see :mod:`~medsa_monai.networks.weights`) when the bundle holds the base checkpoint and the file's frozen
tensors equal it exactly; a SAM-DA model of ``vit_b`` is then about 3 MB instead of 375 MB.

The plan the model was trained with (``plan.json`` beside it, which training writes) goes into the archive as
``models/plan.json``: the values a run may override where it differs from the bundle's (a patch, a spacing) are
written into the packed configs' settings, then the packed bundle's plan is checked against it, so that the
unpacked bundle checks every run against it too; a model trained with another plan (other labels, normalisation,
channels...) is refused, naming both and the first differing key.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from ..networks.checkpoint import describe_state_dict, load_checkpoint_file, state_mismatch
from ..networks.presets import SAM_GROUPS, TRAINABLE_PRESETS, parameter_group
from ..networks.weights import WEIGHTS_RECORD, is_trained_weights, saved_keys, trained_weights
from ..planning.plan import OVERRIDABLE, Plan, PlanError, check_model_plan, model_plan_file
from .large_files import large_file_entries

__all__ = ["StagedModel", "stage_model"]

logger = logging.getLogger(__name__)

MODEL_MEMBER = "models/model.pt"
PLAN_MEMBER = "models/plan.json"


@dataclass
class StagedModel:
    """What packing a model puts in the archive: bundle-relative path -> bytes (``models/model.pt`` and the
    configs whose settings changed), and the record of shared weights (``None`` for a whole state dict)."""

    members: dict[str, bytes] = field(default_factory=dict)
    record: dict | None = None


def _read(model: Path) -> dict:
    state = load_checkpoint_file(model)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for k, v in state.items()
                                              if k != WEIGHTS_RECORD):
        raise ValueError(f"model file '{model}' is not a state dict ({{key: tensor}}, as models/model.pt of a "
                         f"trained bundle); training checkpoints (checkpoint_epoch=N.pt) hold the model under "
                         f"'model'")
    return state


def _model_settings(model: Path, state: dict) -> dict:
    """``sam_variant`` and ``image_size`` the weights were trained with (and ``trainable``, which shared weights
    record)."""
    if is_trained_weights(state):
        record = state[WEIGHTS_RECORD]
        return {"sam_variant": record["sam_variant"], "image_size": int(record["image_size"]),
                "trainable": record["trainable"]}
    variant = describe_state_dict(state)
    pos_embed = state.get("image_encoder.pos_embed")
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if pos_embed is None or patch is None or variant.startswith("no SAM"):
        raise ValueError(f"model file '{model}' holds no MedSA network ({variant})")
    return {"sam_variant": variant.split()[0], "image_size": int(pos_embed.shape[1]) * int(patch.shape[-1])}


def _configs(root: Path) -> dict[str, dict]:
    configs = {}
    for path in sorted((root / "configs").glob("*.json")):
        if path.name == "metadata.json":
            continue
        try:
            configs[f"configs/{path.name}"] = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"'{path}' is not valid JSON: {error}") from None
    if "configs/inference.json" not in configs:
        raise FileNotFoundError(f"'{root / 'configs' / 'inference.json'}' not found: packing a model needs the "
                                f"bundle's inference config to check the model against")
    return configs


def _network(root: Path, inference: dict, sam_checkpoint: str | None, meta: bool):
    parser = ConfigParser(dict(inference))
    parser["bundle_root"] = str(root)
    parser["network_def"]["sam_checkpoint"] = sam_checkpoint
    if meta:
        with torch.device("meta"):
            return parser.get_parsed_content("network_def")
    return parser.get_parsed_content("network_def")


def _check_fits(model: Path, state: dict, network, root: Path) -> None:
    """Every tensor of the file has a place of its shape in the bundle's network, and every tensor the network
    needs from the file (all of them for a whole state dict; what trained for shared weights) is there."""
    tensors = {k: v for k, v in state.items() if k != WEIGHTS_RECORD}
    needed = saved_keys(network) if is_trained_weights(state) else None
    details = state_mismatch(network.state_dict(), tensors, needed)
    if details:
        raise ValueError(f"model file '{model}' does not fit the network of '{root / 'configs' / 'inference.json'}' "
                         f"({network.in_channels} input channels, {network.out_channels} output channels, "
                         f"trainable={network.trainable!r}; the file looks like {describe_state_dict(tensors)}): "
                         f"{details}")


def _preset_of_whole_state(root: Path, inference: dict, state: dict, settings: dict) -> str | None:
    """The trainable preset whose network has exactly the keys of a whole state dict (the bundle's own preset
    first, then ``full``), built on the meta device with the file's variant and size; ``None`` when none has."""
    current = inference.get("trainable")
    for preset in dict.fromkeys([current, "full", *TRAINABLE_PRESETS]):
        if preset not in TRAINABLE_PRESETS:
            continue
        config = {**inference, **settings, "trainable": preset}
        try:
            network = _network(root, config, None, meta=True)
        except Exception:  # a preset this bundle's network cannot take
            continue
        if set(network.state_dict()) == set(state):
            return preset
    return None


def _bundle_plan(root: Path, inference: dict):
    parser = ConfigParser(dict(inference))
    parser["bundle_root"] = str(root)
    parser["plan"]["model_file"] = None  # the bundle's own model is not the one packed
    try:
        return parser.get_parsed_content("plan")
    except Exception as error:  # MONAI's parser wraps what the plan raises
        raise ValueError(f"'{root / 'configs' / 'inference.json'}': {error.__cause__ or error}") from None


def _adopt_run_values(trained, root: Path, configs: dict[str, dict], staged: StagedModel) -> dict:
    """Set, in every packed config that has the setting, the values a run may override (:data:`OVERRIDABLE`, e.g.
    ``patch_size``) where the model's plan differs from the bundle's; return them."""
    wanted, bundled = trained.to_dict(), _bundle_plan(root, configs["configs/inference.json"]).to_dict()
    adopted = {key: wanted[key] for key in OVERRIDABLE if key != "datalist_file" and wanted[key] != bundled[key]}
    for rel, config in configs.items():
        changed = {k: v for k, v in adopted.items() if k in config and config[k] != v}
        if changed:
            config.update(changed)
            staged.members[rel] = (json.dumps(config, indent=4, ensure_ascii=False) + "\n").encode("utf-8")
    return adopted


def _check_plan(model: Path, trained: Path, root: Path, inference: dict) -> None:
    """The packed bundle's plan (``bundle_plan`` with its settings) is the one ``model`` was trained with."""
    plan = _bundle_plan(root, inference)
    source = f"the packed bundle's plan ('{root / 'configs' / 'inference.json'}', bundle_plan and settings)"
    try:
        check_model_plan(model, plan, source, trained, advice=f"pack it into a bundle made from that plan "
                                                              f"(`medsa bundle create --plan {trained}`)")
    except PlanError as error:
        raise ValueError(str(error)) from None


def _base_candidates(root: Path, variant: str) -> list[Path]:
    """Local SAM checkpoints a whole state dict may have been trained on: the variant's official file in
    ``models/`` and every file ``large_files.yml`` lists that is present."""
    from ..training.checkpoints import default_sam_checkpoint

    official = default_sam_checkpoint(root, variant)
    paths = ([Path(official)] if official else []) + [root / e["path"] for e in large_file_entries(root)]
    unique = dict.fromkeys(p for p in paths if p.is_file() and p.suffix in (".pth", ".pt"))
    return list(unique)


def _as_shared_weights(root: Path, state: dict, inference: dict, settings: dict) -> bytes | None:
    """Bytes of the shared weights of a whole state dict whose frozen tensors are one of the bundle's base
    checkpoints exactly; ``None`` when the preset is ``full`` or no base matches."""
    for base in _base_candidates(root, settings["sam_variant"]):
        try:
            network = _network(root, inference, str(base), meta=False)
        except Exception:  # another variant or size: not this model's base
            continue
        if network.trainable == "full":
            return None
        frozen, trained = network.state_dict(), set(saved_keys(network))
        if all(k in state and torch.equal(state[k], frozen[k]) for k in frozen
               if parameter_group(k) in SAM_GROUPS and k not in trained):
            network.load_state_dict(state)
            buffer = io.BytesIO()
            torch.save(trained_weights(network), buffer)
            return buffer.getvalue()
    return None


def stage_model(bundle_dir: str | Path, model: str | Path) -> StagedModel:
    """Check ``model`` against the bundle's network and return what packing it adds to the archive."""
    root, model = Path(bundle_dir), Path(model)
    state = _read(model)
    settings = _model_settings(model, state)
    configs = _configs(root)
    staged = StagedModel(record=dict(state[WEIGHTS_RECORD]) if is_trained_weights(state) else None)
    if "trainable" not in settings:  # a whole state dict does not record its preset: the one whose parts it holds
        preset = _preset_of_whole_state(root, configs["configs/inference.json"], state, settings)
        if preset is not None:
            settings["trainable"] = preset
    for rel, config in configs.items():
        changed = {k: v for k, v in settings.items() if k in config and config[k] != v}
        if changed:
            config.update(changed)
            staged.members[rel] = (json.dumps(config, indent=4, ensure_ascii=False) + "\n").encode("utf-8")
    if any(rel in staged.members for rel in configs):
        logger.info("packed configs set to what the model was trained as: %s", ", ".join(
            f"{k}={v}" for k, v in settings.items()))
    inference = configs["configs/inference.json"]
    trained = model_plan_file(model)
    if trained is not None:  # the run's values (a patch, a spacing) become the packed configs' settings
        adopted = _adopt_run_values(Plan.load(trained), root, configs, staged)
        if adopted:
            logger.info("packed configs set to the values the model was trained with: %s", ", ".join(
                f"{k}={v}" for k, v in adopted.items()))
    _check_fits(model, state, _network(root, inference, None, meta=True), root)
    if trained is not None:
        _check_plan(model, trained, root, inference)
        staged.members[PLAN_MEMBER] = (json.dumps(Plan.load(trained).bundled(), indent=2) + "\n").encode("utf-8")
    else:
        logger.warning("'%s' has no plan.json beside it (trained by an earlier version or elsewhere): the packed "
                       "bundle cannot check the plan it runs with against the model's", model)

    shared = None if staged.record is not None else _as_shared_weights(root, state, inference, settings)
    if shared is not None:
        staged.members[MODEL_MEMBER] = shared
        staged.record = dict(torch.load(io.BytesIO(shared), map_location="meta", weights_only=True)[WEIGHTS_RECORD])
        logger.info("'%s' saved as shared weights (%.1f MiB instead of %.1f MiB): only what trained, for the base "
                    "'%s'", model, len(shared) / 2**20, model.stat().st_size / 2**20, staged.record["base"]["file"])
    else:
        staged.members[MODEL_MEMBER] = model.read_bytes()
    return staged
