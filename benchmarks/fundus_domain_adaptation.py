"""Cross-camera domain adaptation of optic disc and cup segmentation, SAM-DA's setting, on any target folder.

    python benchmarks/fundus_domain_adaptation.py --source <folder> --target <folder> --target-labelled 10 \\
        --minutes 20 --output runs/fundus_da

``<folder>``: ``images/*.png`` (RGB crops around the disc, any size) and ``labels/*.png`` (0 background, 1 rim,
2 cup). No SAM checkpoint exists here, so the source model is ``vit_tiny`` trained in full on the source for
``--minutes`` (it plays the pretrained foundation), with every optional part present (Med-SA adapters, HyP-Adpt,
LoRA, SAM-DA's decoder adapter) so that each adaptation starts from the same weights. Then, on the target:

- ``source_only``: the source model as it is;
- supervised on ``--target-labelled`` target images chosen by ``--seed`` (never evaluated), each for
  ``--adapt-minutes``: ``samda_supervised`` (SAM-DA's decoder adapter and output heads), ``medsa_adapters``
  (Med-SA's preset: adapters, HyP-Adpt and the mask decoder), ``lora``, ``decoder_finetune``, ``full_finetune``;
- with no target labels: ``samda_tta`` (SAM-DA's test-time adaptation: entropy of confident augmented views,
  decoder adapter only, episodic) and ``tent`` (the same on every decoder parameter, a TENT-like baseline).

Every method is evaluated on the target images not used for labelled adaptation, at each image's own size, through
the bundle's ``tta.json`` (no adaptation steps for the supervised ones): Dice of the disc {1, 2} and the cup {2}, and
the mean absolute error of the vertical cup-to-disc ratio. Prints one table and writes ``<output>/results.json``.
Training budgets are met by timing short pilot runs first (1 and 3 epochs) and setting the epochs, so the
learning-rate schedule ends with the budget; the last epoch's model is used (no selection on target data).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from medsa_monai.data import find_datalist
from medsa_monai.networks import MedSA
from medsa_monai.networks.presets import parameter_group

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "medsa_fundus_disc_cup"
SUPERVISED = {  # method: (trainable preset, learning rate)
    "samda_supervised": ("samda", 1e-3),
    "medsa_adapters": ("medsa", 1e-3),
    "lora": ("lora", 1e-3),
    "decoder_finetune": ("decoder", 5e-4),
    "full_finetune": ("full", 2e-4),
}
TEST_TIME = {"samda_tta": ("adapter", {"samda_adapter"}),
             "tent": ("decoder", {"samda_adapter", "decoder_adapters", "sam_mask_decoder", "sam_output_heads"})}
PARTS = {"adapters": True, "hyper_prompt": True, "lora_rank": 4, "samda_tokens": 2}
ARCHITECTURE = {"network_def#architecture": PARTS}


def copy_cases(cases: list[dict], out: Path) -> Path:
    for key, folder in (("image", "images"), ("label", "labels")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for case in cases:
            shutil.copy(case[key], out / folder / Path(case[key]).name)
    return out


def parser_for(bundle: Path, files: list[str], overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in files])
    parser.update(overrides)
    return parser


def train(bundle: Path, common: dict, out: Path, data: Path, trainable: str, learning_rate: float, minutes: float,
          init: Path | None) -> tuple[Path, float]:
    """Train for ``minutes`` (pilots of 1 and 3 epochs set the epochs); returns the last checkpoint and the seconds."""
    start = time.time()

    def run(root: Path, epochs: int) -> Path:
        parser = parser_for(bundle, ["train.json"], {
            **common, "dataset_dir": str(data), "bundle_root": str(root), "trainable": trainable,
            "learning_rate": learning_rate, "max_epochs": epochs, "val_interval": epochs, "warmup_epochs": 0,
            "time_budget_minutes": minutes})
        network = parser.get_parsed_content("network")
        if init is not None:
            state = torch.load(init, map_location="cpu", weights_only=True)
            network.load_state_dict(state.get("model", state))
        parser.get_parsed_content("initialize")
        parser.get_parsed_content("run")
        return max((root / "models").glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))

    # Two pilots, 1 and 3 epochs: their difference is two epochs without the set-up (data caching, building the
    # network), which a single pilot would count as epoch time and so leave much of the budget unused.
    durations = []
    for epochs in (1, 3):
        pilot_start = time.time()
        run(out / f"pilot_{epochs}", epochs)
        durations.append(time.time() - pilot_start)
    epoch_seconds = max((durations[1] - durations[0]) / 2, 1e-3)
    remaining = minutes * 60 - (time.time() - start) - (durations[0] - epoch_seconds)
    epochs = max(1, int(remaining // epoch_seconds))
    return run(out, epochs), time.time() - start


def evaluate(bundle: Path, common: dict, out: Path, data: Path, checkpoint: Path, trainable: str, steps: int = 0,
             adapt: str = "adapter") -> tuple[dict, float]:
    parser = parser_for(bundle, ["train.json", "tta.json"], {
        **common, "dataset_dir": str(data), "bundle_root": str(out), "trainable": trainable,
        "tta#checkpoint#load_path": str(checkpoint), "tta_steps": steps, "tta_adapt": adapt})
    parser.get_parsed_content("initialize")
    start = time.time()
    parser.get_parsed_content("run")
    seconds = time.time() - start
    summary = json.loads((out / "eval" / "tta" / "summary.json").read_text())
    return summary, seconds


def trainable_parameters(image_size: int, trainable: str | None = None, groups: set[str] | None = None) -> int:
    network = MedSA(2, 3, 2, "vit_tiny", image_size=image_size, trainable=trainable or "full",
                    background_channel=False, architecture=PARTS)
    if groups is not None:
        return sum(p.numel() for n, p in network.named_parameters() if parameter_group(n) in groups)
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def row(method: str, summary: dict, parameters: int, seconds: float) -> dict:
    classes = summary["classes"]
    return {"method": method, "dice_disc": classes["disc"]["dice"]["mean"], "dice_cup": classes["cup"]["dice"]["mean"],
            "vcdr_mae": summary["vcdr"]["mae"], "trainable_parameters": parameters, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="source folder: images/ and labels/")
    parser.add_argument("--target", required=True, help="target folder: images/ and labels/")
    parser.add_argument("--target-labelled", type=int, default=10, help="labelled target images for supervised "
                        "adaptation (chosen by --seed, never evaluated)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of the source model")
    parser.add_argument("--adapt-minutes", type=float, default=None, help="budget of each supervised adaptation "
                        "(default: a quarter of --minutes)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--image-size", type=int, default=128, help="SAM frame of the tiny SAM")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="of the source model, trained in full "
                        "(2e-3 collapsed to empty predictions after ~20 epochs on Drishti-GS)")
    parser.add_argument("--tta-steps", type=int, default=10)
    parser.add_argument("--tta-views", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", default=str(BUNDLE), help="a 2D bundle with disc and cup regions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    bundle, out = Path(args.bundle), Path(args.output).resolve()
    target = find_datalist(args.target)
    if args.target_labelled >= len(target):
        raise SystemExit(f"--target-labelled {args.target_labelled} leaves no target image to evaluate "
                         f"({len(target)} in {args.target})")
    order = np.random.RandomState(args.seed).permutation(len(target))
    labelled = copy_cases([target[i] for i in order[: args.target_labelled]], out / "data" / "target_labelled")
    held_out = copy_cases([target[i] for i in order[args.target_labelled:]], out / "data" / "target_evaluation")
    adapt_minutes = args.adapt_minutes if args.adapt_minutes is not None else args.minutes / 4
    size = args.image_size
    common = {"sam_variant": "vit_tiny", "sam_checkpoint": None, "image_size": size, "patch_size": [size, size],
              "batch_size": args.batch_size, "seed": args.seed, "num_workers": 0, "progress_bar": False,
              "datalist_file": None, "tta_views": args.tta_views, "cache_embeddings": False,
              "interactive_max_rounds": 2, **ARCHITECTURE}

    source_model, source_seconds = train(bundle, common, out / "source", Path(args.source), "full",
                                         args.learning_rate, args.minutes, None)
    summary, seconds = evaluate(bundle, common, out / "eval_source_only", held_out, source_model, "full")
    rows = [row("source_only", summary, 0, 0.0)]
    for method, (trainable, learning_rate) in SUPERVISED.items():
        adapted, adapt_seconds = train(bundle, common, out / method, labelled, trainable, learning_rate,
                                       adapt_minutes, source_model)
        summary, _ = evaluate(bundle, common, out / f"eval_{method}", held_out, adapted, trainable)
        rows.append(row(method, summary, trainable_parameters(size, trainable), adapt_seconds))
    for method, (adapt, groups) in TEST_TIME.items():
        summary, seconds = evaluate(bundle, common, out / f"eval_{method}", held_out, source_model, "full",
                                    args.tta_steps, adapt)
        rows.append(row(method, summary, trainable_parameters(size, groups=groups), seconds))

    total = trainable_parameters(size, "full")
    print(f"\nsource {args.source} ({len(find_datalist(args.source))} images, {source_seconds:.0f} s of training), "
          f"target {args.target}: {len(target) - args.target_labelled} evaluated, {args.target_labelled} labelled "
          f"for supervised adaptation; vit_tiny at {size}, seed {args.seed}; {total:,} parameters in all\n")
    print("| method | Dice disc | Dice cup | vCDR MAE | trainable parameters | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        share = f" ({100 * r['trainable_parameters'] / total:.1f}%)" if r["trainable_parameters"] else ""
        print(f"| {r['method']} | {r['dice_disc']:.3f} | {r['dice_cup']:.3f} | {r['vcdr_mae']:.3f} | "
              f"{r['trainable_parameters']:,}{share} | {r['seconds']:.0f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
