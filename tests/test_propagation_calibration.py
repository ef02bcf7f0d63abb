"""Choosing the propagation weight after training: scores, the choice, the file the bundles read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsa_monai.evaluation.interactive_protocol import run_protocol
from medsa_monai.evaluation.iterative_clicks import simulate_clicks
from medsa_monai.networks import MedSA
from medsa_monai.predictor import (
    MedSAPredictor,
    calibrated_correction_depth,
    calibrated_propagation_weight,
    calibrated_removal_radius,
)
from medsa_monai.training import calibrate_propagation, calibration_checkpoint


def cases(count: int = 2) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for index in range(count):
        label = torch.zeros(1, 24, 24, 8)
        label[0, 6:14, 8:16, 2:6] = 1
        label[0, 14:18, 8:16, 3:7] = 2
        image = torch.rand(1, 24, 24, 8, generator=generator) + label * 0.5 + index * 0.1
        items.append({"image": image, "label": label})
    return items


@torch.no_grad()
def test_calibration_scores_every_weight_by_box_dice_and_keeps_the_best(tmp_path):
    torch.manual_seed(0)
    net = MedSAPredictor(MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full").eval())
    found = calibrate_propagation(net, cases(), tmp_path, weights=(0.0, 0.5, 1.0), margin=0.0)
    left_with = net.propagation_automatic_weight, net.removal_radius
    assert found["cases"] == 2 and set(found["box_dice"]) == {"0.0", "0.5", "1.0"}
    for weight, score in found["box_dice"].items():  # the protocol's box, mean over classes and cases, by hand
        net.propagation_automatic_weight = float(weight)
        by_hand = [np.nanmean(run_protocol(net, item["image"][None], item["label"][0].long().numpy(),
                                           num_clicks=0).dice[0]) for item in cases()]
        assert score == pytest.approx(float(np.mean(by_hand)), abs=1e-6)
    scores = {float(w): s for w, s in found["box_dice"].items()}
    best = max(scores.values())
    assert found["propagation_automatic_weight"] == min(w for w, s in scores.items() if s == best)
    assert left_with == (found["propagation_automatic_weight"], found["removal_radius"])
    assert json.loads((tmp_path / "propagation.json").read_text()) == found
    assert calibrated_propagation_weight(tmp_path) == found["propagation_automatic_weight"]
    assert not net.network.training
    # then, with that weight, each removal radius by Dice after five clicks, after the box and without one
    assert set(found["click_dice"]) == {"none", "2.0"}
    net.propagation_automatic_weight = found["propagation_automatic_weight"]

    def by_hand() -> float:
        scores = []
        for item in cases():
            reference = item["label"][0].long().numpy()
            after_box = np.nanmean(run_protocol(net, item["image"][None], reference, num_clicks=5).final_dice)
            alone = np.nanmean(simulate_clicks(net, item["image"][None], reference, 5, with_box=False).click_dice[-1])
            scores.append((after_box + alone) / 2)
        return float(np.mean(scores))

    net.correction_depth_radius = 0  # radii are scored with the predictor's own depth
    for radius, score in found["click_dice"].items():
        net.removal_radius = None if radius == "none" else float(radius)
        assert score == pytest.approx(by_hand(), abs=1e-6)
    best_radius = None if found["click_dice"]["none"] >= found["click_dice"]["2.0"] else 2.0
    assert found["removal_radius"] == best_radius == calibrated_removal_radius(tmp_path)
    # then, with that radius, each correction depth the same way
    assert set(found["depth_dice"]) == {"0", "2", "4"}
    assert found["depth_dice"]["0"] == found["click_dice"]["none" if found["removal_radius"] is None else "2.0"]
    net.removal_radius = found["removal_radius"]
    for depth, score in found["depth_dice"].items():
        net.correction_depth_radius = int(depth)
        assert score == pytest.approx(by_hand(), abs=1e-6)
    depths = {int(d): s for d, s in found["depth_dice"].items()}
    assert found["correction_depth_radius"] == min(d for d, s in depths.items() if s == max(depths.values()))
    assert calibrated_correction_depth(tmp_path) == found["correction_depth_radius"]


def test_a_candidate_replaces_the_default_only_by_the_margin():
    from medsa_monai.training.calibration import _best

    scores = {None: 0.7975, 2.0: 0.7997}  # the demo's swing: radius 2 ahead by 0.002
    assert _best(scores, [None, 2.0], margin=0.005) is None
    assert _best(scores, [None, 2.0], margin=0.0) == 2.0
    assert _best({None: 0.79, 2.0: 0.80}, [None, 2.0], margin=0.005) == 2.0
    weights = {0.0: 0.720, 0.25: 0.742, 0.5: 0.749}  # a Task04 model's box Dice
    assert _best(weights, [0.0, 0.25, 0.5], margin=0.005) == 0.5
    assert _best({0.0: float("nan"), 0.5: 0.7}, [0.0, 0.5], margin=0.005) == 0.5


def test_calibration_loads_a_training_checkpoint_first(tmp_path):
    torch.manual_seed(0)
    trained = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full")
    torch.save({"model": trained.state_dict(), "epoch": 3}, tmp_path / "checkpoint_epoch=3.pt")
    torch.manual_seed(1)
    net = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full")
    found = calibrate_propagation(MedSAPredictor(net), cases(1), None, checkpoint=tmp_path / "checkpoint_epoch=3.pt")
    assert found["checkpoint"] == "checkpoint_epoch=3.pt"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))
    assert not (tmp_path / "propagation.json").exists()  # no ckpt_dir: nothing written


def test_calibration_checkpoint_is_the_selected_model_when_training_saved_one(tmp_path):
    assert calibration_checkpoint(tmp_path) is None  # no selected model: the network as training left it
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(b"")
    assert calibration_checkpoint(tmp_path) is None
    (tmp_path / "model.pt").write_bytes(b"")
    assert calibration_checkpoint(tmp_path) == str(tmp_path / "model.pt")


def test_nothing_to_choose_for_2d_networks_or_without_propagation(tmp_path):
    net2d = MedSAPredictor(MedSA(2, 1, 2, "vit_tiny", image_size=64))
    assert calibrate_propagation(net2d, [{"image": torch.rand(1, 16, 16), "label": torch.zeros(1, 16, 16)}],
                                 tmp_path) is None
    flat = MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64), propagation=False)
    assert calibrate_propagation(flat, cases(1), tmp_path) is None
    assert not (tmp_path / "propagation.json").exists()
    with pytest.raises(ValueError, match="at least one case"):
        calibrate_propagation(MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64)), [], tmp_path)


def test_reading_the_choice_back(tmp_path):
    assert calibrated_propagation_weight(tmp_path) == 0.0  # none made: propagation of the neighbour alone
    assert calibrated_propagation_weight(tmp_path, default=0.25) == 0.25
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 0.5}')
    assert calibrated_propagation_weight(tmp_path) == 0.5
    (tmp_path / "propagation.json").write_text('{"weight": 0.5}')
    with pytest.raises(ValueError, match="propagation.json"):
        calibrated_propagation_weight(tmp_path)
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 2}')
    with pytest.raises(ValueError, match=r"does not lie in \[0, 1\]"):
        calibrated_propagation_weight(tmp_path)


@torch.no_grad()
def test_each_case_is_encoded_once_for_all_the_weights(tmp_path):
    torch.manual_seed(0)
    net = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full")
    encoded = []
    net.image_encoder.register_forward_hook(lambda module, args, out: encoded.append(out.shape[0]))
    predictor = MedSAPredictor(net)
    calibrate_propagation(predictor, cases(2), None)
    assert len(encoded) == 2  # two cases, three weights
    assert predictor.embedding_cache is None and net.training  # left as it was found


def test_reading_the_correction_depth_back(tmp_path):
    assert calibrated_correction_depth(tmp_path) == 0  # none made: a correction stays on its slice
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 0.5, "removal_radius": null}')
    assert calibrated_correction_depth(tmp_path) == 0  # a calibration from before the depth was chosen
    (tmp_path / "propagation.json").write_text('{"correction_depth_radius": 3}')
    assert calibrated_correction_depth(tmp_path) == 3
    (tmp_path / "propagation.json").write_text('{"correction_depth_radius": 1.5}')
    with pytest.raises(ValueError, match="correction_depth_radius 1.5"):
        calibrated_correction_depth(tmp_path)
    with pytest.raises(ValueError, match="correction_depth_radius"):
        MedSAPredictor(MedSA(3, 1, 2, "vit_tiny", image_size=64), correction_depth_radius=-1)


def test_reading_the_removal_radius_back(tmp_path):
    assert calibrated_removal_radius(tmp_path) is None  # none made: a background click removes its whole region
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 0.5}')  # written before radii
    assert calibrated_removal_radius(tmp_path) is None
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 0.5, "removal_radius": 2}')
    assert calibrated_removal_radius(tmp_path) == 2.0
    (tmp_path / "propagation.json").write_text('{"propagation_automatic_weight": 0.5, "removal_radius": -1}')
    with pytest.raises(ValueError, match="removal_radius -1"):
        calibrated_removal_radius(tmp_path)
    (tmp_path / "propagation.json").write_text('[0.5]')
    with pytest.raises(ValueError, match="propagation.json"):
        calibrated_removal_radius(tmp_path)


def test_a_network_that_does_not_confine_its_corrections_keeps_its_radius(tmp_path):
    net = MedSA(3, 1, 3, "vit_tiny", image_size=64, trainable="full").eval()
    found = calibrate_propagation(MedSAPredictor(net, confine_corrections=False), cases(1), tmp_path)
    assert found["removal_radius"] is None and found["click_dice"] == {}
    with pytest.raises(ValueError, match="removal_radius"):
        MedSAPredictor(net, removal_radius=0)
