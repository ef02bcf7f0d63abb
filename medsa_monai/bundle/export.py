"""TorchScript export of a bundle's network in automatic mode (image in, logits out, no prompts).

:class:`~medsa_monai.networks.MedSA` compiles with ``torch.jit.script`` in automatic mode, so MONAI's own command
exports it as the MONAI model zoo runs it (its CI check ``verify_torchscript`` scripts, it does not trace)::

    python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \
        --meta_file configs/metadata.json --config_file configs/inference.json

The scripted network keeps its input checks (rank, channels, NaN) and takes inputs of any size; it refuses prompts
(they go to the PyTorch network or to the ONNX prompt decoder, :mod:`~medsa_monai.export.onnx`).
:func:`export_torchscript` also checks the export against the eager network at two input sizes before saving;
``use_trace=True`` records a trace instead (the network always resizes when traced, so one trace serves any size).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from monai.utils import ensure_tuple

from ..data.atomic import atomic_path
from ..networks.checkpoint import load_checkpoint_file

__all__ = ["export_bundle_onnx", "export_torchscript", "load_bundle_network", "verify_torchscript",
           "default_input_shape"]


def default_input_shape(parser: ConfigParser) -> tuple[int, ...]:
    """``(1, C, *spatial_shape)`` from the bundle metadata's ``network_data_format#inputs#image``."""
    image = parser.get("_meta_#network_data_format#inputs#image")
    if not image or not image.get("spatial_shape"):
        raise ValueError("the metadata gives no input image shape; pass input_shape")
    return (1, int(image.get("num_channels", 1)), *(int(s) for s in image["spatial_shape"]))


def _second_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Another input shape to check a trace on: each spatial size changed, so a size baked in shows."""
    return (*shape[:2], *(max(8, s + 8 if s < 64 else s - 16) for s in shape[2:]))


def verify_torchscript(exported: torch.nn.Module | str | Path, network: torch.nn.Module,
                       input_shapes: Sequence[Sequence[int]], atol: float = 1e-5, device: str | torch.device = "cpu",
                       seed: int = 0) -> float:
    """Largest absolute difference between ``exported`` (a module or a TorchScript file) and the eager
    ``network`` on random inputs of ``input_shapes``; raise ``AssertionError`` above ``atol`` or on a shape
    mismatch."""
    if not isinstance(exported, torch.nn.Module):
        exported = torch.jit.load(str(exported), map_location=device)
    network = network.eval()
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for shape in input_shapes:
            image = torch.rand(tuple(shape), generator=generator).to(device)
            expected, got = network(image), exported(image)
            if expected.shape != got.shape:
                raise AssertionError(f"input {tuple(shape)}: exported output {tuple(got.shape)}, "
                                     f"eager output {tuple(expected.shape)}")
            difference = (expected - got).abs().max().item()
            if not difference <= atol:
                raise AssertionError(f"input {tuple(shape)}: exported output differs from the eager one by "
                                     f"{difference:.3g} > {atol:g}")
            worst = max(worst, difference)
    return worst


def load_bundle_network(config_file: str | Sequence[str], ckpt_file: str | Path,
                        meta_file: str | Sequence[str] | None = None, net_id: str = "network_def",
                        key_in_ckpt: str = "", **override: Any) -> tuple[torch.nn.Module, ConfigParser]:
    """``net_id`` of a bundle's config with the weights of ``ckpt_file`` (shared weights on their base), in eval
    mode on the CPU, and the parser it came from."""
    parser = ConfigParser()
    parser.read_config(f=config_file)
    if meta_file is not None:
        parser.read_meta(f=meta_file)
    parser["model_file"] = str(ckpt_file)  # shared weights: the network is built on their base checkpoint
    for key, value in override.items():
        parser[key] = value
    network = parser.get_parsed_content(net_id)
    state = load_checkpoint_file(ckpt_file)
    network.load_state_dict(state[key_in_ckpt] if key_in_ckpt else state)
    return network.eval(), parser


def export_bundle_onnx(config_file: str | Sequence[str], ckpt_file: str | Path, output_dir: str | Path,
                       meta_file: str | Sequence[str] | None = None, atol: float = 1e-4, **override: Any
                       ) -> tuple[dict[str, Path], dict[str, float]]:
    """The ONNX graphs of a bundle's network (:func:`~medsa_monai.export.export_onnx`), checked in ONNX Runtime
    against PyTorch within ``atol`` before they are kept; returns their paths and the largest differences."""
    from ..export.onnx import export_checked

    network, _ = load_bundle_network(config_file, ckpt_file, meta_file, **override)
    return export_checked(network, output_dir, atol)


def export_torchscript(
    config_file: str | Sequence[str],
    ckpt_file: str | Path,
    filepath: str | Path,
    meta_file: str | Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    net_id: str = "network_def",
    key_in_ckpt: str = "",
    atol: float = 1e-5,
    use_trace: bool = False,
    **override: Any,
) -> Path:
    """Script (or trace) ``net_id`` of a bundle with the weights of ``ckpt_file`` and save it as TorchScript.

    As ``python -m monai.bundle ckpt_export`` (the same metadata and config files are stored in the TorchScript
    file), but on ``device``, and checked against the eager network at ``input_shape`` and at a second size (within
    ``atol``) before it is saved.

    Args:
        config_file: the bundle config(s) defining ``net_id``, stored in the export (``configs/inference.json``).
        ckpt_file: weights, a state dict (``models/model.pt``) or a nested checkpoint with ``key_in_ckpt``.
        filepath: the TorchScript file to write (``.ts`` added when it has no suffix).
        meta_file: the bundle's ``metadata.json``, stored in the export and read for the default input shape.
        input_shape: input ``(1, C, H, W[, D])`` to check the export on (and to trace); default from the metadata.
        device: where to export; a traced model runs on that device type.
        use_trace: ``torch.jit.trace`` instead of ``torch.jit.script``.
        override: config values to change, e.g. ``sam_variant="vit_b"``, ``image_size=1024``.

    Returns:
        The path written.
    """
    network, parser = load_bundle_network(config_file, ckpt_file, meta_file, net_id, key_in_ckpt, **override)
    network = network.to(device)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else default_input_shape(parser)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the checks below are what count
        warnings.filterwarnings("ignore", message=".*is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*is deprecated", category=DeprecationWarning)
        exported = (torch.jit.trace(network, torch.rand(shape, device=device)) if use_trace
                    else torch.jit.script(network))
    verify_torchscript(exported, network, [shape, _second_shape(shape)], atol=atol, device=device)

    filepath = Path(filepath)
    if not filepath.suffix:
        filepath = filepath.with_suffix(".ts")
    filepath.parent.mkdir(parents=True, exist_ok=True)
    extra_files = {}
    for name in ensure_tuple(config_file):
        stem = os.path.splitext(os.path.basename(str(name)))[0]
        extra_files[f"{stem}.json"] = json.dumps(ConfigParser.load_config_file(str(name))).encode()
    with atomic_path(filepath) as tmp:
        save_net_with_metadata(exported, str(tmp), include_config_vals=False, append_timestamp=False,
                               meta_values=parser.get().get("_meta_"), more_extra_files=extra_files)
    return filepath
