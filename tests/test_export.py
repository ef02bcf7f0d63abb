"""TorchScript export of both bundles' networks (automatic mode) through ``python -m monai.bundle ckpt_export``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medsa_monai.bundle import export_torchscript, verify_torchscript
from medsa_monai.cli import main

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = {"sam_variant": "vit_tiny", "image_size": 64}
# (bundle, --input_shape for the trace or None for the metadata's, other input shapes the export must also take)
CASES = {
    "samda_skin_lesion": (None, [(1, 3, 64, 64), (2, 3, 40, 56)]),
    "medsa_hippocampus_mri": ([1, 1, 24, 28, 8], [(1, 1, 20, 32, 12), (1, 1, 64, 64, 4)]),
}


def tiny_bundle(name: str, root: Path) -> tuple[Path, torch.nn.Module]:
    """A copy of the bundle's configs and a ``models/model.pt`` of a tiny network with non-trivial weights."""
    bundle = root / name
    shutil.copytree(BUNDLES / name / "configs", bundle / "configs")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(TINY)
    network = parser.get_parsed_content("network_def")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the adapters start at zero: perturb everything so that every part counts
        for p in network.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=generator))
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle, network.eval()


@pytest.mark.parametrize("name", list(CASES))
def test_ckpt_export_traces_the_automatic_mode(name, tmp_path):
    bundle, network = tiny_bundle(name, tmp_path)
    input_shape, other_shapes = CASES[name]
    command = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
               "--filepath", str(bundle / "models" / "model.ts"), "--ckpt_file", str(bundle / "models" / "model.pt"),
               "--meta_file", str(bundle / "configs" / "metadata.json"),
               "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
               "--use_trace", "True", "--sam_variant", "vit_tiny", "--image_size", "64"]
    if input_shape:
        command += ["--input_shape", json.dumps(input_shape)]
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=300, cwd=bundle)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert json.loads(extra["metadata.json"])["version"] == meta["version"]
    assert "network_def" in json.loads(extra["inference.json"])
    if input_shape is None:  # the trace input came from the metadata
        input_shape = [1, 3, *meta["network_data_format"]["inputs"]["image"]["spatial_shape"]]
    # the same numbers as the eager network, at the traced size and at others (the network resizes inside)
    assert verify_torchscript(exported, network, [input_shape, *other_shapes], atol=1e-5) <= 1e-5


def test_export_function_checks_and_saves(tmp_path):
    bundle, network = tiny_bundle("samda_skin_lesion", tmp_path)
    configs = bundle / "configs"
    out = export_torchscript(str(configs / "inference.json"), bundle / "models" / "model.pt", bundle / "models" / "m",
                             meta_file=str(configs / "metadata.json"), input_shape=(1, 3, 48, 40), **TINY)
    assert out.name == "m.ts" and not list(out.parent.glob(".*"))
    verify_torchscript(out, network, [(1, 3, 30, 70)])
    with pytest.raises(AssertionError, match="differs from the eager one"):
        with torch.no_grad():
            network.class_prompts.weight.add_(1.0)
        verify_torchscript(out, network, [(1, 3, 30, 70)])


def test_cli_export(tmp_path, capsys):
    bundle, network = tiny_bundle("samda_skin_lesion", tmp_path)
    main(["bundle", "export", str(bundle), "--input-shape", "1", "3", "32", "40", "--sam-variant", "vit_tiny",
          "--image-size", "64"])
    assert "checked against the eager network" in capsys.readouterr().out
    verify_torchscript(bundle / "models" / "model.ts", network, [(1, 3, 50, 30)])
