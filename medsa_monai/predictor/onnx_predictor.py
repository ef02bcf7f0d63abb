"""Clicks decoded by ONNX Runtime: the image is encoded once (``encoder.onnx``), every click runs only the prompt
decoder (``prompt_decoder.onnx``), as ``SamPredictor`` with SAM's exported decoder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..export.onnx import read_onnx_spec

__all__ = ["OnnxPredictor"]


class OnnxPredictor:
    """A session on one image with the graphs of :func:`~medsa_monai.export.onnx.export_onnx`.

    Prompts are in MONAI's array-index order, as for :class:`~medsa_monai.predictor.MedSAPredictor`: clicks
    ``(P, 2)`` ``(i, j)`` (3D: ``(i, j, k)``, ``k`` the slice), a box ``(i0, j0, i1, j1)`` (3D: the in-plane
    corners of the decoded slice). One (slice, class) is decoded per call; propagation through a volume is the
    PyTorch predictor's.

    Args:
        folder: where ``encoder.onnx``, ``prompt_decoder.onnx`` and ``medsa_onnx.json`` are.
        threads: ONNX Runtime's intra-op threads (``None``: its default, all cores).
    """

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        self.spec = read_onnx_spec(folder)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy threads between clicks
        if threads:
            options.intra_op_num_threads = threads
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(folder / "prompt_decoder.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.embeddings: np.ndarray | None = None
        self.image_shape: tuple[int, ...] | None = None

    @property
    def image_size(self) -> int:
        return int(self.spec["image_size"])

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` ``(C, H, W)`` (3D: ``(C, H, W, D)``) once; intensities as the network takes them."""
        image = np.asarray(image, dtype=np.float32)
        dims, channels = self.spec["spatial_dims"], self.spec["in_channels"]
        if image.ndim != dims + 1 or image.shape[0] != channels:
            layout = "(C, H, W)" if dims == 2 else "(C, H, W, D)"
            raise ValueError(f"the exported network takes an image {layout} with C = {channels}, got shape "
                             f"{image.shape}")
        if not np.isfinite(image).all():
            raise ValueError(f"image of shape {image.shape} contains NaN or infinite values")
        self.embeddings = self.encoder.run(None, {"image": image[None]})[0]
        self.image_shape = image.shape[1:]

    def predict(self, points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, class_index: int = 0, mask_input: np.ndarray | None = None,
                slice_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(H, W)`` of one class on the image (3D: on one slice, the clicks' or ``slice_index``) and the
        low-resolution logits ``(1, 1, S / 4, S / 4)`` to feed back as ``mask_input`` with the next click."""
        if self.embeddings is None or self.image_shape is None:
            raise RuntimeError("no image is set: call set_image(image) first")
        dims = self.spec["spatial_dims"]
        points = np.zeros((0, dims), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, dims)
        labels = np.zeros(0, np.float32) if point_labels is None else np.asarray(point_labels, np.float32).ravel()
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} point_labels")
        if len(points) == 0 and box is None:
            raise ValueError("give at least one click or a box (automatic mode is the TorchScript export's)")
        if not 0 <= class_index < self.spec["num_classes"]:
            raise ValueError(f"class_index must be in [0, {self.spec['num_classes'] - 1}], got {class_index}")
        row, offsets = 0, None
        if dims == 3:
            if slice_index is None:
                if not len(points):
                    raise ValueError("a 3D box needs slice_index, the slice to decode")
                slice_index = int(round(float(points[0, 2])))
            if not 0 <= slice_index < self.image_shape[2]:
                raise ValueError(f"slice {slice_index} is outside the volume of {self.image_shape[2]} slices")
            row = slice_index
            offsets = np.abs(np.round(points[:, 2]) - slice_index).astype(np.int64)
            labels = np.where(offsets <= self.spec["click_depth_radius"], labels, -1.0)  # as MedSA: padding there
        labels = labels.astype(np.float32)
        if box is None and not (labels != -1).any():
            raise ValueError("no click reaches the decoded slice and no box is given: nothing prompts it")
        height, width = self.image_shape[:2]
        scale = np.array([self.image_size / height, self.image_size / width], np.float32)
        coords = np.where(labels[:, None] == -1, 0.0, ((points[:, :2] + 0.5) * scale - 0.5)[:, ::-1])
        if box is not None:
            box = np.asarray(box, np.float32).ravel()
            corners = ((np.stack([box[:2], box[2:4]]) + 0.5) * scale - 0.5)[:, ::-1]
            coords, labels = np.concatenate([coords, corners]), np.concatenate([labels, [2.0, 3.0]])
        else:
            coords, labels = np.concatenate([coords, [[0.0, 0.0]]]), np.concatenate([labels, [-1.0]])
        side = self.image_size // 4
        feeds = {
            "image_embeddings": self.embeddings[row:row + 1],
            "point_coords": np.ascontiguousarray(coords[None], dtype=np.float32),
            "point_labels": labels[None].astype(np.float32),
            "mask_input": (np.zeros((1, 1, side, side), np.float32) if mask_input is None
                           else np.asarray(mask_input, np.float32).reshape(1, 1, side, side)),
            "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
            "class_index": np.array([class_index], np.int64),
        }
        if "point_offsets" in {i.name for i in self.decoder.get_inputs()}:
            used = np.zeros(len(labels), np.int64)
            if offsets is not None:
                used[:len(offsets)] = np.where(labels[:len(offsets)] == -1, 0, offsets)
            feeds["point_offsets"] = used[None]
        low_res = self.decoder.run(None, feeds)[0]
        return _resize_bilinear(low_res[0, 0], height, width), low_res


@lru_cache(maxsize=16)
def _bilinear_taps(size: int, source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source samples and the weight of the second for each of ``size`` outputs of a bilinear resize, as
    ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres, clamped at the edges)."""
    position = np.maximum((np.arange(size) + 0.5) * source / size - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    return low, np.minimum(low + 1, source - 1), (position - low).astype(np.float32)


def _resize_bilinear(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """``plane`` ``(h, w)`` resized to ``(height, width)`` in NumPy, so that the click path needs no second runtime
    (whose thread pool would compete with ONNX Runtime's)."""
    low, high, weight = _bilinear_taps(height, plane.shape[0])
    rows = plane[low] + (plane[high] - plane[low]) * weight[:, None]
    low, high, weight = _bilinear_taps(width, plane.shape[1])
    return rows[:, low] + (rows[:, high] - rows[:, low]) * weight[None, :]
