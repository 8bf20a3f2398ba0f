#!/usr/bin/env bash
# Measure the agent at rest: resident memory and CPU share while it samples telemetry every
# second for SECONDS (default 30), with the given config. Prints one Markdown table row.
#   tests/bench/agent-footprint.sh AGENT_BINARY CONFIG [SECONDS]
set -euo pipefail
agent=$1 config=$2 seconds=${3:-30}
out=$(mktemp -d)
"$agent" run --config "$config" --listen 127.0.0.1:0 >"$out/stdout" 2>"$out/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 1 100); do grep -q listening "$out/stdout" && break; sleep 0.1; done
grep -q listening "$out/stdout" || { cat "$out/stderr"; exit 1; }
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
sleep 2                                   # past start-up
start_cpu=$(cpu); start=$(date +%s.%N)
sleep "$seconds"
end_cpu=$(cpu); end=$(date +%s.%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
awk -v c0="$start_cpu" -v c1="$end_cpu" -v t0="$start" -v t1="$end" -v hz="$ticks" -v rss="$rss_kb" -v hwm="$hwm_kb" -v s="$seconds" \
  'BEGIN { printf "| %d s | %.1f MiB | %.1f MiB | %.2f%% |\n", s, rss/1024, hwm/1024, 100*(c1-c0)/hz/(t1-t0) }'
