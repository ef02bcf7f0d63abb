"""The shipped bundles against the MONAI model zoo's file rules: required files, metadata schema, version in the
changelog, the data set's licence, eval_metrics that the model card measured, and the export the zoo runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import verify_metadata

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SCHEMA = Path(__file__).parent / "data" / "bundle_metadata_schema.json"
DATA_SETS = {"medsa_hippocampus_mri": "CC BY-SA 4.0", "samda_skin_lesion": "PH2", "medsa_fundus_disc_cup": "Drishti-GS",
             "medsa_btcv_ct": "syn3193805"}


@pytest.mark.parametrize("name", sorted(DATA_SETS))
def test_shipped_bundle_meets_the_zoo_file_rules(name, tmp_path):
    bundle = BUNDLES / name
    for required in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md",
                     "docs/data_license.txt"):
        assert (bundle / required).is_file(), required
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    assert DATA_SETS[name] in (bundle / "docs" / "data_license.txt").read_text()

    card = (bundle / "docs" / "README.md").read_text()
    numbers = {k: v for k, v in meta["eval_metrics"].items() if isinstance(v, float)}
    if "None yet" in card.split("## Results", 1)[1][:200]:
        assert not numbers  # nothing measured, nothing claimed
    else:
        assert numbers and "measured_with" in meta["eval_metrics"]
    for key, value in numbers.items():
        assert f"{value:.3f}" in card, f"{name}: eval_metrics {key}={value} is not a figure of docs/README.md"
    export = card.split("## Export", 1)[1].split("\n## ", 1)[0]
    assert "ckpt_export" in export and "--use_trace" not in export  # scripted, as the zoo's CI exports
