"""The fundus bundle's model-card run: train on a seeded split of a fundus folder, evaluate on the held-out part.

    python benchmarks/fundus_run.py --data ../shared/data/Fundus/DrishtiGS --minutes 15 --output runs/fundus

The bundle ``bundles/medsa_fundus_disc_cup`` with its own split (``val_fraction`` 0.2, ``seed``): the held-out cases
are only evaluated (the last epoch's model, no selection on them). No SAM checkpoint exists here, so the network is
``vit_tiny`` (``--set sam_variant=vit_nano`` for the narrower one) trained in full from scratch at ``--image-size``
(the other presets train adapters on a frozen SAM, which is random without the checkpoint). The budget is met by
timing pilot runs of 1 and 3 epochs first. Prints Dice of the optic disc and cup (regions {1, 2} and {2}) and the
vertical cup-to-disc ratio's mean absolute error, and writes ``<output>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fundus_domain_adaptation import BUNDLE, parser_for, train

from medsa_monai.bundle.overrides import parse_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with images/ and labels/")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4,
                        help="2e-3 collapsed to empty predictions after ~20 epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    parser.add_argument("--clicks", type=int, default=0,
                        help="also run the interactive evaluation with this many iterative clicks (0: skip it)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="bundle settings, e.g. prompt_zoom_probability=0.5 interactive_zoom=true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output).resolve()
    size = args.image_size
    common = {"sam_variant": "vit_tiny", "sam_checkpoint": None, "image_size": size, "patch_size": [size, size],
              "batch_size": args.batch_size, "seed": args.seed, "num_workers": 0, "progress_bar": False,
              "cache_embeddings": False,
              **parse_overrides(args.set)}
    checkpoint, seconds = train(BUNDLE, common, out / "full", Path(args.data), "full", args.learning_rate, args.minutes,
                                None)
    evaluation = parser_for(BUNDLE, ["train.json", "evaluate.json"], {
        **common, "dataset_dir": str(Path(args.data).resolve()), "bundle_root": str(out / "full"),
        "trainable": "full", "evaluate#handlers#0#load_path": str(checkpoint),
        "interactive#handlers#0#load_path": str(checkpoint), "interactive_clicks": args.clicks,
        "paper_protocols": []})
    evaluation.get_parsed_content("initialize")
    evaluation.get_parsed_content("run")
    summary = json.loads((out / "full" / "eval" / "summary.json").read_text())
    epochs = int(checkpoint.stem.split("=")[1])
    result = {"preset": "full", "sam_variant": common["sam_variant"], "image_size": size, "epochs": epochs,
              "train_seconds": round(seconds), "held_out_cases": summary["num_cases"],
              "dice_disc": summary["classes"]["disc"]["dice"], "dice_cup": summary["classes"]["cup"]["dice"],
              "vcdr": summary["vcdr"]}
    print(f"\n{args.data}: {summary['num_cases']} held-out cases (val_fraction 0.2, seed {args.seed}); "
          f"{common['sam_variant']} at {size}, trained in full for {seconds / 60:.1f} min ({epochs} epochs)\n")
    print("| preset | Dice disc | Dice cup | vCDR MAE |")
    print("|---|---|---|---|")
    d, c, v = result["dice_disc"], result["dice_cup"], result["vcdr"]
    print(f"| full | {d['mean']:.3f} +- {d['std']:.3f} | {c['mean']:.3f} +- {c['std']:.3f} | "
          f"{v['mae']:.3f} +- {v['std']:.3f} |")
    interactive = out / "full" / "eval" / "interactive_summary.json"
    if args.clicks and interactive.is_file():
        report = json.loads(interactive.read_text())
        result["interactive"] = report
        print("\n| region | automatic (prompts' frame) | box | 1 / 3 / 5 / 10 / 20 clicks | NoC@80 | NoC@85 | NoC@90 |")
        print("|---|---|---|---|---|---|---|")
        for name, entry in report["classes"].items():
            clicks = " / ".join(f"{entry['dice_after_clicks'].get(k, float('nan')):.3f}"
                                for k in ("1", "3", "5", "10", "20"))
            print(f"| {name} | {entry.get('automatic_dice', float('nan')):.3f} | "
                  f"{entry.get('box_dice', float('nan')):.3f} | {clicks} | "
                  + " | ".join(f"{entry['noc'].get(t, float('nan')):.2f}" for t in ("80", "85", "90")) + " |")
        if report.get("zoom_after_clicks"):
            print("\nmean zoom of each click's window: " + " / ".join(f"{z:.2f}" for z in report["zoom_after_clicks"]))
    (out / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
