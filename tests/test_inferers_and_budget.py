"""Mirroring test-time augmentation, the wall-clock budget, and the default SAM checkpoint path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.inferers import SimpleInferer

from medsa_monai.predictor import MirroringInferer
from medsa_monai.training import TimeBudget, default_sam_checkpoint, latest_checkpoint, prepare_training


def test_mirroring_averages_flipped_predictions():
    weight = torch.arange(24.0).reshape(2, 3, 4)  # a position-dependent "network": not flip-invariant

    def network(x):
        return x * weight

    x = torch.randn(1, 1, 2, 3, 4)
    out = MirroringInferer(SimpleInferer(), axes=(0, 2))(x, network)
    expected = sum(torch.flip(network(torch.flip(x, d)), d) if d else network(x)
                   for d in [(), (2,), (4,), (2, 4)]) / 4
    assert torch.allclose(out, expected)
    assert torch.allclose(out, x * (weight + weight.flip(0) + weight.flip(2) + weight.flip(0, 2)) / 4)
    invariant = MirroringInferer(SimpleInferer(), axes=(0, 1, 2))(x, lambda t: 3 * t)
    assert torch.allclose(invariant, 3 * x)  # a flip-equivariant network is left unchanged
    with pytest.raises(ValueError, match="prompts"):
        MirroringInferer(SimpleInferer())(x, network, points=torch.zeros(1, 1, 1, 3))


def test_time_budget_stops_before_overrunning_and_validates_first():
    trainer = Engine(lambda engine, batch: time.sleep(0.05))
    validated = []

    class Evaluator:  # MONAI's evaluators run as `run(global_epoch)`
        def run(self, global_epoch):
            validated.append(global_epoch)

    evaluator = Evaluator()
    TimeBudget(minutes=0.6 / 60, evaluator=evaluator, val_interval=3).attach(trainer)
    start = time.monotonic()
    trainer.run(range(4), max_epochs=50)  # 0.2 s per epoch, 0.6 s budget
    elapsed = time.monotonic() - start
    assert trainer.state.epoch == 2 and elapsed < 0.6  # a third epoch would have ended past the budget
    assert validated == [2]  # epoch 2 was not a validation epoch (interval 3): validated before stopping


def test_default_sam_checkpoint():
    assert default_sam_checkpoint("/b", "vit_l") == str(Path("/b/models/sam_vit_l_0b3195.pth"))
    assert default_sam_checkpoint("/b", "vit_tiny") is None


def test_a_checkpoint_interrupted_while_written_leaves_the_previous_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: None)
    prepare_training(trainer, None, tmp_path, {"model": model, "trainer": trainer})
    save = torch.save

    def killed_while_writing_epoch_3(obj, f, *args, **kwargs):
        if obj["trainer"]["iteration"] < 3:
            return save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # SIGINT mid-save; SIGKILL leaves the same temporary file

    monkeypatch.setattr(torch, "save", killed_while_writing_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=5)
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=2.pt"
    assert torch.load(latest_checkpoint(tmp_path), weights_only=True)["trainer"]["iteration"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_epoch=2.pt"]  # older removed, no temporary left
