"""The ``medsa`` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medsa_monai.cli import main
from medsa_monai.networks import MedSA, count_parameters, trained_weights_bytes


def test_params_table_matches_counts(capsys):
    main(["params", "--variants", "vit_tiny", "--dims", "3", "--presets", "medsa", "full"])
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "| variant | dims | SAM (M) | medsa | full |"
    network = MedSA(3, 1, 2, "vit_tiny", trainable="medsa")
    counts = count_parameters(network)
    assert out[3].startswith("| vit_tiny | 3D |")
    assert f"{counts.trainable / 1e6:.2f} M ({counts.percent:.1f}%)" in out[3]
    sizes = out[out.index("| variant | dims | medsa | full |") + 2]  # the saved model.pt per preset
    assert sizes.startswith("| vit_tiny | 3D | ") and f"{trained_weights_bytes(network) / 2**20:.1f} MiB" in sizes


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "medsa_monai", "params", "--variants", "vit_tiny", "--dims", "2"],
                            capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
    assert "| vit_tiny | 2D |" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "medsa_monai", "params", "--variants", "vit_q"],
                         capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert bad.returncode == 2 and "invalid choice: 'vit_q'" in bad.stderr


def test_settings_from_the_command_line_are_json_where_they_parse():
    from medsa_monai.bundle.overrides import parse_overrides

    assert parse_overrides(["max_epochs=3", "interactive_zoom=true", "patch_size=[32,32]", "sam_variant=vit_tiny",
                            "name=a=b"]) == {"max_epochs": 3, "interactive_zoom": True, "patch_size": [32, 32],
                                             "sam_variant": "vit_tiny", "name": "a=b"}
    assert parse_overrides(["amp=False", "progress_bar=True", "fold=None", "label=Truest"]) == {
        "amp": False, "progress_bar": True, "fold": None, "label": "Truest"}
    with pytest.raises(ValueError, match="KEY=VALUE, got 'max_epochs'"):
        parse_overrides(["max_epochs"])


def test_demo_trains_vit_nano_unless_told_otherwise(monkeypatch, capsys, tmp_path):
    import medsa_monai.demo as demo

    calls = []

    def fake_run_demo(output_dir, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("stop after the arguments")  # main prints it as a one-line error and exits

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    for argv, variant in (([], None), (["--sam-variant", "vit_tiny"], "vit_tiny")):
        with pytest.raises(SystemExit):
            main(["demo", "--output-dir", str(tmp_path), *argv])
        assert calls[-1].get("sam_variant") == variant
    assert demo.DEMO_OVERRIDES["sam_variant"] == "vit_nano"
    assert "stop after the arguments" in capsys.readouterr().err
