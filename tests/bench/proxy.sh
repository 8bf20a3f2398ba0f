#!/usr/bin/env bash
# The routing path against the routers users would pick instead, side by side in one run.
#
# One canned OpenAI-compatible runtime (controller/examples/canned_runtime.rs: a 16-token
# chat completion at once, or 50 SSE events and data: [DONE]) stands in for a node; each
# system reaches it one way:
#   direct       client -> runtime
#   nginx        client -> nginx (keepalive upstream, proxy_buffering off, 2 workers) -> runtime
#   vllm-router  client -> vllm-router 0.1.17 (round robin, one worker) -> runtime
#   switchyard   client -> controller (least-loaded Wasm policy, admission) -> mTLS HTTP/2 link
#                -> agent (kind = "openai", a byte relay) -> runtime
#   switchyard+shadow  the same, with seed-rules shadowing every request (`policy shadow`):
#                what a shadow costs the live path
#   switchyard-no-record  the same path with `[decisions] enabled = false`: what the decision
#                record (on by default, as in `switchyard` above) costs
# Cells: non-streamed chat at 1, 16 and 64 connections (wrk, closed loop, keep-alive) and
# streamed chat at 16 (examples/sse_load.rs). Reported: added p50 at 1 connection, RPS (and
# ratio to direct) and p99 at 16 and 64, router CPU per request at 16 (from /proc: controller
# + agent for Switchyard), SSE first-byte p50 and router CPU per stream at 16.
#   switchyard-baseline  with BASELINE_BIN=DIR: the controller and agent binaries in DIR (an
#                earlier commit's release build) on the same path, for before/after in one run.
#                Build them with their own CARGO_TARGET_DIR: cargo gives a checkout at another
#                path the same build units, and a shared target folder mixes the two commits'
#                embedded policy components.
#   tests/bench/proxy.sh [SECONDS] [ROUNDS]     (release build; installs wrk, nginx, vllm-router)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${1:-10}
rounds=${2:-1}

command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y wrk nginx-light >&2
peers=target/bench-peers
if [[ ! -x $peers/vllm-router/bin/vllm-router ]]; then
  python3 -m venv "$peers/vllm-router" >&2
  "$peers/vllm-router/bin/pip" install -q vllm-router==0.1.17 >&2
fi
cargo build --release -p switchyard-cli -p switchyard-agent --bins >&2
cargo build --release -p switchyard-controller --example canned_runtime --example sse_load >&2
bin=target/release
work=$(mktemp -d)
pids=()
# shellcheck source=lib.sh
source tests/bench/lib.sh
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The runtime: one worker thread, like the peers' single-worker canned backends.
"$bin/examples/canned_runtime" 1 >"$work/runtime.out" &
pids+=($!)
wait_for "$work/runtime.out" url=
runtime=$(sed -n 's/^url=//p' "$work/runtime.out")

# Switchyard: controller + one agent over mTLS; twice, the second keeping no decision record.
"$bin/switchyard" certs init --dir "$work/certs" >/dev/null
"$bin/switchyard" certs issue --dir "$work/certs" --node bench >/dev/null
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin.token"
declare -A ctl_url ctl_pid agt_pid
start_switchyard() { # name extra-controller-toml [binary folder]
  local dir=$work/$1 b=${3:-$bin}
  mkdir -p "$dir"
  ln -s "$work/certs" "$dir/certs"
  cp "$work/admin.token" "$dir/admin.token"
  cat >"$dir/controller.toml" <<TOML
listen = "127.0.0.1:0"
[admin]
token_file = "admin.token"
[agents]
listen = "127.0.0.1:0"
ca = "certs/ca.pem"
cert = "certs/controller.pem"
key = "certs/controller.key"
[policy]
dir = "$PWD/policies"
active = "least-loaded"
watch = false
[limits]
queue_capacity = 1024
$2
TOML
  SWITCHYARD_LOG=warn "$b/switchyard" serve --config "$dir/controller.toml" >"$dir/controller.out" 2>"$work/$1-controller.err" &
  pids+=($!); ctl_pid[$1]=$!
  wait_for "$dir/controller.out" "agents link to"
  ctl_url[$1]=$(grep -o 'http://[0-9.:]*' "$dir/controller.out" | head -1)
  local agents
  agents=$(grep -o 'agents link to [0-9.:]*' "$dir/controller.out" | awk '{print $4}')
  cat >"$dir/agent.toml" <<TOML
node = "bench"
max_concurrency = 256
max_tokens = 4096
[runtime]
kind = "openai"
base_url = "$runtime"
[[models]]
logical = "bench-model"
local = "bench-model"
context_length = 8192
[controller]
address = "$agents"
server_name = "localhost"
ca = "certs/nodes/bench/ca.pem"
cert = "certs/nodes/bench/node.pem"
key = "certs/nodes/bench/node.key"
TOML
  SWITCHYARD_LOG=warn "$b/switchyard-agent" run --config "$dir/agent.toml" --listen 127.0.0.1:0 >"$dir/agent.out" 2>"$work/$1-agent.err" &
  pids+=($!); agt_pid[$1]=$!
  for _ in $(seq 1 200); do
    curl -s -H "Authorization: Bearer $(cat "$work/admin.token")" "${ctl_url[$1]}/admin/nodes" | grep -q '"healthy": true' && break; sleep 0.05
  done
}
start_switchyard switchyard ""
start_switchyard no-record $'[decisions]\nenabled = false'
[[ -n ${BASELINE_BIN:-} ]] && start_switchyard baseline "" "$BASELINE_BIN"
controller=${ctl_url[switchyard]}

# nginx.
nginx_port=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream runtime { server ${runtime#http://}; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://runtime;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!); nginx_pid=$!

# vllm-router.
vllm_port=$(free_port)
"$peers/vllm-router/bin/vllm-router" --host 127.0.0.1 --port "$vllm_port" --worker-urls "$runtime" \
  --policy round_robin --log-level warning >"$work/vllm-router.log" 2>&1 &
pids+=($!); vllm_pid=$!

body='{"model": "bench-model", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}'
stream_body='{"model": "bench-model", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hello"}]}'
export BODY=$body
declare -A url=([direct]=$runtime [nginx]="http://127.0.0.1:$nginx_port" [vllm-router]="http://127.0.0.1:$vllm_port" [switchyard]=$controller [switchyard+shadow]=$controller [switchyard-no-record]=${ctl_url[no-record]})
systems=(direct nginx vllm-router switchyard-no-record switchyard switchyard+shadow)
if [[ -n ${BASELINE_BIN:-} ]]; then
  url[switchyard-baseline]=${ctl_url[baseline]}
  systems+=(switchyard-baseline)
fi
admin() { curl -s -X "$1" -H "Authorization: Bearer $(cat "$work/admin.token")" -H 'Content-Type: application/json' ${3:+-d "$3"} "$controller/admin/$2"; }
for system in "${systems[@]}"; do
  for _ in $(seq 1 300); do
    status=$(curl -s -o "$work/check.json" -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "${url[$system]}/v1/chat/completions" || true)
    [[ "$status" == 200 ]] && break; sleep 0.1
  done
  [[ "$status" == 200 ]] || { echo "$system answered $status: $(cat "$work/check.json")" >&2; tail -n 8 "$work"/*.err "$work"/*.log >&2; exit 1; }
done

router_pids() {
  case $1 in
    direct) echo "";;
    nginx) pgrep -P "$nginx_pid" | tr '\n' ' ';;
    vllm-router) echo "$vllm_pid $(pgrep -P "$vllm_pid" | tr '\n' ' ')";;
    switchyard|switchyard+shadow) echo "${ctl_pid[switchyard]} ${agt_pid[switchyard]}";;
    switchyard-no-record) echo "${ctl_pid[no-record]} ${agt_pid[no-record]}";;
    switchyard-baseline) echo "${ctl_pid[baseline]} ${agt_pid[baseline]}";;
  esac
}
per_request() { python3 -c "import sys; t, n = $1, $2; print(f'{t / $(getconf CLK_TCK) / n * 1e6:.0f}' if n else '-')"; }


results=$work/results
for round in $(seq 1 "$rounds"); do
  for system in "${systems[@]}"; do
    u=${url[$system]}; procs=$(router_pids "$system")
    [[ $system == switchyard+shadow ]] && admin POST shadow '{"policy": "seed-rules"}' >/dev/null
    read -r p50_1 _ _ _ < <(run_wrk "$u" 1)
    before=$(cpu_ticks $procs)
    read -r _ p99_16 rps_16 reqs_16 < <(run_wrk "$u" 16)
    cpu_16=$(per_request "$(($(cpu_ticks $procs) - before))" "$reqs_16")
    read -r _ p99_64 rps_64 _ < <(run_wrk "$u" 64)
    before=$(cpu_ticks $procs)
    read -r ttfb streams < <("$bin/examples/sse_load" "$u" 16 "$seconds" "$stream_body")
    cpu_sse=$(per_request "$(($(cpu_ticks $procs) - before))" "$streams")
    [[ -n "$procs" ]] || { cpu_16=-; cpu_sse=-; }
    if [[ $system == switchyard+shadow ]]; then
      admin DELETE shadow >"$work/shadow.json"
      echo "round $round shadow: $(cat "$work/shadow.json")" >&2
    fi
    echo "$round $system $p50_1 $rps_16 $p99_16 $rps_64 $p99_64 $cpu_16 $ttfb $cpu_sse" >>"$results"
    echo "round $round $system: p50@1 $p50_1 ms, rps@16 $rps_16, rps@64 $rps_64, cpu/req $cpu_16 µs, sse ttfb $ttfb ms, cpu/stream $cpu_sse µs" >&2
  done
done

record=$(admin GET 'decisions?limit=1' | python3 -c 'import json, sys; v = json.load(sys.stdin); print(v["written"], "written,", v["dropped"], "dropped (queue full)")')
echo "decision record of switchyard: $record" >&2

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
systems = list(dict.fromkeys(r[1] for r in rows))
rounds = sorted({r[0] for r in rows})
def cell(system, i):
    values = [float(r[i]) for r in rows if r[1] == system and r[i] != "-"]
    return statistics.median(values) if values else None
def ratio(system, i):  # median over rounds of the per-round ratio to direct
    values = []
    for rnd in rounds:
        mine = [float(r[i]) for r in rows if r[0] == rnd and r[1] == system]
        base = [float(r[i]) for r in rows if r[0] == rnd and r[1] == "direct"]
        if mine and base and base[0]:
            values.append(mine[0] / base[0])
    return statistics.median(values)
print("| system | added p50 at c=1 | c=16 RPS (x direct) | c=16 p99 | c=64 RPS (x direct) | c=64 p99 | router CPU per request (c=16) | SSE first byte p50 (16 streams) | router CPU per 50-event stream |")
print("|---|---|---|---|---|---|---|---|---|")
for s in systems:
    added = "-" if s == "direct" else f"+{cell(s, 2) - cell('direct', 2):.3f} ms"
    cpu = "-" if cell(s, 7) is None else f"{cell(s, 7):.0f} µs"
    cpu_sse = "-" if cell(s, 9) is None else f"{cell(s, 9):.0f} µs"
    print(f"| {s} | {added} | {cell(s, 3):.0f} ({ratio(s, 3):.2f}) | {cell(s, 4):.2f} ms | {cell(s, 5):.0f} ({ratio(s, 5):.2f}) | {cell(s, 6):.2f} ms | {cpu} | {cell(s, 8):.2f} ms | {cpu_sse} |")
PY
