#!/usr/bin/env bash
# Create the virtual environment .venv (once) and install medsa-monai into it with its test tools.
# Safe to run again: it only installs what is missing.
#
#   TORCH_SPEC / TORCHVISION_SPEC  the torch pair to install first (default: a pair known to import together here;
#                                  setup.cfg itself only asks for torch>=2.1, torchvision>=0.16)
#   PYTHON                         the interpreter that creates the environment (default: python3)
#   VENV                           where the environment goes (default: .venv)
#   MONAILABEL                     0 to skip MONAI Label 0.8.5 (the [monailabel] extra; default: installed)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true; }

# torch and torchvision must come as a matching pair: segment-anything imports torchvision, and a torchvision
# built for another torch fails at import ("operator torchvision::nms does not exist").
pip_install "$TORCH_SPEC" "$TORCHVISION_SPEC"
pip_install -e ".[test]"

# MONAI Label 0.8.5 (the [monailabel] extra; MONAILABEL=0 skips it). monailabel and pydicom-seg come without their
# own requirements, which would downgrade numpy (pydicom-seg pins numpy<2) and pull sam2 and mlflow; the extra brings
# what the server needs. pip then notes the requirements it left out ("monailabel 0.8.5 requires ..."): expected.
left_out() { grep -v -E "dependency resolver does not currently|following dependency conflicts|^(monailabel \
0\.8\.5|pydicom-seg 0\.4\.1) requires" || true; }
if [ "${MONAILABEL:-1}" != 0 ]; then
  pip_install --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1" | left_out
  pip_install -e ".[test,monailabel]" | left_out
fi
"$VENV/bin/python" -c "import importlib.metadata as m, torch, torchvision, monai, segment_anything, medsa_monai; \
label = next((f', monailabel {d.version}' for d in m.distributions() if d.metadata['Name'] == 'monailabel'), ''); \
print(f'medsa-monai {medsa_monai.__version__}: torch {torch.__version__}, torchvision {torchvision.__version__}, \
monai {monai.__version__}{label}')"
