"""Pack a trained bundle into one zip to share, check it, and unpack it safely.

``pack_bundle`` writes ``<name>_v<version>.zip`` with every file under a top folder ``<name>/``: the layout that
``python -m monai.bundle download --name <name> --bundle_dir <dir> --url <url>`` unzips into ``<dir>/<name>/``.
A ``<name>/checksums.sha256`` (``sha256sum`` format, paths relative to the bundle folder, so
``cd <name> && sha256sum -c checksums.sha256`` works too) lists every other file; ``verify_bundle`` checks it.
The checksums catch corruption and edits of single files, not a rewritten archive: publish the zip's own sha256
beside its URL. ``unpack_bundle`` refuses members that would land outside the target folder before writing
anything, then verifies the checksums.

Left out of the archive: the large files that ``large_files.yml`` (or ``.yaml``/``.json``) lists (the SAM
checkpoints, fetched by ``python -m monai.bundle download_large_files``; a ``models/model.pt`` of shared weights
needs its base checkpoint listed there, see :mod:`~medsa_monai.networks.weights`), training state
(``checkpoint_epoch=N.pt``), outputs (``eval/``, ``runs/``, ``logs/``, TensorBoard event files), caches,
``__pycache__``, hidden files and zips at the top of the bundle folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ..data.atomic import TEMP_PREFIX, atomic_path
from ..data.hashing import file_sha256
from ..networks.weights import read_weights_record
from .large_files import large_file_entries
from .shipped_model import PLAN_MEMBER, stage_model

__all__ = ["CHECKSUM_FILE", "BundleIntegrityError", "pack_bundle", "unpack_bundle", "verify_bundle"]

logger = logging.getLogger(__name__)

CHECKSUM_FILE = "checksums.sha256"
_SKIP_DIRS = frozenset({"__pycache__", "eval", "runs", "logs", "tensorboard", "mlruns", "lightning_logs", "wandb"})
_STORED_SUFFIXES = (".pt", ".pth", ".ts", ".ckpt", ".safetensors", ".onnx", ".npz", ".zip", ".gz", ".png", ".jpg")
_TRAINING_STATE = re.compile(r"_epoch=\d+\.pt$")  # resumable trainer/optimizer state, not the trained model
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: packing the same files twice gives the same bytes
_CHUNK = 1 << 20


class BundleIntegrityError(ValueError):
    """A bundle's files do not match its ``checksums.sha256``; ``problems`` maps each file to what is wrong."""

    def __init__(self, bundle_dir: Path, problems: dict[str, str]):
        self.problems = problems
        listed = "; ".join(f"{path}: {why}" for path, why in problems.items())
        super().__init__(f"bundle '{bundle_dir}' failed its {CHECKSUM_FILE} check ({len(problems)} file(s)): {listed}")


def bundle_version(bundle_dir: str | Path) -> str:
    """The ``version`` in ``<bundle_dir>/configs/metadata.json``; errors name the file and the key."""
    meta = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta.is_file():
        raise FileNotFoundError(f"'{meta}' not found: a bundle needs configs/metadata.json with a 'version'")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"'{meta}' is not valid JSON: {error}") from error
    version = data.get("version") if isinstance(data, dict) else None
    if version is None:
        raise KeyError(f"'{meta}' has no 'version' key")
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"'version' in '{meta}' must be a string such as \"0.1.0\" (digits first, then letters, "
                         f"digits, '.', '+' or '-'), got {version!r}")
    return version


def _large_files(bundle_dir: Path) -> set[str]:
    """Bundle-relative paths of the files that ``large_files*`` lists."""
    return {posixpath.normpath(str(e["path"]).replace("\\", "/")) for e in large_file_entries(bundle_dir)}


def _skip_dir(name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS or "cache" in name.lower()


def _skip_file(rel: PurePosixPath, large: set[str]) -> bool:
    name, top = rel.name, len(rel.parts) == 1
    return (name.startswith(".") or name.startswith(TEMP_PREFIX) or name.endswith((".pyc", ".pyo"))
            or name.startswith("events.out.tfevents") or bool(_TRAINING_STATE.search(name))
            or rel.as_posix() in large or (top and (name == CHECKSUM_FILE or name.endswith(".zip"))))


def bundle_files(bundle_dir: str | Path) -> list[PurePosixPath]:
    """The bundle-relative paths ``pack_bundle`` puts in the archive (the checksum file aside), sorted."""
    root = Path(bundle_dir)
    large = _large_files(root)
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not _skip_dir(d)]  # pruned: outputs and caches may hold many files
        for name in names:
            path = Path(folder, name)
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if path.is_file() and not _skip_file(rel, large):
                found.append(rel)
    return sorted(found)


def _check_base_listed(root: Path, record: dict | None, model: Path) -> None:
    """A ``models/model.pt`` of shared weights is useless without its base: ``large_files`` must list that file."""
    if record is None:
        return
    base = record["base"]
    if any(PurePosixPath(e["path"]).name == base["file"] for e in large_file_entries(root)):
        return
    raise ValueError(
        f"'{model}' holds shared weights for the base checkpoint '{base['file']}' (sha256 "
        f"{base['sha256']}), which {root / 'large_files.yml'} does not list, so the archive would not say where to "
        f"get it: publish the file and add an entry to large_files.yml (path: \"models/{base['file']}\", url: "
        f"<where you publish it>, hash_val: \"{base['sha256']}\", hash_type: \"sha256\")")


def _member(name: str, compress: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def pack_bundle(bundle_dir: str | Path, output_dir: str | Path | None = None, model: str | Path | None = None
                ) -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip`` (default: the current folder) with the bundle's files under
    ``<name>/`` and their ``<name>/checksums.sha256``; ``name`` is the bundle folder's name and ``version`` comes
    from ``configs/metadata.json``. The zip appears whole or not at all. Returns its path.

    ``model``: a trained model file to ship as ``models/model.pt`` (the bundle's own is left as it is), checked
    against the bundle's network and saved small where it can be
    (:func:`~medsa_monai.bundle.shipped_model.stage_model`).
    """
    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"bundle folder '{bundle_dir}' not found")
    name, version = root.name, bundle_version(root)
    files = bundle_files(root)
    staged = stage_model(root, model) if model is not None else None
    if staged is not None:  # the bundle's own plan.json belongs to its own model, not to the one packed
        files = sorted((set(files) - {PurePosixPath(PLAN_MEMBER)}) | {PurePosixPath(rel) for rel in staged.members})
        _check_base_listed(root, staged.record, Path(model))
    elif PurePosixPath("models/model.pt") in files:
        _check_base_listed(root, read_weights_record(root / "models" / "model.pt"), root / "models" / "model.pt")
    if PurePosixPath("models/model.pt") not in files and PurePosixPath("models/model.ts") not in files:
        logger.warning(f"'{root}' has no models/model.pt: the archive holds configs only, and "
                       f"monai.bundle.load of it will fail")
    target = Path(output_dir if output_dir is not None else ".") / f"{name}_v{version}.zip"
    lines, size = [], 0
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for rel in files:
            digest = hashlib.sha256()
            info = _member(f"{name}/{rel.as_posix()}", not rel.name.endswith(_STORED_SUFFIXES))
            given = staged.members.get(rel.as_posix()) if staged is not None else None
            with (io.BytesIO(given) if given is not None else (root / rel).open("rb")) as source, \
                    archive.open(info, "w", force_zip64=True) as member:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    member.write(chunk)
                    size += len(chunk)
            lines.append(f"{digest.hexdigest()}  {rel.as_posix()}\n")
        archive.writestr(_member(f"{name}/{CHECKSUM_FILE}", True), "".join(lines))
    logger.info(f"packed {len(files)} files ({size / 2**20:.1f} MiB) of '{root}' into {target} "
                f"(sha256 {file_sha256(target)})")
    return target


def _checksum_entries(bundle_dir: Path) -> Iterator[tuple[str, str]]:
    listing = bundle_dir / CHECKSUM_FILE
    if not listing.is_file():
        raise FileNotFoundError(f"'{listing}' not found: the bundle was not made by `medsa bundle pack`")
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        rel = PurePosixPath(match.group(2)) if match else None
        if rel is None or rel.is_absolute() or ".." in rel.parts or "\\" in match.group(2):
            raise ValueError(f"'{listing}' line {number} is not '<sha256>  <relative path>': {line!r}")
        yield rel.as_posix(), match.group(1)


def verify_bundle(bundle_dir: str | Path) -> list[str]:
    """Check every file that ``<bundle_dir>/checksums.sha256`` lists; return their paths, or raise
    ``BundleIntegrityError`` naming each missing or changed file. Files it does not list (large files fetched
    later, outputs) are not checked."""
    root = Path(bundle_dir)
    problems, checked = {}, []
    for rel, expected in _checksum_entries(root):
        path = root / rel
        if not path.is_file():
            problems[rel] = "missing"
        elif (actual := file_sha256(path)) != expected:
            problems[rel] = f"sha256 {actual}, expected {expected}"
        checked.append(rel)
    if problems:
        raise BundleIntegrityError(root, problems)
    return checked


def _unsafe(member: str, target: Path) -> bool:
    """True when ``member`` is absolute (POSIX, Windows drive or UNC) or would resolve outside ``target``."""
    name = member.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return True
    destination = (target / name).resolve()
    return destination != target and target not in destination.parents


def unpack_bundle(zip_path: str | Path, target_dir: str | Path) -> Path:
    """Unpack a bundle zip into ``<target_dir>/<name>/`` and verify its checksums; return that folder.

    Every member is checked before anything is written: one with an absolute path, or whose path (``..``, or a
    symbolic link already in ``target_dir``) lands outside ``target_dir``, raises ``ValueError`` naming it. So
    does an archive that is not one top folder. The files go to a temporary folder that is renamed into place
    only after the checksums match and every file is listed in them (``BundleIntegrityError`` names the others),
    and an existing ``<target_dir>/<name>`` is never overwritten."""
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        for member in members:
            if _unsafe(member.filename, target):
                raise ValueError(f"'{zip_path}': member '{member.filename}' would be written outside '{target}'; "
                                 f"nothing was unpacked")
        tops = {PurePosixPath(m.filename.replace("\\", "/")).parts[0] for m in members if m.filename.strip("/")}
        if len(tops) != 1 or any(not m.is_dir() and "/" not in m.filename.replace("\\", "/") for m in members):
            raise ValueError(f"'{zip_path}' must hold one bundle folder (as `medsa bundle pack` writes), "
                             f"found top-level entries {sorted(tops)}")
        name = tops.pop()
        if f"{name}/{CHECKSUM_FILE}" not in archive.namelist():
            raise ValueError(f"'{zip_path}' has no member '{name}/{CHECKSUM_FILE}': it was not made by "
                             f"`medsa bundle pack`, so it cannot be verified")
        final = target / name
        if final.exists():
            raise FileExistsError(f"'{final}' exists: remove it or unpack elsewhere")
        staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}.", dir=target)).resolve()
        try:
            for member in members:
                if _unsafe(member.filename, staging):  # e.g. "a/../../<target name>/x": inside target, not staging
                    raise ValueError(f"'{zip_path}': member '{member.filename}' would be written outside '{staging}'")
                destination = staging / member.filename.replace("\\", "/")
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
            try:
                listed = set(verify_bundle(staging / name))
            except BundleIntegrityError as error:
                raise BundleIntegrityError(Path(zip_path), error.problems) from None
            unlisted = {PurePosixPath(m.filename.replace("\\", "/")).relative_to(name).as_posix() for m in members
                        if not m.is_dir()} - listed - {CHECKSUM_FILE}
            if unlisted:  # an added file (a script, a config) is as much a change as an edited one
                raise BundleIntegrityError(Path(zip_path), dict.fromkeys(sorted(unlisted), f"not in {CHECKSUM_FILE}"))
            (staging / name).rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"unpacked and verified '{zip_path}' into {final}")
    return final
