"""``medsa``: the project's command line. Each sub-command calls one function of the package."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .networks.presets import TRAINABLE_PRESETS
from .networks.variants import SAM_VARIANTS

logger = logging.getLogger("medsa")


def _labels(source: str) -> dict[int, str]:
    """``{value: name}`` from inline JSON, a ``dataset.json`` (MSD or ingested) or a ``plan.json``."""
    path = Path(source)
    data = json.loads(path.read_text()) if path.is_file() else json.loads(source)
    if "label_values" in data:  # a plan
        names = ["background", *data["class_names"]]
        return dict(zip(data["label_values"], names, strict=True))
    labels = data.get("labels", data)
    return {int(k): str(v) for k, v in labels.items()}


def _label_spec(source: str):
    """The labels (classes or regions) of a ``dataset.json``, a ``plan.json`` or inline ``{value: name}`` JSON."""
    from .data.labels import LabelSpec

    path = Path(source)
    data = json.loads(path.read_text()) if path.is_file() else json.loads(source)
    if "labels" not in data and "label_values" in data:  # a plan of version 1
        data = {"labels": dict(zip(map(str, data["label_values"]), ["background", *data["class_names"]],
                                   strict=True))}
    return LabelSpec.from_description(data if "labels" in data else {"labels": data})


def _params(args: argparse.Namespace) -> None:
    from .networks.summary import format_parameter_table, format_weights_table, parameter_table

    rows = parameter_table(args.variants, args.presets, args.dims, adapter_ratio=args.adapter_ratio)
    print("Trainable parameters (share of the network):\n" + format_parameter_table(rows))
    print("\nmodels/model.pt as training saves it (with a base checkpoint, only what trained):\n"
          + format_weights_table(rows))


def _demo(args: argparse.Namespace) -> None:
    from .demo import DEMO_EPOCHS, run_demo

    overrides = {"image_size": args.image_size} if args.image_size else {}
    if args.sam_variant:
        overrides["sam_variant"] = args.sam_variant
    summary = run_demo(args.output_dir, num_cases=args.cases, epochs=args.epochs or DEMO_EPOCHS, seed=args.seed,
                       bundle=args.bundle, **overrides)
    print(f"\nmedsa demo: {summary['num_cases']} held-out synthetic cases, {summary['seconds']:.0f} s in all")
    for name, metrics in summary["classes"].items():
        dice, hd = metrics["dice"], metrics["hd95"]
        print(f"  {name:>6}: Dice {dice['mean']:.3f} +- {dice['std']:.3f}   HD95 {hd['mean']:.2f} mm")
    interactive = Path(args.output_dir) / "eval" / "interactive_summary.json"
    if interactive.is_file():
        report = json.loads(interactive.read_text())
        mean = report["classes"]["mean"]
        clicks = ", ".join(f"{k} click(s) {v:.3f}" for k, v in mean["dice_after_clicks"].items())
        if "automatic_dice" in mean:
            print(f"  prompts' frame (whole pre-processed volume): automatic {mean['automatic_dice']:.3f}, "
                  f"box {mean.get('box_dice', float('nan')):.3f}")
        print(f"  clicks: Dice after {clicks}; box {mean.get('box_dice', float('nan')):.3f}; "
              f"NoC@85 {mean['noc']['85']:.1f}, NoC@90 {mean['noc']['90']:.1f} (budget {report['noc_budget']})")
        if "cvpr2025" in report:
            cvpr = report["cvpr2025"]["mean"]
            steps = " / ".join(f"{v:.3f}" for v in cvpr["dice"])
            print(f"  CVPR 2025 protocol: Dice box, then clicks {steps}; DSC_AUC {cvpr['dsc_auc']:.3f}, "
                  f"NSD_AUC {cvpr['nsd_auc']:.3f}, final Dice {cvpr['final_dice']:.3f}, NSD {cvpr['final_nsd']:.3f}")
        if "medsa_paper" in report:
            paper = ", ".join(f"{name} {entry['mean']['dice']:.3f}" for name, entry in report["medsa_paper"].items())
            print(f"  Med-SA paper's prompts (Dice; HD95 in eval/paper_table.md): {paper}")
        elif "slice_clicks_dice" in mean:
            print(f"  Med-SA protocol (a click on every slice): Dice {mean['slice_clicks_dice']:.3f}")
    print(f"  predictions: {Path(args.output_dir) / 'eval' / 'predictions'}\n  overlay: {summary['overlay']}")


def _ingest(args: argparse.Namespace) -> None:
    from .conversion import ingest

    labels = _labels(args.labels) if args.labels else None
    order = [int(v) for v in args.regions_class_order.split(",")] if args.regions_class_order else None
    path = ingest(args.source, args.output, labels=labels, modality=args.modality, tolerance=args.tolerance,
                  regions=args.regions, regions_class_order=order)
    description = json.loads(path.read_text())
    labels = description["labels"] if len(description["labels"]) <= 12 else f"{len(description['labels'])} values"
    regions = f", regions {description['regions']}" if description["regions"] else ""
    print(f"wrote {path}: {description['numTraining']} training and {description['numTest']} test cases, "
          f"{description['tensorImageSize']}, modality {description['modality']}, labels {labels}{regions}")


def _ingest_ph2(args: argparse.Namespace) -> None:
    from .conversion import convert_ph2

    names = convert_ph2(args.source, args.output, scale=args.scale)
    print(f"wrote {len(names)} images and masks to {Path(args.output) / 'images'} and {Path(args.output) / 'masks'}")


def _plan(args: argparse.Namespace) -> None:
    from .planning import assign_folds, case_identifier, compute_fingerprint, make_plan, write_fold_datalist

    out = Path(args.output_dir)
    fingerprint = compute_fingerprint(args.dataset, out / "fingerprint.json", seed=args.seed)
    datalist = Path(args.datalist) if args.datalist else out / "datalist.json"
    if not args.datalist:
        description = json.loads(Path(args.dataset).read_text())
        folds = assign_folds(fingerprint["classes_per_case"], args.folds, args.seed,
                             case_ids=[case_identifier(item) for item in description["training"]])
        write_fold_datalist(datalist, description["training"], folds, description.get("test", []),
                            name=description.get("name"), labels=description["labels"], num_folds=args.folds,
                            seed=args.seed)
    plan = make_plan(fingerprint, sam_variant=args.sam_variant, memory_gb=args.memory_gb, amp=not args.no_amp,
                     datalist_file=str(datalist.resolve()), configuration=args.configuration,
                     cache_memory_gb=args.cache_memory_gb, keep_aspect=not args.squeeze_2d)
    plan.save(out / "plan.json")
    print(json.dumps({k: plan[k] for k in ("configuration", "spatial_dims", "slice_axis", "in_channels", "num_classes",
                                           "class_names", "has_regions", "sam_variant", "image_size", "pixdim",
                                           "patch_size", "keep_aspect", "batch_size", "sw_batch_size", "intensity",
                                           "normalization", "dataset_cache", "num_folds")}, indent=1))
    print(f"wrote {out / 'fingerprint.json'}, {out / 'plan.json'} and {datalist}")


def _train(args: argparse.Namespace) -> None:
    from monai.bundle import run

    from .bundle.overrides import parse_overrides
    from .data.io import write_json
    from .demo import find_bundle
    from .planning.plan import TRAINING_OVERRIDES, Plan

    plan = Plan.load(args.plan)  # refuses a missing, damaged or outdated plan before anything is written
    if plan.datalist_file and Path(plan.datalist_file).is_file() and not args.dataset_dir:
        from .data.datalist import split_cases

        try:  # a fold the datalist does not have is refused before the run folder exists
            split_cases(json.loads(Path(plan.datalist_file).read_text()).get("training", []), fold=args.fold)
        except ValueError as error:
            raise ValueError(f"{error} ('{plan.datalist_file}', the datalist of '{args.plan}')") from None
    bundle = Path(args.bundle) if args.bundle else find_bundle()
    configs = bundle / "configs"
    out = Path(args.output) / f"fold_{args.fold}"
    overrides = parse_overrides(args.set)
    write_json(out / TRAINING_OVERRIDES, overrides)  # `medsa predict` rebuilds the same network from it
    run("training", config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), plan_file=str(Path(args.plan).resolve()), fold=args.fold,
        bundle_root=str(out.resolve()), **({"dataset_dir": args.dataset_dir} if args.dataset_dir else {}),
        **overrides)


def _weight(text: str) -> tuple[str, float]:
    """``"BUSI=2"`` -> ``("BUSI", 2.0)``."""
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT (e.g. BUSI=2), got {text!r}") from None


def _pretrain(args: argparse.Namespace) -> None:
    from .pretraining import PretrainSettings, pretrain

    settings = PretrainSettings(
        sam_variant=args.sam_variant, image_size=args.image_size, sam_checkpoint=args.sam_checkpoint,
        weights=dict(args.weight), val_fraction=args.val_fraction, steps_per_epoch=args.steps_per_epoch,
        max_epochs=args.max_epochs, minutes=args.minutes, batch_size=args.batch_size,
        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, val_interval=args.val_interval,
        num_workers=args.num_workers, seed=args.seed, resume=args.resume, progress_bar=not args.no_progress,
        name=args.name, frames_dir=args.frames_dir)
    path = pretrain(args.plans, args.output, settings)
    print(f"wrote {path} and {path.with_suffix('.json')}: give it to a bundle as --sam_checkpoint {path} (and "
          f"--sam_variant {settings.sam_variant})")


def _predict(args: argparse.Namespace) -> None:
    from .bundle.overrides import parse_overrides
    from .demo import find_bundle
    from .prediction import predict_folder

    overrides = parse_overrides(args.set)
    written = predict_folder(args.input, args.output, args.model, args.bundle or find_bundle(), args.plan,
                             args.pattern, mirror=args.mirror, save_probabilities=args.save_probabilities,
                             overrides=overrides, output_format=args.output_format)
    segs = sum(p.suffix == ".dcm" for p in written)
    print(f"wrote {len(written) - segs} label maps" + (f" and {segs} DICOM SEG objects" if segs else "") +
          f" to {args.output}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation.folder import evaluate_folder

    output = Path(args.output) if args.output else Path(args.pred) / "summary.json"
    summary = evaluate_folder(args.pred, args.ref, _evaluated_labels(Path(args.pred), args.labels), output,
                              cup_to_disc=args.cup_to_disc)
    for key, metrics in summary["mean"].items():
        print(f"  {summary['class_names'][key]:>12}: Dice {metrics['Dice']:.4f}  IoU {metrics['IoU']:.4f}  "
              f"HD95 {metrics['HD95']:.2f}")
    print(f"  {'foreground':>12}: Dice {summary['foreground_mean']['Dice']:.4f}")
    if "vcdr" in summary:
        vcdr = summary["vcdr"]
        print(f"  {'vCDR':>12}: MAE {vcdr['mae']:.4f} +- {vcdr['std']:.4f} ({vcdr['count']} cases, "
              f"{vcdr['skipped']} without a disc)")
    print(f"wrote {output}")


def _evaluated_labels(predictions: Path, labels: str | None):
    """The labels to evaluate with: ``--labels``, checked against the plan the predictions were made with
    (``plan.json`` that ``medsa predict`` and ``medsa ensemble`` write beside them), or that plan's alone."""
    from .planning.plan import TRAINED_PLAN, Plan, PlanError

    carried = predictions / TRAINED_PLAN
    if labels is None:
        if not carried.is_file():
            raise ValueError(f"'{predictions}' holds no {TRAINED_PLAN} (predictions of `medsa predict` carry the "
                             f"plan they were made with): give --labels (the data set's dataset.json)")
        return Plan.load(carried).label_spec
    spec = _label_spec(labels)
    if carried.is_file():
        made_with = Plan.load(carried).label_spec.to_description()
        given = spec.to_description()
        for key in ("labels", "regions"):
            if made_with[key] != given[key]:
                raise PlanError(f"the predictions in '{predictions}' were made with the plan '{carried}', whose "
                                f"{key} is {json.dumps(made_with[key])}; '{labels}' has {json.dumps(given[key])}: "
                                f"leave out --labels to evaluate with the predictions' own labels")
    return spec


def _name_pair(text: str) -> list[str]:
    """``"disc,cup"`` -> ``["disc", "cup"]``."""
    names = [n.strip() for n in text.split(",")]
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"expected two names, disc and cup, as 'disc,cup', got {text!r}")
    return names


def _ensemble(args: argparse.Namespace) -> None:
    from .prediction import ensemble_folders

    written = ensemble_folders(args.folders, args.output, save_probabilities_too=not args.no_probabilities,
                               labels=_label_spec(args.labels) if args.labels else None)
    print(f"wrote {len(written)} ensembled label maps to {args.output}")


def _postprocess(args: argparse.Namespace) -> None:
    from .prediction import apply_postprocessing, determine_postprocessing

    if args.action == "determine":
        spec = _label_spec(args.labels)
        rules = determine_postprocessing(args.pred, args.ref, dict(zip(spec.values, spec.names, strict=True)),
                                         args.rules)
        for value, decision in rules["classes"].items():
            print(f"  class {value} ({decision['name']}): Dice {decision['dice_before']:.4f} -> "
                  f"{decision['dice_after']:.4f} with the largest component: "
                  f"{'applied' if decision['applied'] else 'not applied'}")
        print(f"wrote {args.rules}")
    else:
        written = apply_postprocessing(args.input, args.output, args.rules)
        print(f"wrote {len(written)} post-processed label maps to {args.output}")


def _bundle_create(args: argparse.Namespace) -> None:
    from .bundle import TEMPLATE_CONFIGS, create_bundle, render_config
    from .bundle.overrides import parse_overrides

    settings: dict[str, dict] = {}
    for key, value in parse_overrides(args.set).items():
        files = [f for f in TEMPLATE_CONFIGS if key in render_config(f)]
        if not files:
            raise KeyError(f"--set {key}: '{key}' is a setting of no config of the template")
        for file in files:
            settings.setdefault(file, {})[key] = value
    path = create_bundle(args.plan, args.output, args.name, args.dataset_json, args.description, settings,
                         args.overwrite)
    print(f"wrote the bundle {path} (configs/, docs/README.md, LICENSE, large_files.yml)")


def _bundle_sync(args: argparse.Namespace) -> None:
    from .bundle import sync_bundle

    changed = sync_bundle(args.bundle_dir, check=args.check)
    if args.check and changed:
        raise ValueError(f"{args.bundle_dir} is not in step with the template: {', '.join(changed)} differ "
                         f"(`medsa bundle sync {args.bundle_dir}` rewrites them, keeping the settings)")
    print(f"{args.bundle_dir}: " + ("in step with the template" if not changed else f"rewrote {', '.join(changed)}"))


def _bundle_pack(args: argparse.Namespace) -> None:
    from .bundle.packaging import pack_bundle

    print(f"wrote {pack_bundle(args.bundle_dir, args.output, model=args.model)}")


def _bundle_unpack(args: argparse.Namespace) -> None:
    from .bundle.packaging import unpack_bundle

    print(f"unpacked and verified {unpack_bundle(args.zip, args.target)}")


def _bundle_verify(args: argparse.Namespace) -> None:
    from .bundle.packaging import verify_bundle

    print(f"{len(verify_bundle(args.bundle_dir))} files match {Path(args.bundle_dir) / 'checksums.sha256'}")


def _bundle_fetch(args: argparse.Namespace) -> None:
    from .bundle.large_files import fetch_large_file

    print(f"have {fetch_large_file(args.bundle_dir, args.name)}")


def _bundle_export(args: argparse.Namespace) -> None:
    from .bundle.export import export_bundle_onnx, export_torchscript

    root = Path(args.bundle_dir)
    overrides = {k: v for k, v in (("sam_variant", args.sam_variant), ("image_size", args.image_size))
                 if v is not None}
    if args.format == "onnx":
        paths, differences = export_bundle_onnx(str(root / "configs" / "inference.json"),
                                                args.ckpt or root / "models" / "model.pt",
                                                args.output or root / "models" / "onnx",
                                                str(root / "configs" / "metadata.json"), bundle_root=str(root),
                                                **overrides)
        print(f"wrote {paths['encoder']}, {paths['prompt_decoder']} and {paths['spec'].name} (ONNX Runtime against "
              f"PyTorch: encoder {differences['encoder']:.1e}, prompt decoder {differences['prompt_decoder']:.1e})")
        return
    path = export_torchscript(str(root / "configs" / "inference.json"), args.ckpt or root / "models" / "model.pt",
                              args.output or root / "models" / "model.ts", str(root / "configs" / "metadata.json"),
                              input_shape=args.input_shape, device=args.device, bundle_root=str(root),
                              use_trace=args.trace, **overrides)
    print(f"wrote {path} (checked against the eager network)")


def _add_params_command(commands) -> None:
    params = commands.add_parser("params", help="print trainable parameters per SAM variant and preset")
    params.add_argument("--variants", nargs="+", default=["vit_b", "vit_l", "vit_h"], choices=sorted(SAM_VARIANTS))
    params.add_argument("--presets", nargs="+", default=list(TRAINABLE_PRESETS), choices=list(TRAINABLE_PRESETS))
    params.add_argument("--dims", nargs="+", type=int, default=[2, 3], choices=[2, 3])
    params.add_argument("--adapter-ratio", type=float, default=0.25, help="adapter bottleneck width / token width")
    params.set_defaults(func=_params)


def _add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="train, evaluate and infer the hippocampus bundle on synthetic data "
                                            "with a tiny SAM (a few minutes on a CPU)")
    demo.add_argument("--output-dir", default="demo_output")
    demo.add_argument("--cases", type=int, default=24, help="synthetic volumes (80%% train, 20%% held out)")
    demo.add_argument("--epochs", type=int, default=None,
                      help="training epochs (default 60)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--image-size", type=int, default=None, help="SAM input side (default 96)")
    demo.add_argument("--sam-variant", default=None, choices=sorted(SAM_VARIANTS),
                      help="the SAM backbone (default vit_nano; vit_tiny, the former default, takes twice as long)")
    demo.add_argument("--bundle", default=None, help="bundle folder (default: bundles/medsa_hippocampus_mri)")
    demo.set_defaults(func=_demo)


def _add_ingest_command(commands) -> None:
    ingest = commands.add_parser("ingest", help="check a data set (MSD, nnU-Net v2 or plain folder) and write a "
                                                "datalist with absolute paths")
    ingest.add_argument("source", help="data set folder")
    ingest.add_argument("output", help="folder for dataset.json (and NIfTI copies of other formats)")
    ingest.add_argument("--labels", help="{value: name} as JSON or a JSON file (plain folders; default: their "
                                         "labels.json, else the values found, named class_<v>)")
    ingest.add_argument("--regions", help="regions of a plain folder: 'disc=1,2;cup=2' or JSON {name: [values]}")
    ingest.add_argument("--regions-class-order", help="label value each region paints, in order, e.g. '1,2' "
                                                      "(default: each region's smallest value no later one covers)")
    ingest.add_argument("--modality", default=None, help="channel names of a plain folder's images: one for all "
                                                         "(CT, MRI, ...) or one per channel 'T1,T2' (default: R,G,B "
                                                         "for RGB photographs, else unknown)")
    ingest.add_argument("--tolerance", type=float, default=1e-3, help="geometry tolerance (relative and absolute)")
    ingest.set_defaults(func=_ingest)

def _add_ph2_command(commands) -> None:
    ph2 = commands.add_parser("ingest-ph2", help="convert the public PH2 release to images/ and masks/ PNG folders")
    ph2.add_argument("source", help="the unpacked PH2 download (holds IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp)")
    ph2.add_argument("output", help="folder for images/ and masks/")
    ph2.add_argument("--scale", type=float, default=1.0, help="resize factor (0.5: half resolution)")
    ph2.set_defaults(func=_ingest_ph2)


def _add_plan_command(commands) -> None:
    plan = commands.add_parser("plan", help="fingerprint an ingested data set, plan the training, make k folds")
    plan.add_argument("dataset", help="dataset.json written by `medsa ingest` (or an MSD dataset.json)")
    plan.add_argument("--output-dir", default="plans")
    plan.add_argument("--sam-variant", default="vit_b", choices=sorted(SAM_VARIANTS))
    plan.add_argument("--memory-gb", type=float, default=24.0, help="GPU memory budget of one training process")
    plan.add_argument("--no-amp", action="store_true", help="plan for fp32 training")
    plan.add_argument("--squeeze-2d", action="store_true",
                      help="resize 2D images whole to the median image's shape (SAM's square frame squeezes them) "
                           "instead of padding them to a square that keeps their aspect ratio")
    plan.add_argument("--folds", type=int, default=5)
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--datalist", help="use this datalist with folds instead of making one")
    plan.add_argument("--configuration", choices=["3d", "2d"], default=None,
                      help="volumes: 3d (SD-Trans on slabs, default) or 2d (each slice on its own); 2D data: 2d")
    plan.add_argument("--cache-memory-gb", type=float, default=8.0,
                      help="host memory for caching preprocessed training cases; beyond it they are cached on disk")
    plan.set_defaults(func=_plan)


def _add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train one fold of a planned data set (monai.bundle run training)")
    train.add_argument("--plan", required=True)
    train.add_argument("--fold", type=int, required=True)
    train.add_argument("--output", default="runs", help="fold k goes to <output>/fold_k")
    train.add_argument("--dataset-dir", help="base folder of relative datalist paths")
    train.add_argument("--bundle", help="bundle folder (default: bundles/medsa_hippocampus_mri)")
    train.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE", help="further config overrides")
    train.set_defaults(func=_train)


def _add_pretrain_command(commands) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="fine-tune SAM on many planned data sets at once (class-agnostic) into a foundation "
                         "checkpoint in segment_anything's format; runs under torchrun too")
    pretrain.add_argument("plans", nargs="+", help="plan.json of each data set (`medsa ingest` + `medsa plan`)")
    pretrain.add_argument("--output", required=True, help="folder for <name>.pth, <name>.json, checkpoints/")
    pretrain.add_argument("--sam-variant", default="vit_tiny", choices=sorted(SAM_VARIANTS))
    pretrain.add_argument("--image-size", type=int, default=128, help="SAM's input side (a multiple of 16)")
    pretrain.add_argument("--sam-checkpoint", default=None, help="weights to start from (default: random)")
    pretrain.add_argument("--weight", type=_weight, action="append", default=[], metavar="NAME=WEIGHT",
                          help="sampling weight of a data set (default 1 each: every set drawn equally often)")
    pretrain.add_argument("--val-fraction", type=float, default=0.1, help="cases of each set held out")
    pretrain.add_argument("--steps-per-epoch", type=int, default=100)
    pretrain.add_argument("--max-epochs", type=int, default=100)
    pretrain.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    pretrain.add_argument("--batch-size", type=int, default=8)
    pretrain.add_argument("--learning-rate", type=float, default=5e-4)
    pretrain.add_argument("--warmup-steps", type=int, default=100)
    pretrain.add_argument("--val-interval", type=int, default=1, help="validate every so many epochs")
    pretrain.add_argument("--num-workers", type=int, default=0)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--name", default=None, help="file name without .pth (default foundation_<variant>_<size>)")
    pretrain.add_argument("--frames-dir", default=None, help="cache of the sets' frames (default <output>/frames)")
    pretrain.add_argument("--resume", action="store_true", help="continue from <output>/checkpoints/")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.set_defaults(func=_pretrain)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="predict a folder of images with a trained bundle")
    predict.add_argument("--model", required=True, help="model.pt or checkpoint_epoch=N.pt")
    predict.add_argument("--input", required=True)
    predict.add_argument("--output", required=True)
    predict.add_argument("--plan", help="the plan the model was trained with (default: the plan.json `medsa train` "
                         "wrote beside the model's models/ folder, which a given plan must agree with)")
    predict.add_argument("--bundle")
    predict.add_argument("--pattern", default=None, help="which input files (default: every NIfTI, NRRD, MHA, PNG, "
                         "JPEG, BMP and TIFF file; nnU-Net's <case>_0000, _0001... channel files are grouped)")
    predict.add_argument("--mirror", action="store_true", help="mirroring test-time augmentation")
    predict.add_argument("--save-probabilities", action="store_true", help="also write <case>.npz (for ensembles)")
    predict.add_argument("--set", nargs="*", default=[], metavar="ID=VALUE",
                         help="config overrides (those of `medsa train` are read from its run folder)")
    predict.add_argument("--output-format", choices=("nifti", "seg"), default="nifti",
                         help="seg: also a DICOM SEG (<case>.dcm) referencing each input DICOM series")
    predict.set_defaults(func=_predict)


def _dicom(args: argparse.Namespace) -> None:
    from .conversion.dicom_series import check_series, series_to_nifti, write_series

    if args.dicom_command == "series":
        written = write_series(args.volume, args.output, modality=args.modality, patient_id=args.patient_id,
                               series_description=args.description)
        print(f"wrote {len(written)} {args.modality} slices to {args.output}")
    elif args.dicom_command == "check":
        info = check_series(args.folder)
        print(f"{args.folder}: one {info.modality} series of {len(info.files)} slices {info.slice_step:.3f} mm apart "
              f"(series {info.series_instance_uid})")
    elif args.dicom_command == "to-nifti":
        print(f"wrote {series_to_nifti(args.folder, args.output)}")
    else:
        from .prediction.dicom_seg import write_dicom_seg

        print(f"wrote {write_dicom_seg(args.label, args.series, args.output, _label_spec(args.labels))}")


def _add_dicom_command(commands) -> None:
    dicom = commands.add_parser("dicom", help="DICOM series and SEG: write a volume as a series (to load data into a "
                                              "PACS), check or convert a series, write a label map as DICOM SEG")
    sub = dicom.add_subparsers(dest="dicom_command", required=True)
    series = sub.add_parser("series", help="write a NIfTI volume as a DICOM series (one file per slice)")
    series.add_argument("volume")
    series.add_argument("output", help="a new or empty folder")
    series.add_argument("--modality", default="MR", choices=("MR", "CT", "OT"))
    series.add_argument("--patient-id", default="anonymous")
    series.add_argument("--description", default=None, help="SeriesDescription (default: the file's name)")
    check = sub.add_parser("check", help="check that a folder holds one complete, consistent series")
    check.add_argument("folder")
    to_nifti = sub.add_parser("to-nifti", help="read a checked series into a NIfTI volume")
    to_nifti.add_argument("folder")
    to_nifti.add_argument("output")
    seg = sub.add_parser("seg", help="write a label map (NIfTI, in the series' geometry) as a DICOM SEG")
    seg.add_argument("label")
    seg.add_argument("series", help="the series folder the label map was predicted from")
    seg.add_argument("output", help="the .dcm file to write")
    seg.add_argument("--labels", required=True, help="dataset.json, plan.json or {value: name} JSON")
    for command in (series, check, to_nifti, seg):
        command.set_defaults(func=_dicom)


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="per-case, per-class (or per-region) metrics of a folder of "
                                                    "predicted label maps (NIfTI or PNG)")
    evaluate.add_argument("--pred", required=True)
    evaluate.add_argument("--ref", required=True)
    evaluate.add_argument("--labels", help="dataset.json, plan.json or {value: name} JSON (default: the labels of "
                                           "the plan.json that medsa predict wrote beside the predictions)")
    evaluate.add_argument("--output", help="summary.json (default: <pred>/summary.json)")
    evaluate.add_argument("--cup-to-disc", type=_name_pair, metavar="DISC,CUP",
                          help="also the vertical cup-to-disc ratio (REFUGE vCDR) of 2D fundus images and its mean "
                               "absolute error, from these optic disc and cup outputs (class or region names)")
    evaluate.set_defaults(func=_evaluate)


def _add_ensemble_command(commands) -> None:
    ensemble = commands.add_parser("ensemble", help="average the probabilities of several prediction folders")
    ensemble.add_argument("folders", nargs="+")
    ensemble.add_argument("--output", required=True)
    ensemble.add_argument("--no-probabilities", action="store_true", help="write label maps only")
    ensemble.add_argument("--labels", help="dataset.json or plan.json: write the data set's own label values and "
                          "regions (default: class indices)")
    ensemble.set_defaults(func=_ensemble)


def _add_post_command(commands) -> None:
    post = commands.add_parser("postprocess", help="decide (from cross-validation) and apply largest-component "
                                                   "post-processing")
    post.add_argument("action", choices=["determine", "apply"])
    post.add_argument("--pred", help="cross-validation predictions (determine)")
    post.add_argument("--ref", help="reference labels (determine)")
    post.add_argument("--labels", help="dataset.json, plan.json or {value: name} JSON (determine)")
    post.add_argument("--input", help="label maps to post-process (apply)")
    post.add_argument("--output", help="output folder (apply)")
    post.add_argument("--rules", default="postprocessing.json")
    post.set_defaults(func=_postprocess)


def _add_bundle_command(commands) -> None:
    bundle = commands.add_parser("bundle", help="create a bundle from a plan, keep it in step with the template, "
                                                "pack, unpack, verify, fetch, export")
    bundle_commands = bundle.add_subparsers(dest="bundle_command", required=True)
    create = bundle_commands.add_parser("create", help="write a complete MONAI bundle (configs, metadata, model card, "
                                                       "LICENSE, large_files.yml) for a planned data set")
    create.add_argument("--plan", required=True, help="plan.json of `medsa plan`")
    create.add_argument("--output", required=True, help="the bundle folder to write")
    create.add_argument("--name", default=None, help="the bundle's name (default: the folder's name)")
    create.add_argument("--dataset-json", default=None, help="the ingested dataset.json (default: found from the "
                                                             "plan's folder)")
    create.add_argument("--description", default=None, help="the task in one line")
    create.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings, e.g. trainable=lora max_epochs=200 (each goes to every config that has it)")
    create.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    create.set_defaults(func=_bundle_create)
    sync = bundle_commands.add_parser("sync", help="rewrite a bundle's configs from the current template, keeping "
                                                   "its settings (--check: only say whether they differ)")
    sync.add_argument("bundle_dir")
    sync.add_argument("--check", action="store_true")
    sync.set_defaults(func=_bundle_sync)
    pack = bundle_commands.add_parser("pack", help="write <name>_v<version>.zip with checksums (large files and "
                                                   "outputs left out), the layout `monai.bundle download` unzips")
    pack.add_argument("bundle_dir")
    pack.add_argument("--output", default=None, help="folder for the zip (default: the current folder)")
    pack.add_argument("--model", default=None, help="a trained model to ship as models/model.pt, checked against the "
                      "bundle's network (adapter-only weights where the base was frozen)")
    pack.set_defaults(func=_bundle_pack)
    unpack = bundle_commands.add_parser("unpack", help="unpack a bundle zip safely (refuses paths outside the "
                                                       "target) and verify its checksums")
    unpack.add_argument("zip")
    unpack.add_argument("target", help="the bundle lands in <target>/<name>")
    unpack.set_defaults(func=_bundle_unpack)
    verify = bundle_commands.add_parser("verify", help="check a bundle's files against its checksums.sha256")
    verify.add_argument("bundle_dir")
    verify.set_defaults(func=_bundle_verify)
    fetch = bundle_commands.add_parser("fetch", help="download one file of the bundle's large_files.yml (a SAM "
                                                     "checkpoint) and check its hash")
    fetch.add_argument("bundle_dir")
    fetch.add_argument("name", nargs="?", default="vit_b", help="a SAM variant (vit_b, vit_l, vit_h) or a file name")
    fetch.set_defaults(func=_bundle_fetch)
    export = bundle_commands.add_parser("export", help="export the network: TorchScript of the automatic mode "
                                        "(scripted, checked against the eager network, with the bundle metadata) or "
                                        "ONNX graphs of the image encoder and the prompt decoder (checked in ONNX "
                                        "Runtime)")
    _export_arguments(export)
    export.set_defaults(func=_bundle_export)


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("bundle_dir")
    export.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    export.add_argument("--ckpt", default=None, help="weights (default: <bundle>/models/model.pt)")
    export.add_argument("--output", default=None, help="TorchScript file (default: <bundle>/models/model.ts) or ONNX "
                        "folder (default: <bundle>/models/onnx)")
    export.add_argument("--input-shape", type=int, nargs="+", default=None, help="TorchScript: example input, e.g. "
                        "1 3 288 384 (default: from the metadata)")
    export.add_argument("--device", default="cpu", help="TorchScript: where to export (and check) the network")
    export.add_argument("--trace", action="store_true", help="TorchScript: torch.jit.trace instead of script")
    export.add_argument("--sam-variant", default=None, help="override the bundle's sam_variant")
    export.add_argument("--image-size", type=int, default=None, help="override the bundle's image_size")
    export.set_defaults(func=_bundle_export)


def _add_export_command(commands) -> None:
    _export_arguments(commands.add_parser("export", help="the same as `medsa bundle export`"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsa", description="Adapt a frozen SAM to medical images (MONAI).")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_params_command, _add_demo_command, _add_ingest_command, _add_ph2_command, _add_plan_command,
                _add_pretrain_command, _add_train_command, _add_predict_command, _add_evaluate_command,
                _add_ensemble_command, _add_post_command, _add_bundle_command, _add_export_command,
                _add_dicom_command):
        add(commands)
    return parser


def _terminate(signum, frame) -> None:
    # SIGTERM would end the process without unwinding; raising lets atomic writers delete their temporaries.
    raise SystemExit(128 + signum)


def _root_cause(err: BaseException) -> BaseException:
    """The error a bundle raised, under the layers of ``RuntimeError`` (``"Failed to evaluate ..."``, ``"applying
    transform ..."``) that MONAI's config parser and ``Compose`` wrap it in."""
    while type(err) is RuntimeError and err.__cause__ is not None:
        err = err.__cause__
    return err


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
                            stream=sys.stdout)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError) as err:
        if os.environ.get("MEDSA_DEBUG"):
            raise
        cause = _root_cause(err)
        message = str(cause) if isinstance(cause, (ValueError, FileNotFoundError, OSError)) else (
            f"{type(cause).__name__}: {cause}")
        print(f"medsa {args.command}: error: {message}\n(set MEDSA_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
