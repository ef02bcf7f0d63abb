"""Predict a folder of images with a trained bundle: label maps in the original geometry, optionally the class
probabilities (for ensembling) and mirroring test-time augmentation."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

from monai.bundle import ConfigParser

from ..data.atomic import remove_stale_temporaries
from ..data.writers import IMAGE_ENDINGS, case_name
from ..networks.checkpoint import CheckpointMismatchError, describe_state_dict, load_checkpoint_file, state_mismatch
from ..networks.weights import WEIGHTS_RECORD, is_trained_weights, saved_keys
from ..planning.plan import TRAINED_PLAN, Plan, PlanError

__all__ = ["predict_folder", "input_cases"]

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def input_cases(input_dir: str | Path, pattern: str | None = None) -> list[dict]:
    """The cases of a folder of images: ``[{"image": file or [files], "case": name}]``.

    Files are those matching ``pattern`` (default: every NIfTI, NRRD, MHA, PNG, JPEG, BMP and TIFF file). When every
    name ends in nnU-Net's channel suffix (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``...), the channels of a
    case are grouped, in suffix order, and the case is named without the suffix.
    """
    folder = Path(input_dir)
    if pattern:
        files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().endswith(IMAGE_ENDINGS))
    names = [case_name(p) for p in files]
    matches = [_CHANNEL.match(n) for n in names]
    if files and all(matches):
        grouped: dict[str, dict[int, str]] = {}
        for path, match in zip(files, matches, strict=True):
            grouped.setdefault(match.group(1), {})[int(match.group(2))] = str(path.resolve())
        return [{"image": [c[k] for k in sorted(c)] if len(c) > 1 else next(iter(c.values())), "case": case}
                for case, c in sorted(grouped.items())]
    return [{"image": str(p.resolve()), "case": n} for p, n in zip(files, names, strict=True)]


def predict_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    checkpoint: str | Path,
    bundle_dir: str | Path,
    plan_file: str | Path | None = None,
    pattern: str | None = None,
    mirror: bool = False,
    save_probabilities: bool = False,
    overrides: dict | None = None,
) -> list[Path]:
    """Run the bundle's ``inference.json`` on the images of ``input_dir``; write one label map per case to
    ``output_dir`` (``<case>.nii.gz``, or ``<case>.png`` for PNG / JPEG / BMP / TIFF inputs; the data set's own
    label values; the input's geometry) and, with ``save_probabilities``, ``<case>.npz``; each file whole or not
    at all.

    Args:
        checkpoint: the trained weights (``model.pt``, or a ``checkpoint_epoch=N.pt`` training state).
        bundle_dir: the bundle folder (``configs/inference.json``).
        plan_file: the plan the model was trained with (``medsa plan``); by default the ``plan.json`` that
            ``medsa train`` wrote beside the model's ``models/`` folder, which a given plan must agree with.
        pattern: which files of ``input_dir`` (see :func:`input_cases`).
        mirror: average the logits over mirror images along all spatial axes (:class:`MirroringInferer`).
        save_probabilities: also write the class (or region) probabilities in the original geometry.
        overrides: further config overrides (id: value). Those that ``medsa train`` recorded in
            ``<run>/training_overrides.json`` beside ``<run>/models/`` are applied first.
    """
    output_dir = Path(output_dir)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"model file '{checkpoint}' does not exist")
    cases = input_cases(input_dir, pattern)
    if not cases:
        raise FileNotFoundError(f"no images in '{input_dir}'" + (f" match '{pattern}'" if pattern else ""))
    plan_file = _plan_of_model(checkpoint, plan_file)
    trained_with = checkpoint.resolve().parent.parent / "training_overrides.json"
    stale = remove_stale_temporaries(output_dir)
    if stale:
        logger.info("removed %d unfinished file(s) of an interrupted run from %s", len(stale), output_dir)
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
    if trained_with.is_file():  # the network must be built as it was trained (written by `medsa train`)
        recorded = json.loads(trained_with.read_text())
        parser.update({k: v for k, v in recorded.items() if k in parser})  # sam_checkpoint: the base of shared weights
    parser.update({"dataset_dir": str(Path(input_dir).resolve()), "output_dir": str(output_dir.resolve()),
                   "plan_file": None if plan_file is None else str(plan_file),
                   "model_file": str(checkpoint.resolve()), "num_workers": 0, "output_postfix": "",
                   "ckpt_dir": str(checkpoint.resolve().parent),  # where the propagation weight was calibrated
                   "probabilities_dir": str(output_dir.resolve()) if save_probabilities else None,
                   **(overrides or {})})
    parser["datalist"] = cases
    if mirror:
        dims = parser.get_parsed_content("plan").spatial_dims
        parser["inferer"] = {"_target_": "medsa_monai.predictor.MirroringInferer",
                             "inferer": copy.deepcopy(parser["inferer"]), "axes": list(range(dims))}
    described_by = f"plan '{plan_file}'" if plan_file else f"bundle '{Path(bundle_dir) / 'configs' / 'inference.json'}'"
    _check_model_fits(parser.get_parsed_content("network_def"), checkpoint, described_by)
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()
    if plan_file is not None:  # what the predictions were made with: `medsa ensemble` checks the folders agree
        Plan.load(plan_file).save(output_dir / TRAINED_PLAN)
    written = {f"{c['case']}{suffix}" for c in cases for suffix in (".nii.gz", ".png")}
    return sorted(p for p in output_dir.iterdir() if p.name in written)


def _check_model_fits(network, checkpoint: Path, described_by: str) -> None:
    """Refuse, in one line naming both files, a model that does not fit the network the plan (or bundle) builds,
    before MONAI's checkpoint loader would print every key."""
    state = load_checkpoint_file(checkpoint)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training checkpoint
        state = state["model"]
    if is_trained_weights(state):
        tensors = {k: v for k, v in state.items() if k != WEIGHTS_RECORD}
        details = state_mismatch(network.state_dict(), tensors, saved_keys(network))
    else:
        tensors = state
        details = state_mismatch(network.state_dict(), tensors)
    if details:
        raise CheckpointMismatchError(
            f"model '{checkpoint}' does not fit the network of the {described_by} ({network.sam_variant} at "
            f"{network.image_size}, {network.in_channels} input and {network.out_channels} output channels, "
            f"trainable={network.trainable!r}); the model looks like {describe_state_dict(tensors)}: {details}")


def _plan_of_model(checkpoint: Path, plan_file: str | Path | None) -> str | Path | None:
    """The plan to predict with: the one ``medsa train`` wrote beside the model (``<run>/plan.json``), checked
    against ``plan_file`` when both exist (a difference in a key the model depends on is an error naming both files
    and the key); ``plan_file`` alone for a model of an earlier version, with a warning that it cannot be checked."""
    trained = checkpoint.resolve().parent.parent / TRAINED_PLAN
    if not trained.is_file():
        if plan_file is not None:
            logger.warning("'%s' has no %s beside its models/ folder (trained by an earlier version or elsewhere): "
                           "whether it was trained with '%s' cannot be checked", checkpoint, TRAINED_PLAN, plan_file)
        return plan_file
    if plan_file is None:
        logger.info("predicting with the plan the model was trained with, '%s'", trained)
        return str(trained)
    difference = Plan.load(trained).first_difference(Plan.load(plan_file))
    if difference is not None:
        key, trained_value, given_value = difference
        raise PlanError(f"model '{checkpoint}' was trained with the plan '{trained}', whose {key} is "
                        f"{json.dumps(trained_value)}; '{plan_file}' has {json.dumps(given_value)}: leave out --plan "
                        f"to predict with the model's own plan")
    return plan_file
