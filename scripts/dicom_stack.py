"""The clinic's path on one machine: a PACS (Orthanc with DICOMweb) holding DICOM series, MONAI Label serving
bundles on the studies it reads through DICOMweb, and the OHIF viewer MONAI Label serves, all on 127.0.0.1.

    export ORTHANC_USERNAME=medsa ORTHANC_PASSWORD=<a password>
    .venv/bin/python scripts/dicom_stack.py --bundle bundles/medsa_hippocampus_mri \\
        --load ../shared/data/Task04_Hippocampus/imagesTr --cases 3 --modality MR

It starts Orthanc (``scripts/orthanc/orthanc.json``: DICOMweb on, its DICOM network port off, remote access off,
authentication on with the user name and password from the environment: it refuses to start without them), writes
each loaded volume as a DICOM series (``medsa dicom series``) and stores it in Orthanc, starts MONAI Label
0.8.5 with ``--studies <Orthanc>/dicom-web`` and the bundles as models (each also as ``<name>_deepedit`` for
clicks), and prints the OHIF address. Ctrl-C stops both. Needs the Debian packages ``orthanc`` and
``orthanc-dicomweb`` and MONAI Label (``bash scripts/setup_env.sh``). Orthanc 1.10 cannot bind to one address: it
listens on every interface but answers only 127.0.0.1 (``RemoteAccessAllowed`` false) and only with the password.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "scripts" / "orthanc" / "orthanc.json"
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc/plugins"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.is_file() else ""


def credentials() -> tuple[str, str]:
    """The PACS user name and password from the environment; refused when either is missing."""
    username, password = os.environ.get("ORTHANC_USERNAME", ""), os.environ.get("ORTHANC_PASSWORD", "")
    if not username or not password:
        raise SystemExit("set ORTHANC_USERNAME and ORTHANC_PASSWORD: the PACS does not run without authentication")
    return username, password


def request(url: str, auth: tuple[str, str] | None = None, data: bytes | None = None, timeout: float = 10,
            content_type: str = "application/dicom") -> bytes:
    """One HTTP request; an unreachable server is an error naming the address (never a hang: ``timeout``)."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.read()
    except urllib.error.HTTPError as error:
        raise ConnectionError(f"{url} answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"cannot reach {url} within {timeout:g} s: {reason}") from None


def _wait(service: Service, probe, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
        try:
            probe()
            return
        except ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not answer at {service.url} in {seconds:g} s:\n"
                                   f"{service.log_tail()}") from None
            time.sleep(0.5)


def start_orthanc(workdir: Path, auth: tuple[str, str], port: int | None = None) -> Service:
    """Orthanc with DICOMweb on 127.0.0.1:<a free port>, its storage in ``workdir``."""
    orthanc = shutil.which("Orthanc")
    plugin = next((d / "libOrthancDicomWeb.so" for d in PLUGIN_DIRS if (d / "libOrthancDicomWeb.so").is_file()), None)
    if orthanc is None or plugin is None:
        raise SystemExit("Orthanc with its DICOMweb plugin is not installed: apt-get install orthanc orthanc-dicomweb")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ORTHANC_STORAGE": str(workdir / "storage"), "ORTHANC_HTTP_PORT": str(port),
           "ORTHANC_USERNAME": auth[0], "ORTHANC_PASSWORD": auth[1], "ORTHANC_PLUGINS": str(plugin)}
    log = workdir / "orthanc.log"
    with open(log, "w") as out:
        process = subprocess.Popen([orthanc, str(CONFIG)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)
    service = Service("Orthanc", f"http://127.0.0.1:{port}", process, log)
    _wait(service, lambda: request(f"{service.url}/system", auth, timeout=2), 60)
    return service


def store_series(orthanc_url: str, auth: tuple[str, str], folder: Path) -> str:
    """Store every file of a series folder in Orthanc; return the study's Orthanc id."""
    study = ""
    for path in sorted(folder.iterdir()):
        study = json.loads(request(f"{orthanc_url}/instances", auth, path.read_bytes(), timeout=30))["ParentStudy"]
    return study


def load_volumes(orthanc_url: str, auth: tuple[str, str], volumes: list[Path], workdir: Path, modality: str
                 ) -> list[str]:
    """Write each volume as a DICOM series and store it in Orthanc; return the series' UIDs."""
    sys.path.insert(0, str(ROOT))
    from medsa_monai.conversion.dicom_series import write_series

    uids = []
    for volume in volumes:
        name = volume.name.split(".")[0]
        files = write_series(volume, workdir / "series" / name, modality=modality, patient_id=name,
                             patient_name=f"{name}^medsa")
        store_series(orthanc_url, auth, workdir / "series" / name)
        import pydicom

        uids.append(str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID))
    return uids


def monailabel_app(workdir: Path, bundles: list[Path]) -> tuple[Path, list[str]]:
    """MONAI Label's stock ``monaibundle`` app with each bundle as a model (and ``<name>_deepedit`` for clicks)."""
    apps = workdir / "apps"
    if not (apps / "monaibundle").is_dir():
        subprocess.run([sys.executable, "-m", "monailabel.main", "apps", "--download", "--name", "monaibundle",
                        "--output", str(apps)], check=True, capture_output=True, timeout=120)
    app, names = apps / "monaibundle", []
    tool = app / "bin" / "itkimage2segimage"  # MONAI Label's DICOM SEG writer, else downloaded from GitHub
    tool.parent.mkdir(exist_ok=True)
    tool.write_text(f"#!/bin/sh\nexec '{sys.executable}' -m medsa_monai.prediction.dicom_seg \"$@\"\n")
    tool.chmod(0o755)
    for bundle in bundles:
        target = app / "model" / bundle.name
        if not target.exists():
            shutil.copytree(bundle, target, symlinks=True)
        clicks = app / "model" / f"{bundle.name}_deepedit"
        if not clicks.exists():
            clicks.symlink_to(bundle.name)
        names += [bundle.name, clicks.name]
    return app, names


def start_monailabel(app: Path, models: list[str], studies: str, auth: tuple[str, str], workdir: Path,
                     port: int | None = None, threads: int | None = None) -> Service:
    """MONAI Label on 127.0.0.1:<a free port>, reading its studies through DICOMweb with the PACS's password.

    Raises:
        ConnectionError: the PACS does not answer at ``studies`` within 10 s (named, before MONAI Label starts).
    """
    request(f"{studies}/studies?limit=1", auth, timeout=10)
    port = port or free_port()
    env = {**os.environ, "MONAI_LABEL_DATASTORE_USERNAME": auth[0], "MONAI_LABEL_DATASTORE_PASSWORD": auth[1],
           "MONAI_LABEL_DICOMWEB_USERNAME": auth[0], "MONAI_LABEL_DICOMWEB_PASSWORD": auth[1],
           "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false", "MONAI_LABEL_SESSION_PATH": str(workdir / "sessions"),
           "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(workdir / "dicom_cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = workdir / "monailabel.log"
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", studies,
               "--conf", "models", ",".join(models), "--conf", "zoo_source", "local", "--conf", "sam2", "false",
               "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    service = Service("MONAI Label", f"http://127.0.0.1:{port}", process, log)
    _wait(service, lambda: request(f"{service.url}/info/", timeout=5), 240)
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="a bundle folder (repeatable)")
    parser.add_argument("--load", type=Path, help="a folder of NIfTI volumes to store in the PACS as DICOM series")
    parser.add_argument("--cases", type=int, default=3, help="how many volumes of --load")
    parser.add_argument("--modality", default="MR", choices=("MR", "CT", "OT"))
    parser.add_argument("--workdir", type=Path, default=None, help="where the PACS stores its files (default: a "
                                                                    "temporary folder, removed at the end)")
    args = parser.parse_args()
    auth = credentials()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medsa_pacs_"))
    services: list[Service] = []
    try:
        start = time.monotonic()
        orthanc = start_orthanc(workdir / "orthanc", auth)
        services.append(orthanc)
        if args.load:
            volumes = sorted(args.load.glob("*.nii*"))[: args.cases]
            print(f"stored {len(load_volumes(orthanc.url, auth, volumes, workdir, args.modality))} series in Orthanc")
        app, models = monailabel_app(workdir, [b.resolve() for b in args.bundle])
        label = start_monailabel(app, models, f"{orthanc.url}/dicom-web", auth, workdir)
        services.append(label)
        print(f"Orthanc (DICOMweb): {orthanc.url}/dicom-web  (user {auth[0]})\nMONAI Label: {label.url}  models "
              f"{', '.join(models)}\nOHIF: {label.url}/ohif/\nstarted in {time.monotonic() - start:.0f} s; Ctrl-C "
              f"stops them")
        while all(service.process.poll() is None for service in services):
            time.sleep(1)
        print("\n".join(f"{service.name} stopped:\n{service.log_tail()}" for service in services
                        if service.process.poll() is not None))
    except KeyboardInterrupt:
        pass
    finally:
        for service in reversed(services):
            service.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
