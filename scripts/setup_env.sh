#!/usr/bin/env bash
# Create the virtual environment .venv (once) and install medsa-monai into it with its test tools.
# Safe to run again: it only installs what is missing.
#
#   TORCH_SPEC / TORCHVISION_SPEC  the torch pair to install first (default: a pair known to import together here;
#                                  setup.cfg itself only asks for torch>=2.1, torchvision>=0.16)
#   PYTHON                         the interpreter that creates the environment (default: python3)
#   VENV                           where the environment goes (default: .venv)
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
"$VENV/bin/python" -c "import torch, torchvision, monai, segment_anything, medsa_monai; \
print(f'medsa-monai {medsa_monai.__version__}: torch {torch.__version__}, torchvision {torchvision.__version__}, \
monai {monai.__version__}')"
