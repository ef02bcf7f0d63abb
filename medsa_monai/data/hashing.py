"""SHA-256 of files, remembered per file version, so that checking a large checkpoint twice reads it once."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 1 << 22
_KNOWN: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of the file at ``path`` (remembered by path, size and modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _KNOWN:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
        _KNOWN[key] = digest.hexdigest()
    return _KNOWN[key]
