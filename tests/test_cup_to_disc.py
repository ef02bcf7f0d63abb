"""The vertical cup-to-disc ratio (REFUGE vCDR) against hand-counted rows, alone, in folder evaluation, in the
report handler and on the command line."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.data import LabelSpec
from medsa_monai.evaluation import SegmentationReport, vcdr_errors, vertical_cup_to_disc_ratio
from medsa_monai.evaluation.folder import evaluate_folder

SHAPE = (64, 80)  # (H, W): not square, so that rows and columns cannot be confused
REGIONS = {"labels": {"0": "background", "1": "rim", "2": "cup"}, "regions": {"disc": [1, 2], "cup": [2]},
           "regions_class_order": [1, 2]}


def _box(rows: tuple[int, int], cols: tuple[int, int] = (20, 60), shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A boolean mask over rows ``rows[0]..rows[1]`` and columns ``cols[0]..cols[1]``, both inclusive."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]: rows[1] + 1, cols[0]: cols[1] + 1] = True
    return mask


def _eye(disc_rows: tuple[int, int] | None, cup_rows: tuple[int, int] | None) -> np.ndarray:
    """A label map (H, W): 1 on the disc, 2 on the cup (a narrower box inside it), 0 elsewhere."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    if disc_rows:
        label[_box(disc_rows)] = 1
    if cup_rows:
        label[_box(cup_rows, (30, 50))] = 2
    return label


# (prediction, reference) label maps: vCDR 24/40 = 0.6 vs 20/40 = 0.5; 20/50 = 0.4 vs 16/40 = 0.4; no disc
CASES = {"a": (_eye((10, 49), (20, 43)), _eye((10, 49), (20, 39))),
         "b": (_eye((5, 54), (15, 34)), _eye((5, 44), (15, 30))),
         "c": (_eye((5, 44), (15, 30)), _eye(None, None))}
MAE, STD = 0.05, 0.05  # errors 0.1 and 0.0; case c (empty reference disc) skipped


@pytest.fixture
def png_folders(tmp_path):
    for case, (pred, ref) in CASES.items():
        for folder, label in (("pred", pred), ("ref", ref)):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(label).save(tmp_path / folder / f"{case}.png")
    return tmp_path


def test_boxes_by_hand():
    disc, cup = _box((10, 49)), _box((20, 39), (30, 50))  # 40 rows, 20 rows
    assert vertical_cup_to_disc_ratio(disc, cup) == pytest.approx(0.5)
    assert vertical_cup_to_disc_ratio(disc[None], cup[None]) == pytest.approx(0.5)  # (1, H, W) is squeezed
    assert vertical_cup_to_disc_ratio(disc.astype(np.uint8), cup.astype(np.uint8)) == pytest.approx(0.5)


def test_ellipses_use_the_vertical_diameters():
    rows, cols = np.mgrid[:100, :120]
    disc = ((rows - 50) / 30) ** 2 + ((cols - 60) / 40) ** 2 <= 1  # rows 20..80: 61; columns 20..100: 81
    cup = ((rows - 50) / 15) ** 2 + ((cols - 60) / 10) ** 2 <= 1  # rows 35..65: 31; columns 50..70: 21
    assert vertical_cup_to_disc_ratio(disc, cup) == pytest.approx(31 / 61)
    assert vertical_cup_to_disc_ratio(disc.T, cup.T) == pytest.approx(21 / 81)  # lying down: the other diameters


def test_empty_masks():
    disc, empty = _box((10, 49)), np.zeros(SHAPE, dtype=bool)
    assert vertical_cup_to_disc_ratio(disc, empty) == 0.0
    assert math.isnan(vertical_cup_to_disc_ratio(empty, _box((20, 39))))
    assert math.isnan(vertical_cup_to_disc_ratio(empty, empty))


def test_masks_that_are_not_2d_are_refused_naming_the_shape():
    with pytest.raises(ValueError, match=r"disc mask must be 2D.*\(2, 64, 80\)"):
        vertical_cup_to_disc_ratio(np.zeros((2, *SHAPE), bool), np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match=r"cup mask must be 2D.*\(64,\)"):
        vertical_cup_to_disc_ratio(np.zeros(SHAPE, bool), np.zeros(64, bool))
    with pytest.raises(ValueError, match=r"\(64, 80\) differs from cup mask shape \(64, 81\)"):
        vertical_cup_to_disc_ratio(np.zeros(SHAPE, bool), np.zeros((64, 81), bool))


def test_vcdr_errors():
    errors = vcdr_errors(_box((10, 49)), _box((20, 39)), _box((10, 49)), _box((20, 35)))
    assert errors == pytest.approx({"vCDR": 0.5, "vCDR_reference": 0.4, "vCDR_abs_error": 0.1})
    errors = vcdr_errors(_box((10, 49)), _box((20, 39)), np.zeros(SHAPE, bool), np.zeros(SHAPE, bool))
    assert errors["vCDR"] == 0.5 and math.isnan(errors["vCDR_reference"]) and math.isnan(errors["vCDR_abs_error"])


def test_evaluate_folder_regions(png_folders):
    summary = evaluate_folder(png_folders / "pred", png_folders / "ref", LabelSpec.from_description(REGIONS),
                              png_folders / "summary.json", cup_to_disc=["disc", "cup"])
    per_case = {c["reference_file"].rsplit("/", 1)[-1]: c["vcdr"] for c in summary["metric_per_case"]}
    assert per_case["a.png"] == pytest.approx({"vCDR": 0.6, "vCDR_reference": 0.5, "vCDR_abs_error": 0.1})
    assert per_case["b.png"] == pytest.approx({"vCDR": 0.4, "vCDR_reference": 0.4, "vCDR_abs_error": 0.0})
    assert math.isnan(per_case["c.png"]["vCDR_abs_error"])
    assert summary["vcdr"] == pytest.approx({"mae": MAE, "std": STD, "count": 2, "skipped": 1})
    written = json.loads((png_folders / "summary.json").read_text())
    assert written["vcdr"] == summary["vcdr"] and written["metric_per_case"][2]["vcdr"]["vCDR_reference"] is None


def test_evaluate_folder_without_cup_to_disc_is_unchanged(png_folders):
    summary = evaluate_folder(png_folders / "pred", png_folders / "ref", LabelSpec.from_description(REGIONS))
    assert "vcdr" not in summary and all("vcdr" not in c for c in summary["metric_per_case"])


def test_classes_measure_the_whole_disc(tmp_path):
    """Exclusive classes: the disc class is the rim, the whole disc the rim and the cup together."""
    ref = _eye((10, 49), (20, 39))  # 20 / 40
    pred = np.zeros(SHAPE, dtype=np.uint8)
    pred[_box((10, 39))] = 1
    pred[_box((30, 49))] = 2  # the rim spans rows 10..39 only, the disc 10..49: 20 / 40
    for folder, label in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        Image.fromarray(label).save(tmp_path / folder / "eye.png")
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", {0: "background", 1: "disc", 2: "cup"},
                              cup_to_disc=("disc", "cup"))
    assert summary["metric_per_case"][0]["vcdr"] == pytest.approx(
        {"vCDR": 0.5, "vCDR_reference": 0.5, "vCDR_abs_error": 0.0})


def test_evaluate_folder_nifti_is_x_then_y(tmp_path):
    for case, (pred, ref) in CASES.items():
        for folder, label in (("pred", pred), ("ref", ref)):
            (tmp_path / folder).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(label.T[..., None], np.eye(4)), tmp_path / folder / f"{case}.nii.gz")
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", LabelSpec.from_description(REGIONS),
                              cup_to_disc=["disc", "cup"])
    assert summary["vcdr"] == pytest.approx({"mae": MAE, "std": STD, "count": 2, "skipped": 1})


def test_evaluate_folder_errors(png_folders):
    spec = LabelSpec.from_description(REGIONS)
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['rim'\].*\['disc', 'cup'\]"):
        evaluate_folder(png_folders / "pred", png_folders / "ref", spec, cup_to_disc=["rim", "cup"])
    with pytest.raises(ValueError, match=r"got \['disc'\]"):
        evaluate_folder(png_folders / "pred", png_folders / "ref", spec, cup_to_disc=["disc"])
    for folder in ("pred_3d", "ref_3d"):
        (png_folders / folder).mkdir()
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), png_folders / folder / "vol.nii.gz")
    with pytest.raises(ValueError, match=r"case 'vol'.*2D.*\(8, 8, 4\)"):
        evaluate_folder(png_folders / "pred_3d", png_folders / "ref_3d", spec, cup_to_disc=["disc", "cup"])


def test_command_line(png_folders, capsys):
    main(["evaluate", "--pred", str(png_folders / "pred"), "--ref", str(png_folders / "ref"), "--labels",
          json.dumps(REGIONS), "--cup-to-disc", "disc,cup"])
    assert "vCDR: MAE 0.0500 +- 0.0500 (2 cases, 1 without a disc)" in capsys.readouterr().out
    assert json.loads((png_folders / "pred" / "summary.json").read_text())["vcdr"]["count"] == 2
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", "p", "--ref", "r", "--labels", "{}", "--cup-to-disc", "disc"])


def _run_report(report: SegmentationReport, items: list[dict]) -> Engine:
    engine = Engine(lambda e, batch: [items[batch]])
    report.attach(engine)
    engine.run(list(range(len(items))))
    return engine


def _metatensor(array: np.ndarray, case: str) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": f"/data/{case}.png"})


def test_report_regions_on_label_maps_as_monai_loads_them(png_folders):
    """``LoadImage`` reads PNGs columns first, (1, W, H): the vertical axis is the second spatial one."""
    load = LoadImage(image_only=True, ensure_channel_first=True)
    items = [{"pred": load(png_folders / "pred" / f"{c}.png"), "label": load(png_folders / "ref" / f"{c}.png")}
             for c in CASES]
    assert items[0]["label"].shape == (1, SHAPE[1], SHAPE[0])
    engine = _run_report(SegmentationReport(png_folders / "out", ["disc", "cup"], label_spec=LabelSpec.from_description(
        REGIONS), cup_to_disc=["disc", "cup"]), items)
    assert engine.state.metrics["vcdr_mae"] == pytest.approx(MAE)
    summary = json.loads((png_folders / "out" / "summary.json").read_text())
    assert summary["vcdr"] == pytest.approx({"mae": MAE, "std": STD, "count": 2, "skipped": 1})
    lines = (png_folders / "out" / "metrics.csv").read_text().splitlines()
    assert lines[0].endswith("pred_voxels,vCDR,vCDR_reference,vCDR_abs_error")
    assert [line.split(",")[:2] + line.split(",")[-3:] for line in lines[1:]] == [
        ["a", "disc", "0.6", "0.5", "0.1"], ["a", "cup", "0.6", "0.5", "0.1"],
        ["b", "disc", "0.4", "0.4", "0"], ["b", "cup", "0.4", "0.4", "0"],
        ["c", "disc", "0.4", "", ""], ["c", "cup", "0.4", "", ""]]


def test_report_regions_as_targets_and_one_hot_classes(tmp_path):
    spec = LabelSpec.from_description(REGIONS)
    items = [{"pred": _metatensor(spec.to_target(torch.as_tensor(pred.T[None])), case),
              "label": _metatensor(spec.to_target(torch.as_tensor(ref.T[None])), case)}
             for case, (pred, ref) in CASES.items()]
    assert items[0]["pred"].shape == (2, SHAPE[1], SHAPE[0])  # one channel per region
    report = SegmentationReport(tmp_path / "regions", ["disc", "cup"], label_spec=spec, targets=True,
                                cup_to_disc=["disc", "cup"])
    _run_report(report, items)
    assert report.vcdr_summary == pytest.approx({"mae": MAE, "std": STD, "count": 2, "skipped": 1})

    def one_hot(label: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.as_tensor(label.T).long(), 3).permute(2, 0, 1).float()

    items = [{"pred": _metatensor(one_hot(pred), case), "label": _metatensor(ref.T[None], case)}
             for case, (pred, ref) in CASES.items()]
    report = SegmentationReport(tmp_path / "classes", ["disc", "cup"], cup_to_disc=["disc", "cup"])
    _run_report(report, items)
    assert report.vcdr_summary == pytest.approx({"mae": MAE, "std": STD, "count": 2, "skipped": 1})


def test_report_errors_and_default(tmp_path):
    with pytest.raises(ValueError, match=r"unknown output\(s\) \['optic'\].*\['disc', 'cup'\]"):
        SegmentationReport(tmp_path, ["disc", "cup"], cup_to_disc=["optic", "cup"])
    volume = _metatensor(np.zeros((1, 8, 8, 4)), "vol")
    with pytest.raises(ValueError, match=r"case 'vol'.*2D.*\(8, 8, 4\)"):
        _run_report(SegmentationReport(tmp_path, ["disc", "cup"], cup_to_disc=["disc", "cup"]),
                    [{"pred": volume, "label": volume}])
    pred, ref = CASES["a"]
    _run_report(SegmentationReport(tmp_path / "plain", ["disc", "cup"]),
                [{"pred": _metatensor(pred.T[None], "a"), "label": _metatensor(ref.T[None], "a")}])
    assert "vcdr" not in json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert (tmp_path / "plain" / "metrics.csv").read_text().splitlines()[0].endswith(",pred_voxels")
