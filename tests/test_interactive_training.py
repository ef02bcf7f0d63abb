"""Interactive training: clicks drawn from the model's own errors, its logits fed back, boxes as users draw them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsa_monai.networks import MedSA
from medsa_monai.networks.prompt_mapping import to_sam_prompts
from medsa_monai.prompts import SamplePromptsd, error_click
from medsa_monai.training import InteractiveSessions, InteractiveTrainer


def sample_error_click(prediction, reference, rng, power=1.0):
    return error_click(prediction, reference, draw=rng, power=power)


def _trainer(net, sessions=None, loss=None, automatic_loss_weight=0.3, dense_prompts=False):
    """An :class:`InteractiveTrainer` of ``net`` whose iteration parts the tests call directly."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    return InteractiveTrainer("cpu", 1, [], net, optimizer, loss or torch.nn.MSELoss(), sessions=sessions,
                              automatic_loss_weight=automatic_loss_weight, dense_prompts=dense_prompts)


def test_error_click_is_positive_in_a_miss_and_negative_in_a_false_positive():
    reference = np.zeros((20, 20), bool)
    reference[2:12, 2:12] = True
    prediction = np.zeros_like(reference)
    index, positive = sample_error_click(prediction, reference, np.random.RandomState(0))
    assert positive and reference[tuple(index)]
    assert 3 <= index[0] <= 10 and 3 <= index[1] <= 10  # weighted to the interior: never on the border
    prediction = reference.copy()
    prediction[14:19, 14:19] = True  # a false positive, the only error
    index, positive = sample_error_click(prediction, reference, np.random.RandomState(0))
    assert not positive and not reference[tuple(index)] and prediction[tuple(index)]
    assert sample_error_click(reference, reference, np.random.RandomState(0)) is None


def test_error_click_goes_to_the_largest_error_and_is_seeded():
    reference = np.zeros((30, 30, 6), bool)
    reference[2:6, 2:6, 1:3] = True  # a small miss
    reference[10:25, 10:25, 1:5] = True  # a large miss
    prediction = np.zeros_like(reference)
    draws = [tuple(sample_error_click(prediction, reference, np.random.RandomState(s))[0]) for s in range(10)]
    assert all(10 <= i < 25 and 10 <= j < 25 for i, j, _ in draws)
    again = [tuple(sample_error_click(prediction, reference, np.random.RandomState(s))[0]) for s in range(10)]
    assert draws == again and len(set(draws)) > 1  # seeded, and drawn (not always the same point)


def _net(dims: int) -> MedSA:
    torch.manual_seed(0)
    return MedSA(dims, 1, 3, "vit_tiny", image_size=64, trainable="full", prompt_class_token=True)


def test_next_round_adds_a_click_from_the_own_error_and_feeds_the_logits_back():
    net = _net(2)
    inferer = InteractiveSessions(max_rounds=1, seed=0)
    references = np.zeros((1, 2, 32, 32), bool)
    references[0, 0, 4:16, 4:16] = True  # class 1 present, missed; class 2 absent, predicted
    prompts = to_sam_prompts(None, None, None, None, spatial_shape=(32, 32), image_size=64, num_classes=2, batch=1)
    low_res = torch.full((1, 2, 16, 16), -5.0)
    low_res[0, 1, 10:14, 10:14] = 5.0
    logits = net.postprocess(low_res, (32, 32))
    rounds, changed = inferer.next_round(net, prompts, low_res, logits, references, torch.tensor([True]), False,
                                          (32, 32), 1)
    assert changed.tolist() == [[True, True]]  # both classes got a click: both are decoded again
    assert rounds.labels.tolist() == [[[1], [0]]]  # positive click for the miss, negative for the false positive
    x, y = rounds.coords[0, 0, 0].tolist()  # SAM frame: x is the column, image_size / 32 = 2 pixels per voxel
    assert references[0, 0, round((y + 0.5) / 2 - 0.5), round((x + 0.5) / 2 - 0.5)]
    assert torch.equal(rounds.masks[:, :, 0], low_res)  # the previous logits come back as the mask prompt
    ended, changed = inferer.next_round(net, prompts, low_res, logits, references, torch.tensor([False]), False,
                                         (32, 32), 1)
    assert not changed.any() and (ended.labels == -1).all()
    assert torch.isnan(ended.masks).all()  # a finished session keeps its prompts


def test_propagation_round_gives_slices_the_neighbours_logits_and_box():
    net = _net(3)
    inferer = InteractiveSessions(seed=3)
    references = np.zeros((1, 2, 32, 32, 4), bool)
    prompts = to_sam_prompts(None, None, None, None, spatial_shape=(32, 32, 4), image_size=64, num_classes=2,
                             batch=1)
    low_res = torch.full((1, 2, 16, 16, 4), -5.0)
    low_res[0, 0, 2:6, 3:9, :] = 5.0
    logits = net.postprocess(low_res, (32, 32, 4))
    rounds, changed = inferer.next_round(net, prompts, low_res, logits, references, torch.tensor([True]), True,
                                          (32, 32, 4), 4)
    clicked = (rounds.labels != -1).any(-1)
    boxed = torch.isfinite(rounds.boxes).all(-1)
    assert boxed[:, 0].sum() >= 2 and not (boxed & clicked).any()  # slices with a neighbour, except clicked ones
    assert rounds.boxes[boxed[:, 0].nonzero()[0, 0], 0].tolist() == [12.0, 8.0, 35.0, 23.0]
    assert not boxed[:, 1].any()  # class 2's neighbours predict nothing: no box
    assert torch.equal(changed, boxed | clicked)  # only the slices whose prompt changed are decoded again


def test_correction_rounds_decode_only_the_clicked_slices():
    image, label, prompts = _batch(3)
    net = _net(3)
    decoded = []

    def counted(embeddings, sam_prompts, *args, decode=net.decode_prompts):
        active = sam_prompts.active
        decoded.append(int(active.sum()) if active is not None else None)
        return decode(embeddings, sam_prompts, *args)

    net.decode_prompts = counted
    sessions = InteractiveSessions(max_rounds=3, propagation_probability=0.0, seed=5)
    _trainer(net, sessions, automatic_loss_weight=0.0)._session_logits(image, label, prompts)
    rows = 2 * 6 * 2  # samples x slices x classes
    assert decoded[-1] is None  # the last round, with gradients: every row
    assert decoded[0] <= rows and all(n <= 2 * 2 for n in decoded[1:-1])  # then one clicked slice per class


def test_winner_masks_equal_argmax_with_a_zero_background():
    from medsa_monai.training import winner_masks as _winners

    foreground = torch.randn(2, 3, 5, 7, 4)
    foreground[0, 1] = foreground[0, 0]  # ties go to the first class, as argmax's
    winner = torch.cat([torch.zeros_like(foreground[:, :1]), foreground], 1).argmax(1)
    expected = torch.stack([winner == k + 1 for k in range(3)], 1)
    assert torch.equal(_winners(foreground), expected)


def test_user_boxes_are_tight_per_slice_and_jittered_outwards_only():
    references = np.zeros((1, 1, 32, 32, 3), bool)
    references[0, 0, 4:10, 6:20, 0] = True
    references[0, 0, 5:8, 8:12, 1] = True
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 31.0, 31.0, 2.0]]])  # any box: only whether one is given matters
    prompts = to_sam_prompts(None, None, boxes, None, spatial_shape=(32, 32, 3), image_size=32, num_classes=1,
                             batch=1)
    tight = InteractiveSessions(box_jitter=0.0)._user_boxes(prompts, references, (32, 32, 3), 32, 3)
    assert tight.boxes[0, 0].tolist() == [6.0, 4.0, 19.0, 9.0] and tight.boxes[1, 0].tolist() == [8.0, 5.0, 11.0, 7.0]
    assert torch.isnan(tight.boxes[2, 0]).all()  # the class is not on the third slice
    loose = InteractiveSessions(box_jitter=0.5, seed=1)._user_boxes(prompts, references, (32, 32, 3), 32, 3)
    assert (loose.boxes[0, 0, :2] <= tight.boxes[0, 0, :2]).all()
    assert (loose.boxes[0, 0, 2:] >= tight.boxes[0, 0, 2:]).all()


def _batch(dims: int):
    shape = (24, 24, 6) if dims == 3 else (32, 32)
    label = torch.zeros(2, 1, *shape)
    label[:, :, 4:12, 4:16] = 1
    label[:, :, 12:18, 4:16] = 2
    sampler = SamplePromptsd("label", num_classes=2, point_probability=0.5, no_prompt_probability=0.0)
    sampler.set_random_state(0)
    items = [sampler({"label": label[b]}) for b in range(2)]
    prompts = {k: torch.stack([item[k] for item in items]) for k in ("points", "point_labels", "boxes")}
    return torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0)), label, prompts


def test_session_is_seeded_trains_and_calls_the_decoder_once_per_round():
    for dims in (2, 3):
        image, label, prompts = _batch(dims)
        outputs = []
        for _ in range(2):
            net = _net(dims)
            calls = []

            def counted(*args, calls=calls, decode=net.decode_prompts, **kwargs):
                calls.append(torch.is_grad_enabled())
                return decode(*args, **kwargs)

            net.decode_prompts = counted
            trainer = _trainer(net, InteractiveSessions(max_rounds=3, seed=5), automatic_loss_weight=0.0)
            _, logits, _ = trainer._session_logits(image, label, prompts)
            logits.square().mean().backward()
            assert net.mask_decoder.output_upscaling[0].weight.grad is not None
            outputs.append(logits.detach())
            assert calls[-1] and not any(calls[:-1]) and 1 <= len(calls) <= 4  # earlier rounds without gradients
        assert torch.equal(outputs[0], outputs[1])
        assert logits.shape == (2, 3, *image.shape[2:]) and torch.isfinite(logits).all()


def test_without_prompts_or_rounds_it_is_the_plain_forward():
    image, label, _ = _batch(2)
    net = _net(2).eval()
    with torch.no_grad():
        expected = net(image)
        _, got, automatic = _trainer(net, InteractiveSessions(max_rounds=0))._session_logits(image, label, {})
    assert torch.equal(expected, got) and not math.isnan(float(got.sum()))
    assert automatic is None  # an unprompted session is automatic mode already


def test_prompted_validation_combines_automatic_and_prompted_dice():
    from ignite.engine import Engine, Events

    from medsa_monai.training import PromptedValidation

    net = _net(2)
    label = torch.zeros(1, 32, 32)
    label[0, 4:12, 4:16] = 1
    items = [{"image": torch.rand(1, 32, 32), "label": label}]

    def step(engine, batch):
        engine.state.batch = batch  # as MONAI's evaluators leave it: decollated items
        return {}

    engine = Engine(step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_mean_dice=0.5))
    PromptedValidation(net, num_clicks=1).attach(engine)
    net.train()
    engine.run([items], max_epochs=1)
    prompted = engine.state.metrics["val_prompted_dice"]
    assert 0.0 <= prompted <= 1.0
    assert engine.state.metrics["val_selection_dice"] == pytest.approx(0.5 * (0.5 + prompted))
    assert net.training  # the network is left as it was found


def test_prompted_samples_also_train_automatic_mode():
    from ignite.engine import Engine

    image, label, prompts = _batch(2)
    net = _net(2)
    base = torch.nn.MSELoss()
    seen = []

    def loss(pred, target):
        seen.append(pred.shape[0])
        return base(pred[:, 1:], (target == 1).float())

    trainer = _trainer(net, InteractiveSessions(max_rounds=0, seed=1), loss, automatic_loss_weight=0.5)
    engine = Engine(lambda e, b: None)
    engine.state.output = {}
    engine.loss_function = loss
    engine.fire_event = lambda event: None
    trainer._forward_and_loss(engine, image, label, prompts)
    total = engine.state.output["loss"]
    assert seen == [2, 2]  # the last round's loss, then both samples (both prompted) in automatic mode
    with torch.no_grad():
        automatic = net(image)
    expected = base(engine.state.output["pred"][:, 1:], (label == 1).float()) + 0.5 * base(automatic[:, 1:],
                                                                                         (label == 1).float())
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    total.backward()
    assert net.class_prompts.weight.grad.abs().sum() > 0  # the automatic prompts learn from prompted samples

    seen.clear()
    trainer._forward_and_loss(engine, image, label, {})  # no first prompt, no rounds: the main loss is automatic
    assert seen == [2]


def test_a_pair_without_its_class_token_gets_sams_padding_token_instead():
    from dataclasses import replace

    net = _net(2).eval()
    spatial = (32, 32)
    boxes = torch.full((1, 2, 4), math.nan)
    boxes[0, 0] = torch.tensor([4.0, 4.0, 15.0, 20.0])  # class 1 boxed, class 2 automatic
    prompts = to_sam_prompts(None, None, boxes, None, spatial_shape=spatial, image_size=64, num_classes=2, batch=1)
    with torch.no_grad():
        embeddings = net.encode(torch.rand(1, 1, *spatial, generator=torch.Generator().manual_seed(1)))
        with_token = net.decode_prompts(embeddings, prompts, 1)
        kept = net.decode_prompts(embeddings, replace(prompts, class_token=torch.tensor([[True, True]])), 1)
        dropped = net.decode_prompts(embeddings, replace(prompts, class_token=torch.tensor([[False, False]])), 1)
        sparse, dense = net.prompt_encoder(points=None, boxes=prompts.boxes[0, :1], masks=None)
        padding = net.prompt_encoder.not_a_point_embed.weight[None]
        by_hand, _ = net.mask_decoder(embeddings, net.prompt_encoder.get_dense_pe(),
                                      torch.cat([sparse, padding], dim=1), dense, multimask_output=False)
    assert torch.equal(kept, with_token)
    assert torch.allclose(dropped[0, 0], by_hand[0, 0], atol=1e-5)  # the box and SAM's padding token
    assert not torch.allclose(dropped[0, 0], with_token[0, 0], atol=1e-3)
    assert torch.equal(dropped[0, 1], with_token[0, 1])  # an automatic pair has only its class token: untouched


def test_class_token_dropout_is_drawn_per_session():
    image, label, prompts = _batch(3)
    seen = []
    for dropout, expected in ((0.0, None), (1.0, False)):
        net = _net(3)

        def spy(embeddings, sam_prompts, *args, decode=net.decode_prompts, **kwargs):
            seen.append(sam_prompts.class_token)
            return decode(embeddings, sam_prompts, *args, **kwargs)

        net.decode_prompts = spy
        seen.clear()
        sessions = InteractiveSessions(max_rounds=2, class_token_dropout=dropout, seed=5)
        _trainer(net, sessions, automatic_loss_weight=0.0)._session_logits(image, label, prompts)
        if expected is None:
            assert all(flags is None for flags in seen)
        else:  # every prompted decoding of the session, first round to last, without the token
            assert seen and all(flags is not None and not flags.any() for flags in seen)
    with pytest.raises(ValueError, match="class_token_dropout"):
        InteractiveSessions(class_token_dropout=1.5)


@pytest.mark.parametrize("as_keywords", [True, False])
def test_the_first_prompts_of_a_batch_reach_the_sessions(as_keywords):
    from monai.bundle import ConfigParser
    from monai.engines import PrepareBatchExtraInput

    from medsa_monai.bundle import TEMPLATE_DIR

    image, label, prompts = _batch(2)
    template = ConfigParser()
    template.read_config(str(TEMPLATE_DIR / "train.json"))
    keys = ["points", "point_labels", "boxes", "mask_inputs"]
    prepare = template.get_parsed_content("train#trainer#prepare_batch") if as_keywords else \
        PrepareBatchExtraInput(keys)  # the bundles' (keywords) and the positional form
    prompts["mask_inputs"] = torch.full((2, 2, 32, 32), math.nan)
    trainer = _trainer(_net(2), InteractiveSessions(max_rounds=0, seed=1))
    trainer.prepare_batch = prepare
    seen = []
    run = trainer.sessions.run
    trainer.sessions.run = lambda *args, **kwargs: seen.append(kwargs) or run(*args, **kwargs)
    trainer._iteration(trainer, {"image": image, "label": label, **prompts})
    assert sorted(seen[0]) == sorted(keys)
    assert all(torch.equal(seen[0][k].nan_to_num(-7), prompts[k].nan_to_num(-7)) for k in keys)
