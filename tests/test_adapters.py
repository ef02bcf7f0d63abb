"""Bottleneck adapter, LoRA and HyP-Adpt: initialisation and behaviour."""

from __future__ import annotations

import pytest
import torch

from medsa_monai.networks import Adapter, HyperPromptAdapter, LoRA


def test_adapter_zero_init_is_identity_or_zero():
    x = torch.randn(2, 5, 32)
    assert torch.equal(Adapter(32, skip=True)(x), x)
    assert torch.equal(Adapter(32, skip=False)(x), torch.zeros_like(x))
    adapter = Adapter(32, ratio=0.25)
    assert adapter.D_fc1.out_features == 8 and adapter.D_fc2.in_features == 8  # ratio 0.25, official names


def test_adapter_official_init_is_random_and_computes_bottleneck():
    torch.manual_seed(0)
    adapter = Adapter(32, skip=False, zero_init=False)
    x = torch.randn(4, 32)
    out = adapter(x)
    assert out.abs().max() > 0
    expected = adapter.D_fc2(torch.nn.functional.gelu(adapter.D_fc1(x)))
    assert torch.allclose(out, expected)
    with_skip = Adapter(32, skip=True, zero_init=False)
    assert torch.allclose(with_skip(x), x + with_skip.D_fc2(torch.nn.functional.gelu(with_skip.D_fc1(x))))


def test_lora_starts_at_zero_and_scales():
    lora = LoRA(16, 48, rank=4, alpha=8)
    x = torch.randn(3, 16)
    assert torch.equal(lora(x), torch.zeros(3, 48))
    torch.nn.init.normal_(lora.B.weight)
    assert torch.allclose(lora(x), 2.0 * lora.B(lora.A(x)))  # alpha / rank = 2
    with pytest.raises(ValueError, match="rank"):
        LoRA(16, 48, rank=0)


def test_hyper_prompt_adapter_generates_weights_from_prompt():
    torch.manual_seed(0)
    hyp = HyperPromptAdapter(dim=32, prompt_dim=16, ratio=0.25)
    e, prompt = torch.randn(2, 7, 32), torch.randn(2, 3, 16)
    assert torch.equal(hyp(e, prompt), torch.zeros_like(e))  # zero-initialised up-projection

    torch.nn.init.normal_(hyp.up.weight)
    out = hyp(e, prompt)
    # e' = ReLU(LayerNorm(e_down @ w)) with w = reshape(MLP(mean prompt), r x r), then up-projection.
    w = hyp.weight_generator(prompt.mean(1)).view(2, 8, 8)
    expected = hyp.up(torch.relu(hyp.norm(hyp.down(e) @ w)))
    assert torch.allclose(out, expected, atol=1e-6)
    # The same embedding under another prompt gets another adaptation.
    assert not torch.allclose(out, hyp(e, torch.randn(2, 3, 16)))
