"""The clinic's path, with real servers on 127.0.0.1: a Task04 volume goes into Orthanc as a DICOM series; MONAI
Label runs the hippocampus bundle on it through DICOMweb (automatic, then a click); the DICOM SEG it returns is
stored in Orthanc, fetched back through DICOMweb, read with highdicom, and its frames equal the bundle's NIfTI
prediction of the same volume voxel for voxel after both are mapped onto the series' frames by their geometry.

Then headless Chromium opens MONAI Label's OHIF viewer on the study, connects its MONAI Label panel, which lists
our models, runs the automatic model from it, and saves a screenshot (``artifacts/ohif_monailabel.png``).

Runs where Orthanc with its DICOMweb plugin (Debian: ``orthanc``, ``orthanc-dicomweb``), Chromium (Debian:
``chromium``; ``.ci/run`` installs the three), Playwright and MONAI Label are installed; skipped elsewhere.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
import urllib.parse
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from .test_monailabel import HIPPO, HIPPO_TINY, _write_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
TASK04 = ROOT.parent / "shared" / "data" / "Task04_Hippocampus"
sys.path.insert(0, str(ROOT / "scripts"))
import dicom_stack  # noqa: E402

AUTH = ("medsa", "not-a-default-password")


def _available() -> str | None:
    if shutil.which("Orthanc") is None or not any((d / "libOrthancDicomWeb.so").is_file()
                                                   for d in dicom_stack.PLUGIN_DIRS):
        return "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
    for module in ("monailabel", "pydicom_seg", "highdicom"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (bash scripts/setup_env.sh)"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = _available()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("pacs")
    _write_tiny_bundle(HIPPO, root / "medsa_hippocampus_mri", HIPPO_TINY)
    if TASK04.is_dir():
        volume = TASK04 / "imagesTr" / "hippocampus_001.nii.gz"
    else:
        from medsa_monai.data import make_synthetic_dataset

        volume = make_synthetic_dataset(root / "synthetic", num_cases=1, shape=(35, 51, 35), seed=1) / "imagesTr" / \
            "synth_000.nii.gz"
    started = time.monotonic()
    orthanc = dicom_stack.start_orthanc(root / "orthanc", AUTH)
    services = [orthanc]
    try:
        series_uid = dicom_stack.load_volumes(orthanc.url, AUTH, [volume], root, "MR")[0]
        app, models = dicom_stack.monailabel_app(root, [root / "medsa_hippocampus_mri"])
        label = dicom_stack.start_monailabel(app, models, f"{orthanc.url}/dicom-web", AUTH, root, threads=2)
        services.append(label)
        study_uid = str(pydicom.dcmread(next((root / "series" / volume.name.split(".")[0]).iterdir()),
                                        stop_before_pixels=True).StudyInstanceUID)
        yield {"root": root, "orthanc": orthanc, "label": label, "series": series_uid, "volume": volume,
               "study": study_uid,
               "series_dir": root / "series" / volume.name.split(".")[0], "seconds": time.monotonic() - started}
    finally:
        for service in reversed(services):
            service.stop()


def _infer(stack: dict, model: str, output: str, params: dict) -> bytes:
    body = urllib.parse.urlencode({"params": json.dumps(params)}).encode()
    return dicom_stack.request(f"{stack['label'].url}/infer/{model}?image={stack['series']}&output={output}",
                               data=body, timeout=300, content_type="application/x-www-form-urlencoded")


def _outward_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the route picks the address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_pacs_answers_only_loopback_and_only_with_its_password(stack):
    orthanc = stack["orthanc"]
    with pytest.raises(ConnectionError, match="answered 401"):
        dicom_stack.request(f"{orthanc.url}/dicom-web/studies")
    studies = json.loads(dicom_stack.request(f"{orthanc.url}/dicom-web/studies", AUTH))
    assert len(studies) == 1
    outward = _outward_address()
    if outward is not None:  # Orthanc 1.10 listens on every interface: it must refuse what does not come from here
        port = orthanc.url.rsplit(":", 1)[1]
        with pytest.raises(ConnectionError, match="answered 40[13]|cannot reach"):  # even with the password
            dicom_stack.request(f"http://{outward}:{port}/dicom-web/studies", AUTH, timeout=5)
        with pytest.raises(ConnectionError, match="cannot reach"):  # MONAI Label listens on 127.0.0.1 alone
            dicom_stack.request(f"http://{outward}:{stack['label'].url.rsplit(':', 1)[1]}/info/", timeout=5)


def test_automatic_inference_through_dicomweb_comes_back_as_a_seg_in_the_pacs(stack, tmp_path):
    from medsa_monai.prediction.dicom_seg import label_map_on_series, read_dicom_seg

    started = time.monotonic()
    nifti = _infer(stack, "medsa_hippocampus_mri", "image", {})
    automatic_seconds = time.monotonic() - started
    (tmp_path / "automatic.nii.gz").write_bytes(nifti)
    info = [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}]
    seg = _infer(stack, "medsa_hippocampus_mri", "dicom_seg", {"label_info": info})
    stored = json.loads(dicom_stack.request(f"{stack['orthanc'].url}/instances", AUTH, seg, timeout=30))
    assert stored["Status"] == "Success"
    fetched = dicom_stack.request(f"{stack['orthanc'].url}/instances/{stored['ID']}/file", AUTH)
    (tmp_path / "fetched.dcm").write_bytes(fetched)
    masks, names = read_dicom_seg(tmp_path / "fetched.dcm", stack["series_dir"])
    assert names == ["anterior", "posterior"]
    headers = [pydicom.dcmread(f) for f in sorted(stack["series_dir"].iterdir())]
    through_pacs = label_map_on_series(tmp_path / "automatic.nii.gz", headers)
    for number, value in enumerate((1, 2)):
        assert np.array_equal(masks[..., number].astype(bool), through_pacs == value)

    # the same bundle on the original NIfTI volume, the local-file path: the same voxels in the patient
    parser = _local_inference(stack["root"] / "medsa_hippocampus_mri", tmp_path / "local")
    parser["datalist"] = [{"image": str(stack["volume"])}]
    started = time.monotonic()
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()
    local_seconds = time.monotonic() - started
    local = next((tmp_path / "local").rglob("*.nii.gz"))
    on_frames = label_map_on_series(local, headers)
    assert np.array_equal(on_frames, through_pacs), f"{(on_frames != through_pacs).mean():.4f} of the voxels differ"
    assert nib.load(local).shape == nib.load(stack["volume"]).shape
    print(f"\nstack started in {stack['seconds']:.1f} s; automatic through DICOMweb {automatic_seconds:.2f} s, "
          f"local file {local_seconds:.2f} s")


def test_a_click_through_dicomweb(stack, tmp_path):
    automatic = nib.load(_write(tmp_path / "automatic.nii.gz", _infer(stack, "medsa_hippocampus_mri", "image", {})))
    started = time.monotonic()
    clicked = _infer(stack, "medsa_hippocampus_mri_deepedit", "image", {"anterior": [[17, 25, 17]]})
    seconds = time.monotonic() - started
    clicked = nib.load(_write(tmp_path / "clicked.nii.gz", clicked))
    assert clicked.shape == automatic.shape and np.allclose(clicked.affine, automatic.affine)
    assert not np.array_equal(np.asarray(clicked.dataobj), np.asarray(automatic.dataobj))  # the click was read

    bundle = stack["root"] / "medsa_hippocampus_mri"  # the same click on the NIfTI file, without a server
    parser = _local_inference(bundle, tmp_path / "local", use_click=True)
    parser["datalist"] = [{"image": str(stack["volume"]), "anterior": [[17, 25, 17]]}]
    started = time.monotonic()
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("evaluator").run()
    print(f"\na click through DICOMweb: {seconds:.2f} s; on the local file: {time.monotonic() - started:.2f} s")


def _local_inference(bundle: Path, output: Path, use_click: bool = False):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "output_dir": str(output), "num_workers": 0, "output_postfix": "seg",
                   "progress_bar": False, "sam_checkpoint": None, "use_click": use_click})
    return parser


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_ohif_in_a_browser_lists_our_models_and_segments(stack):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra"
                                          ).sync_playwright
    label = stack["label"].url
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ohif_monailabel.png"
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            # the panel's server address (its default is port 8000 of the page's host)
            context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{label}/", "url": label}])
            page = context.new_page()
            page.goto(f"{label}/ohif/monai-label?StudyInstanceUIDs={stack['study']}", wait_until="networkidle",
                      timeout=120_000)
            server = page.locator("#monailabelServerURL")
            server.wait_for(timeout=60_000)
            assert server.input_value() == f"{label}/"
            server.locator("xpath=../..").locator("button").first.click()  # connect
            page.wait_for_function("document.body.innerText.includes('medsa_hippocampus_mri')", timeout=60_000)
            models = page.locator("select", has_text="medsa_hippocampus_mri").first.inner_text()
            assert "medsa_hippocampus_mri" in models.split("\n")
            page.get_by_role("button", name="Run").first.click()  # automatic segmentation from the viewer
            page.wait_for_function("document.body.innerText.includes('Running Segmentation - Successful') || "
                                   "document.body.innerText.includes('Failed to Run Segmentation')",
                                   timeout=120_000)
            assert "Running Segmentation - Successful" in page.inner_text("body")
            page.wait_for_timeout(2_000)  # the label map drawn over the images
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"\nOHIF with our models and the automatic result in {time.monotonic() - started:.1f} s: {screenshot}")


def test_a_pacs_that_is_down_is_named_without_a_hang(tmp_path):
    port = dicom_stack.free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"cannot reach http://127.0.0.1:{port}/dicom-web/studies within 2 s"):
        dicom_stack.request(f"http://127.0.0.1:{port}/dicom-web/studies", AUTH, timeout=2)
    with pytest.raises(ConnectionError, match=rf"cannot reach http://127.0.0.1:{port}/dicom-web/studies\?limit=1 "
                                              rf"within 10 s"):  # before MONAI Label is started on it
        dicom_stack.start_monailabel(tmp_path, [], f"http://127.0.0.1:{port}/dicom-web", AUTH, tmp_path)
    assert time.monotonic() - started < 15 and not (tmp_path / "monailabel.log").exists()


def test_the_stack_refuses_to_run_without_a_password(monkeypatch):
    monkeypatch.delenv("ORTHANC_PASSWORD", raising=False)
    monkeypatch.setenv("ORTHANC_USERNAME", "medsa")
    with pytest.raises(SystemExit, match="does not run without authentication"):
        dicom_stack.credentials()
