"""Predict a folder of images with a trained bundle: label maps in the original geometry, optionally the class
probabilities (for ensembling), mirroring test-time augmentation, and DICOM series in, DICOM SEG out."""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from pathlib import Path

from monai.bundle import ConfigParser

from ..conversion.dicom_series import check_series, is_dicom_file, modality_fits, series_to_nifti
from ..data.atomic import remove_stale_temporaries
from ..data.writers import IMAGE_ENDINGS, case_name
from ..networks.checkpoint import CheckpointMismatchError, describe_state_dict, load_checkpoint_file, state_mismatch
from ..networks.weights import WEIGHTS_RECORD, is_trained_weights, saved_keys
from ..planning.plan import (
    OVERRIDABLE,
    TRAINED_PLAN,
    TRAINING_OVERRIDES,
    Plan,
    check_model_plan,
    model_plan_file,
)

__all__ = ["predict_folder", "input_cases", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("nifti", "seg")

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def input_cases(input_dir: str | Path, pattern: str | None = None) -> list[dict]:
    """The cases of a folder of images: ``[{"image": file or [files], "case": name}]``.

    Files are those matching ``pattern`` (default: every NIfTI, NRRD, MHA, PNG, JPEG, BMP and TIFF file). When every
    name ends in nnU-Net's channel suffix (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``...), the channels of a
    case are grouped, in suffix order, and the case is named without the suffix. A folder of DICOM files is one
    case named by the folder, and so is each sub-folder holding DICOM files (``"dicom"`` gives the series folder).
    """
    folder = Path(input_dir)
    series = _dicom_series_folders(folder) if pattern is None else []
    if series:
        return [{"image": str(path.resolve()), "case": path.name, "dicom": str(path.resolve())} for path in series]
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


def _dicom_series_folders(folder: Path) -> list[Path]:
    """``[folder]`` when it holds DICOM files itself, else its sub-folders that do (none: ``[]``)."""
    def holds_dicom(path: Path) -> bool:
        return any(p.is_file() and is_dicom_file(p) for p in path.iterdir())

    if not folder.is_dir():
        return []
    if holds_dicom(folder):
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and holds_dicom(p))


def _dicom_as_nifti(cases: list[dict], plan: Plan, scratch: Path) -> None:
    """Check each DICOM series case (complete, one orientation, the modality the plan's model expects) and read it
    into a NIfTI file in ``scratch``, which the case's ``image`` then names."""
    expected = (plan.modality or {}).get("0") or (plan.normalization or [{}])[0].get("modality")
    expected = None if expected in (None, "unknown") else expected
    for case in cases:
        if "dicom" not in case:
            continue
        info = check_series(case["dicom"])
        if expected is not None and not modality_fits(expected, info.modality):
            raise ValueError(f"DICOM series '{case['dicom']}' has modality {info.modality!r}; the model was trained "
                             f"on {expected!r} images (the plan's modality)")
        case["image"] = str(series_to_nifti(case["dicom"], scratch / f"{case['case']}.nii.gz"))


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
    output_format: str = "nifti",
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
        output_format: ``"nifti"``; ``"seg"`` also writes ``<case>.dcm``, a DICOM SEG referencing the series, for
            each DICOM series input.
    """
    output_dir = Path(output_dir)
    checkpoint = Path(checkpoint)
    cases = _checked_cases(input_dir, pattern, checkpoint, output_format)
    trained_with = checkpoint.resolve().parent.parent / TRAINING_OVERRIDES
    recorded = json.loads(trained_with.read_text()) if trained_with.is_file() else {}
    plan_file = _plan_of_model(checkpoint, plan_file, recorded)
    stale = remove_stale_temporaries(output_dir)
    if stale:
        logger.info("removed %d unfinished file(s) of an interrupted run from %s", len(stale), output_dir)
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
    # the network must be built as it was trained (`medsa train` recorded its --set values)
    parser.update({k: v for k, v in recorded.items() if k in parser})  # sam_checkpoint: the base of shared weights
    parser.update({"dataset_dir": str(Path(input_dir).resolve()), "output_dir": str(output_dir.resolve()),
                   "plan_file": None if plan_file is None else str(plan_file),
                   "model_file": str(checkpoint.resolve()), "num_workers": 0, "output_postfix": "",
                   "ckpt_dir": str(checkpoint.resolve().parent),  # where the propagation weight was calibrated
                   "probabilities_dir": str(output_dir.resolve()) if save_probabilities else None,
                   **(overrides or {})})
    scratch = tempfile.TemporaryDirectory(prefix="medsa_dicom_") if any("dicom" in c for c in cases) else None
    if scratch is not None:
        _dicom_as_nifti(cases, parser.get_parsed_content("plan"), Path(scratch.name))
    parser["datalist"] = [{k: v for k, v in c.items() if k != "dicom"} for c in cases]
    if mirror:
        dims = parser.get_parsed_content("plan").spatial_dims
        parser["inferer"] = {"_target_": "medsa_monai.predictor.MirroringInferer",
                             "inferer": copy.deepcopy(parser["inferer"]), "axes": list(range(dims))}
    described_by = f"plan '{plan_file}'" if plan_file else f"bundle '{Path(bundle_dir) / 'configs' / 'inference.json'}'"
    _check_model_fits(parser.get_parsed_content("network_def"), checkpoint, described_by)
    parser.get_parsed_content("initialize")
    try:
        parser.get_parsed_content("evaluator").run()
    finally:
        if scratch is not None:
            scratch.cleanup()
    if output_format == "seg":
        _write_segs(cases, output_dir, parser.get_parsed_content("plan"), Path(bundle_dir).name)
    if plan_file is not None:  # what the predictions were made with: `medsa ensemble` checks the folders agree
        Plan.load(plan_file).save(output_dir / TRAINED_PLAN)
    written = {f"{c['case']}{suffix}" for c in cases for suffix in (".nii.gz", ".png", ".dcm")}
    return sorted(p for p in output_dir.iterdir() if p.name in written)


def _checked_cases(input_dir: str | Path, pattern: str | None, checkpoint: Path, output_format: str) -> list[dict]:
    """The input's cases (:func:`input_cases`), after checking that the model file exists, the input holds cases and
    the output format fits them."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"model file '{checkpoint}' does not exist")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format {output_format!r} is not one of {OUTPUT_FORMATS}")
    cases = input_cases(input_dir, pattern)
    if not cases:
        raise FileNotFoundError(f"no images in '{input_dir}'" + (f" match '{pattern}'" if pattern else ""))
    if output_format == "seg" and not all("dicom" in c for c in cases):
        raise ValueError(f"--output-format seg writes DICOM SEG objects, which reference DICOM series; '{input_dir}' "
                         f"holds no DICOM series (a folder of DICOM files, or sub-folders of them)")
    return cases


def _write_segs(cases: list[dict], output_dir: Path, plan: Plan, bundle_name: str) -> None:
    """``<case>.dcm``, a DICOM SEG of each case's label map referencing its series; a case that segments nothing
    gets none (:func:`~.dicom_seg.write_dicom_seg` says so)."""
    from .dicom_seg import write_dicom_seg

    for case in cases:
        write_dicom_seg(output_dir / f"{case['case']}.nii.gz", case["dicom"], output_dir / f"{case['case']}.dcm",
                        plan.label_spec, series_description=f"{bundle_name} segmentation")


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


def _plan_of_model(checkpoint: Path, plan_file: str | Path | None, recorded: dict) -> str | Path | None:
    """The plan to predict with: the one training wrote beside the model (:func:`model_plan_file`), checked
    against ``plan_file`` with the plan values ``medsa train --set`` gave (``recorded``) when both exist (a
    difference in a key the model depends on is an error naming both files and the key); ``plan_file`` alone for a
    model of an earlier version, with a warning that it cannot be checked."""
    trained = model_plan_file(checkpoint)
    if trained is None:
        if plan_file is not None:
            logger.warning("'%s' has no %s beside it (trained by an earlier version or elsewhere): whether it was "
                           "trained with '%s' cannot be checked", checkpoint, TRAINED_PLAN, plan_file)
        return plan_file
    if plan_file is None:
        logger.info("predicting with the plan the model was trained with, '%s'", trained)
        return str(trained)
    given = {k: v for k, v in recorded.items() if k in OVERRIDABLE and v is not None}
    plan = Plan.from_dict({**Plan.load(plan_file).to_dict(), **given}, source=f"plan file '{plan_file}'")
    source = f"'{plan_file}'" + (" with " + ", ".join(f"{k}={v!r}" for k, v in given.items()) if given else "")
    check_model_plan(checkpoint, plan, source, trained,
                     advice="leave out --plan to predict with the model's own plan")
    return plan_file
