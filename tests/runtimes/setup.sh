#!/usr/bin/env bash
# Install the real LLM runtimes (mlx_lm, llama-cpp-python) and the test clients into
# <repo>/.venv, as ../shared/runtimes.md describes. Idempotent: when .venv already holds
# exactly this requirements.txt (a stamp keeps its hash), it returns at once.
# Env: PYTHON picks the interpreter for a new venv (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"
req="$here/requirements.txt"
stamp="$venv/.runtimes-requirements.sha256"
wheels="$repo/../shared/wheels"   # prebuilt llama-cpp-python wheel, where present

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup.sh: $venv is up to date"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --no-input --progress-bar off)

# mlx must come as wheels (an sdist build needs Metal or a long compile).
args=(--only-binary mlx,mlx-cpu,mlx-metal -r "$req")
if [[ -d "$wheels" ]]; then
    echo "setup.sh: using the prebuilt llama-cpp-python wheel from $(cd "$wheels" && pwd)"
    args+=(--find-links "$wheels" --only-binary llama-cpp-python)
else
    # No wheel: compile llama.cpp (~20 min on 2 cores) with portable flags, so the build
    # also runs on machines other than this one. cmake and ninja come from PyPI.
    echo "setup.sh: no $wheels; building llama-cpp-python from source (slow)"
    "${pip[@]}" cmake ninja
    export PATH="$venv/bin:$PATH"
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
fi

echo "setup.sh: pip install ${args[*]}"
"${pip[@]}" "${args[@]}"

# Prove the install works before stamping it.
"$venv/bin/python" -c 'import mlx.core, mlx_lm, llama_cpp, gguf, tokenizers, numpy, safetensors, openai, ollama'
echo "$want" >"$stamp"
echo "setup.sh: done ($venv)"
