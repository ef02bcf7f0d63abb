"""The model card (``docs/README.md``) of a bundle made from a plan: data, pipeline and options from the plan and the
bundle's settings, the commands to train, evaluate, infer and serve it, and what it does not yet know (results)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["model_card"]


def _labels(plan: Mapping) -> str:
    if plan.get("regions"):
        return "; ".join(f"`{name}` = label values {values}" for name, values in plan["regions"].items()) + (
            " (regions: one sigmoid output each, Dice + BCE per region, metrics per region; written label maps paint "
            f"the regions in order with values {plan.get('regions_class_order')})")
    return ", ".join(f"{value} {name}" for value, name in plan["labels"].items())


def _scheme(scheme: Mapping) -> str:
    if scheme.get("scheme") == "range":
        return f"{scheme['range'][0]:g} to {scheme['range'][1]:g} mapped to [0, 1], clipped"
    if scheme.get("scheme") == "ct":
        return (f"clipped to {scheme['clip'][0]:g} to {scheme['clip'][1]:g}, z-scored with the data set's "
                "foreground mean and std")
    return "z-score per image" + (" on non-zero voxels" if scheme.get("nonzero") else "")


def _x(values) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def model_card(plan: Mapping, dataset: Mapping, meta: Mapping, configs: Mapping[str, Mapping]) -> str:
    """Markdown model card of a bundle created from ``plan`` (``dataset``: the ingested ``dataset.json``;
    ``meta``: its ``metadata.json``; ``configs``: its configs by file name)."""
    train = configs["train.json"]
    dims = plan["spatial_dims"]
    channels = meta["network_data_format"]["inputs"]["image"]["channel_def"]
    outputs = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    cases = len(dataset.get("training", [])) or "its"
    source = meta.get("data_source") or "the ingested data set"
    norm = ", ".join(f"{s.get('modality', 'channel')}: {_scheme(s)}" for s in plan.get("normalization") or [])
    if dims == 3:
        geometry = (f"volumes oriented to RAS, resampled to {_x(plan['pixdim'])} mm, transposed so that axis "
                    f"{plan.get('slice_axis')} (the acquisition's through-plane axis) is the one MedSA slices along; "
                    f"random patches of {_x(plan['patch_size'])} voxels (2:1 foreground), flips on every axis; "
                    f"inference slides a Gaussian-weighted window (overlap {plan.get('sw_overlap', 0.5)}) and inverts "
                    "every spatial step, so predictions are in each input's own geometry")
    else:
        geometry = (f"images resized whole to {_x(plan['patch_size'])} for training (flips on both axes), seen at "
                    "their own size otherwise (SAM resizes every image to its frame); predictions are written at "
                    "each image's own size with the data set's own label values")
    name = meta["name"]
    return f"""# {name}

{meta['task']}. {meta['description']}

This bundle was written by `medsa bundle create` from the plan of `{plan.get('dataset', name)}`; its configs are
the package's template (`medsa_monai/bundle/template`) with this data set's settings, so `medsa bundle sync
<bundle>` brings it up to date with a newer medsa-monai while keeping the settings.

## Model

- Network: `medsa_monai.networks.MedSA(spatial_dims={dims}, in_channels={plan['in_channels']}, out_channels=\
{len(outputs) - (0 if plan.get('regions') else 1)})`, SAM `{plan.get('sam_variant', 'vit_b')}` (`sam_variant`),
  input {'slices' if dims == 3 else 'images'} resized to `image_size={plan.get('image_size')}`, `trainable=\
"{train.get('trainable')}"` (`medsa`, `samda`, `lora`, `decoder`, `full`; `medsa params` prints the counts).
- Input channels: {', '.join(f'{k} {v}' for k, v in channels.items())}. Output channels: \
{', '.join(f'{k} {v}' for k, v in outputs.items())}.
- Prompts (optional): boxes and clicks per class or region, and the previous prediction as a mask; automatic mode
  uses each output's learned class prompt.

## Data

{source}: {cases} training cases. Labels: {_labels(plan)}. Cases come from the plan's datalist
(`datalist_file`, {plan.get('num_folds', 5)} seeded folds: `--fold k`), or with `--dataset_dir <folder>` and
`--datalist_file None` from any folder `medsa ingest` reads (MSD `dataset.json`, or `images/` with `labels/` or
`masks/`).

## Training

Get the SAM checkpoint of `sam_variant` first (`medsa bundle fetch <bundle> {plan.get('sam_variant', 'vit_b')}`),
or train from a random frozen SAM with `--sam_checkpoint None` (a warning says so).

```bash
cd <bundle>
python -m monai.bundle run training --meta_file configs/metadata.json --config_file configs/train.json \\
    --logging_file configs/logging.conf --fold 0
```

Pipeline ({'3D' if dims == 3 else '2D'}, configuration `{plan.get('configuration')}`): {geometry}.
Normalisation per channel: {norm or 'z-score'}. Batch size {plan.get('batch_size')}; AdamW at
{train.get('learning_rate')} with warm-up and a cosine schedule, {train.get('max_epochs')} epochs
(`max_epochs`, `time_budget_minutes`, `early_stop_patience`); interactive training (first prompt, then up to
{train.get('interactive_max_rounds')} rounds of clicks on the network's own errors with its logits fed back, and
every prompted sample also decoded in automatic mode so that automatic segmentation keeps its training signal;
half of the sessions without the class token (`interactive_class_token_dropout`), so that boxes and clicks, also
drawn into the mask prompt (`dense_prompts`), carry the segmentation on their own);
`model.pt` is the model with the best mean of automatic and prompted validation Dice; with a SAM checkpoint and
any preset but `full` it holds only what trained (a few MiB to tens of MiB), and evaluation, inference and MONAI
Label need that very checkpoint (its SHA-256 is checked). Several GPUs:
`torchrun --nproc_per_node=N -m monai.bundle run training --config_file
"['configs/train.json','configs/multi_gpu_train.json']" ...`.

""" + _USAGE


_USAGE = """## Evaluation

```bash
python -m monai.bundle run evaluating --meta_file configs/metadata.json \\
    --config_file "['configs/train.json','configs/evaluate.json']" --logging_file configs/logging.conf
```

On the validation cases (or, with `--evaluate_all True --dataset_dir <folder>`, on every case of a folder the model
never saw): `eval/metrics.csv` per case and output (Dice, IoU, HD95, and the vertical
cup-to-disc ratio error where the bundle sets `cup_to_disc`), `eval/summary.json`, `eval/predictions/`.

## Inference

```bash
python -m monai.bundle run inferring --meta_file configs/metadata.json --config_file configs/inference.json \\
    --logging_file configs/logging.conf --dataset_dir <folder>
```

Every image of `<folder>` (its `images/`, its MSD `dataset.json` test list, or `--input_pattern "*.png"`), written
to `eval/inference/`. `--use_click True` takes clicks per label name in the datalist entries, as MONAI Label sends
them; the bundle serves automatic segmentation, clicks and training in MONAI Label's `monaibundle` app.

## Results

None yet: this bundle has not been trained. Report figures only with how they were obtained (data, split, budget,
seed) and from a script anyone can rerun.

## Limitations

Research only; not for clinical use. Without the official SAM checkpoint (or a foundation of your own, `medsa
pretrain`) the frozen parts of SAM are random.

## License

The bundle's code and configs: Apache-2.0 (`LICENSE`). The data and the SAM weights have their own licences.
"""
