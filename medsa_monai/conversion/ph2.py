"""The public PH2 release as the ``images/`` + ``masks/`` folder that the skin-lesion bundle reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.atomic import atomic_path

__all__ = ["convert_ph2"]


def _find_cases(source: Path) -> list[Path]:
    """Case folders ``IMDnnn`` holding ``IMDnnn_Dermoscopic_Image/IMDnnn.bmp``, wherever they sit under ``source``."""
    return sorted(p.parents[1] for p in source.rglob("*_Dermoscopic_Image/*.bmp") if p.stem == p.parents[1].name)


def convert_ph2(source: str | Path, output_dir: str | Path, scale: float = 1.0) -> list[str]:
    """Write ``images/IMDnnn.png`` (RGB) and ``masks/IMDnnn.png`` (0 skin, 255 lesion) from a PH2 download.

    PH2 (Mendonca et al., EMBC 2013) ships one folder per case: ``IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp`` and
    ``IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp`` (under ``PH2 Dataset images/``). ``scale`` resizes both (bilinear for the
    image, nearest for the mask; 0.5 gives the development set's about 382 x 287). Each file is written whole or not
    at all. Returns the case names.

    Raises:
        FileNotFoundError: no PH2 case under ``source``, or a case without its lesion mask (named).
        ValueError: a mask whose size differs from its image's (named), or ``scale`` not positive.
    """
    source, output_dir = Path(source), Path(output_dir)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    cases = _find_cases(source)
    if not cases:
        raise FileNotFoundError(f"no PH2 case (IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp) under '{source}'")
    missing = [str(c / f"{c.name}_lesion" / f"{c.name}_lesion.bmp") for c in cases
               if not (c / f"{c.name}_lesion" / f"{c.name}_lesion.bmp").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} PH2 case(s) without a lesion mask: {', '.join(missing)}")
    for folder in ("images", "masks"):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        image_file = case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.bmp"
        mask_file = case / f"{case.name}_lesion" / f"{case.name}_lesion.bmp"
        image = Image.open(image_file).convert("RGB")
        mask = Image.fromarray(((np.asarray(Image.open(mask_file).convert("L")) > 127) * 255).astype(np.uint8))
        if mask.size != image.size:
            raise ValueError(f"{mask_file}: mask size {mask.size} differs from the image's {image.size} ({image_file})")
        if scale != 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image, mask = image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
        for picture, folder in ((image, "images"), (mask, "masks")):
            with atomic_path(output_dir / folder / f"{case.name}.png") as tmp:
                picture.save(tmp, format="PNG")
    return [case.name for case in cases]
