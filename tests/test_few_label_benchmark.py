"""The few-label benchmark's bookkeeping (splits, refusals, report), in process; the training runs it drives are
``medsa pretrain`` and ``medsa train``, tested elsewhere."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "few_label_adaptation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("few_label_adaptation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _items(count: int) -> list[dict]:
    return [{"image": f"imagesTr/case_{i:03d}.png", "label": f"labelsTr/case_{i:03d}.png"} for i in range(count)]


def test_labelled_sets_are_nested_and_the_test_cases_shared(bench):
    pools, test = bench.split(_items(30), [5, 10, 20], seed=3, max_test=None)
    assert [len(pools[n]) for n in (5, 10, 20)] == [5, 10, 20]
    assert pools[5] == pools[10][:5] and pools[10] == pools[20][:10]
    assert len(test) == 10 and not {i["image"] for i in test} & {i["image"] for i in pools[20]}
    shuffled, _ = bench.split(list(reversed(_items(30))), [5, 10, 20], seed=3, max_test=None)
    assert shuffled == pools  # however the files were listed
    other, _ = bench.split(_items(30), [5, 10, 20], seed=4, max_test=None)
    assert other[5] != pools[5]
    _, capped = bench.split(_items(30), [5], seed=3, max_test=7)
    assert len(capped) == 7 and capped == bench.split(_items(30), [5], seed=3, max_test=7)[1]
    with pytest.raises(ValueError, match="no test case"):
        bench.split(_items(10), [10], seed=0, max_test=None)


def test_rows_of_another_split_are_refused(bench, tmp_path):
    rows = [{"method": "scratch_full", "labelled": 10, "seed": 0, "largest_labelled": 10, "max_test": None}]
    bench._check_split(rows, tmp_path / "results.json", 10, None)
    with pytest.raises(ValueError, match="largest --labelled of 10"):
        bench._check_split(rows, tmp_path / "results.json", 20, None)
    with pytest.raises(ValueError, match="--max-test"):
        bench._check_split(rows, tmp_path / "results.json", 10, 150)


def test_a_foundation_must_come_from_the_corpus_without_the_target(bench, tmp_path):
    foundation = tmp_path / "foundation.pth"
    foundation.write_bytes(b"")
    with pytest.raises(ValueError, match="no JSON record"):
        bench._check_foundation(foundation, "BUSI", ["PH2"])
    datasets = {name: {"plan": str(tmp_path / "datasets" / name / "plan" / "plan.json")} for name in ("PH2", "BUSI")}
    foundation.with_suffix(".json").write_text(json.dumps({"datasets": datasets}))
    with pytest.raises(ValueError, match="target BUSI must not be in it"):
        bench._check_foundation(foundation, "BUSI", ["PH2", "BUSI"])
    with pytest.raises(ValueError, match="pretrained on"):
        bench._check_foundation(foundation, "HC18", ["PH2"])
    bench._check_foundation(foundation, "HC18", ["BUSI", "PH2"])


def test_the_target_may_not_hide_in_the_corpus(bench, tmp_path):
    for name in ("target", "copy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"same bytes")
    namespace = type("Args", (), {"output": tmp_path / "out", "regions": [], "target": tmp_path / "target",
                                  "corpus": [tmp_path / "copy"]})()
    with pytest.raises(ValueError, match="must not contain the target"):
        bench.run(namespace)


def test_the_report_gives_means_half_ranges_and_sizes(bench, tmp_path):
    rows = []
    for seed, (scratch, adapted) in enumerate(((0.5, 0.7), (0.6, 0.8))):
        for method, dice in (("scratch_full", scratch), ("foundation_samda", adapted)):
            rows.append({"method": method, "labelled": 10, "seed": seed, "dice": dice, "box_dice": dice + 0.1,
                         "trainable_parameters": 2_000_000, "weights_bytes": 2**21, "seconds": 90.0})
        rows.append({"method": bench.ZERO_SHOT, "labelled": 10, "seed": seed, "dice": math.nan, "box_dice": 0.4,
                     "trainable_parameters": 0, "weights_bytes": 0, "seconds": 0.0})
    bench.write_report(tmp_path, rows, [10], "# synthetic")
    report = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| scratch_full | 0.550 ± 0.050 |" in report and "| foundation_samda | 0.750 ± 0.050 |" in report
    assert f"| {bench.ZERO_SHOT} | - |" in report and f"| {bench.ZERO_SHOT} | 0.400 ± 0.000 |" in report
    assert "| foundation_samda | 2.00 M | 2.00 MiB | 90 |" in report
    assert (tmp_path / "dice_vs_labelled.png").stat().st_size > 1000
