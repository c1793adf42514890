#!/usr/bin/env bash
# Creates the test virtual environment: torch, ComfyUI's own dependencies, the test tooling,
# and the PINNED ComfyUI (unless COMFYUI_PATH points at another one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-"torch==2.14.1 torchvision==0.29.1"}

# The browser tests drive Debian's chromium (never a downloaded browser); CI runs as root.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch 2.14.1 is a CUDA build (about 5.6 GB in the venv with its libraries): say so before pip runs out of disk.
FREE_KB=$(df -Pk "$VENV" | awk 'NR==2 {print $4}')
if [ -n "$FREE_KB" ] && [ "$FREE_KB" -lt 8000000 ]; then
    echo "install_env.sh: only $((FREE_KB / 1024)) MB free where $VENV is; the venv needs about 8 GB" \
         "(the tests about 20 GB in all, with the random checkpoints: README, Tests)" >&2
fi
# No pip cache: the venv is the only copy of what pip installs.
PIP="$VENV/bin/python -m pip --disable-pip-version-check --no-cache-dir"
$PIP install --quiet $TORCH
$PIP install --quiet -r requirements-dev.txt
COMFY=$("$VENV/bin/python" scripts/comfyui_runtime.py)
# ComfyUI's requirements, less torch (pinned above) and torchaudio (optional; it needs another torch).
grep -v -E '^\s*(#|$)|^(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$COMFY/requirements.txt" > "$VENV/comfyui-requirements.txt"
# What ComfyUI imports at start but does not list: v0.3.64's server.py imports requests (nothing else
# pulls it in with transformers 5), and its comfy_api imports packaging.
printf 'requests\npackaging\n' >> "$VENV/comfyui-requirements.txt"
$PIP install --quiet -r "$VENV/comfyui-requirements.txt" $TORCH
echo "ComfyUI for the tests: $COMFY"
# The newest frontend, for the browser tests of the schedule graph (classic and Nodes 2.0 modes) under
# CURRENT (served with main.py --front-end-root). Kept apart from ComfyUI's own pinned frontend package.
$PIP install --quiet --no-deps --upgrade --target "$VENV/frontend-1.58.1" comfyui-frontend-package==1.58.1
