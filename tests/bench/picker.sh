#!/usr/bin/env bash
# What Switchyard's endpoint picker costs a real Envoy (issue #23), side by side in one run.
#
# Sixteen simulated nodes (real agents, `time_scale = 0`: answers at once) linked to one
# controller running least-loaded; every system sends the same non-streamed chat to them:
#   envoy-direct      client -> Envoy 1.40 (round robin over the 16 runtimes' endpoints) -> runtime
#   envoy+noop        client -> Envoy -> ext_proc: a no-op picker (controller/epp/examples/
#                     noop_picker.rs: the same gRPC stack and exchange, endpoints in turn, no
#                     decision) -> ORIGINAL_DST -> runtime
#   envoy+switchyard  client -> Envoy -> ext_proc: the controller's picker (least-loaded over the
#                     16 nodes, decision record on) -> ORIGINAL_DST -> runtime
#   switchyard        client -> the controller's own front door -> mTLS link -> agent -> runtime
# wrk, one connection, keep-alive, SECONDS per cell, ROUNDS rounds (medians). Reported: p50 and
# p99, their excess over envoy-direct, requests/s, and router CPU per request (Envoy + picker,
# or controller + agents for the front door), from /proc.
#   tests/bench/picker.sh [SECONDS] [ROUNDS]     (release build; installs wrk)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${1:-10}
rounds=${2:-3}
nodes=16

command -v wrk >/dev/null || apt-get install -y wrk >&2
envoy=.venv/bin/envoy
[[ -x $envoy ]] || { echo "$envoy is missing: run tests/runtimes/setup.sh" >&2; exit 1; }
cargo build --release -p switchyard-cli -p switchyard-agent --bins >&2
cargo build --release -p switchyard-epp --example noop_picker >&2
bin=target/release
work=$(mktemp -d)
pids=()
# shellcheck source=lib.sh
source tests/bench/lib.sh
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin/switchyard" certs init --dir "$work/certs" >/dev/null
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin.token"
token=$(cat "$work/admin.token")
cat >"$work/controller.toml" <<TOML
listen = "127.0.0.1:0"
[admin]
token_file = "$work/admin.token"
[agents]
listen = "127.0.0.1:0"
ca = "$work/certs/ca.pem"
cert = "$work/certs/controller.pem"
key = "$work/certs/controller.key"
[policy]
dir = "$PWD/policies"
active = "least-loaded"
watch = false
[gateway]
picker_listen = "127.0.0.1:0"
TOML
SWITCHYARD_LOG=warn "$bin/switchyard" serve --config "$work/controller.toml" >"$work/controller.out" 2>"$work/controller.err" &
pids+=($!); controller_pid=$!
wait_for "$work/controller.out" "endpoint picker" 400
controller=$(grep -o 'http://[0-9.:]*' "$work/controller.out" | head -1)
link=$(grep -o 'agents link to [0-9.:]*' "$work/controller.out" | awk '{print $4}')
picker=$(sed -n 's/.*endpoint picker (Envoy ext_proc, gRPC) on //p' "$work/controller.out")
agent_pids=()
for i in $(seq 1 $nodes); do
  node=node$i
  "$bin/switchyard" certs issue --dir "$work/certs" --node "$node" >/dev/null
  cat >"$work/$node.toml" <<TOML
node = "$node"
max_concurrency = 64
max_tokens = 4096
[runtime]
kind = "simulated"
profile = "ryzen"
time_scale = 0
[[models]]
logical = "qwen25-coder-7b"
local = "qwen25-coder-7b"
context_length = 8192
[controller]
address = "$link"
server_name = "localhost"
ca = "$work/certs/nodes/$node/ca.pem"
cert = "$work/certs/nodes/$node/node.pem"
key = "$work/certs/nodes/$node/node.key"
TOML
  SWITCHYARD_LOG=warn "$bin/switchyard-agent" run --config "$work/$node.toml" --listen 127.0.0.1:0 >"$work/$node.out" 2>&1 &
  pids+=($!); agent_pids+=($!)
done
endpoints=""
for _ in $(seq 1 400); do
  endpoints=$(curl -s -H "Authorization: Bearer $token" "$controller/admin/nodes" | python3 -c '
import json, sys
links = json.load(sys.stdin)["links"]
up = [l["endpoint"] for l in links if l.get("connected") and l.get("endpoint")]
print(" ".join(up) if len(up) == '"$nodes"' else "")')
  [[ -n $endpoints ]] && break; sleep 0.1
done
[[ -n $endpoints ]] || { echo "the $nodes nodes never all linked" >&2; exit 1; }

"$bin/examples/noop_picker" $endpoints 2>"$work/noop.out" &
pids+=($!); noop_pid=$!
wait_for "$work/noop.out" "listening on" 400
noop=$(sed -n 's/^listening on //p' "$work/noop.out")

start_envoy() { # name [picker host:port]
  local port; port=$(free_port)
  local filters route clusters
  if [[ -n ${2:-} ]]; then
    filters='          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: { envoy_grpc: { cluster_name: picker }, timeout: 30s }
              message_timeout: 30s
              processing_mode: { request_header_mode: SEND, response_header_mode: SEND, request_body_mode: BUFFERED, response_body_mode: NONE, request_trailer_mode: SKIP, response_trailer_mode: SKIP }'
    clusters="  - name: picker
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment: { cluster_name: picker, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: ${2%:*}, port_value: ${2##*:} } } } }] }] }
  - name: upstream
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
    original_dst_lb_config: { use_http_header: true, http_header_name: x-gateway-destination-endpoint }"
  else
    filters=""
    local list="" e
    for e in $endpoints; do list+="{ endpoint: { address: { socket_address: { address: ${e%:*}, port_value: ${e##*:} } } } }, "; done
    clusters="  - name: upstream
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 1s
    load_assignment: { cluster_name: upstream, endpoints: [{ lb_endpoints: [ ${list%, } ] }] }"
  fi
  cat >"$work/envoy-$1.yaml" <<YAML
static_resources:
  listeners:
  - name: front
    address: { socket_address: { address: 127.0.0.1, port_value: $port } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          route_config:
            virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: upstream, timeout: 30s } }] }]
          http_filters:
$filters
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
$clusters
YAML
  "$envoy" -c "$work/envoy-$1.yaml" --disable-hot-restart --concurrency 1 -l warning >"$work/envoy-$1.log" 2>&1 &
  pids+=($!); envoy_pid[$1]=$!
  url[$1]="http://127.0.0.1:$port"
}
declare -A url envoy_pid
start_envoy direct
start_envoy noop "$noop"
start_envoy switchyard "$picker"
url[switchyard-front-door]=$controller

body='{"model": "qwen25-coder-7b", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}'
export BODY=$body
systems=(envoy-direct envoy+noop envoy+switchyard switchyard-front-door)
target() { case $1 in envoy-direct) echo direct;; envoy+noop) echo noop;; envoy+switchyard) echo switchyard;; *) echo switchyard-front-door;; esac; }
for system in "${systems[@]}"; do
  u=${url[$(target "$system")]}
  for _ in $(seq 1 300); do
    status=$(curl -s -o "$work/check.json" -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$u/v1/chat/completions" || true)
    [[ "$status" == 200 ]] && break; sleep 0.1
  done
  [[ "$status" == 200 ]] || { echo "$system answered $status: $(cat "$work/check.json")" >&2; tail -n 8 "$work"/*.log "$work"/*.err >&2; exit 1; }
done

router_pids() {
  case $1 in
    envoy-direct) echo "${envoy_pid[direct]}";;
    envoy+noop) echo "${envoy_pid[noop]} $noop_pid";;
    envoy+switchyard) echo "${envoy_pid[switchyard]} $controller_pid";;
    switchyard-front-door) echo "$controller_pid ${agent_pids[*]}";;
  esac
}

results=$work/results
for round in $(seq 1 "$rounds"); do
  for system in "${systems[@]}"; do
    procs=$(router_pids "$system")
    before=$(cpu_ticks $procs)
    read -r p50 p99 rps reqs < <(run_wrk "${url[$(target "$system")]}" 1)
    cpu=$(python3 -c "print(f'{($(cpu_ticks $procs) - $before) / $(getconf CLK_TCK) / $reqs * 1e6:.0f}')")
    echo "$round $system $p50 $p99 $rps $cpu" >>"$results"
    echo "round $round $system: p50 $p50 ms, p99 $p99 ms, $rps req/s, router CPU $cpu µs/request" >&2
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
systems = list(dict.fromkeys(r[1] for r in rows))
def med(system, i):
    return statistics.median(float(r[i]) for r in rows if r[1] == system)
def excess(system, i, base):  # median over rounds of the per-round difference
    rounds = sorted({r[0] for r in rows})
    values = []
    for rnd in rounds:
        mine = [float(r[i]) for r in rows if r[0] == rnd and r[1] == system]
        other = [float(r[i]) for r in rows if r[0] == rnd and r[1] == base]
        values.append(mine[0] - other[0])
    return statistics.median(values)
print(f"Medians of {len({r[0] for r in rows})} rounds, one connection.")
print()
print("| system | p50 | p99 | p50 over envoy-direct | p99 over envoy-direct | p50 over envoy+noop | requests/s | router CPU per request |")
print("|---|---|---|---|---|---|---|---|")
for s in systems:
    over = lambda i, base: "-" if s == base else f"{excess(s, i, base):+.3f} ms"
    noop = over(2, "envoy+noop") if s == "envoy+switchyard" else "-"
    print(f"| {s} | {med(s, 2):.3f} ms | {med(s, 3):.3f} ms | {over(2, 'envoy-direct')} | {over(3, 'envoy-direct')} | {noop} | {med(s, 4):.0f} | {med(s, 5):.0f} µs |")
PY
