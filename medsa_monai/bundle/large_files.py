"""A bundle's ``large_files`` lists: read them, and fetch one entry (``monai.bundle download_large_files`` fetches
them all)."""

from __future__ import annotations

from pathlib import Path

import yaml
from monai.apps import download_url

from ..networks.variants import SAM_VARIANTS

__all__ = ["fetch_large_file", "large_file_entries"]


def large_file_entries(bundle_dir: str | Path) -> list[dict]:
    """The ``large_files`` entries (keys ``path``, ``url``, ``hash_val``, ``hash_type``) of every
    ``<bundle_dir>/large_files*`` file with a .yml, .yaml or .json suffix, as MONAI reads them; ``[]`` when there is
    none. A file that does not parse, or an entry without its ``path`` or ``url``, is an error naming the file."""
    entries: list[dict] = []
    for path in sorted(Path(bundle_dir).glob("large_files*")):
        if path.suffix not in (".yml", ".yaml", ".json") or not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}  # JSON is YAML
        except yaml.YAMLError as error:
            raise ValueError(f"'{path}' does not parse: {error}") from error
        listed = data.get("large_files") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise ValueError(f"'{path}' has no 'large_files' list")
        for i, entry in enumerate(listed):
            missing = [k for k in ("path", "url") if not isinstance(entry, dict) or not entry.get(k)]
            if missing:
                raise ValueError(f"'{path}': entry {i} lacks {', '.join(missing)}")
        entries += listed
    return entries


def fetch_large_file(bundle_dir: str | Path, name: str = "vit_b") -> Path:
    """Download the entry of ``large_files.yml`` whose file name is ``name`` or, for a SAM variant name such as
    ``vit_b``, that variant's official checkpoint; checks the hash given there. Returns the local path (an existing
    file with the right hash is not downloaded again)."""
    entries = large_file_entries(bundle_dir)
    if not entries:
        raise FileNotFoundError(f"'{Path(bundle_dir)}' has no large_files.yml")
    wanted = name
    if name in SAM_VARIANTS and SAM_VARIANTS[name].official_url:
        wanted = SAM_VARIANTS[name].official_url.rsplit("/", 1)[-1]
    matches = [e for e in entries if Path(e["path"]).name == wanted]
    if not matches:
        listed = ", ".join(Path(e["path"]).name for e in entries)
        raise KeyError(f"'{name}' is not in {Path(bundle_dir) / 'large_files.yml'} (it lists: {listed})")
    entry = matches[0]
    target = Path(bundle_dir) / entry["path"]
    download_url(entry["url"], str(target), hash_val=entry.get("hash_val") or None,
                 hash_type=entry.get("hash_type") or "md5")
    return target
