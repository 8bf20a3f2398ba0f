#!/usr/bin/env bash
# The whole test suite: the README's second command, and exactly what .ci/run calls.
# Installs what the tests need through the project's own files (the wasm target, cargo-nextest,
# Debian's chromium for the dashboard, the real LLM runtimes in .venv), then runs format and lint checks and every test (unit,
# policy guests natively, sandbox integration, real runtimes, end-to-end processes) with
# cargo-nextest, whose summary line ends the output.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# rust-toolchain.toml makes rustup add these on first use; say it explicitly for clarity.
rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi
if ! command -v curl >/dev/null 2>&1; then
    apt-get update && apt-get install -y curl
fi
# The unit-file check runs systemd-analyze; the partition test builds network namespaces
# with iproute2's `ip` (both Debian's).
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd iproute2
fi
# The dashboard's tests drive a real headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

# The real inference runtimes (llama.cpp's server, mlx_lm.server) and the Python clients the
# agent's tests drive, in .venv (idempotent; uses ../shared/wheels when present).
echo "== tests/runtimes/setup.sh"
bash tests/runtimes/setup.sh
# A real vLLM on the CPU (~3 GB download the first time on a machine; kept in the user's cache).
echo "== tests/runtimes/vllm-setup.sh"
bash tests/runtimes/vllm-setup.sh

# CI builds once from a clean clone: incremental compilation would only add time and several
# GB of disk.
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --no-fail-fast
