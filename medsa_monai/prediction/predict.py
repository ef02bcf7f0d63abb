"""Predict a folder of images with a trained bundle: label maps in the original geometry, optionally the class
probabilities (for ensembling) and mirroring test-time augmentation."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from monai.bundle import ConfigParser

from ..data.atomic import remove_stale_temporaries

__all__ = ["predict_folder"]

logger = logging.getLogger(__name__)


def predict_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    checkpoint: str | Path,
    bundle_dir: str | Path,
    plan_file: str | Path | None = None,
    pattern: str = "*.nii.gz",
    mirror: bool = False,
    save_probabilities: bool = False,
    overrides: dict | None = None,
) -> list[Path]:
    """Run the bundle's ``inference.json`` on ``<input_dir>/<pattern>``; write ``<case>.nii.gz`` label maps (and
    ``<case>.npz`` probabilities) to ``output_dir``, each file whole or not at all.

    Args:
        checkpoint: the trained weights (``model.pt``, or a ``checkpoint_epoch=N.pt`` training state).
        bundle_dir: the bundle folder (``configs/inference.json``).
        plan_file: the plan the model was trained with (``medsa plan``), if any.
        mirror: average the logits over mirror images along all spatial axes (:class:`MirroringInferer`).
        save_probabilities: also write the softmax probabilities in the original geometry.
        overrides: further config overrides (id: value). Those that ``medsa train`` recorded in
            ``<run>/training_overrides.json`` beside ``<run>/models/`` are applied first.
    """
    output_dir = Path(output_dir)
    checkpoint = Path(checkpoint)
    trained_with = checkpoint.resolve().parent.parent / "training_overrides.json"
    stale = remove_stale_temporaries(output_dir)
    if stale:
        logger.info("removed %d unfinished file(s) of an interrupted run from %s", len(stale), output_dir)
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / "inference.json"))
    if trained_with.is_file():  # the network must be built as it was trained (written by `medsa train`)
        recorded = json.loads(trained_with.read_text())
        parser.update({k: v for k, v in recorded.items() if k in parser and k != "sam_checkpoint"})
    parser.update({"dataset_dir": str(Path(input_dir).resolve()), "input_pattern": pattern,
                   "output_dir": str(output_dir.resolve()), "plan_file": None if plan_file is None else str(plan_file),
                   "handlers#0#load_path": str(Path(checkpoint).resolve()), "num_workers": 0,
                   "postprocessing#transforms#3#output_postfix": "", **(overrides or {})})
    if mirror:
        dims = parser.get_parsed_content("spatial_dims")
        parser["inferer"] = {"_target_": "medsa_monai.inferers.MirroringInferer",
                             "inferer": copy.deepcopy(parser["inferer"]), "axes": list(range(dims))}
    if save_probabilities:
        transforms = parser["postprocessing#transforms"]
        transforms.insert(2, {"_target_": "medsa_monai.data.SaveProbabilitiesd", "keys": "pred",
                              "output_dir": str(output_dir.resolve())})
        parser["postprocessing#transforms"] = transforms
    if not parser.get_parsed_content("datalist"):
        raise FileNotFoundError(f"no images match '{Path(input_dir) / pattern}'")
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()
    return sorted(output_dir.glob("*.nii.gz"))
