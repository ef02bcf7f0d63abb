"""TorchScript export of every bundle's network (automatic mode) through MONAI's ``ckpt_export``, scripted as the
MONAI model zoo's CI runs it; ONNX export through ``medsa export`` and the bundle config ``exporting_onnx``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export

from medsa_monai.bundle import export_torchscript, verify_torchscript
from medsa_monai.cli import main

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
TINY = {"sam_variant": "vit_tiny", "image_size": 64}
# (bundle, --input_shape for the trace or None for the metadata's, other input shapes the export must also take)
CASES = {
    "samda_skin_lesion": (None, [(1, 3, 64, 64), (2, 3, 40, 56)]),
    "medsa_hippocampus_mri": ([1, 1, 24, 28, 8], [(1, 1, 20, 32, 12), (1, 1, 64, 64, 4)]),
    "medsa_fundus_disc_cup": ([1, 3, 64, 64], [(1, 3, 48, 72)]),
    "medsa_btcv_ct": ([1, 1, 32, 32, 4], [(1, 1, 40, 24, 6)]),
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
def test_ckpt_export_scripts_the_automatic_mode(name, tmp_path):
    bundle, network = tiny_bundle(name, tmp_path)
    input_shape, other_shapes = CASES[name]
    arguments = {"input_shape": input_shape} if input_shape else {}
    ckpt_export("network_def", filepath=str(bundle / "models" / "model.ts"),
                ckpt_file=str(bundle / "models" / "model.pt"), meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle),
                sam_variant="vit_tiny", image_size=64, **arguments)

    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(bundle / "models" / "model.ts"), _extra_files=extra)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert json.loads(extra["metadata.json"])["version"] == meta["version"]
    assert "network_def" in json.loads(extra["inference.json"])
    if input_shape is None:  # the trace input came from the metadata
        input_shape = [1, 3, *meta["network_data_format"]["inputs"]["image"]["spatial_shape"]]
    # the same numbers as the eager network at any size; prompts and bad input are refused, not ignored
    assert verify_torchscript(exported, network, [input_shape, *other_shapes], atol=1e-5) <= 1e-5
    with pytest.raises(torch.jit.Error, match="automatic mode only"):
        exported(torch.rand(input_shape), boxes=torch.zeros(1, 1, 2 * (len(input_shape) - 2)))
    with pytest.raises(torch.jit.Error, match="channels"):
        exported(torch.rand(1, 2, *input_shape[2:]))


def test_export_function_checks_and_saves(tmp_path):
    bundle, network = tiny_bundle("samda_skin_lesion", tmp_path)
    configs = bundle / "configs"
    for use_trace in (True, False):
        out = export_torchscript(str(configs / "inference.json"), bundle / "models" / "model.pt",
                                 bundle / "models" / "m", meta_file=str(configs / "metadata.json"),
                                 input_shape=(1, 3, 48, 40), use_trace=use_trace, **TINY)
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


@pytest.mark.slow
def test_onnx_export_through_the_cli_and_the_bundle_config(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from monai.bundle import run

    bundle, network = tiny_bundle("samda_skin_lesion", tmp_path)
    main(["export", str(bundle), "--format", "onnx", "--sam-variant", "vit_tiny", "--image-size", "64"])
    assert "prompt decoder" in capsys.readouterr().out
    written = {"encoder.onnx", "prompt_decoder.onnx", "medsa_onnx.json"}
    assert {p.name for p in (bundle / "models" / "onnx").iterdir()} == written

    run("exporting_onnx", config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle),
        sam_variant="vit_tiny", image_size=64, onnx_dir=str(tmp_path / "from_config"))
    assert {p.name for p in (tmp_path / "from_config").iterdir()} == written
