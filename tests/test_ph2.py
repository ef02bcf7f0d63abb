"""Converting the public PH2 layout (one folder of BMPs per case) to the bundle's images/ + masks/ folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsa_monai.cli import main
from medsa_monai.conversion import convert_ph2
from medsa_monai.data import image_mask_pairs


def _ph2(root: Path, names=("IMD002", "IMD003"), size=(40, 30)) -> Path:
    rng = np.random.RandomState(0)
    for name in names:
        case = root / "PH2Dataset" / "PH2 Dataset images" / name
        (case / f"{name}_Dermoscopic_Image").mkdir(parents=True)
        (case / f"{name}_lesion").mkdir()
        Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            case / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
        mask = np.zeros((size[1], size[0]), bool)
        mask[8:20, 10:30] = True
        Image.fromarray(mask).save(case / f"{name}_lesion" / f"{name}_lesion.bmp")  # 1-bit, as PH2 ships it
    return root


def test_converts_and_pairs(tmp_path):
    src = _ph2(tmp_path / "src")
    assert convert_ph2(src, tmp_path / "out") == ["IMD002", "IMD003"]
    pairs = image_mask_pairs(tmp_path / "out")
    assert [Path(p["image"]).name for p in pairs] == ["IMD002.png", "IMD003.png"]
    original = np.asarray(Image.open(src / "PH2Dataset" / "PH2 Dataset images" / "IMD002" /
                                     "IMD002_Dermoscopic_Image" / "IMD002.bmp"))
    assert np.array_equal(np.asarray(Image.open(pairs[0]["image"])), original)
    mask = np.asarray(Image.open(pairs[0]["label"]))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 12 * 20
    assert not list((tmp_path / "out" / "images").glob(".medsa-tmp*"))


def test_scale_and_cli(tmp_path, capsys):
    main(["ingest-ph2", str(_ph2(tmp_path / "src")), str(tmp_path / "out"), "--scale", "0.5"])
    assert "wrote 2 images" in capsys.readouterr().out
    image = Image.open(tmp_path / "out" / "images" / "IMD003.png")
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "IMD003.png"))
    assert image.size == (20, 15) and mask.shape == (15, 20) and set(np.unique(mask)) == {0, 255}


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PH2 case"):
        convert_ph2(tmp_path, tmp_path / "out")
    src = _ph2(tmp_path / "a", names=("IMD010",))
    (src / "PH2Dataset" / "PH2 Dataset images" / "IMD010" / "IMD010_lesion" / "IMD010_lesion.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="IMD010_lesion.bmp"):
        convert_ph2(src, tmp_path / "out")
    src = _ph2(tmp_path / "b", names=("IMD011",))
    lesion = src / "PH2Dataset" / "PH2 Dataset images" / "IMD011" / "IMD011_lesion" / "IMD011_lesion.bmp"
    Image.fromarray(np.zeros((10, 10), bool)).save(lesion)
    with pytest.raises(ValueError, match="IMD011_lesion.bmp"):
        convert_ph2(src, tmp_path / "out")
    with pytest.raises(ValueError, match="scale"):
        convert_ph2(src, tmp_path / "out", scale=0)
