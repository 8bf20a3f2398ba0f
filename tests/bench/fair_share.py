#!/usr/bin/env python3
"""Fair shares under overload: one key's batch loop against another key's interactive work.

What it measures
----------------
One simulated node (the seed's xeon: 2 slots, 200 ms to first token, 22 tokens/s; run at
`time_scale` 0.1, figures below in simulated seconds) behind a real agent and controller
(seed-rules; both keys at the default priority, so priorities do not separate them). The
interactive key sends streamed chats of 16 tokens one after another and its time to first
token is measured:
  unloaded      alone;
  loaded        while the batch key keeps 16 requests of 64 tokens in flight (a loop that
                sends the next as soon as one ends): the queue is start-time fair between keys;
  loaded, cap   the same, with the batch key's `max_concurrent = 1`: it may hold one slot.
Reported: TTFT p50 / p95 of the interactive key and their ratio to unloaded (the target of
issue #24: p95 within 2x), the batch key's completed requests, and 429s it received.

Run (after `cargo build -p switchyard-cli -p switchyard-agent --bins`):
    python3 tests/bench/fair_share.py [--requests 40]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from routing import Procs, grep_file, http_get, wait_until  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCALE = 0.1
INTERACTIVE_KEY = "interactive-key-0123456789"
BATCH_KEY = "batch-loop-key-0123456789"


def chat(url, key, tokens, stream):
    body = json.dumps({"model": "qwen25-coder-7b", "max_tokens": tokens, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            first = None
            for line in response:
                if first is None and line.startswith(b"data: "):
                    first = time.monotonic() - started
            return 200, (first if first is not None else time.monotonic() - started) / SCALE
    except urllib.error.HTTPError as e:
        return e.code, None


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run(args, work, case):
    procs = Procs()
    try:
        batch_limit = "max_concurrent = 1\n" if case == "loaded, cap" else ""
        config = os.path.join(work, f"controller-{case.replace(', ', '-')}.toml")
        with open(config, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\n[admin]\ntoken_file = "{work}/admin.token"\n'
                    f'[agents]\nlisten = "127.0.0.1:0"\nca = "{work}/certs/ca.pem"\n'
                    f'cert = "{work}/certs/controller.pem"\nkey = "{work}/certs/controller.key"\n'
                    f'[policy]\ndir = "{REPO}/policies"\nactive = "seed-rules"\nwatch = false\n'
                    f'[limits]\nqueue_timeout_ms = 600000\n'
                    f'[[api_keys]]\nname = "interactive"\nkey = "{INTERACTIVE_KEY}"\n'
                    f'[[api_keys]]\nname = "batch"\nkey = "{BATCH_KEY}"\n{batch_limit}')
        log = os.path.join(work, "controller.log")
        p = procs.start([os.path.join(args.bin_dir, "switchyard"), "serve", "--config", config], log,
                        env={"SWITCHYARD_LOG": "warn"})
        url = wait_until("controller", lambda: grep_file(log, r"switchyard listening on (http://[0-9.:]+)"), 30, proc=p)
        link = wait_until("agents", lambda: grep_file(log, r"agents link to ([0-9.:]+)"), 10, proc=p)
        bundle = os.path.join(work, "certs", "nodes", "xeon")
        agent = os.path.join(work, "xeon.toml")
        with open(agent, "w") as f:
            f.write(f'node = "xeon"\nmax_concurrency = 2\nmax_tokens = 4096\ntelemetry_interval_ms = 100\n'
                    f'[runtime]\nkind = "simulated"\nprofile = "xeon"\ntime_scale = {SCALE}\n'
                    f'[[models]]\nlogical = "qwen25-coder-7b"\nlocal = "qwen25-coder-7b"\ncontext_length = 8192\n'
                    f'[controller]\naddress = "{link}"\nserver_name = "localhost"\n'
                    f'ca = "{bundle}/ca.pem"\ncert = "{bundle}/node.pem"\nkey = "{bundle}/node.key"\n')
        procs.start([os.path.join(args.bin_dir, "switchyard-agent"), "run", "--listen", "127.0.0.1:0",
                     "--config", agent], os.path.join(work, "agent.log"), env={"SWITCHYARD_LOG": "warn"})
        token = open(os.path.join(work, "admin.token")).read().strip()
        wait_until("node", lambda: b'"healthy": true' in http_get(url + "/admin/nodes",
                                                                 {"Authorization": f"Bearer {token}"})[1], 30)
        stop, batch = threading.Event(), {"done": 0, "refused": 0}

        def loop():
            while not stop.is_set():
                status, _ = chat(url, BATCH_KEY, 64, False)
                if status == 200:
                    batch["done"] += 1
                else:
                    batch["refused"] += 1
                    time.sleep(0.05)
        workers = [threading.Thread(target=loop) for _ in range(16 if case != "unloaded" else 0)]
        for w in workers:
            w.start()
        time.sleep(1.0 if workers else 0)
        ttfts = []
        for _ in range(args.requests):
            status, ttft = chat(url, INTERACTIVE_KEY, 16, True)
            assert status == 200, status
            ttfts.append(ttft)
        stop.set()
        for w in workers:
            w.join()
        return {"case": case, "p50": statistics.median(ttfts), "p95": pct(ttfts, 0.95), **batch}
    finally:
        procs.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--bin-dir", default=os.path.join(REPO, "target", "debug"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="switchyard-fair-")
    try:
        sy = os.path.join(args.bin_dir, "switchyard")
        subprocess.run([sy, "certs", "init", "--dir", os.path.join(work, "certs")], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sy, "certs", "issue", "--dir", os.path.join(work, "certs"), "--node", "xeon"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(work, "admin.token"), "w") as f:
            f.write(os.urandom(16).hex())
        results = [run(args, work, case) for case in ("unloaded", "loaded", "loaded, cap")]
        base = results[0]
        print("| interactive key's case | TTFT p50 (s) | TTFT p95 (s) | p95 / unloaded | batch requests done | batch 429s |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['case']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p95'] / base['p95']:.1f}x | {r['done']} | {r['refused']} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
