# Helpers shared by the shell benchmarks (proxy.sh, picker.sh); sourced from the repository
# root after `seconds` is set.

# A free port on 127.0.0.1 (for peers that cannot report one they bound themselves).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait until FILE holds PATTERN: TRIES times 50 ms (default 200), else say so and exit.
wait_for() { # file pattern [tries]
  for _ in $(seq 1 "${3:-200}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# Total utime+stime, in clock ticks, of the processes given (all their threads).
cpu_ticks() {
  local total=0
  for p in "$@"; do
    for t in /proc/"$p"/task/*/stat; do total=$((total + $(awk '{print $14 + $15}' "$t" 2>/dev/null || echo 0))); done
  done
  echo "$total"
}

# wrk, one thread, CONNECTIONS connections for $seconds, POSTing $BODY (post.lua) as a chat:
# prints "p50_ms p99_ms rps requests".
run_wrk() { # url connections
  wrk -t1 -c"$2" -d"${seconds}s" --latency -s tests/bench/post.lua "$1/v1/chat/completions" 2>/dev/null | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r"\s" + label + r"\s+([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if errors:
    print(f"wrk saw {errors.group(1)} error answers", file=sys.stderr)
p50, p99 = ms("50%"), ms("99%")
print(f"{p50:.3f} {p99:.3f} {rps:.0f} {reqs}")'
}
