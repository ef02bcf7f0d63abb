"""Files that appear whole or not at all: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "remove_stale_temporaries"]

TEMP_PREFIX = ".medsa-tmp."


@contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same ``suffix``, since writers pick formats from extensions);
    rename it to ``target`` when the block succeeds, delete it when the block raises or is interrupted."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the mode open() would give it
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path, suffix="") as tmp:
        tmp.write_text(text)
    return Path(path)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries that a killed process (SIGKILL: no clean-up possible) left in ``folder``."""
    stale = list(Path(folder).glob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
