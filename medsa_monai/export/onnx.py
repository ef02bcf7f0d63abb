"""ONNX export of MedSA in two graphs, as SAM's own deployment splits it: the image encoder runs once per image (on a
server), the prompt decoder once per click (in a browser or a thin client, in milliseconds).

``encoder.onnx``
    ``image`` ``(N, C, H, W)`` (2D; any ``N``, ``H``, ``W``) or ``(1, C, H, W, D)`` (3D: a slab of ``D`` slices that
    SD-Trans lets attend to each other), intensities as the network takes them -> ``image_embeddings``
    ``(N * D, E, S / 16, S / 16)`` (``E`` the mask decoder's width: 256, 128 for ``vit_nano``): resized to
    ``S = image_size``, the input layer, SAM's normalisation, the ViT with its adapters. No input checks (rank,
    channels, NaN) run inside the graph: :class:`~medsa_monai.predictor.OnnxPredictor` makes them before.

``prompt_decoder.onnx``
    One image (or slice) and one class per call:

    - ``image_embeddings`` ``(1, E, S / 16, S / 16)``, a row of the encoder's output;
    - ``point_coords`` ``(1, P, 2)`` float, ``(x, y)`` in SAM's ``S x S`` frame, ``P`` dynamic (at least 1);
    - ``point_labels`` ``(1, P)`` float: 1 foreground, 0 background, 2 and 3 a box's top-left and bottom-right
      corner, -1 padding. As ``SamPredictor``: a box is two points labelled 2 and 3 after the clicks; without a box
      the clicks end with one padding point ``(0, 0)`` labelled -1;
    - ``mask_input`` ``(1, 1, S / 4, S / 4)`` low-resolution logits of a previous prediction, used where
      ``has_mask_input`` ``(1,)`` is 1;
    - ``class_index`` ``(1,)`` int64: which class (its learned prompt token, with ``prompt_class_token``);
    - ``point_offsets`` ``(1, P)`` int64, only for networks with ``click_depth_radius``: slices between a 3D click
      and the decoded slice (0 for clicks on it, padding and box corners);

    -> ``low_res_logits`` ``(1, 1, S / 4, S / 4)``, what ``MedSA.decode`` returns for that (slice, class).

Automatic mode (no prompt) is the TorchScript export's job (:mod:`~medsa_monai.bundle.export`). Both graphs use
opset 18 (ONNX's ``Resize`` with ``antialias``, for the encoder's resize) and are exported by
``torch.onnx.export(dynamo=True)``; :func:`verify_onnx` runs them in ONNX Runtime against the PyTorch network.
The shapes, names and settings the graphs need are written beside them in ``medsa_onnx.json``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.atomic import atomic_path
from ..networks.checkpoint import load_checkpoint_file

__all__ = ["ONNX_OPSET", "ImageEncoderGraph", "PromptDecoderGraph", "export_checked", "export_onnx",
           "export_trained_onnx", "read_onnx_spec", "verify_onnx"]

logger = logging.getLogger(__name__)

ONNX_OPSET = 18
SPEC_FILE = "medsa_onnx.json"


class ImageEncoderGraph(nn.Module):
    """``MedSA.encode`` without its input checks: image ``(N, C, H, W)`` or slab ``(1, C, H, W, D)`` ->
    embeddings ``(N * D, E, S / 16, S / 16)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        depth = image.shape[-1] if self.network.spatial_dims == 3 else None
        return self.network.image_encoder(self.network.sam_frame(image, always_resize=True), depth=depth)


class PromptDecoderGraph(nn.Module):
    """One (image, class) decoded from SAM-frame prompts, as :meth:`MedSA.decode_prompts` decodes a pair that has
    points or a box (see the module docstring for the inputs)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def _point_tokens(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.network.prompt_encoder
        embedding = encoder.pe_layer._pe_encoding((coords + 0.5) / self.network.image_size)
        labels = labels[..., None]
        embedding = embedding * (labels != -1) + encoder.not_a_point_embed.weight * (labels == -1)
        for i, point in enumerate(encoder.point_embeddings):
            embedding = embedding + point.weight * (labels == i)
        return embedding

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                mask_input: torch.Tensor, has_mask_input: torch.Tensor, class_index: torch.Tensor,
                point_offsets: torch.Tensor | None = None) -> torch.Tensor:
        network = self.network
        sparse = self._point_tokens(point_coords, point_labels)
        if point_offsets is not None and network.click_depth_embed is not None:
            sparse = sparse + network.click_depth_embed(point_offsets) * (point_offsets > 0)[..., None]
        if network.prompt_class_token:
            sparse = torch.cat([sparse, network.class_prompts(class_index)[:, None]], dim=1)
        encoder = network.prompt_encoder
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has_mask * encoder.mask_downscaling(mask_input) + (1 - has_mask) * encoder.no_mask_embed.weight.reshape(
            1, -1, 1, 1)
        masks, _ = network.mask_decoder(image_embeddings, encoder.get_dense_pe(), sparse, dense,
                                        multimask_output=False)
        return masks


def _example_image(network: nn.Module, size: int) -> torch.Tensor:
    shape = (2, network.in_channels, size, size + 8) if network.spatial_dims == 2 else \
        (1, network.in_channels, size, size + 8, 3)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def _decoder_inputs(network: nn.Module, points: int = 3) -> dict[str, torch.Tensor]:
    side = network.image_size // 4
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "image_embeddings": torch.randn(1, network.prompt_encoder.embed_dim, side // 4, side // 4,
                                        generator=generator),
        "point_coords": torch.rand(1, points, 2, generator=generator) * network.image_size,
        "point_labels": torch.tensor([[1.0] + [0.0] * (points - 2) + [-1.0]]),
        "mask_input": torch.randn(1, 1, side, side, generator=generator),
        "has_mask_input": torch.ones(1),
        "class_index": torch.zeros(1, dtype=torch.long),
    }
    if network.click_depth_embed is not None:
        inputs["point_offsets"] = torch.zeros(1, points, dtype=torch.long)
    return inputs


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=ONNX_OPSET, input_names=input_names,
                                    dynamic_shapes=dynamic, verbose=False)
        program.save(str(tmp), external_data=False)


def export_onnx(network: nn.Module, output_dir: str | Path) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``prompt_decoder.onnx`` and ``medsa_onnx.json`` for ``network`` (a
    :class:`~medsa_monai.networks.MedSA`, in eval mode on the CPU) into ``output_dir``; return their paths."""
    from torch.export import Dim

    network = network.eval().cpu()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"encoder": output_dir / "encoder.onnx", "prompt_decoder": output_dir / "prompt_decoder.onnx",
             "spec": output_dir / SPEC_FILE}

    height, width = Dim("height", min=8, max=4096), Dim("width", min=8, max=4096)
    if network.spatial_dims == 2:
        image_dims = {0: Dim("batch", min=1, max=256), 2: height, 3: width}
    else:
        image_dims = {2: height, 3: width, 4: Dim("depth", min=2, max=512)}
    with torch.no_grad():
        _export(ImageEncoderGraph(network), (_example_image(network, 48),), paths["encoder"], ["image"],
                {"image": image_dims})
        inputs = _decoder_inputs(network)
        points = Dim("points", min=2, max=256)
        dynamic = {name: ({1: points} if name in ("point_coords", "point_labels", "point_offsets") else None)
                   for name in inputs}
        _export(PromptDecoderGraph(network), tuple(inputs.values()), paths["prompt_decoder"], list(inputs),
                dynamic)
    embed_dim = network.prompt_encoder.embed_dim
    spec = {
        "opset": ONNX_OPSET,
        "spatial_dims": network.spatial_dims, "in_channels": network.in_channels,
        "num_classes": network.num_classes, "out_channels": network.out_channels,
        "background_channel": network.background_channel, "image_size": network.image_size,
        "intensity": network.intensity, "sam_variant": network.sam_variant,
        "prompt_class_token": network.prompt_class_token, "click_depth_radius": network.click_depth_radius,
        "encoder": {"inputs": {"image": "(N, C, H, W)" if network.spatial_dims == 2 else "(1, C, H, W, D)"},
                    "outputs": {"image_embeddings": f"(N * D, {embed_dim}, S / 16, S / 16)"}},
        "prompt_decoder": {"inputs": {name: _shape_text(name, embed_dim) for name in inputs},
                           "outputs": {"low_res_logits": "(1, 1, S / 4, S / 4)"}},
    }
    with atomic_path(paths["spec"]) as tmp:
        Path(tmp).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return paths


def export_checked(network: nn.Module, output_dir: str | Path, atol: float = 1e-4
                   ) -> tuple[dict[str, Path], dict[str, float]]:
    """:func:`export_onnx`, then :func:`verify_onnx` within ``atol``; the graphs are removed when the check fails.
    Returns their paths and the largest differences."""
    paths = export_onnx(network, output_dir)
    try:
        differences = verify_onnx(network, paths, atol=atol)
    except AssertionError:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (ONNX Runtime against PyTorch: encoder %.1e, prompt decoder %.1e)", ", ".join(
        str(p) for p in paths.values()), differences["encoder"], differences["prompt_decoder"])
    return paths, differences


def export_trained_onnx(network: nn.Module, model_file: str | Path, output_dir: str | Path, atol: float = 1e-4
                        ) -> dict[str, Path]:
    """Load ``model_file`` into ``network`` and :func:`export_checked` it. A bundle runs it as
    ``python -m monai.bundle run exporting_onnx --config_file configs/inference.json``."""
    network.load_state_dict(load_checkpoint_file(model_file))
    return export_checked(network, output_dir, atol)[0]


def _shape_text(name: str, embed_dim: int) -> str:
    return {"image_embeddings": f"(1, {embed_dim}, S / 16, S / 16)", "point_coords": "(1, P, 2)",
            "point_labels": "(1, P)", "mask_input": "(1, 1, S / 4, S / 4)", "has_mask_input": "(1,)",
            "class_index": "(1,) int64", "point_offsets": "(1, P) int64"}[name]


def read_onnx_spec(folder: str | Path) -> dict:
    """The ``medsa_onnx.json`` written by :func:`export_onnx`, with a clear error when it is missing or damaged."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' not found: export the network with `medsa bundle export <bundle> --format "
                                f"onnx` (it writes encoder.onnx, prompt_decoder.onnx and {SPEC_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"'{path}' is not valid JSON: {error}") from None


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(network: nn.Module, paths: Mapping[str, Path], atol: float = 1e-4,
                image_shapes: list[tuple[int, ...]] | None = None, points: tuple[int, ...] = (2, 5)
                ) -> dict[str, float]:
    """Largest absolute difference between ONNX Runtime and the PyTorch ``network`` for each graph, on random
    inputs (images of ``image_shapes``, other than the export's example; decoders with ``points`` prompt points);
    raise ``AssertionError`` above ``atol``."""
    network = network.eval()
    generator = torch.Generator().manual_seed(7)
    if image_shapes is None:
        c = network.in_channels
        image_shapes = [(1, c, 40, 56), (3, c, 70, 33)] if network.spatial_dims == 2 else [(1, c, 40, 56, 5)]
    worst = {"encoder": 0.0, "prompt_decoder": 0.0}
    encoder = _session(paths["encoder"])
    decoder = _session(paths["prompt_decoder"])
    graph = PromptDecoderGraph(network)
    with torch.no_grad():
        for shape in image_shapes:
            image = torch.rand(shape, generator=generator)
            expected = network.encode(image)
            got = encoder.run(None, {"image": image.numpy()})[0]
            worst["encoder"] = max(worst["encoder"], float(np.abs(expected.numpy() - got).max()))
        for count in points:
            inputs = _decoder_inputs(network, count)
            inputs["point_coords"] = torch.rand(1, count, 2, generator=generator) * network.image_size
            inputs["point_labels"] = torch.tensor([[1.0] * (count - 2) + [2.0, 3.0]])
            inputs["has_mask_input"] = torch.tensor([float(count % 2)])
            expected = graph(**inputs)
            got = decoder.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
            worst["prompt_decoder"] = max(worst["prompt_decoder"], float(np.abs(expected.numpy() - got).max()))
    for part, difference in worst.items():
        if not difference <= atol:
            raise AssertionError(f"ONNX Runtime's {part} differs from PyTorch by {difference:.3g} > {atol:g}")
    return worst
