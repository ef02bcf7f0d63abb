"""The demo's figures over seeds: automatic and interactive Dice of `medsa demo` for each seed, side by side, so that a
change is judged against the run-to-run noise.

    python benchmarks/demo_seeds.py --seeds 0 1 --out runs/demo
    python benchmarks/demo_seeds.py --seeds 0 --out runs/demo_before \\
        --evaluate-only runs/demo_before/seed0/models/checkpoint_epoch=60.pt --set prompt_class_token=False
    python benchmarks/demo_seeds.py --seeds 0 1 2 3 --out runs/demo --common-test 40

Each seed makes its own synthetic data set (24 volumes, 19 trained on, 5 held out), trains the hippocampus bundle
for the demo's epochs (``--epochs``; vit_tiny from scratch, image_size 96, CPU) and evaluates the last epoch's model
(no selection on the held-out cases) with every protocol of `evaluate.json`. A seed whose
`eval/interactive_summary.json` exists is not run again. ``--evaluate-only`` evaluates a given checkpoint on each
seed's held-out cases instead of training (e.g. a model trained by an earlier version of the code), with ``--set
key=value`` overrides of the bundle's settings.

Five held-out volumes make each seed's figures noisy. ``--common-test N`` also evaluates every seed's trained model
on the same N synthetic volumes (generator seed ``--common-test-seed``, 1000: no seed's training data), written to
``<out>/seed<S>/common_test/`` and printed as a second table, so that seeds differ only by their training. The
evaluation overrides only keys that earlier versions of the bundle also have, so the script can be copied into a
checkout of an earlier commit to evaluate that recipe's models on the same volumes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from monai.bundle import run

from medsa_monai.bundle.overrides import parse_overrides
from medsa_monai.data.synthetic import make_synthetic_dataset
from medsa_monai.demo import DEMO_EPOCHS, DEMO_OVERRIDES, find_bundle, run_demo
from medsa_monai.training import latest_checkpoint


def evaluate(out: Path, seed: int, data_dir: Path, checkpoint: Path | str, settings: dict) -> None:
    """Run the bundle's ``evaluating`` with the demo's settings and ``settings`` on top, loading ``checkpoint``."""
    configs = find_bundle() / "configs"
    run("evaluating", config_file=[str(configs / "train.json"), str(configs / "evaluate.json")],
        meta_file=str(configs / "metadata.json"), logging_file=str(configs / "logging.conf"),
        **{**DEMO_OVERRIDES, "dataset_dir": str(data_dir), "bundle_root": str(out), "seed": seed,
           **settings,
           "evaluate#handlers#0#load_path": str(checkpoint), "interactive#handlers#0#load_path": str(checkpoint)})


def evaluate_only(out: Path, seed: int, checkpoint: Path, overrides: dict) -> None:
    evaluate(out, seed, make_synthetic_dataset(out / "data", num_cases=24, seed=seed), checkpoint, overrides)


def evaluate_common(out: Path, seed: int, test_dir: Path, overrides: dict) -> Path:
    """Evaluate the last epoch's model of ``out`` (trained with ``overrides``) on every volume of ``test_dir``;
    returns the report folder."""
    report_dir = out / "common_test"
    if not (report_dir / "interactive_summary.json").is_file():
        dataset = json.loads((test_dir / "dataset.json").read_text())
        items = [{k: str(test_dir / item[k]) for k in ("image", "label")} for item in dataset["training"]]
        evaluate(out, seed, test_dir, latest_checkpoint(out / "models"),
                 {**overrides, "output_dir": str(report_dir), "save_predictions": False, "interactive_clicks": 5,
                  "protocol_clicks": 5, "paper_protocols": [], "evaluate#dataset#data": items,
                  "interactive#dataset#data": items})
    return report_dir


def print_table(rows: dict[int, dict[str, float]]) -> None:
    columns = list(next(iter(rows.values())))
    print("| seed | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for seed, row in rows.items():
        print(f"| {seed} | " + " | ".join(f"{row.get(c, math.nan):.3f}" for c in columns) + " |")
    if len(rows) > 1:
        spread = {c: [row[c] for row in rows.values() if c in row] for c in columns}
        print("| mean | " + " | ".join(f"{statistics.mean(v):.3f}" for v in spread.values()) + " |")
        print("| half range | " + " | ".join(f"{(max(v) - min(v)) / 2:.3f}" for v in spread.values()) + " |")


def figures(out: Path, report_dir: Path | None = None) -> dict[str, float]:
    report_dir = out / "eval" if report_dir is None else report_dir
    summary = json.loads((report_dir / "summary.json").read_text())
    report = json.loads((report_dir / "interactive_summary.json").read_text())
    mean = report["classes"]["mean"]
    row = {"automatic": summary["classes"]["mean"]["dice"]["mean"],
           "automatic, prompts' frame": mean.get("automatic_dice", math.nan), "box": mean.get("box_dice", math.nan)}
    row.update({f"{k} click{'s' if k != '1' else ''}": v for k, v in mean["dice_after_clicks"].items()})
    row.update({"NoC@85": mean["noc"]["85"], "NoC@90": mean["noc"]["90"]})
    cvpr = report.get("cvpr2025", {}).get("mean")
    if cvpr:
        row.update({"CVPR box": cvpr["dice"][0], "CVPR 5 clicks": cvpr["final_dice"], "DSC_AUC": cvpr["dsc_auc"],
                    "NSD_AUC": cvpr["nsd_auc"]})
        steps = cvpr["dice"]
        row["CVPR monotone"] = float(all(b >= a - 1e-9 for a, b in zip(steps, steps[1:], strict=False)))
    curve = mean.get("dice_curve", [])
    row["clicks monotone"] = float(all(b >= a - 1e-9 for a, b in zip(curve, curve[1:], strict=False))) if curve \
        else math.nan
    if "slice_clicks_dice" in mean:
        row["click every slice"] = mean["slice_clicks_dice"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/demo_seeds")
    parser.add_argument("--evaluate-only", type=Path, default=None, help="a checkpoint to evaluate instead")
    parser.add_argument("--set", nargs="*", default=[], help="key=value bundle overrides (JSON values)")
    parser.add_argument("--common-test", type=int, default=0, help="also evaluate on N common synthetic volumes")
    parser.add_argument("--common-test-seed", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="training epochs (the demo's by default)")
    options = parser.parse_args()
    overrides = parse_overrides(options.set)

    root = Path(options.out).resolve()
    rows = {}
    for seed in options.seeds:
        out = root / f"seed{seed}"
        if not (out / "eval" / "interactive_summary.json").is_file():
            if options.evaluate_only is not None:
                evaluate_only(out, seed, options.evaluate_only.resolve(), overrides)
            else:
                run_demo(out, seed=seed, epochs=options.epochs, **overrides)
        rows[seed] = figures(out)
    print("Each seed's own held-out volumes:")
    print_table(rows)
    if options.common_test > 0:
        test_dir = make_synthetic_dataset(root / "common_test_data", num_cases=options.common_test,
                                          seed=options.common_test_seed)
        common = {seed: figures(root / f"seed{seed}", evaluate_common(root / f"seed{seed}", seed, test_dir,
                                                                    overrides))
                  for seed in options.seeds}
        print(f"\nThe same {options.common_test} volumes for every seed (generator seed {options.common_test_seed}):")
        print_table(common)


if __name__ == "__main__":
    main()
