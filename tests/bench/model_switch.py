#!/usr/bin/env python3
"""Cold versus warm: time to first token on real llama.cpp through the agent, and what the
agent adds to a model switch beyond the runtime's own start-up.

Usage: tests/bench/model_switch.py [ROUNDS]   (after tests/runtimes/setup.sh and a build)

1. The runtime alone: start `python -m llama_cpp.server` on the tiny model and time it until
   `GET /v1/models` answers (what any supervisor must wait for), and from SIGTERM to its exit
   (what evicting it must wait for, so that its memory is free).
2. An agent (`switchyard-agent run`) with two models, `tiny-a` and `tiny-b`, each its own
   llama.cpp runtime started on demand, and a memory budget that holds one: alternating
   streamed requests make every request a switch (evict one, load the other).
3. Warm: the same model twice in a row; the second request's time to first token.

Prints a Markdown table (medians over ROUNDS) for BENCHMARKS.md. Everything on 127.0.0.1,
processes stopped by PID.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = REPO / ".venv/bin/python"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, deadline_s=60):
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"port {port} not ready")


def llama_command(model, alias, port="{port}"):
    return [str(PY), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False",
            "--n_threads", "1"]


def ttft(port, model):
    """Seconds from sending a streamed chat request to its first content event."""
    body = json.dumps({"model": model, "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{model}: {response.status} {response.read()[:300]!r}")
    first = None
    for line in response:
        if first is None and line.startswith(b"data: {") and b'"content"' in line:
            first = time.monotonic() - started
    if first is None:
        raise RuntimeError(f"{model}: no content event")
    return first


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    work = Path(tempfile.mkdtemp(prefix="model-switch-"))
    subprocess.run([str(PY), str(REPO / "tests/runtimes/gen_tiny_model.py"), str(work)],
                   check=True, stdout=subprocess.DEVNULL)
    for name in ("tiny-a", "tiny-b"):
        shutil.copy(work / "tiny.gguf", work / f"{name}.gguf")

    # 1. The runtime's own start-up.
    startups, stops = [], []
    for _ in range(rounds):
        port = free_port()
        proc = subprocess.Popen(llama_command(work / "tiny-a.gguf", "tiny-a", port),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            startups.append(wait_ready(port))
        finally:
            stopping = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            stops.append(time.monotonic() - stopping)

    # 2 and 3. Through the agent.
    # The newest build of the agent (a release build from an older checkout must not win).
    builds = [REPO / f"target/{p}/switchyard-agent" for p in ("release", "debug")]
    agent_bin = max((b for b in builds if b.exists()), key=lambda b: b.stat().st_mtime)
    config = work / "agent.toml"
    config.write_text(
        'node = "bench"\nmax_concurrency = 1\nmax_tokens = 64\n'
        '[runtime]\nkind = "llama-cpp"\nmemory_budget_mb = 1000\n'
        + "".join(
            f'[[models]]\nlogical = "{m}"\nlocal = "{m}"\ncontext_length = 256\nmemory_mb = 600\n'
            f"command = {json.dumps(llama_command(work / f'{m}.gguf', m))}\n"
            for m in ("tiny-a", "tiny-b")))
    agent_port = free_port()
    log = open(work / "agent.log", "w")
    agent = subprocess.Popen([str(agent_bin), "run", "--listen", f"127.0.0.1:{agent_port}",
                              "--config", str(config)],
                             stdout=subprocess.DEVNULL, stderr=log,
                             env={**os.environ, "SWITCHYARD_LOG": "info"})
    try:
        try:
            wait_ready(agent_port)
        except RuntimeError:
            log.flush()
            sys.exit(f"the agent did not start:\n{(work / 'agent.log').read_text()[-2000:]}")
        ttft(agent_port, "tiny-a")  # load it once
        warm, cold = [], []
        for _ in range(rounds):
            warm.append(ttft(agent_port, "tiny-a"))   # resident: warm
            cold.append(ttft(agent_port, "tiny-b"))   # evicts tiny-a, loads tiny-b
            cold.append(ttft(agent_port, "tiny-a"))   # and back
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        log.close()

    def field(line, name):
        return int(line.split(f" {name}=")[1].split()[0])

    switches = [line for line in (work / "agent.log").read_text().splitlines()
                if " loaded" in line and " evict_ms=" in line]
    loads = [field(line, "load_ms") for line in switches]
    evictions = [field(line, "evict_ms") for line in switches if field(line, "evict_ms") > 0]
    ms = lambda xs: statistics.median(xs) * 1000
    runtime = ms(startups)
    stop = ms(stops)
    print(f"agent binary: {agent_bin.relative_to(REPO)}; {rounds} rounds; medians")
    print()
    print("| what | time |")
    print("|---|---|")
    print(f"| the runtime alone: llama.cpp server start to ready | {runtime:.0f} ms |")
    print(f"| the runtime alone: SIGTERM to exit (what evicting it waits for) | {stop:.0f} ms |")
    print(f"| warm model through the agent: time to first token | {ms(warm):.1f} ms |")
    print(f"| cold model through the agent (evict one, load the other): time to first token | {ms(cold):.0f} ms |")
    load, evict = statistics.median(loads), statistics.median(evictions)
    print(f"| in the agent: stopping the evicted runtime (as it logs it) | {evict:.0f} ms |")
    print(f"| in the agent: starting the model's runtime until ready (as it logs it) | {load:.0f} ms |")
    print(f"| the agent's own part of a switch: cold - warm - stop - start | {ms(cold) - ms(warm) - evict - load:.0f} ms |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
