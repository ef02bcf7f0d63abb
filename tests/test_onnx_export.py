"""ONNX export of the image encoder and the prompt decoder: ONNX Runtime equals PyTorch within 1e-4 (tiny, and vit_b
with ``-m slow``; 2D and a 3D slab with SD-Trans), and clicks through :class:`OnnxPredictor` equal ``MedSA.predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsa_monai.export import export_onnx, verify_onnx
from medsa_monai.networks import MedSA
from medsa_monai.predictor import OnnxPredictor

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ATOL = 1e-4


def _perturbed(network: MedSA, seed: int = 0) -> MedSA:
    """Every parameter moved off its initial value (adapters start at zero), so that every part counts."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    return network.eval()


@pytest.fixture(scope="module")
def exported_2d(tmp_path_factory):
    torch.manual_seed(0)
    network = _perturbed(MedSA(2, 3, 3, "vit_tiny", image_size=64, trainable="samda"))
    return network, export_onnx(network, tmp_path_factory.mktemp("onnx2d"))


@pytest.fixture(scope="module")
def exported_3d(tmp_path_factory):
    torch.manual_seed(0)
    network = _perturbed(MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="medsa", depth_attention=True,
                               click_depth_radius=1, prompt_class_token=True))
    return network, export_onnx(network, tmp_path_factory.mktemp("onnx3d"))


def test_2d_graphs_equal_pytorch(exported_2d):
    network, paths = exported_2d
    worst = verify_onnx(network, paths, atol=ATOL)
    assert worst["encoder"] <= ATOL and worst["prompt_decoder"] <= ATOL
    spec = json.loads(paths["spec"].read_text())
    assert spec["opset"] == 18 and spec["image_size"] == 64 and spec["num_classes"] == 2


def test_3d_slab_graphs_equal_pytorch(exported_3d):
    network, paths = exported_3d
    worst = verify_onnx(network, paths, atol=ATOL, image_shapes=[(1, 1, 36, 50, 5), (1, 1, 30, 30, 9)])
    assert worst["encoder"] <= ATOL and worst["prompt_decoder"] <= ATOL


def _eager_low_res(network, image, points=None, labels=None, boxes=None, masks=None):
    with torch.no_grad():
        return network.predict(image, points, labels, boxes, masks)[1]


def test_2d_clicks_box_and_fed_back_mask_equal_medsa_predict(exported_2d):
    network, paths = exported_2d
    image = torch.rand(1, 3, 50, 70, generator=torch.Generator().manual_seed(3))
    predictor = OnnxPredictor(paths["encoder"].parent, threads=1)
    predictor.set_image(image[0].numpy())
    clicks = np.array([[20.0, 30.0], [10.0, 60.0]])
    labels = np.array([1.0, 0.0])
    box = np.array([5.0, 8.0, 40.0, 66.0])

    logits, low_res = predictor.predict(clicks, labels, class_index=1)
    expected = _eager_low_res(network, image, torch.cat([torch.zeros(1, 1, 2, 2), torch.tensor(clicks)[None, None]],
                                                        1).float(),
                              torch.tensor([[[-1, -1], [1, 0]]]))
    assert np.abs(low_res[0, 0] - expected[0, 1].numpy()).max() <= ATOL
    assert logits.shape == (50, 70)

    _, with_box = predictor.predict(clicks, labels, box=box, class_index=0, mask_input=low_res)
    boxes = torch.cat([torch.tensor(box)[None, None], torch.full((1, 1, 4), float("nan"))], 1).float()
    masks = torch.cat([torch.from_numpy(low_res), torch.full_like(torch.from_numpy(low_res), float("nan"))], 1)
    expected = _eager_low_res(network, image, torch.cat([torch.tensor(clicks)[None, None], torch.zeros(1, 1, 2, 2)],
                                                        1).float(),
                              torch.tensor([[[1, 0], [-1, -1]]]), boxes, masks)
    assert np.abs(with_box[0, 0] - expected[0, 0].numpy()).max() <= ATOL


def test_3d_click_on_a_slice_equals_medsa_predict(exported_3d):
    network, paths = exported_3d
    volume = torch.rand(1, 1, 36, 44, 7, generator=torch.Generator().manual_seed(4))
    predictor = OnnxPredictor(paths["encoder"].parent, threads=1)
    predictor.set_image(volume[0].numpy())
    clicks = np.array([[18.0, 20.0, 3.0], [10.0, 30.0, 4.0]])  # the second one slice away: within the radius
    _, low_res = predictor.predict(clicks, np.array([1.0, 0.0]), class_index=0, slice_index=3)
    points = torch.cat([torch.tensor(clicks)[None, None], torch.zeros(1, 1, 2, 3)], 1).float()
    expected = _eager_low_res(network, volume, points, torch.tensor([[[1, 0], [-1, -1]]]))
    assert np.abs(low_res[0, 0] - expected[0, 0, :, :, 3].numpy()).max() <= ATOL


def test_predictor_refuses_bad_input(exported_2d):
    _, paths = exported_2d
    predictor = OnnxPredictor(paths["encoder"].parent, threads=1)
    with pytest.raises(RuntimeError, match="no image is set"):
        predictor.predict(np.array([[1.0, 1.0]]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"takes an image \(C, H, W\) with C = 3, got shape \(1, 20, 20\)"):
        predictor.set_image(np.zeros((1, 20, 20)))
    predictor.set_image(np.zeros((3, 20, 20)))
    with pytest.raises(ValueError, match="class_index must be in"):
        predictor.predict(np.array([[1.0, 1.0]]), np.array([1.0]), class_index=5)
    with pytest.raises(FileNotFoundError, match="medsa_onnx.json' not found"):
        OnnxPredictor(paths["encoder"].parent / "absent")


@pytest.mark.slow
def test_vit_b_graphs_equal_pytorch(tmp_path):
    torch.manual_seed(0)
    network = _perturbed(MedSA(2, 1, 2, "vit_b", image_size=64, trainable="samda"))
    paths = export_onnx(network, tmp_path)
    worst = verify_onnx(network, paths, atol=ATOL, image_shapes=[(1, 1, 40, 56)], points=(3,))
    assert worst["encoder"] <= ATOL and worst["prompt_decoder"] <= ATOL
