"""Where an iteration of ``medsa demo``'s training spends its time: a few epochs of the demo's recipe on its
synthetic data, profiled, with the share of each stage.

    python benchmarks/demo_profile.py --epochs 3
    python benchmarks/demo_profile.py --epochs 3 --bf16      # the same under CPU bfloat16 autocast

Stages (per iteration, from ``cProfile``; shares of the iteration's own time): loading the batch, encoding it, the
correction rounds without gradients (:class:`~medsa_monai.training.InteractiveSessions`), decoding the last round and
automatic mode with gradients, the backward pass and the optimizer step. The first epoch includes start-up; the
table covers all of them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from medsa_monai.data.synthetic import make_synthetic_dataset
from medsa_monai.demo import DEMO_OVERRIDES, find_bundle
from medsa_monai.training.trainer import InteractiveTrainer

STAGES = {  # stage -> (file suffix, function name) whose cumulative time it is
    "iteration (all)": ("training/trainer.py", "_iteration"),
    "load the batch (before the iteration)": ("torch/utils/data/dataloader.py", "__next__"),
    "encode": ("predictor/predictor.py", "encode"),
    "correction rounds (no gradients)": ("training/sessions.py", "run"),
    "decode with gradients": ("training/trainer.py", "_decode_session"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer step": ("torch/optim/adam.py", "step"),
}


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    seconds, calls = 0.0, 0
    for (path, _, function), (_, primitive, _, cumulative, _) in stats.stats.items():
        if function == name and path.replace("\\", "/").endswith(suffix):
            seconds += cumulative
            calls += primitive
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="run the forward passes under CPU bfloat16 autocast")
    args = parser.parse_args()

    bundle = find_bundle()
    with tempfile.TemporaryDirectory() as scratch:
        data = make_synthetic_dataset(Path(scratch) / "data", num_cases=args.cases, seed=args.seed)
        config = ConfigParser()
        config.read_config(str(bundle / "configs" / "train.json"))
        config.read_meta(str(bundle / "configs" / "metadata.json"))
        config.update({**DEMO_OVERRIDES, "dataset_dir": str(data), "bundle_root": str(Path(scratch) / "run"),
                       "seed": args.seed, "max_epochs": args.epochs, "sam_checkpoint": "none",
                       "val_interval": args.epochs + 1})
        config.get_parsed_content("initialize")
        trainer = config.get_parsed_content("train#trainer")
        if args.bf16:
            forward = InteractiveTrainer._forward_and_loss

            def autocast_forward(self, *inputs):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return forward(self, *inputs)

            trainer._forward_and_loss = autocast_forward.__get__(trainer)
        epoch_seconds, start = [], [time.perf_counter()]

        @trainer.on(Events.EPOCH_COMPLETED)
        def _epoch_time(_):
            epoch_seconds.append(time.perf_counter() - start[0])
            start[0] = time.perf_counter()

        profile = cProfile.Profile()
        profile.enable()
        trainer.run()
        profile.disable()
    stats = pstats.Stats(profile)
    iterations = trainer.state.iteration
    total, _ = _cumulative(stats, *STAGES["iteration (all)"])
    print(f"\n{args.epochs} epochs of the demo's training, {iterations} iterations, {torch.get_num_threads()} threads"
          f"{', bfloat16 autocast' if args.bf16 else ''}; seconds per epoch: "
          + ", ".join(f"{s:.1f}" for s in epoch_seconds))
    print("\n| stage | s per iteration | share of an iteration |")
    print("|---|---|---|")
    for stage, (suffix, name) in STAGES.items():
        seconds, _ = _cumulative(stats, suffix, name)
        print(f"| {stage} | {seconds / iterations:.3f} | {seconds / total:.0%} |")


if __name__ == "__main__":
    main()
