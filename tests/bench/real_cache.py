#!/usr/bin/env python3
"""Real prefill, real cache: coding-agent sessions on two real llama.cpp servers.

What it measures
----------------
Two real `llama-server` processes (llama.cpp's own server, `../shared/runtimes/llama-server`
or the one tests/runtimes/setup.sh built) serve the generated tiny model in its wide shape
(4 layers, width 256: about 4,300 prompt tokens/s to prefill on this machine, 25x faster
when the prefix is cached), one slot each, each behind a real `switchyard-agent` linked to
a real controller over mTLS. Coding-agent-like sessions run through the controller closed
loop: every prompt starts with the same ~2.5k-token system prompt, then the session's own
history growing ~800 tokens a turn; each turn is sent when the previous answer is in, after a short
think time; sessions start staggered. Requests carry only Claude Code's session header
(`x-claude-code-session-id`), no Switchyard hint. Each policy gets fresh runtimes (cold
caches), fresh agents and a fresh controller with that policy active from the start.

Reported per policy: time to first token (first streamed content byte) p50/p95 over every
turn and over the warm turns (2nd on), the share of prompt tokens the runtimes themselves
reported cached (`usage.prompt_tokens_details.cached_tokens`), how many turns were served
by another node than the session's previous turn, and the wall time of the run.

Run (after `cargo build -p switchyard-cli -p switchyard-agent --bins`; the routing path's
microseconds do not matter beside seconds of prefill, so a debug build is fine):

    python3 tests/bench/real_cache.py
    python3 tests/bench/real_cache.py --policies finish-time,least-loaded --sessions 4 --turns 4

Results: a Markdown table on stdout, and target/bench-real-cache/<date-time>/results.json with
every request. Every process is stopped by its PID at the end; traffic stays on 127.0.0.1.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from routing import Procs, free_port, grep_file, http_get, wait_until  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = "qwen25-coder-7b"
NODES = ("ryzen", "xeon")


def llama_server():
    for path in (os.path.join(REPO, "..", "shared", "runtimes", "llama-server"),
                 os.path.join(REPO, ".venv", "bin", "llama-server")):
        if os.access(path, os.X_OK):
            return os.path.abspath(path)
    raise SystemExit("no llama-server: run tests/runtimes/setup.sh")


def system_prompt():
    rules = " ".join(f"Rule {i}: read the code before changing it and keep every test green." for i in range(75))
    return "You are a careful coding agent working in a Rust repository. " + rules


def turn_text(session, turn):
    return (f"Session {session}, turn {turn}: the test suite reports a failure in module {session * 10 + turn}. "
            + " ".join(f"Log line {i} of the failing run shows value {session * 31 + turn * 7 + i}." for i in range(25)))


class Run:
    def __init__(self, args, work, policy):
        self.args, self.work, self.policy = args, work, policy
        self.dir = os.path.join(args.out, policy)
        os.makedirs(self.dir, exist_ok=True)
        self.procs = Procs()

    def sy(self, *argv):
        subprocess.run([os.path.join(self.work, "bin", "switchyard"), *argv], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start_vllm(self, node):
        """A real vLLM (CPU) with prefix caching and KV-cache events; returns (url, events, replay)."""
        vllm = os.path.join(REPO, ".venv-vllm", "bin", "vllm")
        if not os.access(vllm, os.X_OK):
            raise SystemExit("no .venv-vllm: run tests/runtimes/vllm-setup.sh")
        port, replay = free_port(), free_port()
        # Below the ephemeral range: vLLM connects to it until the agent binds it.
        events = next(p for p in range(20000 + os.getpid() % 5000 + 17 * len(node), 32000) if port_free(p))
        cache = os.path.join(self.work, f"vllm-{self.policy}-{node}")  # short: vLLM puts IPC sockets in it
        os.makedirs(cache, exist_ok=True)
        config = json.dumps({"enable_kv_cache_events": True, "publisher": "zmq", "topic": "kv",
                             "endpoint": f"tcp://127.0.0.1:{events}", "replay_endpoint": f"tcp://127.0.0.1:{replay}"})
        log_path = os.path.join(self.dir, f"vllm-{node}.log")
        p = self.procs.start([vllm, "serve", os.path.join(self.work, "model", "tiny-hf"), "--served-model-name", "tiny",
                              "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "8192",
                              "--block-size", "32", "--enable-prefix-caching", "--enable-prompt-tokens-details",
                              "--enforce-eager", "--kv-events-config", config], log_path,
                             env={"TMPDIR": cache, "VLLM_CACHE_ROOT": cache, "VLLM_TARGET_DEVICE": "cpu",
                                  "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                  "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                                  "VLLM_CPU_OMP_THREADS_BIND": str(NODES.index(node))})
        url = f"http://127.0.0.1:{port}"
        wait_until(f"vllm {node}", lambda: http_get(url + "/health")[0] == 200, 240, proc=p, log_path=log_path)
        return url, events, replay

    def start(self):
        servers = {}
        for node in NODES:
            if self.args.runtime == "vllm":
                servers[node] = self.start_vllm(node)
                continue
            port = free_port()
            log_path = os.path.join(self.dir, f"llama-{node}.log")
            p = self.procs.start([llama_server(), "-m", os.path.join(self.work, "model", "tiny.gguf"), "-a", "tiny",
                                  "-c", str(8192 * self.args.slots), "--host", "127.0.0.1", "--port", str(port), "-t", "1",
                                  "-np", str(self.args.slots),
                                  "--metrics"], log_path)
            url = f"http://127.0.0.1:{port}"
            wait_until(f"llama-server {node}", lambda: http_get(url + "/health")[0] == 200, 60, proc=p, log_path=log_path)
            servers[node] = (url, None, None)
        config = os.path.join(self.dir, "controller.toml")
        big = 600_000
        with open(config, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\n[admin]\ntoken_file = "{self.work}/admin.token"\n'
                    f'[agents]\nlisten = "127.0.0.1:0"\nca = "{self.work}/certs/ca.pem"\n'
                    f'cert = "{self.work}/certs/controller.pem"\nkey = "{self.work}/certs/controller.key"\n'
                    f'[policy]\ndir = "{self.work}/policies"\nactive = "{self.policy}"\nwatch = false\n'
                    f'[limits]\nqueue_timeout_ms = {big}\nfirst_byte_timeout_ms = {big}\ntotal_timeout_ms = {big}\n')
        log_path = os.path.join(self.dir, "controller.log")
        p = self.procs.start([os.path.join(self.work, "bin", "switchyard"), "serve", "--config", config], log_path,
                             env={"SWITCHYARD_LOG": "warn"})
        self.url = wait_until("controller", lambda: grep_file(log_path, r"switchyard listening on (http://[0-9.:]+)"), 30,
                              proc=p, log_path=log_path)
        link = wait_until("controller agents endpoint", lambda: grep_file(log_path, r"agents link to ([0-9.:]+)"), 10,
                          proc=p, log_path=log_path)
        for node in NODES:
            bundle = os.path.join(self.work, "certs", "nodes", node)
            path = os.path.join(self.dir, f"{node}.toml")
            url, events, replay = servers[node]
            runtime = f'[runtime]\nkind = "llama-cpp"\nbase_url = "{url}"\n'
            if events:
                runtime = (f'[runtime]\nkind = "vllm"\nbase_url = "{url}"\n[runtime.kv_events]\n'
                           f'endpoint = "tcp://127.0.0.1:{events}"\nreplay_endpoint = "tcp://127.0.0.1:{replay}"\n')
            with open(path, "w") as f:
                f.write(f'node = "{node}"\nmax_concurrency = {self.args.slots}\nmax_tokens = 4096\ntelemetry_interval_ms = 250\n'
                        f'{runtime}'
                        f'[[models]]\nlogical = "{MODEL}"\nlocal = "tiny"\ncontext_length = 8192\n'
                        f'[controller]\naddress = "{link}"\nserver_name = "localhost"\n'
                        f'ca = "{bundle}/ca.pem"\ncert = "{bundle}/node.pem"\nkey = "{bundle}/node.key"\n')
            log_path = os.path.join(self.dir, f"agent-{node}.log")
            self.procs.start([os.path.join(self.work, "bin", "switchyard-agent"), "run", "--listen", "127.0.0.1:0",
                              "--config", path], log_path, env={"SWITCHYARD_LOG": "warn"})
        token = open(os.path.join(self.work, "admin.token")).read().strip()

        def healthy():
            status, body = http_get(self.url + "/admin/nodes", {"Authorization": f"Bearer {token}"})
            nodes = json.loads(body)["snapshot"]["nodes"] if status == 200 else []
            return len([n for n in nodes if n.get("healthy")]) == len(NODES)
        wait_until("both nodes healthy", healthy, 30)

    def turn(self, session, messages):
        body = json.dumps({"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}}).encode()
        request = urllib.request.Request(self.url + "/v1/chat/completions", data=body, headers={
            "Content-Type": "application/json", "x-claude-code-session-id": f"session-{session}"})
        started = time.monotonic()
        first, usage, node = None, None, None
        with urllib.request.urlopen(request, timeout=600) as response:
            node = response.headers.get("x-switchyard-node")
            for line in response:
                line = line.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.monotonic() - started
                if chunk.get("usage"):
                    usage = chunk["usage"]
        return {"ttft_s": first if first is not None else time.monotonic() - started, "node": node,
                "prompt_tokens": (usage or {}).get("prompt_tokens"),
                "cached_tokens": ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")}

    def session(self, session, records, errors):
        time.sleep(session * self.args.stagger)
        messages = [{"role": "system", "content": system_prompt()}]
        for turn in range(self.args.turns):
            messages.append({"role": "user", "content": turn_text(session, turn)})
            try:
                record = self.turn(session, messages)
            except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                errors.append(f"session {session} turn {turn}: {e}")
                return
            record.update(session=session, turn=turn)
            records.append(record)
            messages.append({"role": "assistant", "content": f"Fixed module {session * 10 + turn}; the test passes now."})
            time.sleep(self.args.think)

    def measure(self):
        self.start()
        records, errors = [], []
        started = time.monotonic()
        threads = [threading.Thread(target=self.session, args=(s, records, errors)) for s in range(self.args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        self.procs.stop_all()
        return summarise(self.policy, records, errors, wall)


def port_free(port):
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def summarise(policy, records, errors, wall):
    records = sorted(records, key=lambda r: (r["session"], r["turn"]))
    moved, previous = 0, {}
    for r in records:
        if r["session"] in previous and previous[r["session"]] != r["node"]:
            moved += 1
        previous[r["session"]] = r["node"]
    warm = [r["ttft_s"] for r in records if r["turn"] > 0]
    every = [r["ttft_s"] for r in records]
    prompt = sum(r["prompt_tokens"] or 0 for r in records)
    cached = sum(r["cached_tokens"] or 0 for r in records)
    served = {n: sum(1 for r in records if r["node"] == n) for n in NODES}
    return {"policy": policy, "requests": len(records), "errors": errors, "wall_s": wall,
            "ttft_p50": statistics.median(every) if every else float("nan"), "ttft_p95": pct(every, 0.95),
            "warm_p50": statistics.median(warm) if warm else float("nan"), "warm_p95": pct(warm, 0.95),
            "cached_share": cached / prompt if prompt else float("nan"), "moved": moved,
            "later_turns": sum(1 for r in records if r["turn"] > 0), "served": served, "records": records}


def table(results):
    lines = ["| policy | TTFT p50 / p95, every turn (s) | TTFT p50 / p95, turns 2+ (s) | prompt tokens cached (runtimes' own counts) "
             "| turns moved to another node | served ryzen / xeon | errors | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['policy']} | {r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | {r['warm_p50']:.2f} / {r['warm_p95']:.2f} "
                     f"| {100 * r['cached_share']:.0f} % | {r['moved']} of {r['later_turns']} "
                     f"| {r['served']['ryzen']} / {r['served']['xeon']} | {len(r['errors'])} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def median_table(runs):
    keys = ("ttft_p50", "ttft_p95", "warm_p50", "warm_p95", "cached_share", "moved")
    lines = [f"Medians of {len(runs)} runs (range in brackets).", "",
             "| policy | TTFT p50, every turn (s) | TTFT p95, every turn (s) | TTFT p50, turns 2+ (s) | TTFT p95, turns 2+ (s) "
             "| prompt tokens cached | turns moved (of 24) | errors |", "|---|---|---|---|---|---|---|---|"]
    for policy in [r["policy"] for r in runs[0]]:
        mine = [r for run in runs for r in run if r["policy"] == policy]

        def cell(key, scale=1.0, digits=2):
            values = [r[key] * scale for r in mine]
            return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"
        cells = [cell(k) for k in keys[:4]] + [cell("cached_share", 100, 0) + " %", cell("moved", 1, 0)]
        lines.append(f"| {policy} | " + " | ".join(cells) + f" | {sum(len(r['errors']) for r in mine)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="finish-time,seed-rules,session-affinity,least-loaded")
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--think", type=float, default=0.3, help="seconds between an answer and the next turn")
    parser.add_argument("--stagger", type=float, default=0.4, help="seconds between the sessions' starts")
    parser.add_argument("--runtime", choices=("llama-server", "vllm"), default="llama-server",
                        help="the two nodes' runtime (vllm: from .venv-vllm, with its KV-cache events followed)")
    parser.add_argument("--slots", type=int, default=1, help="requests each agent admits at once (llama-server: -np)")
    parser.add_argument("--bin-dir", default=os.path.join(REPO, "target", "debug"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", metavar="RESULTS_JSON", help="print the table of an earlier run")
    parser.add_argument("--median", metavar="RESULTS_JSON", nargs="+",
                        help="print each figure's median over several runs, with its range")
    args = parser.parse_args()
    if args.report:
        print(table(json.load(open(args.report))["results"]))
        return
    if args.median:
        print(median_table([json.load(open(path))["results"] for path in args.median]))
        return
    args.out = args.out or os.path.join(REPO, "target", "bench-real-cache",
                                        datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="switchyard-real-cache-")
    try:
        os.makedirs(os.path.join(work, "bin"))
        for exe in ("switchyard", "switchyard-agent"):
            src = os.path.join(args.bin_dir, exe)
            if not os.access(src, os.X_OK):
                raise SystemExit(f"{src} is missing: cargo build -p switchyard-cli -p switchyard-agent --bins")
            shutil.copy2(src, os.path.join(work, "bin", exe))
        shutil.copytree(os.path.join(REPO, "policies"), os.path.join(work, "policies"))
        python = os.path.join(REPO, ".venv", "bin", "python")
        subprocess.run([python, os.path.join(REPO, "tests", "runtimes", "gen_tiny_model.py"), os.path.join(work, "model")],
                       check=True, env={**os.environ, "TINY_MODEL_SHAPE": "wide"}, stdout=subprocess.DEVNULL)
        switchyard = os.path.join(work, "bin", "switchyard")
        subprocess.run([switchyard, "certs", "init", "--dir", os.path.join(work, "certs")], check=True,
                       stdout=subprocess.DEVNULL)
        for node in NODES:
            subprocess.run([switchyard, "certs", "issue", "--dir", os.path.join(work, "certs"), "--node", node],
                           check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(work, "admin.token"), "w") as f:
            f.write(os.urandom(16).hex())
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        results = []
        for policy in args.policies.split(","):
            run = Run(args, work, policy)
            try:
                result = run.measure()
            finally:
                run.procs.stop_all()
            results.append(result)
            print(f"{policy}: TTFT p50 {result['ttft_p50']:.2f} s, p95 {result['ttft_p95']:.2f} s, "
                  f"moved {result['moved']} of {result['later_turns']}", file=sys.stderr)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"commit": commit, "args": {k: v for k, v in vars(args).items() if k != "report"},
                       "results": results}, f, indent=1)
        print(table(results))
        print(f"\n(results: {args.out}/results.json; commit {commit})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
