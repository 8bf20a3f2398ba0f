#!/usr/bin/env bash
# The routing path against a plain reverse proxy, side by side in one run.
#
# One agent with the simulated runtime generating instantly (time_scale = 0) stands in for a
# node; three ways to reach it are loaded with wrk (closed loop, keep-alive):
#   direct      client -> agent's local API
#   nginx       client -> nginx 1.22 (keepalive upstream, proxy_buffering off) -> agent
#   switchyard  client -> controller (least-loaded Wasm policy, admission) -> mTLS HTTP/2 link -> agent
# Reported: added p50 at 1 connection, RPS and p99 at 16 connections (ratio to direct),
# proxy CPU per request (from /proc), and first streamed byte at 16 connections.
#   tests/bench/proxy.sh [SECONDS]        (release binaries; needs wrk, nginx, curl)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${1:-10}
cargo build --release -p switchyard-controller -p switchyard-agent --bins >&2
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin/switchyard" certs init --dir "$work/certs" >/dev/null
"$bin/switchyard" certs issue --dir "$work/certs" --node bench >/dev/null
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/admin.token"
cat >"$work/controller.toml" <<TOML
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
TOML
SWITCHYARD_LOG=warn "$bin/switchyard" serve --config "$work/controller.toml" >"$work/controller.out" 2>"$work/controller.err" &
pids+=($!); controller_pid=$!
for _ in $(seq 1 100); do grep -q "agents link to" "$work/controller.out" 2>/dev/null && break; sleep 0.1; done
controller=$(grep -o 'http://[0-9.:]*' "$work/controller.out" | head -1)
agents=$(grep -o 'agents link to [0-9.:]*' "$work/controller.out" | awk '{print $4}')

cat >"$work/agent.toml" <<TOML
node = "bench"
max_concurrency = 64
max_tokens = 4096
[runtime]
kind = "simulated"
profile = "ryzen"
time_scale = 0.0
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
SWITCHYARD_LOG=warn "$bin/switchyard-agent" run --config "$work/agent.toml" --listen 127.0.0.1:0 >"$work/agent.out" 2>"$work/agent.err" &
pids+=($!); agent_pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
agent=$(grep -o 'http://[0-9.:]*' "$work/agent.out" | head -1)
for _ in $(seq 1 100); do
  curl -s -H "Authorization: Bearer $(cat "$work/admin.token")" "$controller/admin/nodes" | grep -q '"healthy": true' && break; sleep 0.1
done

cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream agent { server ${agent#http://}; keepalive 64; }
  server {
    listen 127.0.0.1:0;
    location / {
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
# nginx cannot report a port it picked: ask the kernel for one.
nginx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/listen 127.0.0.1:0;/listen 127.0.0.1:$nginx_port;/" "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!); nginx_pid=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/healthz" && break; sleep 0.1; done

export BODY='{"model": "bench-model", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}'
stream_body='{"model": "bench-model", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hello"}]}'

cpu_ticks() { # total utime+stime of a process and its children threads
  local total=0
  for p in "$@"; do
    for t in /proc/"$p"/task/*/stat; do total=$((total + $(awk '{print $14 + $15}' "$t" 2>/dev/null || echo 0))); done
  done
  echo "$total"
}
nginx_workers() { pgrep -P "$nginx_pid" | tr '\n' ' '; }

# wrk latency percentiles in ms and requests/s.
run_wrk() { # url connections -> "p50_ms p99_ms rps requests"
  wrk -t1 -c"$2" -d"${seconds}s" --latency -s tests/bench/post.lua "$1/v1/chat/completions" 2>/dev/null | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r"\s" + label + r"\s+([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
p50, p99 = ms("50%"), ms("99%")
print(f"{p50:.3f} {p99:.3f} {rps:.0f} {reqs}")'
}

first_byte() { # url -> median ms to the first streamed byte over 200 sequential requests
  python3 - "$1" "$stream_body" <<'PY'
import http.client, statistics, sys, time, urllib.parse
url, body = sys.argv[1], sys.argv[2]
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
samples = []
for _ in range(200):
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read(1)
    samples.append((time.perf_counter() - start) * 1000)
    r.read()
print(f"{statistics.median(samples):.3f}")
PY
}

for url in "$agent" "http://127.0.0.1:$nginx_port" "$controller"; do
  status=$(curl -s -o "$work/check.json" -w '%{http_code}' -H 'Content-Type: application/json' -d "$BODY" "$url/v1/chat/completions")
  [[ "$status" == 200 ]] || { echo "$url answered $status: $(cat "$work/check.json")" >&2; cat "$work/agent.err" "$work/controller.err" | tail -n 8 >&2; exit 1; }
done

declare -A p50 p99 rps cpu agent_cpu fb
for system in direct nginx switchyard; do
  case $system in
    direct) url=$agent; procs="";;
    nginx) url="http://127.0.0.1:$nginx_port"; procs="$(nginx_workers)";;
    switchyard) url=$controller; procs="$controller_pid";;
  esac
  read -r p50_1 _ _ _ < <(run_wrk "$url" 1)
  before=$(cpu_ticks $procs); agent_before=$(cpu_ticks "$agent_pid")
  read -r _ p99_16 rps_16 reqs_16 < <(run_wrk "$url" 16)
  after=$(cpu_ticks $procs); agent_after=$(cpu_ticks "$agent_pid")
  agent_cpu[$system]=$(python3 -c "print(f'{($agent_after - $agent_before) / $(getconf CLK_TCK) / $reqs_16 * 1e6:.0f} µs')")
  p50[$system]=$p50_1; p99[$system]=$p99_16; rps[$system]=$rps_16
  if [[ -n "$procs" ]]; then
    cpu[$system]=$(python3 -c "print(f'{($after - $before) / $(getconf CLK_TCK) / $reqs_16 * 1e6:.0f} µs')")
  else
    cpu[$system]="-"
  fi
  fb[$system]=$(first_byte "$url")
done

echo "| system | added p50 at c=1 | c=16 RPS (x direct) | c=16 p99 | proxy CPU per request | agent CPU per request | first streamed byte p50 |"
echo "|---|---|---|---|---|---|---|"
for system in direct nginx switchyard; do
  added=$(python3 -c "print('-' if '$system' == 'direct' else f'+{${p50[$system]} - ${p50[direct]}:.3f} ms')")
  ratio=$(python3 -c "print(f'{${rps[$system]} / ${rps[direct]}:.2f}')")
  echo "| $system | $added | ${rps[$system]} ($ratio) | ${p99[$system]} ms | ${cpu[$system]} | ${agent_cpu[$system]} | ${fb[$system]} ms |"
done
