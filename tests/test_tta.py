"""Test-time adaptation: only the chosen parameters change, episodic resets, entropy falls, the cache is reused."""

from __future__ import annotations

import hashlib

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader

from medsa_monai.networks import MedSA
from medsa_monai.prediction import TestTimeAdaptation, prediction_entropy
from medsa_monai.predictor import EmbeddingCache

from .conftest import randomise


def _net() -> MedSA:
    torch.manual_seed(0)
    net = randomise(MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable="samda"))
    for layer in net.mask_decoder.transformer.layers:  # a trained adapter: gate open
        layer.samda_adapter.gate.data.fill_(0.5)
    return net


def _data(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(1, 3, 40, 48, generator=g)} for _ in range(n)]


def _checksums(net, exclude=()):
    return {n: hashlib.sha1(p.detach().numpy().tobytes()).hexdigest() for n, p in net.named_parameters()
            if not any(e in n for e in exclude)}


def _run(net, data, **kwargs):
    outputs = []
    engine = TestTimeAdaptation("cpu", data, net, steps=3, views=4, keep=0.5, learning_rate=1e-2, **kwargs)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output[0]["pred"].clone()))
    engine.run()
    return engine, outputs


def test_only_the_adapter_changes():
    net = _net()
    before = _checksums(net)
    engine, _ = _run(net, _data())
    after = _checksums(net)
    changed = {n for n in before if before[n] != after[n]}
    assert changed and all(".samda_adapter." in n for n in changed)
    assert set(engine.adapted) == {n for n, _ in net.named_parameters() if ".samda_adapter." in n}


def test_tent_like_baseline_adapts_the_whole_decoder_only():
    net = _net()
    before = _checksums(net)
    _run(net, _data(), adapt="decoder")
    after = _checksums(net)
    changed = {n for n in before if before[n] != after[n]}
    assert any("samda_adapter" not in n for n in changed)
    assert all(n.startswith("mask_decoder.") for n in changed)


def test_episodic_resets_and_continual_accumulates():
    data = _data(2)
    _, episodic = _run(_net(), data, mode="episodic")
    alone = TestTimeAdaptation("cpu", data[1:], _net(), steps=3, views=4, keep=0.5, learning_rate=1e-2)
    alone_out = []
    alone.add_event_handler(Events.ITERATION_COMPLETED, lambda e: alone_out.append(e.state.output[0]["pred"]))
    alone.state.iteration = 0
    # the second case, adapted from the trained state, equals that case adapted on its own (same seed offset)
    alone.seed = 1
    alone.run()
    assert torch.allclose(episodic[1], alone_out[0], atol=1e-6)
    _, continual = _run(_net(), data, mode="continual")
    assert torch.allclose(continual[0], episodic[0]) and not torch.allclose(continual[1], episodic[1])


def test_episodic_resets_to_the_weights_a_checkpoint_loader_brings(tmp_path):
    trained = _net()
    for layer in trained.mask_decoder.transformer.layers:
        layer.samda_adapter.gate.data.fill_(0.25)
    torch.save({"model": trained.state_dict()}, tmp_path / "model.pt")
    net = _net()  # gate 0.5 until the loader runs at STARTED, after the engine is built
    engine = TestTimeAdaptation("cpu", _data(2), net, steps=2, views=4, keep=0.5, learning_rate=1e-2,
                                val_handlers=[CheckpointLoader(str(tmp_path / "model.pt"), {"model": net})])
    engine.run()
    loaded = {n: p for n, p in trained.named_parameters() if n in engine.adapted}
    assert all(torch.equal(engine.trained_state[n], loaded[n]) for n in loaded)
    engine.reset()
    assert all(torch.equal(p, loaded[n]) for n, p in engine.adapted.items())


def test_entropy_falls_and_cache_serves_the_steps():
    net = _net()
    engine = TestTimeAdaptation("cpu", _data(1), net, steps=6, views=4, keep=0.5, learning_rate=3e-2,
                                embedding_cache=(cache := EmbeddingCache()))
    engine.run()
    losses = engine.state.adaptation_losses
    assert losses[-1] < losses[0]
    assert cache.misses == 4 + 1 and cache.hits == 4 * 5  # views once, then 5 more steps; +1: the final image


def test_entropy_by_hand_and_bad_settings():
    low = torch.zeros(1, 1, 2, 2)  # logit 0 against background 0: p = 1/2 each, entropy ln 2
    assert torch.allclose(prediction_entropy(low), torch.log(torch.tensor([2.0])))
    assert torch.allclose(prediction_entropy(torch.full((1, 1, 2, 2), 50.0)), torch.zeros(1), atol=1e-6)
    with pytest.raises(ValueError, match="no parameters to adapt"):
        TestTimeAdaptation("cpu", [], MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable="decoder"))
    with pytest.raises(ValueError, match="mode"):
        TestTimeAdaptation("cpu", [], _net(), mode="sometimes")
