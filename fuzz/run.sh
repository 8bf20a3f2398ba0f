#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each) with AFL++ through cargo-afl,
# starting from the committed corpus in fuzz/corpus/<target>, and report per target the
# executions, the edges covered and any crash found (kept under fuzz/out/<target>).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Installs afl++ (Debian) and cargo-afl where missing. Exits 1 when a target crashed: add the
# crashing input to fuzz/corpus/<target>/ as a regression case once it is fixed (the test
# command replays every corpus input).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(model_splice request_info ollama anthropic sse telemetry policy_spec fixture)

if ! command -v cargo-afl >/dev/null 2>&1; then
    cargo install cargo-afl --locked
fi
cargo afl config --build >/dev/null 2>&1 || true
cargo afl build --release

# Containers: no core pattern to change, no CPU to bind to.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
crashed=0
mkdir -p out
printf '%-14s %10s %9s %8s %8s\n' target execs coverage paths crashes
for target in "${targets[@]}"; do
    out="out/$target"
    rm -rf "$out"
    cargo afl fuzz -V "$seconds" -i "corpus/$target" -o "$out" "target/release/$target" >"out-$target.log" 2>&1 || true
    stats="$out/default/fuzzer_stats"
    if [[ ! -f "$stats" ]]; then
        echo "$target: no stats (see fuzz/out-$target.log)"; tail -5 "out-$target.log"; crashed=1; continue
    fi
    value() { awk -F': ' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
    printf '%-14s %10s %9s %8s %8s\n' "$target" "$(value execs_done)" "$(value bitmap_cvg)" "$(value corpus_count)" "$crashes"
    [[ "$crashes" -eq 0 ]] || crashed=1
done
exit "$crashed"
