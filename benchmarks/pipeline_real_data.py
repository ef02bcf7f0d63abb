"""Run the whole pipeline on a data set folder, as a user would, and print Dice per class or region on one
validation fold and the seconds each stage took.

    python benchmarks/pipeline_real_data.py --data ../shared/data/BUSI --output runs/busi --minutes 12
    python benchmarks/pipeline_real_data.py --data ../shared/data/Fundus/DrishtiGS --regions "disc=1,2;cup=2" \\
        --output runs/drishti --minutes 12
    python benchmarks/pipeline_real_data.py --shared ../shared/data --output runs/real --minutes 5

``--shared`` runs every data set found in that folder (:data:`SHARED_SETS`, each with the options it needs) one
after the other and prints one table.

Stages: ``medsa ingest``, ``medsa plan`` (vit_tiny, 5 seeded folds), ``medsa train`` of one fold (every weight
trains: no SAM checkpoint can be had here, so the tiny SAM starts from random weights; ``--image-size`` caps
SAM's frame so that a 2-core CPU trains in minutes; ``--minutes`` is the training budget), ``medsa predict`` of
that fold's validation images (never seen in training; the last epoch's model, so they choose nothing) and
``medsa evaluate`` against their labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medsa_monai.cli import main as medsa

SHARED_SETS = {  # folder in ../shared/data -> what the data set needs beyond its folder (its README says why)
    "Task04_Hippocampus": {},
    "PH2": {},
    "Fundus/DrishtiGS": {"regions": "disc=1,2;cup=2"},
    "BUSI": {},
    "DSB2018": {},
    "HC18": {},
}


def _stage(name: str, seconds: dict, *args: str) -> None:
    start = time.time()
    medsa(list(args))
    seconds[name] = time.time() - start


def run(data: Path, output: Path, regions: str | None, labels: str | None, fold: int, folds: int, minutes: float,
        image_size: int, batch_size: int, seed: int, squeeze_2d: bool = False) -> dict:
    seconds: dict[str, float] = {}
    extra = (["--regions", regions] if regions else []) + (["--labels", labels] if labels else [])
    _stage("ingest", seconds, "ingest", str(data), str(output / "ingested"), *extra)
    _stage("plan", seconds, "plan", str(output / "ingested" / "dataset.json"), "--output-dir", str(output / "plan"),
           "--sam-variant", "vit_tiny", "--folds", str(folds), "--seed", str(seed),
           *(["--squeeze-2d"] if squeeze_2d else []))
    plan_file = output / "plan" / "plan.json"
    plan = json.loads(plan_file.read_text())
    settings = ["trainable=full", "sam_checkpoint=none", f"image_size={image_size}", f"batch_size={batch_size}",
                f"time_budget_minutes={minutes}", "max_epochs=1000", "val_interval=5", "num_workers=2",
                "progress_bar=false", f"seed={seed}"]
    if plan["spatial_dims"] == 2:  # 2D images are resized (and padded, keep_aspect) to the frame's side, no larger
        settings.append(f"patch_size=[{image_size},{image_size}]")
    _stage("train", seconds, "train", "--plan", str(plan_file), "--fold", str(fold), "--output", str(output / "runs"),
           "--set", *settings)
    run_dir = output / "runs" / f"fold_{fold}"
    last = sorted(run_dir.glob("models/checkpoint_epoch=*.pt"))[-1]
    epochs = int(last.stem.split("=")[1])

    datalist = json.loads(Path(plan["datalist_file"]).read_text())["training"]
    held_out = [item for item in datalist if item["fold"] == fold]
    images, references = output / "fold_images", output / "fold_labels"
    for folder, key in ((images, "image"), (references, "label")):
        folder.mkdir(parents=True, exist_ok=True)
        for item in held_out:
            link = folder / Path(item[key]).name
            if not link.exists():
                link.symlink_to(item[key])
    _stage("predict", seconds, "predict", "--model", str(last), "--input", str(images), "--output",
           str(output / "predictions"), "--plan", str(plan_file))
    _stage("evaluate", seconds, "evaluate", "--pred", str(output / "predictions"), "--ref", str(references),
           "--labels", str(output / "ingested" / "dataset.json"))
    summary = json.loads((output / "predictions" / "summary.json").read_text())
    empty = [c for c in summary["metric_per_case"] if all(m["n_ref"] == 0 for m in c["metrics"].values())]
    result = {"data": str(data), "cases": len(datalist), "validation_cases": len(held_out), "fold": fold,
              "empty_reference_cases": len(empty),
              "empty_predicted_empty": sum(all(m["n_pred"] == 0 for m in c["metrics"].values()) for c in empty),
              "epochs": epochs, "image_size": image_size, "keep_aspect": plan["keep_aspect"],
              "configuration": plan["configuration"], "in_channels": plan["in_channels"], "seconds": seconds,
              "dice": {summary["class_names"][k]: v["Dice"] for k, v in summary["mean"].items()},
              "dice_std": {summary["class_names"][k]: summary["spread"][k]["Dice"]["std"] for k in summary["mean"]}}
    (output / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a data set folder (any layout medsa ingest reads)")
    source.add_argument("--shared", type=Path, help="the shared data folder: run every data set of SHARED_SETS in it")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--regions", help="e.g. 'disc=1,2;cup=2'")
    parser.add_argument("--labels", help="{value: name} JSON")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget")
    parser.add_argument("--image-size", type=int, default=128, help="SAM's frame (a multiple of 16)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--squeeze-2d", action="store_true", help="plan 2D data without keeping the aspect ratio")
    return parser.parse_args()


def report(result: dict) -> None:
    print(f"\n{result['data']}: {result['cases']} cases, fold {result['fold']} held out ({result['validation_cases']} "
          f"cases), {result['epochs']} epochs at image_size {result['image_size']}, keep_aspect "
          f"{result['keep_aspect']}")
    for name, dice in result["dice"].items():
        print(f"  {name:>12}: Dice {dice:.3f} +- {result['dice_std'][name]:.3f}")
    if result["empty_reference_cases"]:
        print(f"  images with nothing to segment: {result['empty_predicted_empty']} of "
              f"{result['empty_reference_cases']} predicted empty")
    print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))


def table(results: dict[str, dict]) -> str:
    """The results as the Markdown table of docs/pipeline.md."""
    lines = ["| data set | cases (held out) | configuration, channels | epochs | Dice on the held-out fold | "
             "seconds (ingest / plan / train / predict / evaluate) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        dice = ", ".join(f"{k} {v:.3f} +- {r['dice_std'][k]:.3f}" for k, v in r["dice"].items())
        if r["empty_reference_cases"]:
            dice += f" ({r['empty_predicted_empty']} of {r['empty_reference_cases']} empty images predicted empty)"
        steps = " / ".join(f"{r['seconds'][k]:.0f}" for k in ("ingest", "plan", "train", "predict", "evaluate"))
        lines.append(f"| {name} | {r['cases']} ({r['validation_cases']}) | {r['configuration']}, "
                     f"{r['in_channels']} | {r['epochs']} | {dice} | {steps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = parse_args()
    if args.data is not None:
        report(run(args.data, args.output, args.regions, args.labels, args.fold, args.folds, args.minutes,
                   args.image_size, args.batch_size, args.seed, args.squeeze_2d))
    else:
        found = {name: options for name, options in SHARED_SETS.items() if (args.shared / name).is_dir()}
        if not found:
            raise SystemExit(f"none of {list(SHARED_SETS)} is in {args.shared}")
        results = {}
        for name, options in found.items():
            results[name] = run(args.shared / name, args.output / name.replace("/", "_"), options.get("regions"),
                                options.get("labels"), args.fold, args.folds, args.minutes, args.image_size,
                                args.batch_size, args.seed, args.squeeze_2d)
            report(results[name])
        print("\n" + table(results))
