"""Few labels, few parameters: a foundation SAM pretrained on a corpus of data sets, adapted to a new data set with
a handful of labelled cases by each trainable preset, against training every weight from scratch.

    python benchmarks/few_label_adaptation.py \\
        --corpus ../shared/data/PH2 ../shared/data/BUSI ../shared/data/DSB2018 ../shared/data/HC18 \\
                 ../shared/data/Task04_Hippocampus \\
        --target ../shared/data/Fundus/DrishtiGS --regions DrishtiGS="disc=1,2;cup=2" \\
        --labelled 5 10 20 --minutes 2 --pretrain-minutes 40 --seeds 0 1 --output runs/few_label_drishti

Stages, each skipped when its output exists (so a stopped run continues):

1. every data set folder (any layout ``medsa ingest`` reads: plain folder, MSD, nnU-Net raw) is ingested and
   planned (vit_tiny) under ``<cache dir>/datasets/<name>/`` (``--cache-dir``, default ``OUT``); the target must
   not be in the corpus (refused by name and by content);
2. ``medsa pretrain`` of the corpus for ``--pretrain-minutes`` (or ``--foundation``, one an earlier run pretrained
   on the same corpus) (every weight of a plain vit_tiny SAM, from random
   weights: it stands in for SAM's pretraining, which no checkpoint here can give) -> ``OUT/foundation/``;
3. per seed, the target's labelled cases are shuffled; the first ``n`` are the ``n`` labelled cases (so 5 of them
   are among the 10, and the 10 among the 20), and the cases after the largest ``n`` are the test cases, the same
   for every method and ``n`` of that seed (``--max-test`` caps them, seeded);
4. each method trains with ``medsa train`` (the bundle's default path: its augmentation, interactive sessions,
   loss) for ``--minutes`` of wall time on the ``n`` cases, nothing held out, the last model kept; ``scratch_full``
   starts from random weights, the ``foundation_*`` methods from the foundation with their preset
   (``foundation_full`` trains every weight); ``foundation_zero_shot_box`` is the foundation itself, prompted by
   each structure's box, with no target training;
5. each model is evaluated on the test cases in their own geometry: automatic Dice per class (or region), and
   Dice with each present structure's tight bounding box as the prompt; a structure absent from a case is left
   out of that case's mean.

Writes ``OUT/results.json`` (rows: ``method``, ``labelled``, ``seed``, ``dice``, ``dice_per_class``, ``box_dice``,
``trainable_parameters``, ``weights_bytes`` of the saved ``model.pt``, ``seconds`` of training, and the
``largest_labelled`` and ``max_test`` that chose the test cases: a later run into the same OUT must keep them),
``OUT/results.md``
(means over seeds and their half range) and ``OUT/dice_vs_labelled.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from medsa_monai.evaluation.curve_plot import plot_curves
from medsa_monai.networks import MedSA, count_parameters
from medsa_monai.planning import Plan
from medsa_monai.predictor import MedSAPredictor
from medsa_monai.pretraining.foundation import read_foundation_record
from medsa_monai.prompts.sampling import bounding_box

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "medsa_hippocampus_mri"
METHODS = {  # name: (starts from the foundation, trainable preset)
    "scratch_full": (False, "full"),
    "foundation_full": (True, "full"),
    "foundation_medsa": (True, "medsa"),
    "foundation_adapters_only": (True, "adapters_only"),
    "foundation_lora": (True, "lora"),
    "foundation_samda": (True, "samda"),
    "foundation_decoder": (True, "decoder"),
}
ZERO_SHOT = "foundation_zero_shot_box"


def _medsa(*args: str, log: Path) -> float:
    """Run ``python -m medsa_monai <args>`` in its own process (one heavy job at a time), output to ``log``;
    return its wall time in seconds."""
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        result = subprocess.run([sys.executable, "-m", "medsa_monai", *args], stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"medsa {args[0]} failed (exit {result.returncode}); see {log}")
    return time.monotonic() - start


def _content_id(folder: Path) -> str:
    """A digest of a data set's file names and sizes (two folders with the same files are the same data set)."""
    files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def prepare(data: Path, out: Path, regions: str | None) -> Path:
    """Ingest and plan one data set folder under ``out``; return its ``plan.json``."""
    plan = out / "plan" / "plan.json"
    if not plan.is_file():
        out.mkdir(parents=True, exist_ok=True)
        log = out / "prepare.log"
        _medsa("ingest", str(data), str(out / "ingested"), *(["--regions", regions] if regions else []), log=log)
        _medsa("plan", str(out / "ingested" / "dataset.json"), "--output-dir", str(out / "plan"), "--sam-variant",
               "vit_tiny", "--folds", "2", log=log)
    return plan


def split(items: list[dict], labelled: list[int], seed: int, max_test: int | None) -> tuple[dict, list[dict]]:
    """``{n: the first n of a seeded shuffle}`` and the test cases after the largest ``n``."""
    items = sorted(items, key=lambda item: str(item["image"]))  # the same split however the files were listed
    order = [items[i] for i in np.random.RandomState(seed).permutation(len(items))]
    largest = max(labelled)
    if largest >= len(order):
        raise ValueError(f"{largest} labelled cases leave no test case of the target's {len(order)}")
    test = order[largest:]
    if max_test is not None and len(test) > max_test:
        test = [test[i] for i in sorted(np.random.RandomState(seed + 1).permutation(len(test))[:max_test])]
    return {n: order[:n] for n in labelled}, test


def train(method: str, plan: Path, items: list[dict], foundation: Path, run: Path, minutes: float, image_size: int,
          seed: int) -> float:
    """Train ``method`` on ``items`` with ``medsa train``; return its wall time (0 when already trained)."""
    if (run / "fold_0" / "models" / "model.pt").is_file():
        return json.loads((run / "seconds.json").read_text())["seconds"]
    run.mkdir(parents=True, exist_ok=True)
    datalist = run / "datalist.json"
    datalist.write_text(json.dumps({"training": items}, indent=1))
    from_foundation, preset = METHODS[method]
    settings = [f"datalist_file={datalist}", f"trainable={preset}",
                f"sam_checkpoint={foundation if from_foundation else 'none'}", "sam_variant=vit_tiny",
                f"image_size={image_size}", "batch_size=8", f"time_budget_minutes={minutes}", "max_epochs=100000",
                "val_fraction=0.0", "val_interval=100000", "num_workers=0", "progress_bar=false", f"seed={seed}"]
    if Plan.load(plan).spatial_dims == 2:
        settings.append(f"patch_size=[{image_size},{image_size}]")
    seconds = _medsa("train", "--plan", str(plan), "--fold", "0", "--output", str(run), "--set", *settings,
                     log=run / "train.log")
    (run / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def _trained(plan: Path, run: Path) -> tuple[torch.nn.Module, MedSAPredictor, object, object]:
    """The trained network of ``run`` (built as ``medsa train`` built it), its predictor, the validation
    pre-processing and automatic inferer of the bundle."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    recorded = json.loads((run / "fold_0" / "training_overrides.json").read_text())
    parser.update({"plan_file": str(plan), "bundle_root": str(run / "fold_0"), **recorded, "num_workers": 0,
                   "cache_embeddings": False})
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(run / "fold_0" / "models" / "model.pt", weights_only=True))
    return (network.eval(), parser.get_parsed_content("predictor"), parser.get_parsed_content("validate#preprocessing"),
            parser.get_parsed_content("validate#inferer"))


def _zero_shot(plan: Path, foundation: Path, image_size: int) -> tuple[torch.nn.Module, MedSAPredictor, object]:
    """The foundation as it is, for the target's channels and structures: prompts decoded as in pretraining."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"plan_file": str(plan), "sam_variant": "vit_tiny", "image_size": image_size,
                   "sam_checkpoint": "none", "num_workers": 0})
    target = parser.get_parsed_content("plan")
    network = MedSA(target.spatial_dims, target.in_channels, target.num_outputs, "vit_tiny", foundation, image_size,
                    trainable="full", intensity=target.intensity, background_channel=not target.has_regions).eval()
    predictor = MedSAPredictor(network, dense_prompts=True, propagation=target.spatial_dims == 3)
    return network, predictor, parser.get_parsed_content("validate#preprocessing")


def _structures(label: torch.Tensor, regions: bool, count: int) -> list[np.ndarray]:
    label = np.asarray(label)
    return [label[k] > 0 for k in range(count)] if regions else [label[0] == k + 1 for k in range(count)]


def _predicted(logits: torch.Tensor, regions: bool, count: int) -> list[np.ndarray]:
    logits = logits[0].detach().cpu()
    if regions:
        return [np.asarray(logits[k] > 0) for k in range(count)]
    winner = np.asarray(logits.argmax(0))
    return [winner == k + 1 for k in range(count)]


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    if not reference.any():
        return math.nan  # a structure absent from the case: left out
    return float(2 * np.logical_and(prediction, reference).sum() / (prediction.sum() + reference.sum()))


@torch.no_grad()
def evaluate(test: list[dict], target: Plan, network, predictor, preprocessing, inferer=None) -> dict:
    """Automatic (with ``inferer``) and box-prompted Dice per structure, means over the test cases."""
    count, regions = len(target.class_names), bool(target.has_regions)
    automatic, boxed = [], []
    for item in test:
        data = preprocessing(dict(item))
        image = torch.as_tensor(data["image"])[None].float()
        references = _structures(data["label"], regions, count)
        if inferer is not None:
            automatic.append([_dice(p, r) for p, r in
                              zip(_predicted(inferer(image, network), regions, count), references, strict=True)])
        boxes = torch.full((1, count, 2 * target.spatial_dims), math.nan)
        for k, reference in enumerate(references):
            if reference.any():
                boxes[0, k] = torch.as_tensor(np.concatenate(bounding_box(reference)), dtype=torch.float32)
        if torch.isfinite(boxes).any():
            boxed.append([_dice(p, r) for p, r in
                          zip(_predicted(predictor(image, boxes=boxes), regions, count), references, strict=True)])
    names = list(target.class_names)
    per_class = {n: float(np.nanmean([row[k] for row in automatic])) if automatic else math.nan
                 for k, n in enumerate(names)}
    box_per_class = {n: float(np.nanmean([row[k] for row in boxed])) for k, n in enumerate(names)}
    return {"dice": float(np.mean(list(per_class.values()))), "dice_per_class": per_class,
            "box_dice": float(np.mean(list(box_per_class.values()))), "box_dice_per_class": box_per_class,
            "test_cases": len(test)}


def _rows_table(rows: list[dict], key: str, labelled: list[int], methods: list[str]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{n} labelled" for n in labelled) + " |",
             "|---" * (len(labelled) + 1) + "|"]
    for method in methods:
        cells = []
        for n in labelled:
            values = [r[key] for r in rows if r["method"] == method and r["labelled"] == n and not math.isnan(r[key])]
            cells.append(f"{statistics.mean(values):.3f} ± {(max(values) - min(values)) / 2:.3f}" if values else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, rows: list[dict], labelled: list[int], header: str) -> None:
    methods = [m for m in [*METHODS, ZERO_SHOT] if any(r["method"] == m for r in rows)]
    sizes = {m: next(r for r in rows if r["method"] == m) for m in methods}
    lines = [header, "", "Automatic Dice (mean over classes; mean over seeds ± half their range):", "",
             *_rows_table(rows, "dice", labelled, methods), "",
             "Dice with each structure's bounding box as the prompt:", "", *_rows_table(rows, "box_dice", labelled,
                                                                                          methods), "",
             "| method | trainable parameters | model.pt | mean training seconds |", "|---|---|---|---|"]
    for m in methods:
        seconds = statistics.mean(r["seconds"] for r in rows if r["method"] == m)
        lines.append(f"| {m} | {sizes[m]['trainable_parameters'] / 1e6:.2f} M | "
                     f"{sizes[m]['weights_bytes'] / 2**20:.2f} MiB | {seconds:.0f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    curves = {m: [statistics.mean([r["dice"] for r in rows if r["method"] == m and r["labelled"] == n]
                                  or [math.nan]) for n in labelled] for m in methods if m != ZERO_SHOT}
    plot_curves(out / "dice_vs_labelled.png", curves, title=header.lstrip("# "), y_label="automatic Dice",
                x_label="labelled target cases", x_ticks=labelled, size=(760, 440))


def run(args: argparse.Namespace) -> list[dict]:
    out = args.output.resolve()
    regions = dict(item.split("=", 1) for item in args.regions)
    target_id = _content_id(args.target)
    names = [d.name for d in args.corpus]
    if args.target.name in names or any(_content_id(d) == target_id for d in args.corpus):
        raise ValueError(f"the corpus must not contain the target '{args.target}'")
    shared = (args.cache_dir or out).resolve()
    corpus_plans = [prepare(d, shared / "datasets" / d.name, regions.get(d.name)) for d in args.corpus]
    target_plan = prepare(args.target, shared / "datasets" / args.target.name, regions.get(args.target.name))
    if args.prepare_only:
        return []
    target = Plan.load(target_plan)

    foundation = args.foundation or out / "foundation" / f"foundation_vit_tiny_{args.image_size}.pth"
    if args.foundation is not None:
        _check_foundation(args.foundation, args.target.name, names)
    elif not foundation.is_file():
        _medsa("pretrain", *map(str, corpus_plans), "--output", str(foundation.parent), "--image-size",
               str(args.image_size), "--minutes", str(args.pretrain_minutes), "--max-epochs", "100000",
               "--steps-per-epoch", "100", "--seed", "0", "--no-progress", "--frames-dir", str(shared / "frames"),
               log=out / "pretrain.log")
    items = json.loads((target_plan.parent.parent / "ingested" / "dataset.json").read_text())["training"]
    results = out / "results.json"
    rows = json.loads(results.read_text()) if results.is_file() else []
    _check_split(rows, results, max(args.labelled), args.max_test)
    done = {(r["method"], r["labelled"], r["seed"]) for r in rows}
    split_key = {"largest_labelled": max(args.labelled), "max_test": args.max_test}
    for seed in args.seeds:
        pools, test = split(items, args.labelled, seed, args.max_test)
        if (ZERO_SHOT, 0, seed) not in done:
            network, predictor, preprocessing = _zero_shot(target_plan, foundation, args.image_size)
            rows.append({"method": ZERO_SHOT, "labelled": 0, "seed": seed, "trainable_parameters": 0, **split_key,
                         "weights_bytes": 0, "seconds": 0.0,
                         **evaluate(test, target, network, predictor, preprocessing)})
        for n in args.labelled:
            for method in METHODS:
                if (method, n, seed) in done:
                    continue
                run_dir = out / "runs" / f"seed{seed}" / f"n{n}" / method
                seconds = train(method, target_plan, pools[n], foundation, run_dir, args.minutes, args.image_size,
                                seed)
                network, predictor, preprocessing, inferer = _trained(target_plan, run_dir)
                rows.append({"method": method, "labelled": n, "seed": seed, **split_key,
                             "trainable_parameters": count_parameters(network).trainable,
                             "weights_bytes": (run_dir / "fold_0" / "models" / "model.pt").stat().st_size,
                             "seconds": seconds, **evaluate(test, target, network, predictor, preprocessing, inferer)})
                results.write_text(json.dumps(rows, indent=1) + "\n")
                print(f"{method} n={n} seed={seed}: Dice {rows[-1]['dice']:.3f}, box {rows[-1]['box_dice']:.3f}",
                      flush=True)
    results.write_text(json.dumps(rows, indent=1) + "\n")
    rows = [r for r in rows if r["seed"] in args.seeds]
    zero_rows = [dict(r, labelled=n) for r in rows if r["method"] == ZERO_SHOT for n in args.labelled]
    header = (f"# {args.target.name}: {len(items)} cases, corpus {', '.join(names)}; {args.minutes:g} min per model, "
              f"{args.pretrain_minutes:g} min pretraining, seeds {args.seeds}")
    write_report(out, [r for r in rows if r["method"] != ZERO_SHOT] + zero_rows, args.labelled, header)
    return rows


def _check_split(rows: list[dict], results: Path, largest: int, max_test: int | None) -> None:
    """The test cases of a seed follow from the largest ``--labelled`` and ``--max-test``: rows of a run with other
    values were scored on other cases and cannot share a table."""
    for row in rows:
        made = (row.get("largest_labelled", largest), row.get("max_test", max_test))
        if made != (largest, max_test):
            raise ValueError(f"{results} holds rows made with a largest --labelled of {made[0]} and --max-test "
                             f"{made[1]}, so tested on other cases than --labelled up to {largest} and --max-test "
                             f"{max_test} would be; give another --output")


def _check_foundation(path: Path, target: str, corpus: list[str]) -> None:
    """A given foundation must have been pretrained on the named corpus, the target not among its data sets."""
    record = read_foundation_record(path)
    if record is None:
        raise ValueError(f"{path}: no JSON record beside it; give a foundation written by medsa pretrain")
    trained_on = sorted(Path(d["plan"]).parent.parent.name for d in record["datasets"].values())
    if target in trained_on or trained_on != sorted(corpus):
        raise ValueError(f"{path} was pretrained on {trained_on}; the corpus given is {sorted(corpus)} and the "
                         f"target {target} must not be in it")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, nargs="+", required=True, help="data set folders to pretrain on")
    parser.add_argument("--target", type=Path, required=True, help="the data set to adapt to (not in the corpus)")
    parser.add_argument("--regions", nargs="*", default=[], metavar="NAME=SPEC",
                        help="regions of a data set folder by name, e.g. DrishtiGS='disc=1,2;cup=2'")
    parser.add_argument("--labelled", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget of each model")
    parser.add_argument("--pretrain-minutes", type=float, default=40.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--max-test", type=int, default=None, help="at most this many test cases (seeded)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where ingested data sets and pretraining frames are kept (default: --output); runs "
                             "with other targets can share it")
    parser.add_argument("--foundation", type=Path, default=None,
                        help="a foundation pretrained on the same --corpus by an earlier run (checked against its "
                             "record), instead of pretraining again")
    parser.add_argument("--prepare-only", action="store_true", help="ingest and plan the data sets, then stop")
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    arguments = parse_args()
    if run(arguments):
        print((arguments.output / "results.md").read_text(encoding="utf-8"))
