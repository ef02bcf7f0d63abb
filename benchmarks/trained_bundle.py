"""A trained bundle model as the benchmarks that score it on its own split load it: command-line arguments, then
the bundle's predictor with the trained weights (the predictor settings its training calibrated)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from medsa_monai.bundle.overrides import parse_overrides
from medsa_monai.networks.checkpoint import resize_position_tables


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bundle``, ``--data``, ``--model``, ``--seed`` and ``--set``."""
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, type=Path, help="model.pt or checkpoint_epoch=N.pt")
    parser.add_argument("--seed", type=int, default=0, help="the training run's seed (it draws the split)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="bundle settings")


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
