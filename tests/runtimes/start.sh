#!/usr/bin/env bash
# Start a real LLM server on 127.0.0.1 in the background and wait until it answers.
#   start.sh KIND OUTDIR MODELDIR    KIND: llama-cpp | llama-cpp-tools | llama-server | mlx
# llama-cpp-tools uses the chatml-function-calling chat format (forced tool calls and JSON
# mode are grammar-constrained, so the tiny model gives real tool_calls) and also serves
# embeddings. llama-server is llama.cpp's own C++ server (the Anthropic Messages and Responses
# APIs), from ../shared/runtimes/llama-server or, where that is missing, the one setup.sh built
# into .venv/bin.
# MODELDIR is where gen_tiny_model.py wrote tiny.gguf and tiny-hf/. On success prints
#   url=http://127.0.0.1:PORT
#   pid=PID
# and exits 0, leaving the server running (log in OUTDIR/KIND.log; stop it by that PID).
# On failure exits non-zero with the log's tail on stderr. Needs setup.sh to have run.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 llama-cpp|mlx OUTDIR MODELDIR" >&2
    exit 2
fi
kind="$1"
mkdir -p "$2"
out="$(cd "$2" && pwd)"
models="$(cd "$3" && pwd)"   # absolute: mlx_lm wants requests to name this exact path
py="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/python"
[[ -x "$py" ]] || { echo "no $py: run tests/runtimes/setup.sh first" >&2; exit 1; }
log="$out/$kind.log"
case "$kind" in
llama-cpp|llama-cpp-tools|llama-server) model="$models/tiny.gguf" ;;
mlx) model="$models/tiny-hf" ;;   # mlx_lm loads it lazily: check now, not at first request
*) echo "unknown KIND '$kind' (want llama-cpp, llama-cpp-tools, llama-server or mlx)" >&2; exit 2 ;;
esac
[[ -e "$model" ]] || { echo "no $model: run tests/runtimes/gen_tiny_model.py $models" >&2; exit 1; }

# Neither server can listen on port 0 and report the port, so ask the kernel for a free
# one and hand it over (a small race with other processes, acceptable in tests).
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"

# The server gets no stdin and its own log, so nothing holds this script's stdout open.
case "$kind" in
llama-server)
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    server="$repo/../shared/runtimes/llama-server"
    [[ -x "$server" ]] || server="$repo/.venv/bin/llama-server"
    [[ -x "$server" ]] || { echo "no llama-server: run tests/runtimes/setup.sh" >&2; exit 1; }
    "$server" -m "$model" -a tiny -c 2048 --host 127.0.0.1 --port "$port" -t 1 -np 1 \
        </dev/null >"$log" 2>&1 &
    ;;
llama-cpp*)
    extra=()
    [[ "$kind" == llama-cpp-tools ]] && extra=(--chat_format chatml-function-calling --embedding True)
    # --interrupt_requests False: otherwise a second request silently cuts a running stream.
    # --n_threads 1: steadier than 2 on these machines.
    "$py" -m llama_cpp.server --model "$model" --model_alias tiny \
        --host 127.0.0.1 --port "$port" --interrupt_requests False --n_threads 1 "${extra[@]}" \
        </dev/null >"$log" 2>&1 &
    ;;
mlx)
    # Without its own Hugging Face cache and offline mode, GET /v1/models breaks mid-body.
    cache="$(mktemp -d "$out/hf-cache.XXXXXX")"
    HF_HUB_CACHE="$cache" HF_HUB_OFFLINE=1 \
        "$py" -m mlx_lm.server --model "$model" --host 127.0.0.1 --port "$port" \
        </dev/null >"$log" 2>&1 &
    ;;
esac
pid=$!
url="http://127.0.0.1:$port"

# Poll GET /v1/models for up to 60 s; give up early if the server dies.
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    if curl -fsS -o /dev/null --max-time 2 "$url/v1/models" 2>/dev/null; then
        echo "url=$url"
        echo "pid=$pid"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done

echo "start.sh: $kind server (pid $pid) not ready at $url; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
kill "$pid" 2>/dev/null || true
exit 1
