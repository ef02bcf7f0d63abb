"""The fundus optic disc and cup bundle on tiny synthetic fundus folders: train, evaluate (regions and the vertical
cup-to-disc ratio), evaluate a whole unseen folder, infer, adapt at test time; and the domain adaptation benchmark
end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsa_monai.evaluation import vertical_cup_to_disc_ratio

from .conftest import run_monai_bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "medsa_fundus_disc_cup"
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE = str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")
FAST = ["--sam_variant", "vit_tiny", "--sam_checkpoint", "None", "--trainable", "full", "--image_size", "32",
        "--patch_size", "[32,32]", "--batch_size", "2", "--num_workers", "0", "--progress_bar", "False",
        "--network_def#architecture", "{'samda_tokens': 2}"]


def fundus_folder(root: Path, cases: int, seed: int) -> Path:
    """RGB crops of different sizes, a bright disc around a brighter cup; labels 0 / 1 rim / 2 cup."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.RandomState(seed)
    for i in range(cases):
        h, w = 40 + 8 * (i % 3), 48
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
        radius = rng.uniform(0.2, 0.3) * min(h, w)
        distance = np.hypot((yy - cy) / 1.1, xx - cx)  # taller than wide, as a disc is
        disc, cup = distance < radius, distance < rng.uniform(0.4, 0.6) * radius
        image = np.stack([150 + 60 * disc + 30 * cup, 60 + 50 * disc + 60 * cup, 40 + 20 * disc], -1)
        image = image + 10 * rng.standard_normal(image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"eye_{i}.png")
        Image.fromarray(disc.astype(np.uint8) + cup.astype(np.uint8)).save(root / "labels" / f"eye_{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    data = fundus_folder(tmp_path_factory.mktemp("fundus") / "drishti_like", 8, 0)
    out = tmp_path_factory.mktemp("fundus_run")
    run_monai_bundle(BUNDLE, "run", "training", "--config_file", TRAIN, "--dataset_dir", str(data), "--bundle_root",
                     str(out), "--max_epochs", "1", "--val_interval", "1", *FAST)
    return data, out


def _vcdr(label: np.ndarray) -> float:
    return vertical_cup_to_disc_ratio(label >= 1, label == 2)


def test_evaluation_reports_regions_and_the_cup_to_disc_ratio(trained):
    data, out = trained
    run_monai_bundle(BUNDLE, "run", "evaluating", "--config_file", f"['{TRAIN}','{EVALUATE}']", "--dataset_dir",
                     str(data), "--bundle_root", str(out), *FAST)
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert {"disc", "cup"} <= set(summary["classes"]) and summary["num_cases"] == 2  # 20% of 8, seeded
    with open(out / "eval" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("vCDR")]
    assert rows
    errors = []
    for r in rows:  # recomputed from the written PNG label maps and the references
        pred = np.asarray(Image.open(out / "eval" / "predictions" / f"{r['case']}_seg.png"))
        ref = np.asarray(Image.open(data / "labels" / f"{r['case']}.png"))
        assert pred.shape == ref.shape and set(np.unique(pred)) <= {0, 1, 2}
        expected_pred, expected_ref = _vcdr(pred), _vcdr(ref)
        assert float(r["vCDR_reference"]) == pytest.approx(expected_ref, abs=1e-6)
        if not np.isnan(expected_pred):
            assert float(r["vCDR"]) == pytest.approx(expected_pred, abs=1e-6)
            errors.append(abs(expected_pred - expected_ref))
    if errors:
        assert summary["vcdr"]["mae"] == pytest.approx(float(np.mean(errors)), abs=1e-6)


def test_evaluate_all_scores_every_case_of_an_unseen_folder(trained, tmp_path):
    _, out = trained
    unseen = fundus_folder(tmp_path / "other_camera", 3, 7)
    run_monai_bundle(BUNDLE, "run", "evaluating", "--config_file", f"['{TRAIN}','{EVALUATE}']", "--dataset_dir",
                     str(unseen), "--bundle_root", str(out), "--evaluate_all", "True", "--output_dir",
                     str(tmp_path / "eval"), *FAST)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["num_cases"] == 3 and "vcdr" in summary


def test_inference_writes_png_at_each_image_size_with_label_values(trained, tmp_path):
    data, out = trained
    run_monai_bundle(BUNDLE, "run", "inferring", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir",
                     str(data), "--bundle_root", str(out), "--output_dir", str(tmp_path), *FAST)
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 8
    for path in written:
        case = path.name.replace("_seg", "")
        assert np.asarray(Image.open(path)).shape == np.asarray(Image.open(data / "labels" / case)).shape
        assert set(np.unique(np.asarray(Image.open(path)))) <= {0, 1, 2}


def test_test_time_adaptation_runs_on_a_target_folder(trained, tmp_path):
    _, out = trained
    target = fundus_folder(tmp_path / "target", 2, 9)
    run_monai_bundle(BUNDLE, "run", "adapting", "--config_file", f"['{TRAIN}','{CONFIGS / 'tta.json'}']",
                     "--dataset_dir", str(target), "--bundle_root", str(out), "--tta_steps", "1", "--tta_views", "2",
                     "--tta_output_dir", str(tmp_path / "tta"), *FAST)
    summary = json.loads((tmp_path / "tta" / "summary.json").read_text())
    assert summary["num_cases"] == 2 and {"disc", "cup"} <= set(summary["classes"])


@pytest.mark.slow
def test_domain_adaptation_benchmark_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("fundus_da", ROOT / "benchmarks" / "fundus_domain_adaptation.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    source = fundus_folder(tmp_path / "source", 6, 1)
    target = fundus_folder(tmp_path / "target", 5, 2)
    rows = benchmark.main(["--source", str(source), "--target", str(target), "--target-labelled", "2",
                           "--minutes", "0.02", "--adapt-minutes", "0.01", "--image-size", "32", "--batch-size",
                           "2", "--tta-steps", "1", "--tta-views", "2", "--output", str(tmp_path / "out")])
    methods = ["source_only", "samda_supervised", "medsa_adapters", "lora", "decoder_finetune", "full_finetune",
               "samda_tta", "tent"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["method"] for r in saved] == methods and saved == rows
    for r in saved:
        assert set(r) == {"method", "dice_disc", "dice_cup", "vcdr_mae", "trainable_parameters", "seconds"}
        assert 0.0 <= r["dice_disc"] <= 1.0 and 0.0 <= r["dice_cup"] <= 1.0
    counts = {r["method"]: r["trainable_parameters"] for r in saved}
    assert counts["samda_tta"] < counts["samda_supervised"] < counts["full_finetune"]
    evaluated = sorted(p.name for p in (tmp_path / "out" / "data" / "target_evaluation" / "images").iterdir())
    labelled = sorted(p.name for p in (tmp_path / "out" / "data" / "target_labelled" / "images").iterdir())
    assert len(evaluated) == 3 and not set(evaluated) & set(labelled)
