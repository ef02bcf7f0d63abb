"""Files written atomically get the mode that ``open()`` would give them under the umask (mkstemp makes 0600)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from medsa_monai.data import save_label_map
from medsa_monai.data.io import write_json


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = [write_json(tmp_path / "summary.json", {"a": 1}),
                   save_label_map(tmp_path / "case.nii.gz", np.zeros((3, 3, 3)), np.eye(4))]
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(previous)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
