"""Which weights a bundle loads: the SAM checkpoint (or none, on purpose) and the newest training checkpoint."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

from ..networks.variants import get_sam_variant

__all__ = ["default_sam_checkpoint", "resolve_sam_checkpoint", "latest_checkpoint", "EPOCH_CHECKPOINT"]

EPOCH_CHECKPOINT = re.compile(r"_epoch=(\d+)\.pt$")


def _none_on_command_line(key: str, argv: list[str] | None = None) -> bool:
    """Whether the command line says ``--<key> None``.

    ``python -m monai.bundle run`` drops overrides whose value is ``None`` (``update_kwargs(ignore_none=True)``),
    so a config never sees ``--sam_checkpoint None``; it has to be read from the command line itself.
    """
    argv = sys.argv if argv is None else argv
    flag = f"--{key}"
    return any((arg == flag and i + 1 < len(argv) and argv[i + 1] == "None") or arg == f"{flag}=None"
               for i, arg in enumerate(argv))


def default_sam_checkpoint(bundle_root: str | Path, variant: str) -> str | None:
    """``<bundle_root>/models/<official file name>`` of ``variant``, or ``None`` for a variant with no release."""
    spec = get_sam_variant(variant)
    return str(Path(bundle_root) / "models" / spec.official_file) if spec.official_file else None


def resolve_sam_checkpoint(path: str | Path | None, variant: str) -> str | None:
    """The SAM checkpoint a bundle should load, or ``None`` (random frozen weights) with a warning.

    ``None`` comes from the config, or from ``--sam_checkpoint None`` on the ``monai.bundle`` command line.
    Raises ``FileNotFoundError`` that says how to obtain the official file when ``path`` does not exist.
    """
    if path is None or str(path).strip().lower() in ("", "none", "null") or _none_on_command_line("sam_checkpoint"):
        warnings.warn("sam_checkpoint is None: SAM's frozen weights are random, so only the trainable parts learn. "
                      "Use trainable='full' to train everything, or give the official checkpoint.", stacklevel=2)
        return None
    path = Path(path)
    if path.is_file():
        return str(path)
    spec = get_sam_variant(variant)
    how = (f"download {spec.official_url} to '{path}' (or run `medsa bundle fetch <bundle> {variant}` with "
           f"internet)" if spec.official_url else
           f"'{variant}' has no official checkpoint")
    raise FileNotFoundError(f"SAM checkpoint '{path}' not found: {how}; or pass --sam_checkpoint <file>, or "
                            f"--sam_checkpoint None to start from random frozen weights")


def latest_checkpoint(directory: str | Path, prefix: str = "checkpoint") -> Path:
    """The ``<prefix>_epoch=N.pt`` file with the largest ``N`` in ``directory``."""
    found = [(int(m.group(1)), p) for p in Path(directory).glob(f"{prefix}_epoch=*.pt")
             if (m := EPOCH_CHECKPOINT.search(p.name))]
    if not found:
        raise FileNotFoundError(f"resume requested but no '{prefix}_epoch=*.pt' checkpoint in '{directory}'")
    return max(found)[1]
