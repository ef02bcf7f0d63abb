"""Label values with gaps and regions (LabelSpec), written label maps (PNG and NIfTI, original values and geometry),
folder evaluation of regions, ensembling, and the errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.data import LabelSpec, SaveLabelMapd, parse_regions, save_probabilities
from medsa_monai.evaluation.folder import evaluate_folder
from medsa_monai.prediction import ensemble_folders, inference_output_transforms, label_map_transforms
from medsa_monai.prediction.predict import input_cases
from medsa_monai.preprocessing import loading_transforms

BRATS = {"labels": {"background": 0, "whole": [1, 2, 4], "core": [2, 4], "enhancing": [4]},
         "regions_class_order": [1, 2, 4]}


def test_label_values_with_gaps_map_to_consecutive_classes_and_back():
    spec = LabelSpec.from_description({"labels": {"0": "background", "1": "a", "2": "b", "4": "c"}})
    assert spec.num_outputs == 4 and spec.output_names == ["a", "b", "c"] and not spec.has_regions
    label = torch.tensor([[[0, 1, 2, 4]]])
    target = spec.to_target(label)
    assert target.tolist() == [[[0, 1, 2, 3]]]
    assert spec.to_label_map(target).tolist() == label.tolist()
    masks = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}}).to_target(
        torch.tensor([[[0, 255, 255]]]))
    assert masks.tolist() == [[[0, 1, 1]]]


def test_label_aliases_are_read_as_the_value_they_stand_for():
    """Masks saved 0 / 1 (MONAI Label) in a data set of 0 / 255 masks: 1 is lesion everywhere, 255 is written."""
    spec = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}, "label_aliases": {"1": 255}})
    assert spec.values == (0, 255) and spec.accepted_values == (0, 1, 255) and spec.num_outputs == 2
    assert spec.to_target(torch.tensor([[[0, 1, 255]]], dtype=torch.uint8)).tolist() == [[[0, 1, 1]]]
    assert spec.output_masks(np.array([0, 1, 255]))["lesion"].tolist() == [False, True, True]
    assert spec.to_label_map(torch.tensor([[[0, 1]]])).tolist() == [[[0, 255]]]
    assert spec.to_description()["label_aliases"] == {"1": 255}
    assert LabelSpec.from_description(spec.to_description()) == spec
    assert "label_aliases" not in LabelSpec.from_description({"labels": {"0": "background"}}).to_description()
    regions = LabelSpec.from_description({**BRATS, "label_aliases": {"3": 4}})
    assert regions.to_target(torch.tensor([[[3]]]))[:, 0, 0].tolist() == [1, 1, 1]
    for aliases in ({"255": 1}, {"2": 7}):  # an alias that is declared, or stands for an undeclared value
        with pytest.raises(ValueError, match="label alias"):
            LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}, "label_aliases": aliases})


def test_inference_writes_label_values_and_gives_viewers_class_indices(tmp_path):
    """A 2D image: the file holds 0 / 255, ``pred`` (what MONAI Label writes itself) class indices without a
    channel axis; regions keep the painted label map."""
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "img.png")
    spec = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}})
    preprocessing = Compose(loading_transforms(["image"], 2, spec, image_channels=3))
    item = preprocessing({"image": str(tmp_path / "img.png")})
    logits = torch.zeros(2, 7, 5)
    logits[1, :3] = 5.0  # lesion in the first 3 columns (MONAI's first axis)
    item["pred"] = logits
    out = Compose(inference_output_transforms(spec, preprocessing, tmp_path / "out", "seg", None, 2))(item)
    written = np.asarray(Image.open(tmp_path / "out" / "img_seg.png"))
    assert written.shape == (5, 7) and set(np.unique(written)) == {0, 255} and (written[:, :3] == 255).all()
    assert tuple(out["pred"].shape) == (7, 5) and set(torch.unique(out["pred"]).tolist()) == {0, 1}
    regions = LabelSpec.from_description(BRATS)
    item = preprocessing({"image": str(tmp_path / "img.png")})
    item["pred"] = torch.full((3, 7, 5), -5.0)
    item["pred"][:2, :3] = 5.0  # whole and core: painted 2
    out = Compose(inference_output_transforms(regions, preprocessing, tmp_path / "regions", "", None, 2))(item)
    assert set(torch.unique(out["pred"]).tolist()) == {0, 2} and tuple(out["pred"].shape) == (7, 5)


def test_nnunet_regions_are_one_channel_each_and_paint_in_order():
    spec = LabelSpec.from_description(BRATS)
    assert spec.has_regions and spec.num_outputs == 3 and spec.values == (0, 1, 2, 4)
    label = torch.tensor([[[0, 1, 2, 4]]])
    target = spec.to_target(label)
    assert target[:, 0].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert spec.to_label_map(target).tolist() == label.tolist()
    assert LabelSpec.from_description(spec.to_description()) == spec  # what ingest and plan store
    with pytest.raises(ValueError, match="region 'core'"):
        LabelSpec.from_description({"labels": {"0": "background", "1": "a"}, "regions": {"core": [2]},
                                    "regions_class_order": [2]})


def test_region_strings_from_the_command_line():
    assert parse_regions("disc=1,2;cup=2") == {"disc": [1, 2], "cup": [2]}
    assert parse_regions('{"disc": [1, 2]}') == {"disc": [1, 2]}
    with pytest.raises(ValueError, match="name=value"):
        parse_regions("disc")


def test_png_label_maps_round_trip_in_original_values_and_orientation(tmp_path):
    rng = np.random.RandomState(0)
    mask = (rng.rand(23, 31) > 0.6).astype(np.uint8) * 255  # not square: a transposition would show
    image = rng.randint(0, 255, (23, 31, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    spec = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}})
    load = Compose(loading_transforms(["image", "label"], 2, spec, image_channels=3))
    item = load({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.png")})
    assert item["image"].shape == (3, 31, 23) and item["label"].max() == 1  # MONAI reads images columns first
    item["pred"] = item["label"].clone()
    SaveLabelMapd("pred", tmp_path / "out", "seg", label_spec=spec)(item)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "mask_seg.png")), mask)  # named by its source


def test_keep_aspect_pads_2d_images_to_a_square_and_predictions_come_back(tmp_path):
    """A plan's ``keep_aspect``: a 30 x 60 photograph is resized to 24 x 48 and padded to 48 x 48, so a square
    lesion stays square (resized whole, it would be squeezed to 8 x 16); a click in the file's pixels lands on the
    lesion; a prediction comes back at 30 x 60 in the file's values."""
    from medsa_monai.predictor import AddClickGuidanced

    mask = np.zeros((30, 60), np.uint8)
    mask[10:20, 40:50] = 255
    image = np.dstack([np.where(mask > 0, 200, 40)] * 3).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    spec = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}})
    load = Compose(loading_transforms(["image", "label"], 2, spec, image_channels=3, square_side=48))
    item = load({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.png")})
    assert item["image"].shape == (3, 48, 48) and item["label"].shape == (1, 48, 48)
    lesion = torch.nonzero(item["label"][0])
    assert (lesion.max(0).values - lesion.min(0).values + 1).tolist() == [8, 8]  # 10 x 10 pixels at 48 / 60
    assert float(item["image"][:, :, :12].abs().max()) == 0.0  # padding (columns first: 30 rows -> 24 + 2 x 12)
    from medsa_monai.planning import Plan
    from medsa_monai.preprocessing import planned_loading

    plan = Plan.from_dict({"labels": {"0": "background", "255": "lesion"}, "spatial_dims": 2, "in_channels": 3,
                           "patch_size": [48, 48], "keep_aspect": True})
    planned = Compose(planned_loading(plan, ["image"]))({"image": str(tmp_path / "img.png")})["image"]
    assert planned.shape == (3, 48, 48) and torch.equal(planned, item["image"])

    preprocessing = Compose(loading_transforms(["image"], 2, spec, image_channels=3, square_side=48))
    clicked = Compose([preprocessing, AddClickGuidanced("image", {"background": 0, "lesion": 1})])(
        {"image": str(tmp_path / "img.png"), "lesion": [[45, 15]]})  # MONAI's order: column 45, row 15
    assert clicked["image"].shape == (5, 48, 48)
    at = tuple(torch.nonzero(clicked["image"][4])[0].tolist())
    assert item["label"][0][at] == 1

    item = preprocessing({"image": str(tmp_path / "img.png")})
    target = load({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.png")})["label"]
    item["pred"] = torch.cat([1 - target, target]).float() * 10 - 5  # logits of the resized and padded lesion
    for step in inference_output_transforms(spec, preprocessing, tmp_path / "out", "seg", spatial_dims=2):
        item = step(item)
    written = np.asarray(Image.open(tmp_path / "out" / "img_seg.png"))
    assert written.shape == (30, 60) and set(np.unique(written)) == {0, 255}
    assert (written == mask).mean() > 0.99  # back through the padding and the resize, nearest-neighbour


def test_volume_predictions_come_back_in_the_input_geometry_and_values(tmp_path):
    from monai.utils import convert_to_dst_type

    affine = np.array([[0, 0, -3.0, 10], [0.7, 0, 0, -5], [0, 0.7, 0, 2], [0, 0, 0, 1]])  # thick axis last in RAS
    label = np.zeros((12, 10, 6), dtype=np.uint8)
    label[3:8, 2:6, 1:4] = 4
    label[4:6, 3:5, 2] = 2
    nib.save(nib.Nifti1Image(label.astype(np.float32), affine), tmp_path / "img.nii.gz")
    spec = LabelSpec.from_description(BRATS)
    preprocessing = Compose(loading_transforms(["image"], 3, spec, pixdim=None, slice_axis=0,
                                               normalization=[{"scheme": "range", "range": [0, 255]}]))
    item = preprocessing({"image": str(tmp_path / "img.nii.gz")})
    assert item["image"].shape == (1, 12, 10, 6)  # RAS is (6, 12, 10), its 3 mm axis 0 then moved last
    values = (item["image"][0] * 255).round()
    logits = torch.stack([torch.isin(values, torch.tensor(r, dtype=values.dtype)).float() * 20 - 10
                          for r in spec.regions])  # a perfect prediction in the network's frame
    item["pred"] = convert_to_dst_type(logits, item["image"])[0]
    Compose(label_map_transforms(spec, preprocessing) + [SaveLabelMapd("pred", tmp_path / "out", "")])(item)
    written = nib.load(tmp_path / "out" / "img.nii.gz")
    assert written.shape == label.shape and np.allclose(written.affine, affine)
    assert np.array_equal(np.asarray(written.dataobj), label)


def test_evaluate_regions_by_hand(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    ref = np.zeros((10, 10), dtype=np.uint8)
    ref[2:8, 2:8] = 1
    ref[4:6, 4:6] = 2  # disc = 36 pixels, cup = 4
    pred = np.zeros_like(ref)
    pred[2:8, 2:7] = 1
    pred[4:6, 4:7] = 2  # disc = 30 (all inside), cup = 6 (4 inside)
    Image.fromarray(ref).save(tmp_path / "ref" / "eye.png")
    Image.fromarray(pred).save(tmp_path / "pred" / "eye.png")
    spec = LabelSpec.from_description({"labels": {"0": "background", "1": "rim", "2": "cup"},
                                       "regions": {"disc": [1, 2], "cup": [2]}, "regions_class_order": [1, 2]})
    summary = evaluate_folder(tmp_path / "pred", tmp_path / "ref", spec, tmp_path / "summary.json")
    assert summary["mean"]["disc"]["Dice"] == pytest.approx(2 * 30 / (30 + 36))
    assert summary["mean"]["cup"]["Dice"] == pytest.approx(2 * 4 / (6 + 4))
    assert json.loads((tmp_path / "summary.json").read_text())["class_names"] == {"disc": "disc", "cup": "cup"}


def test_ensemble_writes_original_values_in_the_prediction_format(tmp_path):
    spec = LabelSpec.from_description({"labels": {"0": "background", "255": "lesion"}})
    probs = np.zeros((2, 5, 3), dtype=np.float32)  # MONAI order: 5 columns, 3 rows
    probs[0], probs[1, 1:3, 0] = 1, 2
    for name, shift in (("a", 0.1), ("b", -0.1)):
        (tmp_path / name).mkdir()
        save_probabilities(tmp_path / name / "img.npz", probs + shift, np.eye(4))
        Image.fromarray(np.zeros((3, 5), dtype=np.uint8)).save(tmp_path / name / "img.png")
    ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out", labels=spec)
    result = np.asarray(Image.open(tmp_path / "out" / "img.png"))
    expected = np.zeros((3, 5), dtype=np.uint8)
    expected[0, 1:3] = 255
    assert np.array_equal(result, expected)


def test_nnunet_channel_files_are_predicted_as_one_case(tmp_path):
    for name in ("case_000_0000.nii.gz", "case_000_0001.nii.gz", "case_001_0000.nii.gz", "case_001_0001.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / name)
    cases = input_cases(tmp_path)
    assert [c["case"] for c in cases] == ["case_000", "case_001"]
    assert [Path(f).name for f in cases[0]["image"]] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]


@pytest.fixture(scope="module")
def trained_png_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("png_run")
    (root / "raw" / "images").mkdir(parents=True)
    (root / "raw" / "masks").mkdir()
    rng = np.random.RandomState(1)
    for i in range(4):
        mask = np.zeros((32, 40), dtype=np.uint8)
        mask[8 + i:20, 10:25 + i] = 255
        Image.fromarray((rng.rand(32, 40) * 200).astype(np.uint8)).save(root / "raw" / "images" / f"u{i}.png")
        Image.fromarray(mask).save(root / "raw" / "masks" / f"u{i}.png")
    main(["ingest", str(root / "raw"), str(root / "ingested")])
    main(["plan", str(root / "ingested" / "dataset.json"), "--output-dir", str(root / "plan"), "--sam-variant",
          "vit_tiny", "--memory-gb", "8", "--folds", "2"])
    main(["train", "--plan", str(root / "plan" / "plan.json"), "--fold", "1", "--output", str(root / "runs"),
          "--set", "trainable=full", "sam_checkpoint=none", "max_epochs=1", "num_workers=0", "progress_bar=false"])
    return {"root": root, "plan": root / "plan" / "plan.json", "model": root / "runs" / "fold_1" / "models" /
            "model.pt"}


def _cli_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 3  # one message, no traceback wall
    return err


def test_cli_errors_name_the_file(trained_png_run, tmp_path, capsys):
    run = trained_png_run
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    err = _cli_error(capsys, "predict", "--model", str(run["model"]), "--input", str(bad), "--output",
                     str(tmp_path / "out"), "--plan", str(run["plan"]))
    assert "broken.png" in err
    (bad / "broken.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "colour.png")  # the plan says grey
    err = _cli_error(capsys, "predict", "--model", str(run["model"]), "--input", str(bad), "--output",
                     str(tmp_path / "out"), "--plan", str(run["plan"]))
    assert "colour.png" in err and "channel" in err
    err = _cli_error(capsys, "train", "--plan", str(run["plan"]), "--fold", "5", "--output",
                     str(tmp_path / "runs"), "--set", "sam_checkpoint=none", "num_workers=0")
    assert "fold 5" in err

    # a training image damaged after planning: train names it
    plan = json.loads(run["plan"].read_text())
    datalist = json.loads(Path(plan["datalist_file"]).read_text())
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(Path(datalist["training"][0]["image"]).read_bytes()[:60])
    datalist["training"][0]["image"] = str(damaged)
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    (tmp_path / "plan.json").write_text(json.dumps({**plan, "datalist_file": str(tmp_path / "datalist.json")}))
    err = _cli_error(capsys, "train", "--plan", str(tmp_path / "plan.json"), "--fold", "0", "--output",
                     str(tmp_path / "runs"), "--set", "sam_checkpoint=none", "num_workers=0", "max_epochs=1")
    assert "damaged.png" in err


def test_nan_and_unreadable_images_are_named(tmp_path):
    from medsa_monai.cli import _root_cause

    path = tmp_path / "nan_case.nii.gz"
    data = np.ones((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    truncated = tmp_path / "cut_case.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 20).astype(np.float32), np.eye(4)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    load = Compose(loading_transforms(["image"], 3))
    for bad in (path, truncated):
        with pytest.raises(Exception) as error:
            load({"image": str(bad)})
        assert bad.name in str(_root_cause(error.value))


def test_skin_bundle_predicts_through_medsa_predict(trained_png_run, tmp_path):
    from medsa_monai.demo import find_bundle

    run = trained_png_run
    main(["predict", "--model", str(run["model"]), "--input", str(run["root"] / "raw" / "images"), "--output",
          str(tmp_path / "skin"), "--bundle", str(find_bundle("samda_skin_lesion")), "--plan", str(run["plan"]),
          "--set", "trainable=full", "sam_variant=vit_tiny"])
    written = sorted(p.name for p in (tmp_path / "skin").glob("*.png"))
    assert written == ["u0.png", "u1.png", "u2.png", "u3.png"]
    assert set(np.unique(np.asarray(Image.open(tmp_path / "skin" / "u0.png")))) <= {0, 255}


def test_skin_bundle_honours_plan_and_fold(trained_png_run, tmp_path):
    from monai.bundle import ConfigParser

    from medsa_monai.demo import find_bundle

    from .conftest import run_monai_bundle

    bundle = find_bundle("samda_skin_lesion")
    run = trained_png_run
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"plan_file": str(run["plan"]), "fold": 1, "dataset_dir": str(tmp_path)})
    train, validation = parser.get_parsed_content("split")
    datalist = json.loads(Path(json.loads(run["plan"].read_text())["datalist_file"]).read_text())["training"]
    assert sorted(item["image"] for item in validation) == sorted(d["image"] for d in datalist if d["fold"] == 1)
    assert len(train) + len(validation) == 4
    plan = parser.get_parsed_content("plan")
    assert plan.in_channels == 1 and plan.class_names == ["class_255"]
    run_monai_bundle(bundle, "run", "training", "--config_file", str(bundle / "configs" / "train.json"),
                     "--plan_file", str(run["plan"]), "--fold", "1", "--bundle_root", str(tmp_path),
                     "--sam_checkpoint", "None", "--max_epochs", "1", "--num_workers", "0", "--progress_bar", "False")
    assert (tmp_path / "models" / "model.pt").is_file()
