"""Packing a bundle to share: the zip, its checksums, safe unpacking, and ``python -m monai.bundle download``
from a URL followed by ``monai.bundle.load``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from monai.apps.utils import extractall

from medsa_monai.bundle import BundleIntegrityError, fetch_large_file, pack_bundle, unpack_bundle, verify_bundle
from medsa_monai.cli import main
from medsa_monai.networks import MedSA

from .conftest import local_env, serving

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "samda_skin_lesion"
NAME = BUNDLE.name
VERSION = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
NET = {"sam_variant": "vit_tiny", "image_size": 64, "trainable": "samda"}
# written into the copied bundle, and not to be packed: outputs, caches, training state, a listed large file
JUNK = ["eval/tensorboard/events.out.tfevents.1.host", "eval/predictions/a_seg.png", "runs/fold_0/log.txt",
        "models/checkpoint_epoch=3.pt", "models/sam_vit_b_01ec64.pth", "configs/__pycache__/x.cpython-311.pyc",
        ".cache/embeddings.npy", "embedding_cache/0.pt", ".DS_Store", f"{NAME}_v0.0.9.zip"]


def _trained_state() -> dict[str, torch.Tensor]:
    """The skin bundle's network at test size, every float tensor moved off its initial value, so that weights
    equal to these after loading can only have come from model.pt."""
    net = MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable="samda")
    gen = torch.Generator().manual_seed(123)
    state = net.state_dict()
    return {k: (v + 0.01 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("src") / NAME
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("__pycache__", "eval", "runs", "*.pt", "*.pth"))
    state = _trained_state()
    (root / "models").mkdir(exist_ok=True)
    torch.save(state, root / "models" / "model.pt")
    for rel in JUNK:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not for the archive")
    return root, state


@pytest.fixture(scope="module")
def packed(trained_bundle, tmp_path_factory) -> Path:
    return pack_bundle(trained_bundle[0], tmp_path_factory.mktemp("dist"))


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_pack_layout_checksums_and_exclusions(trained_bundle, packed, tmp_path):
    root, _ = trained_bundle
    assert packed.name == f"{NAME}_v{VERSION}.zip"
    with zipfile.ZipFile(packed) as archive:
        names = set(archive.namelist())
        listing = archive.read(f"{NAME}/checksums.sha256").decode()
        model_bytes = archive.read(f"{NAME}/models/model.pt")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(JUNK) <= present
    assert names == {f"{NAME}/{rel}" for rel in present - set(JUNK) | {"checksums.sha256"}}
    assert {f"{NAME}/configs/metadata.json", f"{NAME}/configs/inference.json", f"{NAME}/docs/README.md",
            f"{NAME}/LICENSE", f"{NAME}/large_files.yml", f"{NAME}/models/model.pt"} <= names
    assert model_bytes == (root / "models" / "model.pt").read_bytes()
    # sha256sum format, paths relative to the bundle folder, one line per other member
    lines = dict(reversed(line.split("  ", 1)) for line in listing.splitlines())
    assert set(lines) == {n.removeprefix(f"{NAME}/") for n in names} - {"checksums.sha256"}
    assert lines["models/model.pt"] == hashlib.sha256(model_bytes).hexdigest()
    assert lines["configs/metadata.json"] == hashlib.sha256((root / "configs/metadata.json").read_bytes()).hexdigest()
    # the same files give the same bytes (member times are fixed), so a published sha256 stays valid
    assert pack_bundle(root, tmp_path).read_bytes() == packed.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medsa-tmp.")]


@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # MONAI's reminder that configs run code
def test_monai_download_from_url_then_load_gives_the_trained_weights(trained_bundle, packed, tmp_path):
    _, state = trained_bundle
    bundle_dir = tmp_path / "downloaded"
    with serving(packed.parent) as base:
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "download", "--name", NAME, "--bundle_dir", str(bundle_dir),
             "--url", f"{base}/{packed.name}", "--progress", "False"],
            capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, env=local_env(),
            cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    downloaded = bundle_dir / NAME
    assert (downloaded / "configs" / "inference.json").is_file() and (downloaded / "models" / "model.pt").is_file()
    files = {f.relative_to(downloaded).as_posix() for f in downloaded.rglob("*") if f.is_file()}
    assert set(verify_bundle(downloaded)) == files - {"checksums.sha256"}

    from monai.bundle import load

    net = load(name=NAME, bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu", net_override=NET)
    assert isinstance(net, MedSA)
    loaded = net.state_dict()
    assert loaded.keys() == state.keys()
    unequal = [k for k in state if not torch.equal(loaded[k].cpu(), state[k])]
    assert not unequal, unequal[:5]
    fresh = MedSA(2, 3, 2, "vit_tiny", image_size=64, trainable="samda").state_dict()
    assert any(not torch.equal(fresh[k], state[k]) for k in state if state[k].is_floating_point())


def test_verify_names_changed_and_missing_files(packed, tmp_path):
    unpacked = unpack_bundle(packed, tmp_path)
    assert unpacked == (tmp_path / NAME).resolve()
    assert "models/model.pt" in verify_bundle(unpacked)
    (unpacked / "eval").mkdir()
    (unpacked / "eval" / "new_output.txt").write_text("outputs written later are not checked")
    verify_bundle(unpacked)

    inference = unpacked / "configs" / "inference.json"
    inference.write_text(inference.read_text().replace('"num_workers": 2', '"num_workers": 3'))
    (unpacked / "docs" / "README.md").unlink()
    with pytest.raises(BundleIntegrityError) as raised:
        verify_bundle(unpacked)
    assert set(raised.value.problems) == {"configs/inference.json", "docs/README.md"}
    assert raised.value.problems["docs/README.md"] == "missing"
    assert "configs/inference.json: sha256 " in str(raised.value)

    (unpacked / "checksums.sha256").unlink()
    with pytest.raises(FileNotFoundError, match="checksums.sha256"):
        verify_bundle(unpacked)


def test_unpack_refuses_a_tampered_archive(packed, tmp_path):
    with zipfile.ZipFile(packed) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[f"{NAME}/configs/inference.json"] += b"\n"
    tampered = _zip(tmp_path / "tampered.zip", members)
    target = tmp_path / "target"
    with pytest.raises(BundleIntegrityError, match="configs/inference.json"):
        unpack_bundle(tampered, target)
    assert list(target.iterdir()) == []  # nothing left behind, not even the staging folder
    members[f"{NAME}/configs/inference.json"] = members[f"{NAME}/configs/inference.json"][:-1]
    added = _zip(tmp_path / "added.zip", {**members, f"{NAME}/scripts/__init__.py": b"import os"})
    with pytest.raises(BundleIntegrityError, match="scripts/__init__.py: not in checksums.sha256"):
        unpack_bundle(added, target)
    assert list(target.iterdir()) == []
    unpack_bundle(packed, target)
    with pytest.raises(FileExistsError, match=NAME):  # never overwrites
        unpack_bundle(packed, target)


@pytest.mark.parametrize("evil", ["../evil.txt", f"{NAME}/../../evil.txt", "/tmp/medsa_zip_slip_evil.txt",
                                  f"{NAME}\\..\\..\\evil.txt"])
def test_unpack_refuses_zip_slip_members(evil, tmp_path):
    archive = _zip(tmp_path / "evil.zip", {f"{NAME}/configs/metadata.json": b"{}", evil: b"owned"})
    target = tmp_path / "a" / "target"
    with pytest.raises(ValueError, match=f"member '{re.escape(evil)}' would be written outside"):
        unpack_bundle(archive, target)
    assert list(target.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "a" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/medsa_zip_slip_evil.txt").exists()


@pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning")
def test_monai_extraction_refuses_zip_slip_but_after_writing_earlier_members(tmp_path, monkeypatch):
    """What ``python -m monai.bundle download --url`` does with a hostile archive (MONAI 1.6: its ``extractall``
    checks each member as it goes): it refuses the ``..`` member, yet the members before it are already written
    and the downloaded zip stays. `medsa bundle unpack` checks all members first and verifies checksums."""
    from monai.bundle import download

    served = tmp_path / "served"
    served.mkdir()
    _zip(served / "hostile.zip", {f"{NAME}/configs/metadata.json": b'{"version": "0.1.0"}', "../evil.txt": b"x"})
    bundle_dir = tmp_path / "bundles"
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with serving(served) as base, pytest.raises(ValueError, match=r"Unsafe path detected in archive: \.\./evil"):
        download(name=NAME, bundle_dir=str(bundle_dir), url=f"{base}/hostile.zip", progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert (bundle_dir / NAME / "configs" / "metadata.json").is_file()  # partial extraction left behind
    assert (bundle_dir / f"{NAME}.zip").is_file()

    absolute = _zip(tmp_path / "absolute.zip", {"/tmp/medsa_zip_slip_evil.txt": b"x"})
    with pytest.raises(ValueError, match="Unsafe path detected in archive: /tmp/medsa_zip_slip_evil.txt"):
        extractall(absolute, tmp_path / "out", has_base=False)
    assert not Path("/tmp/medsa_zip_slip_evil.txt").exists()


def test_pack_names_missing_or_invalid_metadata(trained_bundle, tmp_path):
    root = tmp_path / NAME
    shutil.copytree(trained_bundle[0] / "configs", root / "configs")
    meta = root / "configs" / "metadata.json"
    text = meta.read_text()
    meta.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(meta))):
        pack_bundle(root, tmp_path)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=f"{re.escape(str(meta))}' is not valid JSON"):
        pack_bundle(root, tmp_path)
    meta.write_text(text.replace('"version"', '"release"'))
    with pytest.raises(KeyError, match=f"{re.escape(str(meta))}' has no 'version' key"):
        pack_bundle(root, tmp_path)
    meta.write_text(text.replace(f'"version": "{VERSION}"', '"version": "../0.1"'))
    with pytest.raises(ValueError, match="'version' in .* got '../0.1'"):
        pack_bundle(root, tmp_path)
    assert not list(tmp_path.glob("*.zip"))


def test_cli_pack_verify_unpack(trained_bundle, tmp_path, capsys):
    root, _ = trained_bundle
    main(["bundle", "pack", str(root), "--output", str(tmp_path / "dist")])
    zip_path = tmp_path / "dist" / f"{NAME}_v{VERSION}.zip"
    assert capsys.readouterr().out.strip() == f"wrote {zip_path}"
    main(["bundle", "unpack", str(zip_path), str(tmp_path / "shared")])
    assert capsys.readouterr().out.strip() == f"unpacked and verified {(tmp_path / 'shared' / NAME).resolve()}"
    main(["bundle", "verify", str(tmp_path / "shared" / NAME)])
    out = capsys.readouterr().out
    assert out.endswith(f"files match {tmp_path / 'shared' / NAME / 'checksums.sha256'}\n")
    assert int(out.split()[0]) == len(zipfile.ZipFile(zip_path).namelist()) - 1
    (tmp_path / "shared" / NAME / "LICENSE").write_text("changed")
    with pytest.raises(SystemExit) as exit_info:  # the command line says what failed, without a traceback
        main(["bundle", "verify", str(tmp_path / "shared" / NAME)])
    assert exit_info.value.code == 1 and "LICENSE: sha256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bundle"])


@pytest.mark.parametrize("bundle", ["medsa_hippocampus_mri", "samda_skin_lesion"])
def test_large_files_list_the_official_checkpoints_with_md5(bundle):
    """As MONAI's ``download_large_files`` reads them: one entry per official variant, at the variant's official
    URL, each with an md5 that begins with the 6 hex digits in the file name."""
    from monai.bundle import ConfigParser

    from medsa_monai.networks import SAM_VARIANTS

    parser = ConfigParser()
    parser.read_config([str(BUNDLE.parent / bundle / "large_files.yml")])
    entries = {Path(e["path"]).name: e for e in parser.get()["large_files"]}
    official = {v.official_file: v.official_url for v in SAM_VARIANTS.values() if v.official_file}
    assert set(entries) == set(official) == {"sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth"}
    for file, entry in entries.items():
        assert entry["path"] == f"models/{file}" and entry["url"] == official[file]
        assert entry["hash_type"] == "md5" and re.fullmatch(r"[0-9a-f]{32}", entry["hash_val"])
        assert entry["hash_val"].startswith(file.removesuffix(".pth").rsplit("_", 1)[1])


def test_fetch_downloads_one_entry_and_checks_its_hash(tmp_path, capsys):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"not really a checkpoint"
    (served / "sam_vit_l_0b3195.pth").write_bytes(payload)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with serving(served) as url:
        def write_list(md5: str) -> None:
            (bundle / "large_files.yml").write_text(
                "large_files:\n"
                f"  - path: models/sam_vit_b_01ec64.pth\n    url: {url}/missing.pth\n    hash_val: ''\n"
                f"  - path: models/sam_vit_l_0b3195.pth\n    url: {url}/sam_vit_l_0b3195.pth\n"
                f"    hash_val: '{md5}'\n    hash_type: md5\n")

        write_list(hashlib.md5(payload).hexdigest())
        main(["bundle", "fetch", str(bundle), "vit_l"])  # only vit_l: the vit_b entry's URL would fail
        assert (bundle / "models" / "sam_vit_l_0b3195.pth").read_bytes() == payload
        assert "have" in capsys.readouterr().out
        (bundle / "models" / "sam_vit_l_0b3195.pth").unlink()
        write_list("0" * 32)
        with pytest.raises(ValueError, match="md5 hash check"):
            fetch_large_file(bundle, "sam_vit_l_0b3195.pth")
        assert not (bundle / "models" / "sam_vit_l_0b3195.pth").exists()
    with pytest.raises(KeyError, match="vit_h.*it lists: sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth"):
        fetch_large_file(bundle, "vit_h")
