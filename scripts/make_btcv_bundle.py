"""Make ``bundles/medsa_btcv_ct`` with ``medsa bundle create``, from a plan of BTCV at the Med-SA paper's settings.

    python scripts/make_btcv_bundle.py [--output bundles/medsa_btcv_ct] [--memory-gb 24] [--overwrite]

BTCV cannot be downloaded here (Synapse needs a registered account), so the plan is made by ``make_plan`` from a
fingerprint of BTCV's median training volume as the paper resamples it: 13 organs, CT, 1.5 x 1.5 x 2.0 mm,
256 x 256 in-plane (512 pixels of about 0.76 mm) and 220 slices (about 147 slices of 3 mm). Then the paper's
intensity window replaces the data-driven CT normalisation: -175 to 250 HU mapped to [0, 1] (the "range" scheme)
and given to SAM as an 8-bit grey image (``intensity="unit"``). With BTCV at hand, plan it for real instead
(``medsa ingest`` + ``medsa plan``) and train with ``--plan_file`` (see the model card).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from medsa_monai.bundle import create_bundle
from medsa_monai.data import BTCV_LABELS
from medsa_monai.planning import Plan, make_plan

ROOT = Path(__file__).resolve().parents[1]
SPACING = [1.5, 1.5, 2.0]
WINDOW = [-175.0, 250.0]
MEDIAN_SHAPE = [256, 256, 220]


def btcv_fingerprint() -> dict:
    """What ``compute_fingerprint`` would say of BTCV's median training volume at the paper's spacing; the
    foreground statistics are soft-tissue HU (they only matter to the CT scheme, which the window replaces)."""
    return {
        "dataset": "BTCV", "num_cases": 30, "spatial_dims": 3, "channels": 1, "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in BTCV_LABELS.items()}, "shapes": [MEDIAN_SHAPE], "spacings": [SPACING],
        "foreground_intensity": [{"mean": 100.0, "std": 80.0, "percentile_00_5": -100.0,
                                  "percentile_99_5": 300.0}],
        "median_nonzero_bbox_fraction": 1.0,
    }


def btcv_plan(memory_gb: float) -> Plan:
    plan = make_plan(btcv_fingerprint(), sam_variant="vit_b", memory_gb=memory_gb, amp=True)
    notes = list(plan.record.get("notes", [])) + [
        "made by scripts/make_btcv_bundle.py from BTCV's median volume at 1.5 x 1.5 x 2.0 mm, not from the files",
        "CT window -175..250 HU (the Med-SA paper's) instead of the data-driven CT normalisation"]
    return replace(plan, pixdim=SPACING, intensity="unit",
                   normalization=[{"scheme": "range", "modality": "CT", "range": WINDOW}],
                   record={**plan.record, "notes": notes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(ROOT / "bundles" / "medsa_btcv_ct"))
    parser.add_argument("--memory-gb", type=float, default=24.0, help="GPU memory of one training process")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plan_file = Path(folder) / "plan.json"
        btcv_plan(args.memory_gb).save(plan_file)
        out = create_bundle(
            plan_file, args.output, name="Med-SA BTCV abdominal CT, 13 organs",
            description="Segmentation of the 13 BTCV abdominal organs in CT",
            settings={"train.json": {"dataset_dir": "/workspace/data/BTCV"},
                      "inference.json": {"dataset_dir": "/workspace/data/BTCV"}},
            overwrite=args.overwrite)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
