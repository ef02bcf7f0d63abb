"""A trained bundle model as the benchmarks that score it on its own split load it: command-line arguments, the
bundle's predictor with the trained weights (the predictor settings its training calibrated), and the split's cases
it is scored on."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from medsa_monai.bundle.overrides import parse_overrides
from medsa_monai.evaluation.report import label_map
from medsa_monai.networks.checkpoint import resize_position_tables


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bundle``, ``--data``, ``--model``, ``--seed`` and ``--set``."""
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, type=Path, help="model.pt or checkpoint_epoch=N.pt")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (it draws the split)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="bundle settings")


def add_case_arguments(parser: argparse.ArgumentParser, part: str = "held-out", cases: int | None = None,
                       clicks: int = 20) -> None:
    """``--part``, ``--cases`` and ``--clicks``: which of the split's cases to score, and each session's clicks."""
    parser.add_argument("--part", choices=("held-out", "training"), default=part,
                        help="the split's part (held-out: the bundle evaluation's cases)")
    parser.add_argument("--cases", type=int, default=cases,
                        help="the first N cases of the part" + (f" (default: {cases})" if cases else " (default: all)"))
    parser.add_argument("--clicks", type=int, default=clicks)


def trained_predictor(args: argparse.Namespace, **overrides):
    """The bundle's predictor with the weights of ``args.model`` (a network built at another ``image_size`` gets
    its position tables interpolated), evaluated; and the config parser."""
    config = ConfigParser()
    config.read_config(str(args.bundle / "configs" / "train.json"))
    config.read_meta(str(args.bundle / "configs" / "metadata.json"))
    config.update({"dataset_dir": args.data, "bundle_root": str(args.model.parent.parent), "seed": args.seed,
                   "ckpt_dir": str(args.model.parent), "sam_checkpoint": None,
                   **parse_overrides(args.set), **overrides})
    network = config.get_parsed_content("network")
    state = torch.load(args.model, weights_only=True, map_location="cpu")
    state = state.get("model", state)
    network.load_state_dict(resize_position_tables(state, network.state_dict()))
    network.eval()
    return config.get_parsed_content("predictor"), config


def set_predictor_settings(predictor, settings: dict) -> None:
    """Set the predictor attributes ``settings`` names; a name the predictor lacks ends the run naming it."""
    for name, value in settings.items():
        if not hasattr(predictor, name):
            raise SystemExit(f"--predictor-settings: the predictor has no setting '{name}'")
        setattr(predictor, name, value)


def split_cases(args: argparse.Namespace, config: ConfigParser, predictor) -> list[tuple[torch.Tensor, np.ndarray]]:
    """The first ``args.cases`` cases of the split's ``args.part`` through the bundle's validation preprocessing, as
    ``(image (1, C, *spatial), reference)``: the reference a label map where the predictor has a background channel
    (exclusive classes), else the ``(K, *spatial)`` region masks."""
    preprocessing = config.get_parsed_content("validate#preprocessing")
    part = config.get_parsed_content("split")[0 if args.part == "training" else 1]
    cases = []
    for item in part[:args.cases]:
        item = preprocessing(dict(item))
        label = torch.as_tensor(item["label"])
        reference = label_map(label) if predictor.background_channel else label.numpy()
        cases.append((torch.as_tensor(item["image"])[None], reference))
    return cases
