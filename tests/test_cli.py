"""The ``medsa`` command line."""

from __future__ import annotations

import subprocess
import sys

from medsa_monai.cli import main
from medsa_monai.networks import MedSA, count_parameters


def test_params_table_matches_counts(capsys):
    main(["params", "--variants", "vit_tiny", "--dims", "3", "--presets", "medsa", "full"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| variant | dims | SAM (M) | medsa | full |"
    counts = count_parameters(MedSA(3, 1, 2, "vit_tiny", trainable="medsa"))
    assert out[2].startswith("| vit_tiny | 3D |")
    assert f"{counts.trainable / 1e6:.2f} M ({counts.percent:.1f}%)" in out[2]


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "medsa_monai", "params", "--variants", "vit_tiny", "--dims", "2"],
                            capture_output=True, text=True, encoding="utf-8", errors="replace", check=True)
    assert "| vit_tiny | 2D |" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "medsa_monai", "params", "--variants", "vit_q"],
                         capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert bad.returncode == 2 and "invalid choice: 'vit_q'" in bad.stderr
