"""MedSA with zero-initialised adapters computes what segment_anything's Sam computes, from the same checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medsa_monai.networks import MedSA, build_sam
from medsa_monai.networks.checkpoint import resize_position_tables
from medsa_monai.predictor import MedSAPredictor

from .conftest import TINY, reference_sam

TOL = 1e-5


def _reference(checkpoint, image_size=1024):
    sam = reference_sam(image_size, **TINY)
    sam.load_state_dict(torch.load(checkpoint, weights_only=True))  # strict: every key, as released
    return sam


def _sam_outputs(sam, image01, coords_xy=None, labels=None, box_xyxy=None):
    """segment_anything's end-to-end path (Sam.forward + postprocess_masks) for one RGB image in [0, 1]."""
    size = image01.shape[-1]
    record = {"image": image01 * 255, "original_size": (size, size)}
    if coords_xy is not None:
        record.update(point_coords=coords_xy[None], point_labels=labels[None])
    if box_xyxy is not None:
        record["boxes"] = box_xyxy[None]
    low_res = sam([record], multimask_output=False)[0]["low_res_logits"]
    return low_res, sam.postprocess_masks(low_res, (size, size), (size, size))


@torch.no_grad()
def test_2d_encoder_and_mask_logits_equal_sam(tiny_checkpoint):
    sam = _reference(tiny_checkpoint)
    net = MedSA(2, 3, 2, "vit_tiny", tiny_checkpoint, image_size=1024, trainable="medsa").eval()
    assert net.architecture.adapters and net.architecture.hyper_prompt
    image = torch.rand(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))

    embeddings = net.encode(image)
    ref_embeddings = sam.image_encoder(torch.stack([sam.preprocess(im * 255) for im in image]))
    assert embeddings.shape == ref_embeddings.shape == (2, 256, 64, 64)
    assert (embeddings - ref_embeddings).abs().max() < TOL

    # Clicks in MONAI order (row, col); SAM gets (x=col, y=row). The second image also gets a box.
    points = torch.tensor([[[[100.0, 700.0], [600.0, 300.0]]], [[[512.0, 40.0], [20.0, 1000.0]]]])
    labels = torch.tensor([[[1, 0]], [[1, 1]]])
    boxes = torch.tensor([[[float("nan")] * 4], [[30.0, 50.0, 700.0, 900.0]]])
    logits, low_res = net.predict(image, points, labels, boxes)
    assert logits.shape == (2, 2, 1024, 1024) and low_res.shape == (2, 1, 256, 256)
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))

    ref_low0, ref_full0 = _sam_outputs(sam, image[0], points[0, 0].flip(-1), labels[0, 0])
    ref_low1, ref_full1 = _sam_outputs(sam, image[1], points[1, 0].flip(-1), labels[1, 0],
                                       boxes[1, 0][[1, 0, 3, 2]])
    assert (low_res[0, 0] - ref_low0[0, 0]).abs().max() < TOL
    assert (low_res[1, 0] - ref_low1[0, 0]).abs().max() < TOL
    assert (logits[0, 1] - ref_full0[0, 0]).abs().max() < TOL
    assert (logits[1, 1] - ref_full1[0, 0]).abs().max() < TOL


@torch.no_grad()
def test_3d_volume_equals_sam_slice_by_slice(tiny_checkpoint):
    sam = _reference(tiny_checkpoint)
    net = MedSA(3, 1, 2, "vit_tiny", tiny_checkpoint, image_size=1024).eval()
    assert net.architecture.depth_attention  # SD-Trans present, its zero-initialised adapter adds nothing yet
    volume = torch.rand(1, 1, 1024, 1024, 2, generator=torch.Generator().manual_seed(2))
    box = torch.tensor([[[100.0, 200.0, 0.0, 800.0, 900.0, 1.0]]])  # covers both slices

    embeddings = net.encode(volume)
    logits = net(volume, boxes=box)
    propagated = MedSAPredictor(net)(volume, boxes=box)  # the box's middle slice (0) is propagation's seed: as SAM
    assert logits.shape == propagated.shape == (1, 2, 1024, 1024, 2)
    for k in range(2):
        rgb = volume[0, :, :, :, k].expand(3, -1, -1)
        ref_embedding = sam.image_encoder(sam.preprocess(rgb * 255)[None])
        assert (embeddings[k] - ref_embedding[0]).abs().max() < TOL
        _, ref_full = _sam_outputs(sam, rgb, box_xyxy=torch.tensor([200.0, 100.0, 900.0, 800.0]))
        assert (logits[0, 1, :, :, k] - ref_full[0, 0]).abs().max() < TOL
        if k == 0:
            assert (propagated[0, 1, :, :, 0] - ref_full[0, 0]).abs().max() < TOL


@pytest.mark.parametrize("image_size", [256, 512])
@torch.no_grad()
def test_other_image_sizes_interpolate_position_tables(tiny_checkpoint, tiny_state, image_size):
    grid = image_size // 16
    sam = build_sam("vit_tiny", tiny_checkpoint, image_size=image_size)
    enc = sam.image_encoder

    expected_pos = F.interpolate(tiny_state["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(grid, grid),
                                 mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    assert torch.equal(enc.pos_embed, expected_pos)
    for i, block in enumerate(enc.blocks):
        table = tiny_state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]
        if i in TINY["global_attn_indexes"]:  # global blocks: table spans the whole grid
            expected = F.interpolate(table.T[None], size=2 * grid - 1, mode="linear", align_corners=False)[0].T
            assert block.attn.rel_pos_h.shape == (2 * grid - 1, 64)
            assert torch.equal(block.attn.rel_pos_h, expected)
        else:  # windowed blocks: tables span one window whatever the image size
            assert torch.equal(block.attn.rel_pos_h, table)
    pe = sam.prompt_encoder
    assert pe.image_embedding_size == (grid, grid) and pe.input_image_size == (image_size, image_size)
    assert pe.mask_input_size == (4 * grid, 4 * grid)

    # MedSA at this size equals segment_anything's computation with the same (interpolated) weights.
    ref = reference_sam(image_size, **TINY)
    ref.load_state_dict(resize_position_tables(tiny_state, ref.state_dict()))
    net = MedSA(2, 3, 2, "vit_tiny", tiny_checkpoint, image_size=image_size).eval()
    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(3))
    points = torch.tensor([[[[image_size / 3, image_size / 2]]]])
    logits, low_res = net.predict(image, points, torch.ones(1, 1, 1))
    ref_low, ref_full = _sam_outputs(ref, image[0], points[0, 0].flip(-1), torch.ones(1))
    assert low_res.shape == (1, 1, 4 * grid, 4 * grid)
    assert (low_res[0, 0] - ref_low[0, 0]).abs().max() < TOL
    assert (logits[0, 1] - ref_full[0, 0]).abs().max() < TOL


@torch.no_grad()
def test_vit_nano_equals_sam_assembled_at_its_widths(tmp_path):
    """``vit_nano`` (width 128, a prompt encoder and mask decoder of width 128) is segment_anything's SAM at those
    widths: a file saved from that SAM loads strictly, and embeddings and clicked logits equal it."""
    from .conftest import randomise

    widths = dict(embed_dim=128, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=4, prompt_embed_dim=128)
    path = tmp_path / "sam_vit_nano_random.pth"
    torch.save(randomise(reference_sam(256, **widths)).state_dict(), path)
    ref = reference_sam(256, **widths)
    ref.load_state_dict(torch.load(path, weights_only=True))
    net = MedSA(2, 3, 2, "vit_nano", path, image_size=256).eval()
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    embeddings = net.encode(image)
    assert embeddings.shape == (1, 128, 16, 16)
    assert (embeddings - ref.image_encoder(ref.preprocess(image[0] * 255)[None])).abs().max() < TOL
    points = torch.tensor([[[[90.0, 160.0]]]])
    logits, low_res = net.predict(image, points, torch.ones(1, 1, 1))
    ref_low, ref_full = _sam_outputs(ref, image[0], points[0, 0].flip(-1), torch.ones(1))
    assert (low_res[0, 0] - ref_low[0, 0]).abs().max() < TOL
    assert (logits[0, 1] - ref_full[0, 0]).abs().max() < TOL


@pytest.mark.slow
@torch.no_grad()
def test_vit_b_official_builder_matches(tmp_path):
    """An official-format vit_b file loads through segment_anything's own registry and through ours alike."""
    from segment_anything import sam_model_registry

    from .conftest import randomise

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(randomise(sam_model_registry["vit_b"]()).state_dict(), path)
    official = sam_model_registry["vit_b"](checkpoint=str(path))
    net = MedSA(2, 3, 2, "vit_b", path, image_size=1024).eval()
    image = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(4))
    ref = official.image_encoder(official.preprocess(image[0] * 255)[None])
    assert (net.encode(image) - ref).abs().max() < TOL


@torch.no_grad()
def test_samda_decoder_adapter_starts_as_sam(tiny_checkpoint, tiny_state):
    """SAM-DA's adapter (zero gate, identity linear) leaves SAM's output unchanged at initialisation."""
    ref = reference_sam(256, **TINY)
    ref.load_state_dict(resize_position_tables(tiny_state, ref.state_dict()))
    net = MedSA(2, 3, 2, "vit_tiny", tiny_checkpoint, image_size=256, trainable="samda").eval()
    assert net.mask_decoder.transformer.layers[1].samda_adapter is not None
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    boxes = torch.tensor([[[20.0, 30.0, 200.0, 180.0]]])
    logits, low_res = net.predict(image, boxes=boxes)
    ref_low, ref_full = _sam_outputs(ref, image[0], box_xyxy=boxes[0, 0][[1, 0, 3, 2]])
    assert (low_res[0, 0] - ref_low[0, 0]).abs().max() < TOL
    assert (logits[0, 1] - ref_full[0, 0]).abs().max() < TOL
    adapter = net.mask_decoder.transformer.layers[0].samda_adapter
    adapter.gate.fill_(0.5)  # once trained, the adapter changes the output
    assert (net.predict(image, boxes=boxes)[1] - low_res).abs().max() > 10 * TOL
