"""MONAI Label with our bundles: automatic inference, clicks, training; through the real server and the real
``python -m monai.bundle`` command line.

One MONAI Label 0.8.5 server (its stock ``monaibundle`` sample app, copied by ``monailabel apps``) serves both
bundles, each under its own name (automatic) and under a ``*_deepedit`` name (clicks), with ``vit_tiny`` and a
``models/model.pt`` saved from a randomly initialised network. The server tests are skipped only where monailabel is
not installed (``bash scripts/setup_env.sh`` installs it: the ``[monailabel]`` extra).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from PIL import Image

from medsa_monai.data import BTCV_LABELS, make_synthetic_dataset, make_synthetic_lesion_folder
from medsa_monai.data import Spacingd as MetaSafeSpacingd
from medsa_monai.networks import MedSA, TrainedWeights, read_weights_record
from medsa_monai.predictor import AddClickGuidanced, EmbeddingCache, MedSAPredictor, clicks_from_request
from medsa_monai.predictor.click_guidance import guidance_to_points

from .conftest import randomise, run_monai_bundle

ROOT = Path(__file__).resolve().parents[1]
HIPPO, SKIN = ROOT / "bundles" / "medsa_hippocampus_mri", ROOT / "bundles" / "samda_skin_lesion"
HIPPO_TINY = {"sam_variant": "vit_tiny", "image_size": 32, "patch_size": [24, 28, 20], "num_workers": 0,
              "batch_size": 2, "progress_bar": False}
SKIN_TINY = {"sam_variant": "vit_tiny", "image_size": 64, "num_workers": 0, "batch_size": 2, "progress_bar": False,
             "embedding_cache_gib": 0.25}
CT = ROOT / "bundles" / "medsa_btcv_ct"
CT_TINY = {"sam_variant": "vit_tiny", "image_size": 32, "patch_size": [16, 16, 8], "num_workers": 0, "batch_size": 1,
           "progress_bar": False}
MODELS = {"medsa_hippocampus_mri": (HIPPO, HIPPO_TINY), "samda_skin_lesion": (SKIN, SKIN_TINY),
          "medsa_btcv_ct": (CT, CT_TINY)}
LABELS = {"medsa_hippocampus_mri": {"anterior": 1, "posterior": 2}, "samda_skin_lesion": {"lesion": 1},
          "medsa_btcv_ct": {name: value for value, name in BTCV_LABELS.items() if value}}
# a volume whose affine flips the first axis and has 2 x 1.5 x 1 mm voxels, so that orientation and spacing matter
AFFINE = np.array([[-2.0, 0, 0, 20.0], [0, 1.5, 0, -10.0], [0, 0, 1.0, 5.0], [0, 0, 0, 1]])


# -- the clicks as guidance channels, without MONAI Label ---------------------------------------------------------


def _net(spatial_dims: int = 3, trainable: str = "medsa", **kwargs) -> MedSA:
    torch.manual_seed(0)
    channels = 1 if spatial_dims == 3 else 3
    net = MedSA(spatial_dims, channels, 3, "vit_tiny", image_size=32, trainable=trainable,
                click_depth_radius=2 if spatial_dims == 3 else 0, **kwargs)
    return randomise(net).eval()


def test_guidance_channels_become_point_prompts():
    guidance = torch.zeros(1, 3, 10, 12, 8)
    guidance[0, 0, 1, 2, 3] = 1  # background
    guidance[0, 1, 4, 5, 6] = guidance[0, 1, 7, 8, 2] = 1  # class 1; class 2 has no click
    points, labels = guidance_to_points(guidance)
    assert points.shape == (1, 2, 3, 3) and labels.tolist() == [[[1, 1, 0], [-1, -1, -1]]]
    assert points[0, 0].tolist() == [[4, 5, 6], [7, 8, 2], [1, 2, 3]]
    assert guidance_to_points(torch.zeros(2, 3, 4, 4, 4)) == (None, None)
    only_background = torch.zeros(1, 3, 4, 4)
    only_background[0, 0, 1, 1] = 1
    assert guidance_to_points(only_background) == (None, None)  # a background click refines clicked classes only


@torch.no_grad()
def test_network_reads_guidance_channels_as_clicks():
    net = MedSAPredictor(_net(), click_guidance=True)
    image = torch.randn(1, 1, 20, 24, 10)
    guidance = torch.zeros(1, 3, 20, 24, 10)
    guidance[0, 2, 10, 12, 5] = guidance[0, 0, 2, 3, 5] = 1
    points = torch.tensor([[[[0.0, 0, 0]] * 2, [[10.0, 12, 5], [2, 3, 5]]]])
    labels = torch.tensor([[[-1, -1], [1, 0]]])
    guided = net(torch.cat([image, guidance], 1))
    assert torch.equal(guided, net(image, points=points, point_labels=labels))
    assert not torch.equal(guided, net(image))  # the click changes the prediction
    assert torch.equal(net(torch.cat([image, torch.zeros_like(guidance)], 1)), net(image))  # no click: automatic
    with pytest.raises(ValueError, match="either as guidance channels or as points"):
        net(torch.cat([image, guidance], 1), points=points, point_labels=labels)
    with pytest.raises(ValueError, match="in_channels=1"):
        MedSAPredictor(_net())(torch.cat([image, guidance], 1))  # without click_guidance: an error


def test_clicks_are_mapped_through_orientation_and_spacing(tmp_path):
    volume = np.random.RandomState(0).rand(12, 14, 9).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "image.nii.gz")
    label_names = {"background": 0, "anterior": 1, "posterior": 2}
    pipeline = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
                        Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=(1.0, 1.0, 1.0)),
                        AddClickGuidanced("image", label_names)])
    clicks = {"Anterior": [[3, 4, 5]], "posterior": [11, 13, 8], "background": [[0, 0, 0], [40, 0, 0]]}
    out = pipeline({"image": str(tmp_path / "image.nii.gz"), **clicks})["image"]
    assert out.shape[0] == 1 + 3
    inverse = np.linalg.inv(out.affine.numpy())
    for channel, click in ((1, [3, 4, 5]), (2, [11, 13, 8]), (0, [0, 0, 0])):
        expected = np.rint(inverse @ AFFINE @ np.array([*click, 1.0]))[:3]  # the same point in the world
        expected = np.clip(expected, 0, np.array(out.shape[1:]) - 1)  # the last voxel's centre may round outside
        assert torch.nonzero(out[1 + channel]).tolist() == [expected.astype(int).tolist()]
    assert int(out[1:].sum()) == 3  # the click outside the image is dropped
    assert len(out.applied_operations) == 2  # orientation and spacing stay invertible


def test_spacing_leaves_other_image_entries_alone(tmp_path):
    """MONAI Label adds ``image_path`` (a string); MONAI 1.6's Spacingd would call ``.update`` on it."""
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.float32), AFFINE), tmp_path / "image.nii.gz")
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    data = {**load({"image": str(tmp_path / "image.nii.gz")}), "image_path": "image.nii.gz"}
    with pytest.raises(AttributeError):
        Spacingd("image", pixdim=(1.0, 1.0, 1.0))(dict(data))
    spacing = MetaSafeSpacingd("image", pixdim=(1.0, 1.0, 1.0))
    spaced = spacing(dict(data))
    assert spaced["image_path"] == "image.nii.gz" and spaced["image"].shape == (1, 11, 7, 4)
    assert spacing.inverse(spaced)["image"].shape == (1, 6, 5, 4)  # Invertd undoes it as MONAI's


def test_request_click_conventions():
    names = {"background": 0, "lesion": 1}
    assert clicks_from_request({"lesion": [[1, 2]], "background": [[3, 4]]}, names) == {0: [[3, 4]], 1: [[1, 2]]}
    assert clicks_from_request({"foreground": [[1, 2]], "background": []}, names) == {0: [], 1: [[1, 2]]}
    two = {"background": 0, "anterior": 1, "posterior": 2}
    assert clicks_from_request({"foreground": [[1, 2, 3]], "label": "posterior"}, two)[2] == [[1, 2, 3]]
    with pytest.raises(ValueError, match="need 'label' to name one of the classes"):
        clicks_from_request({"foreground": [[1, 2, 3]]}, two)
    with pytest.raises(ValueError, match="label_names must give the values 0"):
        AddClickGuidanced("image", {"lesion": 1})


@torch.no_grad()
def test_embedding_cache_serves_clicks_for_every_preset():
    """At inference the cache holds whole volumes even with SD-Trans and trainable adapters: a new click on the
    same volume runs only the decoder, and any change of image or weights is a miss."""
    net = _net()
    assert not net.encoder_is_frozen() and net.architecture.depth_attention
    image = torch.randn(1, 1, 20, 24, 10)
    uncached = net.encode(image)
    predictor = MedSAPredictor(net, embedding_cache=(cache := EmbeddingCache()), click_guidance=True)
    calls = []
    net.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    assert torch.equal(predictor.encode(image), uncached)
    assert torch.equal(predictor.encode(image), uncached) and (cache.misses, cache.hits, len(calls)) == (1, 1, 1)
    net.image_encoder.blocks[0].Depth_Adapter.D_fc2.weight.add_(0.01)  # an adapter changes: a new key
    predictor.encode(image)
    assert (cache.misses, len(calls)) == (2, 2)
    with torch.enable_grad():
        predictor.encode(image)  # training: the adapters need the graph, so the cache is bypassed
    net.train()
    predictor.encode(image)
    assert (cache.misses, cache.hits, len(calls)) == (2, 1, 4)


def _tiny_parser(bundle: Path, config: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser.update({"bundle_root": str(bundle), "sam_checkpoint": None, **overrides})
    return parser


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inference_network_has_exactly_the_trained_keys(name):
    """MONAI Label loads model.pt into inference.json's network_def with strict=False: every key must match."""
    bundle, tiny = MODELS[name]
    trained = _tiny_parser(bundle, "train.json", {**tiny, "sam_checkpoint": "none"}).get_parsed_content(
        "network_def").state_dict().keys()
    for use_click in (False, True):
        network = _tiny_parser(bundle, "inference.json", {**tiny, "use_click": use_click}).get_parsed_content(
            "network_def")
        assert set(network.state_dict()) == set(trained)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    label_names = _tiny_parser(bundle, "inference.json", tiny).get_parsed_content("label_names")
    assert {v.lower(): int(k) for k, v in channels.items()} == label_names  # the names MONAI Label shows


# -- MONAI Label -----------------------------------------------------------------------------------------------


def _write_tiny_bundle(source: Path, target: Path, overrides: dict, base: Path | None = None) -> None:
    """Copy a bundle with tiny settings and a models/model.pt of a randomly changed network: with ``base`` (a SAM
    checkpoint, copied into models/) the shared weights that training on it saves (only what trained), else the
    whole state dict of a randomly initialised network, as ``trainable="full"`` saves."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.pth", "eval", "__pycache__"))
    (target / "models").mkdir(exist_ok=True)
    if base is not None:
        shutil.copy(base, target / "models" / "base_vit_tiny.pth")
        overrides = {**overrides, "sam_checkpoint": str(target / "models" / "base_vit_tiny.pth")}
    for config in ("train.json", "inference.json"):
        path = target / "configs" / config
        content = json.loads(path.read_text())
        content.update({k: v for k, v in overrides.items() if config == "train.json" or k in content})
        path.write_text(json.dumps(content, indent=2))
    torch.manual_seed(0)
    network = _tiny_parser(target, "train.json", {"sam_checkpoint": overrides.get("sam_checkpoint", "none")}
                           ).get_parsed_content("network_def")
    if base is None:
        torch.save(network.state_dict(), target / "models" / "model.pt")  # logits near 0: clicks show
        return
    with torch.no_grad():
        for p in network.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))
        for mlp in network.mask_decoder.output_hypernetworks_mlps:  # trained: logits near 0, so clicks show
            mlp.layers[-1].weight.mul_(0.01)
    torch.save(TrainedWeights(network).state_dict(), target / "models" / "model.pt")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a models/model.pt: shared weights' ``state_dict`` or a whole state dict."""
    saved = torch.load(path, weights_only=True)
    saved.pop("medsa_weights", None)  # shared weights: the record beside the tensors
    return saved


def _only_shared_weights_differ_in_keys(log: str) -> None:
    """MONAI Label compares a model.pt's top-level keys with the network's and warns when they differ (its loader
    is ``strict=False``): a whole state dict must match exactly; shared weights are two entries (their record and
    their ``state_dict``), which MedSA's ``load_state_dict`` loads strictly onto the checked base."""
    warnings = [line for line in log.splitlines() if "Checkpoint keys don't match" in line]
    assert all("medsa_weights" in line for line in warnings), warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, app: Path, studies: Path, log: Path) -> None:
        self.url, self.app, self.studies, self.log = url, app, studies, log

    def request(self, method: str, path: str, params: dict | None = None, body: dict | None = None,
                timeout: float = 300) -> tuple[bytes, dict]:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data, headers = None, {}
        if body is not None and method == "POST" and path.startswith("/infer"):  # multipart form: params=<json>
            boundary = uuid.uuid4().hex
            data = (f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(body)}\r\n'
                    f"--{boundary}--\r\n").encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: HTTP {err.code} {err.read()[:2000]!r}\n{self.log_tail()}") from err

    def json(self, method: str, path: str, **kwargs) -> dict:
        return json.loads(self.request(method, path, **kwargs)[0])

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


SHARED = ("medsa_hippocampus_mri", "samda_skin_lesion")  # served with shared weights; the CT bundle whole


def test_monailabel_refuses_a_model_trained_with_another_plan(tmp_path):
    """MONAI Label builds the bundle's network from inference.json, whose plan checks the plan the model was
    trained with (models/plan.json, written by training): one that differs is refused naming both, before any
    image is segmented with the wrong labels."""
    pytest.importorskip("monailabel", reason="monailabel is not installed (the [monailabel] extra)")
    from monailabel.tasks.infer.bundle import BundleInferTask

    from medsa_monai.planning import Plan, PlanError

    bundle = tmp_path / "samda_skin_lesion"
    _write_tiny_bundle(SKIN, bundle, SKIN_TINY)
    plan = _tiny_parser(bundle, "inference.json", {}).get_parsed_content("plan")
    assert plan.image_size == SKIN_TINY["image_size"]
    relabelled = Plan.from_dict({**plan.to_dict(), "labels": {"0": "background", "255": "nevus"}})
    relabelled.save(bundle / "models" / "plan.json")
    with pytest.raises(RuntimeError) as refused:  # MONAI's config parser wraps what a component raises
        BundleInferTask(str(bundle), {})
    assert isinstance(refused.value.__cause__, PlanError)
    message = str(refused.value.__cause__)
    assert f"model '{bundle / 'models' / 'model.pt'}' was trained with the plan '{bundle / 'models' / 'plan.json'}'"\
           in message and 'whose labels is {"0": "background", "255": "nevus"}' in message
    assert "the bundle's bundle_plan with sam_variant='vit_tiny', image_size=64" in message
    assert 'has {"0": "background", "255": "lesion"}' in message
    assert f"give --plan_file '{bundle / 'models' / 'plan.json'}'" in message
    plan.save(bundle / "models" / "plan.json")  # the plan it was trained with: served
    assert BundleInferTask(str(bundle), {}).valid


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint) -> Server:
    pytest.importorskip("monailabel", reason="monailabel is not installed: `bash scripts/setup_env.sh` installs "
                                             "the [monailabel] extra (MONAI Label 0.8.5)")
    root = tmp_path_factory.mktemp("monailabel")
    subprocess.run([sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                    "--output", str(root / "apps")], check=True, capture_output=True, timeout=120)
    app = root / "apps" / "monaibundle"
    names = []
    for name, (bundle, tiny) in MODELS.items():
        _write_tiny_bundle(bundle, app / "model" / name, tiny, tiny_checkpoint if name in SHARED else None)
        (app / "model" / f"{name}_deepedit").symlink_to(name)  # the stock app serves clicks under a deepedit name
        names += [name, f"{name}_deepedit"]

    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    volumes = make_synthetic_dataset(root / "synthetic", num_cases=4, shape=(12, 18, 20), seed=5)
    for i, path in enumerate(sorted((volumes / "imagesTr").glob("*.nii.gz"))):
        image, label = nib.load(path), nib.load(volumes / "labelsTr" / path.name)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), AFFINE), studies / f"hippo_{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(label.dataobj), AFFINE), studies / "labels" / "final" /
                 f"hippo_{i}.nii.gz")
    lesions = make_synthetic_lesion_folder(root / "lesions", num_images=1, size=(40, 52), seed=2)
    shutil.copy(lesions / "images" / "lesion_000.png", studies / "lesion_0.png")  # unlabelled: not trained on

    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false", "MONAI_LABEL_SESSION_PATH": str(root / "sessions")}
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
               str(studies), "--conf", "models", ",".join(names), "--conf", "zoo_source", "local", "--conf", "sam2",
               "false", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", app, studies, log)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"MONAI Label server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.json("GET", "/info/", timeout=10)
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"MONAI Label server did not answer in 180 s:\n{server.log_tail()}") from None
                time.sleep(1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the training processes it started
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_info_lists_every_bundle_with_its_labels(server):
    info = server.json("GET", "/info/")
    models = info["models"]
    for name, labels in LABELS.items():
        assert models[name]["type"] == "segmentation" and models[name]["labels"] == labels
        assert models[f"{name}_deepedit_seg"]["labels"] == labels
        assert models[f"{name}_deepedit"]["type"] == "deepedit"
        assert models[f"{name}_deepedit"]["labels"] == {"background": 0, **labels}
        assert name in info["trainers"]
    assert models["medsa_hippocampus_mri"]["dimension"] == 3 and models["samda_skin_lesion"]["dimension"] == 2


def _infer_volume(server: Server, model: str, clicks: dict | None = None) -> nib.Nifti1Image:
    body, _ = server.request("POST", f"/infer/{model}", params={"image": "hippo_0", "output": "image"},
                             body=clicks or {})
    return nib.Nifti1Image.from_bytes(_gunzip(body))


def _gunzip(body: bytes) -> bytes:
    import gzip

    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def test_automatic_inference_in_the_original_geometry(server):
    original = nib.load(server.studies / "hippo_0.nii.gz")
    result = _infer_volume(server, "medsa_hippocampus_mri")
    assert result.shape == original.shape
    np.testing.assert_allclose(result.affine, original.affine, atol=1e-4)
    assert set(np.unique(np.asarray(result.dataobj)).tolist()) <= {0, 1, 2}

    body, _ = server.request("POST", "/infer/samda_skin_lesion", params={"image": "lesion_0", "output": "image"},
                             body={})
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert mask.shape == (40, 52) and set(np.unique(mask).tolist()) <= {0, 1}
    _only_shared_weights_differ_in_keys(server.log_tail(10**7))


def test_ct_bundle_segments_and_takes_clicks(server):
    original = nib.load(server.studies / "hippo_0.nii.gz")  # any volume will do: geometry and the click path
    automatic = _infer_volume(server, "medsa_btcv_ct")
    assert automatic.shape == original.shape and np.allclose(automatic.affine, original.affine, atol=1e-4)
    assert set(np.unique(np.asarray(automatic.dataobj)).tolist()) <= set(range(14))
    seen_automatic = np.asarray(_infer_volume(server, "medsa_btcv_ct_deepedit_seg").dataobj)
    clicked = _infer_volume(server, "medsa_btcv_ct_deepedit", {"liver": [[3, 5, 10], [4, 6, 10]],
                                                               "background": [[1, 1, 1]]})
    assert clicked.shape == original.shape
    assert not np.array_equal(np.asarray(clicked.dataobj), seen_automatic)


def test_clicks_from_the_viewer_prompt_the_network(server):
    automatic = np.asarray(_infer_volume(server, "medsa_hippocampus_mri_deepedit_seg").dataobj)
    clicks = {"anterior": [[3, 5, 10], [4, 6, 10], [8, 12, 4]], "posterior": [[9, 13, 15]],
              "background": [[1, 1, 1]]}
    clicked = _infer_volume(server, "medsa_hippocampus_mri_deepedit", clicks)
    assert clicked.shape == automatic.shape
    assert not np.array_equal(np.asarray(clicked.dataobj), automatic)
    no_clicks = np.asarray(_infer_volume(server, "medsa_hippocampus_mri_deepedit", {}).dataobj)
    assert np.array_equal(no_clicks, automatic)  # the same weights: without clicks, automatic

    lesion = {}
    for model, params in (("samda_skin_lesion_deepedit_seg", {}),
                          ("samda_skin_lesion_deepedit", {"lesion": [[20, 10], [25, 20]], "background": [[1, 1]]}),
                          ("samda_skin_lesion_deepedit", {"foreground": [[20, 10], [25, 20]], "background": [[1, 1]]})):
        body, _ = server.request("POST", f"/infer/{model}", params={"image": "lesion_0", "output": "image"},
                                 body=params)
        lesion[model, "foreground" in params] = np.asarray(Image.open(io.BytesIO(body)))
    assert not np.array_equal(lesion["samda_skin_lesion_deepedit", False], lesion["samda_skin_lesion_deepedit_seg",
                                                                                   False])
    assert np.array_equal(lesion["samda_skin_lesion_deepedit", False], lesion["samda_skin_lesion_deepedit", True])


@pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")  # itk's SWIG
def test_a_click_costs_one_decoder_pass(server):
    """MONAI Label's own deepedit infer task, in process: the embedding is computed on the first click only."""
    from monailabel.tasks.infer.bundle import BundleInferTask

    for name, image, clicks in (
        ("medsa_hippocampus_mri", "hippo_1.nii.gz", [{"anterior": [[3, 5, 10]]}, {"anterior": [[3, 5, 10]],
                                                                                    "background": [[6, 6, 6]]}]),
        ("samda_skin_lesion", "lesion_0.png", [{"lesion": [[20, 10]]}, {"lesion": [[20, 10], [25, 30]]}]),
    ):
        task = BundleInferTask(str(server.app / "model" / name), {}, type="deepedit")
        task({"image": str(server.studies / image), "device": "cpu", **clicks[0]})  # the first click encodes
        network = task._networks["cpu"][0]
        model = server.app / "model" / name / "models" / "model.pt"  # MONAI Label loaded the shared weights
        record, state = read_weights_record(model), _tensors(model)
        assert network.base_checkpoint.sha256 == record["base"]["sha256"]
        assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
        calls = []
        network.image_encoder.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        for request in (clicks[1], clicks[0]):  # every later click on the image runs only the decoder
            task({"image": str(server.studies / image), "device": "cpu", **request})
        assert task._networks["cpu"][0] is network
        cache = task.inferer().embedding_cache  # the click inferer, parsed once and kept by MONAI Label
        assert (cache.misses, cache.hits, len(calls)) == (1, 2, 0), name


def test_training_started_from_monailabel(server):
    model = server.app / "model" / "medsa_hippocampus_mri" / "models" / "model.pt"
    assert read_weights_record(model)["trainable"] == "medsa"
    before = _tensors(model)
    server.json("POST", "/train/medsa_hippocampus_mri", params={"run_sync": "true"},
                body={"max_epochs": 1, "val_split": 0.25, "device": "cpu", "multi_gpu": False}, timeout=600)
    log = server.log_tail(10**7)
    assert "Epoch: 1/1, Iter: 2/2" in log  # 3 of the 4 labelled volumes, batch size 2
    assert "Key metric: val_mean_dice best value" in log  # the last epoch is validated although val_interval is 5
    assert read_weights_record(model)["trainable"] == "medsa"  # shared weights again, only what trained
    after = _tensors(model)
    assert set(after) == set(before)  # the same keys: MONAI Label's strict=False loader misses nothing
    assert any(not torch.equal(after[k], before[k]) for k in before)  # trained: 1 epoch, validated, saved
    assert (model.parent / "checkpoint_epoch=1.pt").is_file()
    result = _infer_volume(server, "medsa_hippocampus_mri")  # the new model.pt is picked up
    assert result.shape == nib.load(server.studies / "hippo_0.nii.gz").shape
    _only_shared_weights_differ_in_keys(server.log_tail(10**7))


# -- the bundle command line with MONAI Label's settings ---------------------------------------------------------


def _bundle_cli(bundle: Path, *args: str, timeout: int = 300) -> str:
    result = run_monai_bundle(bundle, *args, timeout=timeout)
    return result.stdout + result.stderr


def test_skin_training_with_monailabel_overrides(tmp_path, tiny_checkpoint):
    """What MONAI Label's bundle trainer does, through the command line: its data lists (masks saved 0 / 1 as it
    saves labels), its max_epochs, a CheckpointLoader prepended to train#handlers, run id ``run``."""
    bundle = tmp_path / "samda_skin_lesion"
    _write_tiny_bundle(SKIN, bundle, SKIN_TINY, tiny_checkpoint)
    lesions = make_synthetic_lesion_folder(tmp_path / "lesions", num_images=4, size=(40, 52), seed=4)
    for mask in (lesions / "masks").glob("*.png"):
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint8)).save(mask)
    data = [{"image": str(p), "label": str(lesions / "masks" / p.name)} for p in sorted(lesions.glob("images/*"))]
    handlers = json.loads((bundle / "configs" / "train.json").read_text())["train"]["handlers"]
    model = bundle / "models" / "model.pt"
    handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": str(model), "load_dict": {"model": "$@network"},
                        "strict": False})
    before = _tensors(model)
    _bundle_cli(bundle, "run", "run", "--config_file", str(bundle / "configs" / "train.json"), "--bundle_root",
                str(bundle), "--device", "cpu", "--train#trainer#max_epochs", "1", "--train#dataset#data",
                repr(data[:3]), "--validate#dataset#data", repr(data[3:]), "--train#handlers", repr(handlers))
    after = _tensors(model)
    assert set(after) == set(before) and any(not torch.equal(after[k], before[k]) for k in before)


def test_bundle_inference_with_clicks_on_the_command_line(tmp_path):
    bundle = tmp_path / "medsa_hippocampus_mri"
    _write_tiny_bundle(HIPPO, bundle, HIPPO_TINY)
    image = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.random.RandomState(1).rand(12, 18, 20).astype(np.float32), AFFINE), image)
    outputs = {}
    for use_click in (False, True):
        datalist = [{"image": str(image), "anterior": [[3, 5, 10], [8, 12, 4]], "background": [[1, 1, 1]]}]
        _bundle_cli(bundle, "run", "inferring", "--config_file", str(bundle / "configs" / "inference.json"),
                    "--bundle_root", str(bundle), "--output_dir", str(tmp_path / f"out_{use_click}"), "--datalist",
                    repr(datalist), "--use_click", str(use_click))
        result = nib.load(tmp_path / f"out_{use_click}" / "case_seg.nii.gz")
        assert result.shape == (12, 18, 20)
        np.testing.assert_allclose(result.affine, AFFINE, atol=1e-4)
        outputs[use_click] = np.asarray(result.dataobj)
    assert not np.array_equal(outputs[False], outputs[True])
