"""The real run of the hippocampus bundle: MedSA (vit_tiny, trained in full) and a DynUNet baseline, each trained
for the same wall-clock budget with the same pipeline, then evaluated on the same held-out cases.

    python benchmarks/hippocampus_run.py --data ../shared/data/Task04_Hippocampus --out runs/hippocampus

For each model: a one-epoch pilot (without the calibration that follows training) times an epoch, so that the
learning-rate schedule ends with the budget; the training then runs under ``time_budget_minutes``; the model of the
last epoch (no selection on the held-out cases) is evaluated in the original image space, and MedSA also in
interactive mode (clicks, box). Prints a Markdown table and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "medsa_hippocampus_mri" / "configs"
BASELINE = ROOT / "benchmarks" / "configs" / "dynunet_baseline.json"

MODELS = {
    "medsa": {"files": [], "args": {"sam_variant": "vit_tiny", "sam_checkpoint": "None", "trainable": "full",
                                    "image_size": 128, "learning_rate": 2e-3}},
    "dynunet": {"files": [str(BASELINE)], "args": {"learning_rate": 2e-3}},
}


def bundle(run_id: str, files: list[str], args: dict, log: Path) -> float:
    """Run ``python -m monai.bundle run <run_id>``; return its wall time. Output goes to ``log``."""
    command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", repr(files),
               "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    for key, value in args.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    start = time.time()
    with open(log, "a") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MSD Task04_Hippocampus folder")
    parser.add_argument("--out", default="runs/hippocampus")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the last checkpoint of an earlier run in --out again instead of training")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="bundle settings for every model, e.g. interactive_automatic_loss_weight=0.1")
    options = parser.parse_args()

    results = {}
    results_file = Path(options.out) / "results.json"
    for name in options.models:
        out = Path(options.out).resolve() / name
        out.mkdir(parents=True, exist_ok=True)
        log = out / "log.txt"
        model = MODELS[name]
        train_files = [str(CONFIGS / "train.json"), *model["files"]]
        common = {"dataset_dir": str(Path(options.data).resolve()), "seed": options.seed, "val_fraction": 0.2,
                  "num_workers": 2, "progress_bar": "False", **model["args"],
                  **dict(item.split("=", 1) for item in options.set)}

        previous = json.loads(results_file.read_text()).get(name, {}) if results_file.is_file() else {}
        if options.evaluate_only:  # the models of an earlier run, evaluated again with today's code
            pilot, epochs, seconds = (previous.get(k, math.nan) for k in (
                "pilot_epoch_seconds", "planned_epochs", "train_seconds"))
        else:
            pilot = bundle("training", train_files, {**common, "bundle_root": str(out / "pilot"), "max_epochs": 1,
                                                      "val_interval": 1000, "calibrate#run": "$None"}, log)
            epochs = max(1, math.floor(options.minutes * 60 / (pilot * 1.05)))
            seconds = bundle("training", train_files, {**common, "bundle_root": str(out), "max_epochs": epochs,
                                                       "val_interval": 5, "warmup_epochs": 1,
                                                       "time_budget_minutes": options.minutes,
                                                       "calibrate#load_path": "$None"}, log)  # the last epoch
        checkpoints = sorted((out / "models").glob("checkpoint_epoch=*.pt"),
                             key=lambda path: int(path.stem.split("=")[1]))
        if not checkpoints:
            raise SystemExit(f"no checkpoint_epoch=*.pt in {out / 'models'}: nothing to evaluate")
        last = checkpoints[-1]
        if options.evaluate_only:  # training ends by choosing the propagation weight; earlier runs choose it now
            bundle("calibrating", train_files, {**common, "bundle_root": str(out), "calibrate#load_path": str(last)},
                   log)
        evaluate_files = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), *model["files"]]
        bundle("evaluating", evaluate_files, {**common, "bundle_root": str(out),
                                              "evaluate#handlers#0#load_path": str(last),
                                              "interactive#handlers#0#load_path": str(last)}, log)
        summary = json.loads((out / "eval" / "summary.json").read_text())
        entry = {"epochs": int(last.stem.split("=")[1]), "planned_epochs": epochs, "train_seconds": seconds,
                 "pilot_epoch_seconds": pilot, "classes": summary["classes"], "num_cases": summary["num_cases"]}
        calibration = out / "models" / "propagation.json"
        if calibration.is_file():
            entry["propagation_calibration"] = json.loads(calibration.read_text())
        interactive = out / "eval" / "interactive_summary.json"
        if interactive.is_file():
            entry["interactive"] = json.loads(interactive.read_text())
        results[name] = entry
        results_file.write_text(json.dumps(results, indent=2))

    print("| model | epochs | class | Dice | HD95 (mm) |")
    print("|---|---|---|---|---|")
    for name, entry in results.items():
        for cls, metrics in entry["classes"].items():
            print(f"| {name} | {entry['epochs']} | {cls} | {metrics['dice']['mean']:.3f} +- "
                  f"{metrics['dice']['std']:.3f} | {metrics['hd95']['mean']:.2f} |")
    for name, entry in results.items():
        report = entry.get("interactive")
        if not report:
            continue
        budget = report["noc_budget"]
        print(f"\n{name}, interactive (every prompt propagated; NoC budget {budget} clicks):\n")
        print("| class | automatic | automatic, prompts' frame | box | 1 / 3 / 5 / 10 / 20 clicks | NoC@80 | NoC@85 |"
              " NoC@90 |"
              " CVPR 2025: box, clicks 1-5 | DSC_AUC |"
              " NSD_AUC | final Dice | final NSD | click on every slice |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        cvpr = report.get("cvpr2025", {})
        for cls, inter in report["classes"].items():
            automatic = entry["classes"].get(cls, {}).get("dice", {}).get("mean", math.nan)
            clicks = " / ".join(f"{inter['dice_after_clicks'].get(k, math.nan):.3f}"
                                for k in ("1", "3", "5", "10", "20"))
            row = [cls, f"{automatic:.3f}", f"{inter.get('automatic_dice', math.nan):.3f}",
                   f"{inter.get('box_dice', math.nan):.3f}", clicks,
                   f"{inter['noc'].get('80', math.nan):.2f}", f"{inter['noc']['85']:.2f}", f"{inter['noc']['90']:.2f}"]
            protocol = cvpr.get("mean") if cls == "mean" else cvpr.get("classes", {}).get(cls)
            if protocol:
                row += [" / ".join(f"{v:.3f}" for v in protocol["dice"])] + [
                    f"{protocol[k]:.3f}" for k in ("dsc_auc", "nsd_auc", "final_dice", "final_nsd")]
            else:
                row += ["-"] * 5
            row.append(f"{inter.get('slice_clicks_dice', math.nan):.3f}")
            print("| " + " | ".join(row) + " |")
        if report.get("zoom_after_clicks"):
            print("\nmean zoom of each click's window: " + " / ".join(f"{z:.2f}" for z in report["zoom_after_clicks"]))


if __name__ == "__main__":
    main()
