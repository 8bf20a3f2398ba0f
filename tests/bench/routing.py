#!/usr/bin/env python3
"""Routing under load: Switchyard's policies against the routers a user would pick instead.

What it measures
----------------
A committed, seeded trace is replayed open-loop (arrivals at fixed offsets, whatever the
router does) against the simulated seed cluster: three real `switchyard-agent` processes with
SIMULATED runtimes (`m4`: 1 slot, 18 tok/s, 350 ms to first token, heats and throttles;
`ryzen`: 4 slots, 45 tok/s, 120 ms; `xeon`: 2 slots, 22 tok/s, 200 ms; speeds for the 7B
model every request asks for). Every router is measured on the same three agents:

- Switchyard (controller + the agents over mTLS) under every policy in `policies/` at the
  time of the run (each its own fresh controller and agents, the policy active from the
  start), which includes `round-robin` and any newer policy once they exist there;
- nginx, round robin (Debian's `nginx-light`) over the agents' own OpenAI APIs;
- LiteLLM proxy 1.108.7, `routing_strategy: least-busy`, over the same APIs;
- vllm-router 0.1.17 with its default policy (`cache_aware`), probing the agents' `/health`.

Every router gets the same bytes (body and headers: `x-switchyard-task`, `-priority`,
`-session`; the others ignore the headers). Each run starts fresh agents (a cool m4, empty
queues). Traces (`tests/bench/traces/`, regenerated bit for bit from the seed with
`--regen-traces`), offsets in simulated seconds at 100 % of the cluster's capacity:

- `mixed`: Poisson arrivals; 40 % development (short prompts, 32-256 tokens, streamed,
  priority 5), 30 % production (128-512 tokens, streamed, priority 7), 30 % batch (long
  prompts, 768-2048 tokens, not streamed, priority 2).
- `sessions`: multi-turn development and production sessions (`x-switchyard-session`) whose
  context starts at 2-16k tokens and grows every turn (each turn's prompt extends the
  previous one, so prefix-aware routers can see it), plus batch jobs on 8-24k-token
  documents; about the same 40/30/30 split.

Capacity: the requests/s the three nodes complete when every slot is busy, for the trace's
mean completion tokens: sum over nodes of slots / (ttft + mean tokens / tokens/s). The
offsets are at 100 % of that capacity with the seed's speeds; a run at load L replays them
stretched by 1/L and by the ratio of the seed's capacity to the capacity the simulated nodes
actually deliver at this `time_scale`, measured at the start of every run of the script
(every slot of every node busy at once). Since the simulator paces tokens against due times
the two agree within 1 %; builds before that lost about 1.1 ms of real time per token.

Time: the agents run with `time_scale` (default 0.05: 1 simulated second = 50 ms); every
figure is in simulated seconds. A run stops when every request has finished or `--cap`
simulated seconds after the last arrival; requests still open then count as errors
("unfinished") and as infinitely late in the percentiles.

Reported per class (development / production / batch): TTFT p50/p95 (streamed classes;
batch is not streamed), latency p95 (arrival to last byte), goodput (completion tokens/s of
requests that met the class's SLO, over the class's time to finish: development TTFT <= 2 s,
production TTFT <= 3 s, batch done within 600 s), time to finish (trace start to the class's
last completion), energy and cost per 1k completion tokens, errors. Energy and cost are
computed from the seed's figures, the same way for every router: a node draws its full
power (m4 30 W, ryzen 525 W, xeon 260 W) while it generates at least one request (from its
first token minus its ttft, or for a whole answer from its end minus ttft + tokens / speed,
to its end), shared equally among the requests running at that moment; cost is that
energy at $0.12/kWh plus the node's capital (m4 $2500, ryzen $900, xeon $1200) amortised
over 3 years for the same busy seconds. Idle power and idle capital are not counted.

Run (after `cargo build --release -p switchyard-cli -p switchyard-agent --bins`):

    python3 tests/bench/routing.py              # everything: both traces, 50 % and 85 %
    python3 tests/bench/routing.py --quick      # a smoke run: 30 requests, 85 % only
    python3 tests/bench/routing.py --routers seed-rules,nginx --traces mixed --loads 0.85
    python3 tests/bench/routing.py --median target/bench-routing/*/results.json   # medians of runs

It installs what is missing into `target/bench-peers/` (venvs for `litellm[proxy]==1.108.7`
and `vllm-router==0.1.17`) and Debian's `nginx-light` with apt-get; a peer that cannot be
installed or started is reported and skipped. It copies the binaries (`--bin-dir`, default
`target/release`) and `policies/` into a temporary folder first, so a rebuild or an edit
during the run changes nothing. Results: Markdown tables on stdout, and
`target/bench-routing/<date>/` (results.json, one JSONL of requests per run, logs). Every
process it starts is stopped by its PID at the end; all traffic stays on 127.0.0.1.
"""

import argparse
import asyncio
import datetime
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRACES = os.path.join(REPO, "tests", "bench", "traces")
PEERS = os.path.join(REPO, "target", "bench-peers")
MODEL = "qwen25-coder-7b"
SEED = 20261201
CLASSES = ("development", "production", "batch")
SHORT = {"development": "dev", "production": "prod", "batch": "batch"}
# SLO of each class, in simulated seconds: (what is measured, bound).
SLO = {"development": ("ttft", 2.0), "production": ("ttft", 3.0), "batch": ("latency", 600.0)}
ENERGY_PRICE = 0.12  # $/kWh
AMORTISE_S = 3 * 365 * 86400

# The seed machines as the simulator plays them (agent/src/driver/simulated.rs) and as the
# seed document prices them.
NODES = {
    "m4": {"slots": 1, "max_tokens": 2048, "speed": 18.0, "ttft": 0.35, "prefill": 380.0, "watts": 30.0, "capital": 2500.0, "role": "development"},
    "ryzen": {"slots": 4, "max_tokens": 4096, "speed": 45.0, "ttft": 0.12, "prefill": 4200.0, "watts": 525.0, "capital": 900.0, "role": "production"},
    "xeon": {"slots": 2, "max_tokens": 2048, "speed": 22.0, "ttft": 0.20, "prefill": 3300.0, "watts": 260.0, "capital": 1200.0, "role": "batch"},
}
PEER_ROUTERS = ("nginx", "litellm", "vllm-router")
PEER_LABEL = {
    "nginx": "nginx round robin",
    "litellm": "LiteLLM least-busy",
    "vllm-router": "vllm-router (cache_aware)",
}


def git(*args):
    r = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- traces


def capacity_rps(mean_tokens, speeds, mean_new_prompt=0.0):
    """Requests/s the cluster completes with every slot busy, for this mean length (and, for
    the agents trace, this mean of prompt tokens no cache can hold: each session's own first
    turn and each turn's growth, prefilled at the node's speed)."""
    return sum(n["slots"] / (n["ttft"] + mean_new_prompt / n["prefill"] + mean_tokens / speeds[name])
               for name, n in NODES.items())


SEED_SPEEDS = {name: n["speed"] for name, n in NODES.items()}


def gen_mixed(seed, count=120):
    rng = random.Random(seed)
    classes = ["development"] * round(count * 0.4) + ["production"] * round(count * 0.3)
    classes += ["batch"] * (count - len(classes))
    rng.shuffle(classes)
    requests = []
    for i, cls in enumerate(classes):
        if cls == "development":
            prompt, tokens, stream, priority = rng.randint(80, 1200), rng.randint(32, 256), True, 5
        elif cls == "production":
            prompt, tokens, stream, priority = rng.randint(200, 2500), rng.randint(128, 512), True, 7
        else:
            prompt, tokens, stream, priority = rng.randint(1000, 6000), rng.randint(768, 2048), False, 2
        requests.append({"id": f"mixed-{i:04d}", "class": cls, "task": cls, "model": MODEL, "prompt_tokens": prompt,
                         "max_tokens": tokens, "stream": stream, "priority": priority, "session": None})
    rate = capacity_rps(statistics.mean(r["max_tokens"] for r in requests), SEED_SPEEDS)
    at = 0.0
    for r in requests:
        at += rng.expovariate(rate)
        r["at"] = round(at, 3)
    return requests


def gen_sessions(seed, sessions=16):
    rng = random.Random(seed + 1)
    kinds = ["development"] * round(sessions * 4 / 7)
    kinds += ["production"] * (sessions - len(kinds))
    rng.shuffle(kinds)
    turns = []
    for s, cls in enumerate(kinds):
        context = rng.randint(2000, 16000)
        offset = 0.0
        for t in range(rng.randint(3, 7)):
            tokens = rng.randint(32, 256) if cls == "development" else rng.randint(128, 512)
            if t:
                offset += rng.expovariate(1 / 20.0)
                context += rng.randint(50, 400)
            turns.append({"session": f"s{s:03d}", "class": cls, "task": cls, "model": MODEL,
                          "prompt_tokens": min(context, 30000), "max_tokens": tokens, "stream": True,
                          "priority": 5 if cls == "development" else 7, "offset": offset})
            context += tokens
    batch = [{"session": None, "class": "batch", "task": "batch", "model": MODEL, "prompt_tokens": rng.randint(8000, 24000),
              "max_tokens": rng.randint(256, 1024), "stream": False, "priority": 2}
             for _ in range(round(len(turns) * 0.3 / 0.7))]
    everything = turns + batch
    rate = capacity_rps(statistics.mean(r["max_tokens"] for r in everything), SEED_SPEEDS)
    span = len(everything) / rate
    starts = {}
    at = 0.0
    for s in range(sessions):  # session starts: Poisson, spread over the span less a session's length
        at += rng.expovariate(sessions / (span * 0.75))
        starts[f"s{s:03d}"] = at
    at = 0.0
    for b in batch:
        at += rng.expovariate(len(batch) / span)
        b["at"] = round(at, 3)
    for t in turns:
        t["at"] = round(starts[t["session"]] + t.pop("offset"), 3)
    everything.sort(key=lambda r: (r["at"], r["session"] or ""))
    for i, r in enumerate(everything):
        r["id"] = f"sessions-{i:04d}"
    return [{k: r[k] for k in ("id", "at", "class", "task", "model", "prompt_tokens", "max_tokens", "stream",
                               "priority", "session")} for r in everything]


def gen_agents(seed, sessions=10):
    """Claude-Code-like coding sessions: every prompt starts with the same 15-20k-token system
    prompt and tool list, then the session's history, growing 0.8-2k tokens a turn; half the
    sessions spawn a sub-agent (its own history after the same system prompt) for 2-3 turns.
    They send only Claude Code's headers (`x-claude-code-session-id`, and the parent's id for
    a sub-agent), no Switchyard hint. Beside them, batch jobs as in `mixed` (30 %)."""
    rng = random.Random(seed + 2)
    system = rng.randint(15000, 20000)
    turns = []
    for s in range(sessions):
        name = f"cc{s:03d}"
        history, offset = rng.randint(300, 1500), 0.0
        for t in range(rng.randint(5, 7)):
            max_tokens = rng.randint(64, 384)
            if t:
                offset += rng.expovariate(1 / 12.0)
                history += rng.randint(800, 2000)
            prompt = min(system + history, 32768 - max_tokens - 512)
            turns.append({"session": name, "parent": None, "class": "development", "task": None, "model": MODEL,
                          "prompt_tokens": prompt, "system_tokens": system, "max_tokens": max_tokens,
                          "stream": True, "priority": 5, "offset": offset})
            history += max_tokens
            if t == 2 and rng.random() < 0.5:
                sub, sub_history, sub_offset = f"{name}-sub", rng.randint(200, 800), offset
                for _ in range(rng.randint(2, 3)):
                    sub_offset += rng.expovariate(1 / 6.0)
                    sub_tokens = rng.randint(64, 256)
                    turns.append({"session": sub, "parent": name, "class": "development", "task": None, "model": MODEL,
                                  "prompt_tokens": system + sub_history, "system_tokens": system,
                                  "max_tokens": sub_tokens, "stream": True, "priority": 5, "offset": sub_offset})
                    sub_history += sub_tokens + rng.randint(300, 900)
    batch = [{"session": None, "parent": None, "class": "batch", "task": "batch", "model": MODEL,
              "prompt_tokens": rng.randint(768, 2048), "system_tokens": 0, "max_tokens": rng.randint(256, 1024),
              "stream": False, "priority": 2} for _ in range(round(len(turns) * 0.3 / 0.7))]
    everything = turns + batch
    rate = capacity_rps(statistics.mean(r["max_tokens"] for r in everything), SEED_SPEEDS, agents_new_prompt(everything))
    span = len(everything) / rate
    starts, at = {}, 0.0
    for s in range(sessions):
        at += rng.expovariate(sessions / (span * 0.6))
        starts[f"cc{s:03d}"] = at
    at = 0.0
    for b in batch:
        at += rng.expovariate(len(batch) / span)
        b["at"] = round(at, 3)
    for t in turns:
        t["at"] = round(starts[t["parent"] or t["session"]] + t.pop("offset"), 3)
    everything.sort(key=lambda r: (r["at"], r["session"] or ""))
    for i, r in enumerate(everything):
        r["id"] = f"agents-{i:04d}"
    return [{k: r[k] for k in ("id", "at", "class", "task", "model", "prompt_tokens", "system_tokens", "max_tokens",
                               "stream", "priority", "session", "parent")} for r in everything]


def agents_new_prompt(requests):
    """The mean of prompt tokens no cache can hold: a session's first prompt less the shared
    system prompt (after the first session), each later turn's growth; batch prompts whole."""
    seen, new, last = False, [], {}
    for r in sorted(requests, key=lambda r: r.get("offset", r.get("at", 0))):
        if r["class"] == "batch":
            new.append(r["prompt_tokens"])
            continue
        before = last.get(r["session"])
        if before is None:
            new.append(r["prompt_tokens"] - (r["system_tokens"] if seen else 0))
            seen = True
        else:
            new.append(max(0, r["prompt_tokens"] - before))
        last[r["session"]] = r["prompt_tokens"]
    return statistics.mean(new)


GENERATORS = {"mixed": gen_mixed, "sessions": gen_sessions, "agents": gen_agents}


def trace_text(requests):
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in requests)


def load_trace(name, regen):
    path = os.path.join(TRACES, f"{name}.jsonl")
    fresh = trace_text(GENERATORS[name](SEED))
    if regen or not os.path.exists(path):
        os.makedirs(TRACES, exist_ok=True)
        with open(path, "w") as f:
            f.write(fresh)
        log(f"wrote {os.path.relpath(path, REPO)} from seed {SEED}")
    with open(path) as f:
        text = f.read()
    if text != fresh:
        log(f"note: {os.path.relpath(path, REPO)} differs from what seed {SEED} generates; replaying the file")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


WORDS = ("route token batch queue model node policy latency stream cache tensor prompt reply switch yard "
         "signal rail engine carriage depot function return struct impl async await error result option "
         "vector buffer socket thread mutex channel").split()


def text_of(seed_key, chars):
    """Deterministic filler text of `chars` characters (about chars / 4 tokens)."""
    rng = random.Random(seed_key)
    parts, size = [], 0
    while size < chars:
        word = WORDS[rng.randrange(len(WORDS))]
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)[:chars]


class Bodies:
    """Request bodies: a session's turns extend one text, so each prompt prefixes the next."""

    def __init__(self):
        self.sessions = {}

    def body(self, r):
        chars = r["prompt_tokens"] * 4
        if r.get("system_tokens"):
            # A coding agent: the shared system prompt, then the session's own history.
            system = text_of("agents-system", r["system_tokens"] * 4)
            own = chars - len(system)
            base = self.sessions.get(r["session"])
            if base is None:
                base = text_of(r["session"], 32768 * 4)
                self.sessions[r["session"]] = base
            body = {"model": r["model"], "max_tokens": r["max_tokens"], "stream": r["stream"],
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": base[:own]}]}
            if r["stream"]:
                body["stream_options"] = {"include_usage": True}
            return json.dumps(body).encode()
        if r["session"]:
            base = self.sessions.get(r["session"])
            if base is None or len(base) < chars:
                base = text_of(f"{r['session']}", max(chars, 30000 * 4))
                self.sessions[r["session"]] = base
            text = base[:chars]
        else:
            text = text_of(r["id"], chars)
        body = {"model": r["model"], "max_tokens": r["max_tokens"], "stream": r["stream"],
                "messages": [{"role": "user", "content": text}]}
        return json.dumps(body).encode()


def headers_of(r):
    if r.get("system_tokens"):
        # Only what Claude Code sends.
        h = {"x-claude-code-session-id": r["session"]}
        if r.get("parent"):
            h["x-claude-code-parent-agent-id"] = r["parent"]
        return h
    h = {"x-switchyard-task": r["task"], "x-switchyard-priority": str(r["priority"])}
    if r["session"]:
        h["x-switchyard-session"] = r["session"]
    return h


# ---------------------------------------------------------------- processes


class Procs:
    """Every process this script starts, stopped by PID (and its own children by theirs)."""

    def __init__(self):
        self.running = []

    def start(self, args, log_path, env=None, cwd=None):
        out = open(log_path, "wb")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        out.close()
        self.running.append(p)
        return p

    @staticmethod
    def children(pid):
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
        return kids

    def descendants(self, pid):
        found, todo = [], [pid]
        while todo and len(found) < 256:
            kids = self.children(todo.pop())
            found += kids
            todo += kids
        return found

    def stop(self, p, grace=10.0):
        if p not in self.running:
            return
        self.running.remove(p)
        if p.poll() is not None:
            return
        kids = self.descendants(p.pid)
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        for kid in kids:  # whatever it started and left behind
            try:
                os.kill(kid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop_all(self):
        for p in list(reversed(self.running)):
            self.stop(p)


def cpu_seconds(pids):
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def free_port():
    # Only for peers that cannot report a port they bound themselves (nginx, LiteLLM,
    # vllm-router); Switchyard's processes bind 127.0.0.1:0 and print their address.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout, interval=0.05, proc=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, urllib.error.URLError):
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(interval)
    tail = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
    raise RuntimeError(f"{what}: not ready within {timeout:.0f} s{' (the process exited)' if proc is not None and proc.poll() is not None else ''}\n{tail}")


def grep_file(path, pattern):
    try:
        with open(path, errors="replace") as f:
            m = re.search(pattern, f.read())
        return m.group(1) if m else None
    except OSError:
        return None


def http_get(url, headers=None, timeout=2.0):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def http_post(url, body, headers=None, timeout=30.0):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- the cluster


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.work = tempfile.mkdtemp(prefix="switchyard-routing-")
        self.bin = os.path.join(self.work, "bin")
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.ts = args.time_scale
        self.runs = 0

    def setup(self):
        os.makedirs(self.bin)
        for exe in ("switchyard", "switchyard-agent"):
            src = os.path.join(self.args.bin_dir, exe)
            if not os.access(src, os.X_OK):
                raise SystemExit(f"{src} is missing: cargo build --release -p switchyard-cli -p switchyard-agent --bins")
            shutil.copy2(src, os.path.join(self.bin, exe))
        shutil.copytree(self.args.policies, os.path.join(self.work, "policies"))
        certs = os.path.join(self.work, "certs")
        self.sy("certs", "init", "--dir", certs)
        for node in NODES:
            self.sy("certs", "issue", "--dir", certs, "--node", node)
        with open(os.path.join(self.work, "admin.token"), "w") as f:
            f.write(os.urandom(16).hex())
        self.admin_token = open(os.path.join(self.work, "admin.token")).read().strip()

    def sy(self, *args):
        subprocess.run([os.path.join(self.bin, "switchyard"), *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)

    def policies(self):
        """Every policy file in the copied policies/ folder: (name, file)."""
        found = []
        folder = os.path.join(self.work, "policies")
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".toml"):
                continue
            try:
                with open(os.path.join(folder, entry), "rb") as f:
                    name = tomllib.load(f).get("name")
            except (OSError, tomllib.TOMLDecodeError) as e:
                log(f"skipping policies/{entry}: {e}")
                continue
            if name:
                found.append((name, entry))
        return found

    def agent_config(self, node, link):
        n = NODES[node]
        text = (f'node = "{node}"\nmax_concurrency = {n["slots"]}\nmax_tokens = {n["max_tokens"]}\n'
                f'telemetry_interval_ms = {max(100, round(1000 * self.ts))}\n'
                f'[labels]\nrole = "{n["role"]}"\nsimulated = "true"\n'
                f'[runtime]\nkind = "simulated"\nprofile = "{node}"\ntime_scale = {self.ts}\n'
                f'[[models]]\nlogical = "{MODEL}"\nlocal = "{MODEL}"\ncontext_length = 32768\n')
        if link:
            bundle = os.path.join(self.work, "certs", "nodes", node)
            text += (f'[controller]\naddress = "{link}"\nserver_name = "localhost"\n'
                     f'ca = "{bundle}/ca.pem"\ncert = "{bundle}/node.pem"\nkey = "{bundle}/node.key"\n')
        path = os.path.join(self.run_dir, f"{node}.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_agents(self, link=None):
        """The three simulated agents; returns {node: (process, http://addr)}."""
        agents = {}
        for node in NODES:
            log_path = os.path.join(self.run_dir, f"agent-{node}.log")
            p = self.procs.start([os.path.join(self.bin, "switchyard-agent"), "run", "--listen", "127.0.0.1:0",
                                  "--config", self.agent_config(node, link)], log_path, env={"SWITCHYARD_LOG": os.environ.get("ROUTING_BENCH_LOG", "warn")})
            addr = wait_until(f"agent {node}", lambda: grep_file(log_path, r"listening on (http://[0-9.:]+)"), 30,
                              proc=p, log_path=log_path)
            agents[node] = (p, addr)
        for node, (p, addr) in agents.items():
            wait_until(f"agent {node} /health", lambda: http_get(addr + "/health")[0] == 200, 30, proc=p)
        return agents

    def start_controller(self, policy):
        config = os.path.join(self.run_dir, "controller.toml")
        big = 3_600_000
        with open(config, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\n[admin]\ntoken_file = "{self.work}/admin.token"\n'
                    f'[agents]\nlisten = "127.0.0.1:0"\nca = "{self.work}/certs/ca.pem"\n'
                    f'cert = "{self.work}/certs/controller.pem"\nkey = "{self.work}/certs/controller.key"\n'
                    f'[policy]\ndir = "{self.work}/policies"\nactive = "{policy}"\nwatch = false\n'
                    f'[limits]\nqueue_capacity = 4096\nqueue_timeout_ms = {big}\nfirst_byte_timeout_ms = {big}\n'
                    f'total_timeout_ms = {big}\n')
        log_path = os.path.join(self.run_dir, "controller.log")
        p = self.procs.start([os.path.join(self.bin, "switchyard"), "serve", "--config", config], log_path,
                             env={"SWITCHYARD_LOG": os.environ.get("ROUTING_BENCH_LOG", "warn")})
        url = wait_until("controller", lambda: grep_file(log_path, r"switchyard listening on (http://[0-9.:]+)"), 30,
                         proc=p, log_path=log_path)
        link = wait_until("controller agents endpoint", lambda: grep_file(log_path, r"agents link to ([0-9.:]+)"), 10,
                          proc=p, log_path=log_path)
        return p, url, link

    def admin(self, url, path):
        status, body = http_get(url + "/admin/" + path, {"Authorization": f"Bearer {self.admin_token}"})
        return json.loads(body) if status == 200 else None

    # ---- calibration

    def calibrate(self):
        """The simulated nodes' real speed at this time_scale (whole slots busy at once)."""
        self.run_dir = os.path.join(self.out, "calibration")
        os.makedirs(self.run_dir, exist_ok=True)
        agents = self.start_agents()
        tokens = 300
        body = json.dumps({"model": MODEL, "max_tokens": tokens, "stream": False,
                           "messages": [{"role": "user", "content": "calibrate"}]}).encode()

        results = []

        def one(node, addr):
            t = time.monotonic()
            status, _ = http_post(addr + "/v1/chat/completions", body, None, 120)
            results.append((node, (status, time.monotonic() - t)))

        threads = [threading.Thread(target=one, args=(node, addr)) for node, (_, addr) in agents.items()
                   for _ in range(NODES[node]["slots"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        speeds = {}
        for node, (status, real) in results:
            if status != 200:
                raise RuntimeError(f"calibration request to {node} answered {status}")
            sim = real / self.ts
            speeds.setdefault(node, []).append((tokens - 1) / max(sim - NODES[node]["ttft"], 1e-3))
        for p, _ in agents.values():
            self.procs.stop(p)
        self.speeds = {node: statistics.median(v) for node, v in speeds.items()}
        log("effective speeds at time_scale %g: %s (seed: %s)" % (
            self.ts, ", ".join(f"{n} {s:.1f}" for n, s in self.speeds.items()),
            ", ".join(f"{n} {s:.0f}" for n, s in SEED_SPEEDS.items())))
        return self.speeds

    # ---- peers

    def ensure_nginx(self):
        if shutil.which("nginx"):
            return shutil.which("nginx")
        log("installing nginx-light with apt-get")
        r = subprocess.run(["apt-get", "install", "-y", "nginx-light"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not shutil.which("nginx"):
            raise RuntimeError(f"apt-get install -y nginx-light failed: {r.stderr.strip()[-400:]}")
        return shutil.which("nginx")

    def ensure_venv(self, name, requirement, exe):
        path = os.path.join(PEERS, name, "bin", exe)
        if os.access(path, os.X_OK):
            return path
        log(f"installing {requirement} into target/bench-peers/{name}")
        venv = os.path.join(PEERS, name)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", requirement], capture_output=True,
                           text=True, timeout=1800)
        if r.returncode != 0 or not os.access(path, os.X_OK):
            raise RuntimeError(f"pip install {requirement} failed: {(r.stderr or r.stdout).strip()[-600:]}")
        return path

    def start_nginx(self, agents):
        nginx = self.ensure_nginx()
        port = free_port()
        upstream = "".join(f"    server {addr.removeprefix('http://')};\n" for _, addr in agents.values())
        conf = os.path.join(self.run_dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
pid {self.run_dir}/nginx.pid;
error_log {self.run_dir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.run_dir}/nginx-body;
  proxy_temp_path {self.run_dir}/nginx-proxy;
  upstream agents {{
{upstream}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 16m;
    location / {{
      proxy_pass http://agents;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
  }}
}}
""")
        log_path = os.path.join(self.run_dir, "nginx.log")
        p = self.procs.start([nginx, "-c", conf, "-p", self.run_dir, "-g", "daemon off;"], log_path)
        url = f"http://127.0.0.1:{port}"
        wait_until("nginx", lambda: http_get(url + "/health")[0] == 200, 20, proc=p, log_path=log_path)
        return p, url, {}

    def start_litellm(self, agents):
        exe = self.ensure_venv("litellm", "litellm[proxy]==1.108.7", "litellm")
        port = free_port()
        key = "sk-bench-" + os.urandom(16).hex()
        conf = os.path.join(self.run_dir, "litellm.yaml")
        with open(conf, "w") as f:
            f.write("model_list:\n")
            for node, (_, addr) in agents.items():
                f.write(f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                        f"      api_base: {addr}/v1\n      api_key: none\n      timeout: 3600\n"
                        f"    model_info:\n      id: {node}\n")
            f.write("router_settings:\n  routing_strategy: least-busy\n  num_retries: 0\n  timeout: 3600\n"
                    "litellm_settings:\n  telemetry: false\n  request_timeout: 3600\n  set_verbose: false\n"
                    f"general_settings:\n  master_key: {key}\n")
        log_path = os.path.join(self.run_dir, "litellm.log")
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
               "NO_DOCS": "True", "DISABLE_ADMIN_UI": "True"}
        p = self.procs.start([exe, "--config", conf, "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                             log_path, env=env)
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        wait_until("litellm", lambda: http_get(url + "/v1/models", auth)[0] == 200, 180, interval=0.5, proc=p,
                   log_path=log_path)
        return p, url, auth

    def start_vllm_router(self, agents):
        exe = self.ensure_venv("vllm-router", "vllm-router==0.1.17", "vllm-router")
        port = free_port()
        log_path = os.path.join(self.run_dir, "vllm-router.log")
        p = self.procs.start([exe, "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
                              *[addr for _, addr in agents.values()], "--log-level", "warning",
                              "--worker-startup-check-interval", "1", "--request-timeout-secs", "3600"], log_path)
        url = f"http://127.0.0.1:{port}"
        wait_until("vllm-router", lambda: http_get(url + "/health")[0] == 200, 120, interval=0.2, proc=p,
                   log_path=log_path)
        return p, url, {}

    # ---- one run

    def run(self, router, trace_name, trace, load, cap_rate):
        """Replay `trace` at `load` through `router`; returns the run's records and facts."""
        self.runs += 1
        label = router if router in PEER_ROUTERS else f"switchyard:{router}"
        self.run_dir = os.path.join(self.out, f"{trace_name}-{int(load * 100)}-{label.replace(':', '-')}")
        os.makedirs(self.run_dir, exist_ok=True)
        started = []
        try:
            if router in PEER_ROUTERS:
                agents = self.start_agents()
                started += [p for p, _ in agents.values()]
                start = {"nginx": self.start_nginx, "litellm": self.start_litellm,
                         "vllm-router": self.start_vllm_router}[router]
                p, url, extra = start(agents)
                started.append(p)
                router_pids = [p.pid] + self.procs.descendants(p.pid)
                policy_id = None
            else:
                p, url, link = self.start_controller(router)
                started.append(p)
                agents = self.start_agents(link)
                started += [a for a, _ in agents.values()]
                wait_until("agents linked", lambda: len([n for n in (self.admin(url, "nodes") or {}).get(
                    "snapshot", {}).get("nodes", []) if n.get("healthy")]) == len(NODES), 30, proc=p)
                view = self.admin(url, "policies") or {}
                policy_id = view.get("active")
                if isinstance(policy_id, dict):
                    policy_id = policy_id.get("id")
                if not policy_id or not str(policy_id).startswith(router + "@"):
                    raise RuntimeError(f"the controller's active policy is {policy_id!r}, not {router}")
                router_pids = [p.pid]
                extra = {}
            agent_pids = [a.pid for a, _ in agents.values()]
            # Offsets are at 100 % of the seed's capacity; stretch to `load` of what the
            # simulated nodes deliver.
            stretch = cap_rate / load
            cpu0 = cpu_seconds(router_pids), cpu_seconds(agent_pids)
            load0 = os.getloadavg()[0]
            records, wall = asyncio.run(replay(url, extra, trace, stretch, self.ts, self.args.cap))
            cpu1 = cpu_seconds(router_pids), cpu_seconds(agent_pids)
        finally:
            for proc in reversed(started):
                self.procs.stop(proc)
        with open(os.path.join(self.run_dir, "requests.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        return {"router": router, "label": PEER_LABEL.get(router, f"switchyard {router}"), "policy_id": policy_id,
                "trace": trace_name, "load": load, "stretch": stretch, "wall_s": wall,
                "router_cpu_s": cpu1[0] - cpu0[0], "agents_cpu_s": cpu1[1] - cpu0[1],
                "loadavg": [load0, os.getloadavg()[0]], "records": records}


# ---------------------------------------------------------------- the load generator


async def read_head(reader):
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a status line")
    status = int(status_line.split()[1])
    headers = {}
    for _ in range(200):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def body_chunks(reader, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("connection closed inside the body")
            remaining -= len(data)
            yield data
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


NODE_RE = re.compile(r"\[simulated ([a-z0-9-]+)\]")


async def send(base, extra, r, body, t0, ts, rec):
    """One request; fills `rec` with times in real seconds since t0, status and outcome."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = [f"POST /v1/chat/completions HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in {**headers_of(r), **extra}.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        rec["sent"] = time.monotonic() - t0
        status, headers = await read_head(reader)
        rec["status"] = status
        rec["reason"] = headers.get("x-switchyard-reason", "")[:300] or None
        rec["via"] = headers.get("x-switchyard-node")
        if status != 200 or not r["stream"]:
            data = b"".join([c async for c in body_chunks(reader, headers)])
            rec["end"] = time.monotonic() - t0
            if status != 200:
                rec["error"] = f"HTTP {status}: {data[:200].decode(errors='replace')}"
                return
            reply = json.loads(data)
            note_usage(rec, reply.get("usage"))
            content = reply["choices"][0]["message"]["content"] or ""
            m = NODE_RE.search(content[:64])
            rec["node"] = m.group(1) if m else None
            rec["tokens"] = (reply.get("usage") or {}).get("completion_tokens") or r["max_tokens"]
            rec["ok"] = True
            return
        buffer, done, events = b"", False, 0
        async for chunk in body_chunks(reader, headers):
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    obj = json.loads(payload)
                    if "error" in obj:
                        rec["error"] = "stream error: " + json.dumps(obj["error"])[:200]
                        continue
                    if obj.get("usage"):
                        rec["tokens"] = obj["usage"].get("completion_tokens")
                        note_usage(rec, obj["usage"])
                    for choice in obj.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            events += 1
                            if "first" not in rec:
                                rec["first"] = time.monotonic() - t0
                                m = NODE_RE.search(content)
                                rec["node"] = m.group(1) if m else None
        rec["end"] = time.monotonic() - t0
        rec.setdefault("tokens", events)
        if not rec.get("tokens"):
            rec["tokens"] = events
        if done and "error" not in rec and "first" in rec:
            rec["ok"] = True
        elif "error" not in rec:
            rec["error"] = "stream ended without data: [DONE]" if not done else "no tokens"
    finally:
        writer.close()


def note_usage(rec, usage):
    """The prompt and its cached part, as the runtime reported them."""
    if usage and usage.get("prompt_tokens") is not None:
        rec["prompt"] = usage["prompt_tokens"]
        rec["cached"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0


async def replay(base, extra, trace, stretch, ts, cap):
    """Replay the trace; returns (records, wall seconds). Times in records: simulated s."""
    bodies = Bodies()
    prepared = [(r, bodies.body(r)) for r in trace]
    last = max(r["at"] for r in trace) * stretch
    t0 = time.monotonic() + 0.2
    records, tasks = [], []

    async def one(r, body, rec):
        try:
            await send(base, extra, r, body, t0, ts, rec)
        except Exception as e:  # any failure is a failed request, never a crashed run
            rec["error"] = f"{type(e).__name__}: {e}"[:200]
            rec["end"] = time.monotonic() - t0

    for r, body in prepared:
        at = r["at"] * stretch * ts
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = {"id": r["id"], "class": r["class"], "stream": r["stream"], "max_tokens": r["max_tokens"],
               "session": r["session"], "at": at}
        records.append(rec)
        tasks.append(asyncio.create_task(one(r, body, rec)))
    deadline = t0 + (last + cap) * ts
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    wall = time.monotonic() - t0
    for rec in records:
        if not rec.get("ok") and "error" not in rec:
            rec["error"] = "unfinished at the cap"
        for k in ("at", "sent", "first", "end"):
            if rec.get(k) is not None:
                rec[k] = round(rec[k] / ts, 4)
    return records, wall


# ---------------------------------------------------------------- metrics


def pct(values, q):
    """Nearest-rank percentile; math.inf entries are requests that never finished."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def busy_intervals(records, speeds):
    """Per node, each ok request's generating interval (start, end, record index)."""
    by_node = {}
    for i, r in enumerate(records):
        if not r.get("ok") or r.get("node") not in NODES:
            continue
        n = NODES[r["node"]]
        if r.get("first") is not None:
            start = r["first"] - n["ttft"]
        else:
            start = r["end"] - n["ttft"] - max(r["tokens"] - 1, 0) / speeds[r["node"]]
        by_node.setdefault(r["node"], []).append((max(start, r["at"]), r["end"], i))
    return by_node


def attribute(records, speeds):
    """Energy (Wh) and cost ($) per record: each node's power and amortised capital over its
    busy time, shared equally among the requests running at each moment."""
    energy = [0.0] * len(records)
    cost = [0.0] * len(records)
    busy = {}
    for node, spans in busy_intervals(records, speeds).items():
        n = NODES[node]
        rate_cost = n["watts"] / 1000 * ENERGY_PRICE / 3600 + n["capital"] / AMORTISE_S  # $ per busy second
        points = sorted({p for s, e, _ in spans for p in (s, e)})
        total = 0.0
        for a, b in zip(points, points[1:]):
            running = [i for s, e, i in spans if s <= a and e >= b]
            if not running:
                continue
            total += b - a
            for i in running:
                energy[i] += n["watts"] * (b - a) / 3600 / len(running)
                cost[i] += rate_cost * (b - a) / len(running)
        busy[node] = total
    return energy, cost, busy


def summarise(run, speeds):
    records = run["records"]
    energy, cost, busy = attribute(records, speeds)
    out = {"classes": {}, "busy_s": busy}
    for cls in CLASSES:
        idx = [i for i, r in enumerate(records) if r["class"] == cls]
        if not idx:
            continue
        rs = [records[i] for i in idx]
        ok = [r for r in rs if r.get("ok")]
        ttft = [r["first"] - r["at"] if r.get("ok") and r.get("first") is not None else math.inf
                for r in rs if r["stream"]]
        latency = [r["end"] - r["at"] if r.get("ok") else math.inf for r in rs]
        kind, bound = SLO[cls]
        good = sum(r["tokens"] for r in ok
                   if (r["end"] - r["at"] if kind == "latency" else (r.get("first") or r["end"]) - r["at"]) <= bound)
        unfinished = any(r.get("error", "").startswith("unfinished") for r in rs)
        finish = math.inf if unfinished else max((r["end"] for r in rs if r.get("end") is not None), default=None)
        tokens = sum(r["tokens"] for r in ok)
        errors = {}
        for r in rs:
            if not r.get("ok"):
                key = r.get("error", "?")
                key = "unfinished" if key.startswith("unfinished") else key[:80]
                errors[key] = errors.get(key, 0) + 1
        nodes = {}
        for r in ok:
            nodes[r.get("node") or "?"] = nodes.get(r.get("node") or "?", 0) + 1
        window = max((r["end"] for r in ok), default=0)
        out["classes"][cls] = {
            "requests": len(rs), "ok": len(ok), "tokens": tokens,
            "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "latency_p50": pct(latency, 50), "latency_p95": pct(latency, 95),
            "goodput": good / window if window else 0.0, "slo_met": good / max(1, sum(r["max_tokens"] for r in rs)),
            "finish": finish, "wh_per_1k": sum(energy[i] for i in idx) / tokens * 1000 if tokens else None,
            "usd_per_1k": sum(cost[i] for i in idx) / tokens * 1000 if tokens else None,
            "errors": sum(errors.values()), "error_kinds": errors, "nodes": nodes,
        }
    tokens = sum(r["tokens"] for r in records if r.get("ok"))
    out["wh_per_1k"] = sum(energy) / tokens * 1000 if tokens else None
    out["usd_per_1k"] = sum(cost) / tokens * 1000 if tokens else None
    out["errors"] = sum(1 for r in records if not r.get("ok"))
    out["finish"] = max((c["finish"] for c in out["classes"].values() if c["finish"] is not None), default=None)
    out["sim_span"] = max(r["at"] for r in records)
    # Prefix-cache hits as the runtimes reported them, and how often a session's turn went to
    # another node than its previous turn (each such move re-pays a cold prefill).
    reported = [r for r in records if r.get("ok") and r.get("prompt")]
    prompt = sum(r["prompt"] for r in reported)
    out["prefix_hit"] = sum(r["cached"] for r in reported) / prompt if prompt else None
    last, moves, turns = {}, 0, 0
    for r in sorted((r for r in records if r.get("session") and r.get("ok")), key=lambda r: r["at"]):
        if r["session"] in last:
            turns += 1
            moves += last[r["session"]] != r.get("node")
        last[r["session"]] = r.get("node")
    out["session_moves"] = [moves, turns]
    return out


def fmt_s(v):
    if v is None:
        return "-"
    if v == math.inf:
        return "∞"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def table(results, trace, load):
    rows = [r for r in results if r["trace"] == trace and r["load"] == load]
    lines = [
        "| router | dev TTFT p50 / p95 | dev latency p95 | dev goodput | prod TTFT p50 / p95 | prod latency p95 "
        "| prod goodput | batch latency p95 | batch goodput | finish dev / prod / batch | Wh per 1k tok dev / prod / batch / all "
        "| m$ per 1k tok dev / prod / batch / all | errors | served by m4 / ryzen / xeon | router CPU (of a core) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["summary"]
        c = s["classes"]

        def g(cls, key):
            return (c.get(cls) or {}).get(key)

        served = {n: sum((c[cls]["nodes"].get(n, 0)) for cls in c) for n in NODES}
        errors = s["errors"]
        kinds = {}
        for cls in c:
            for k, v in c[cls]["error_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        err = str(errors) + (" (" + "; ".join(f"{v} {k}" for k, v in kinds.items()) + ")" if kinds else "")
        cpu = f"{r['router_cpu_s'] / r['wall_s'] * 100:.0f} %"
        wh = " / ".join("-" if g(cls, "wh_per_1k") is None else f"{g(cls, 'wh_per_1k'):.2f}" for cls in CLASSES)
        wh += " / " + ("-" if s["wh_per_1k"] is None else f"{s['wh_per_1k']:.2f}")
        usd = " / ".join("-" if g(cls, "usd_per_1k") is None else f"{g(cls, 'usd_per_1k') * 1000:.2f}" for cls in CLASSES)
        usd += " / " + ("-" if s["usd_per_1k"] is None else f"{s['usd_per_1k'] * 1000:.2f}")
        lines.append(
            f"| {r['label']} | {fmt_s(g('development', 'ttft_p50'))} / {fmt_s(g('development', 'ttft_p95'))} "
            f"| {fmt_s(g('development', 'latency_p95'))} | {g('development', 'goodput') or 0:.1f} "
            f"| {fmt_s(g('production', 'ttft_p50'))} / {fmt_s(g('production', 'ttft_p95'))} "
            f"| {fmt_s(g('production', 'latency_p95'))} | {g('production', 'goodput') or 0:.1f} "
            f"| {fmt_s(g('batch', 'latency_p95'))} | {g('batch', 'goodput') or 0:.1f} "
            f"| {' / '.join(fmt_s(g(cls, 'finish')) for cls in CLASSES)} | {wh} | {usd} | {err} "
            f"| {' / '.join(str(served[n]) for n in NODES)} | {cpu} |")
    return "\n".join(lines)


def verdicts(results, load=0.85):
    """The issue's targets at 85 % load, per trace and shipped policy: development TTFT p95 at
    least 30 % below seed-rules' and at least 5x below LiteLLM least-busy's, with batch
    goodput no lower than seed-rules'."""
    out = []
    for trace in dict.fromkeys(r["trace"] for r in results):
        rows = {r["router"]: r for r in results if r["trace"] == trace and r["load"] == load}
        seed, lite = rows.get("seed-rules"), rows.get("litellm")
        if not seed:
            continue

        def dev95(r):
            return r["summary"]["classes"]["development"]["ttft_p95"]

        def batch_goodput(r):
            return r["summary"]["classes"]["batch"]["goodput"]

        out += [f"Targets, {trace} at {int(load * 100)} % (seed-rules: dev TTFT p95 {fmt_s(dev95(seed))} s, batch goodput "
                f"{batch_goodput(seed):.1f} tok/s" + (f"; LiteLLM least-busy dev TTFT p95 {fmt_s(dev95(lite))} s)" if lite else ")"),
                "", "| policy | dev TTFT p95 | vs seed-rules (target <= -30 %) | vs LiteLLM (target >= 5x lower) "
                "| batch goodput vs seed-rules (target >= 1.00x) | all three |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            if name in PEER_ROUTERS or name == "seed-rules":
                continue
            d, ds = dev95(r), dev95(seed)
            below = (1 - d / ds) * 100 if ds not in (0, math.inf) and d != math.inf else None
            a = d <= 0.7 * ds and d != math.inf
            ratio = (dev95(lite) / d if d else math.inf) if lite else None
            b = bool(lite) and d * 5 <= dev95(lite)
            g = batch_goodput(r) / batch_goodput(seed) if batch_goodput(seed) else math.inf
            c = batch_goodput(r) >= batch_goodput(seed)
            out.append(f"| {name} | {fmt_s(d)} s | {'-' if below is None else f'{-below:+.0f} %'} {'met' if a else 'not met'} "
                       f"| {'-' if ratio is None else f'{ratio:.1f}x'} {'met' if b else 'not met'} "
                       f"| {g:.2f}x {'met' if c else 'not met'} | {'**met**' if a and b and c else 'not met'} |")
        out.append("")
    return "\n".join(out)


def agents_table(results):
    """The agents trace: first tokens, batch goodput, the runtimes' prefix-cache hit rate and
    how often a session's turn moved to another node, per router; and issue #21's targets at
    85 %: the best shipped policy's development TTFT p95 at most 1/3 of seed-rules' and 1/2 of
    vllm-router cache_aware's, with batch goodput no lower than seed-rules'."""
    out = []
    for load in dict.fromkeys(r["load"] for r in results if r["trace"] == "agents"):
        rows = [r for r in results if r["trace"] == "agents" and r["load"] == load]
        out += [f"### agents, {int(load * 100)} % of capacity: caches", "",
                "| router | dev TTFT p50 / p95 | batch goodput | prefix-cache hit (runtimes' own counts) "
                "| session turns moved to another node | errors |", "|---|---|---|---|---|---|"]
        for r in rows:
            s = r["summary"]
            dev, batch = s["classes"]["development"], s["classes"].get("batch") or {}
            hit = "-" if s.get("prefix_hit") is None else f"{s['prefix_hit'] * 100:.0f} %"
            moved, turns = s.get("session_moves", [0, 0])
            out.append(f"| {r['label']} | {fmt_s(dev['ttft_p50'])} / {fmt_s(dev['ttft_p95'])} "
                       f"| {batch.get('goodput') or 0:.1f} | {hit} | {moved} of {turns} | {s['errors']} |")
        by = {r["router"]: r for r in rows}
        seed, vllm = by.get("seed-rules"), by.get("vllm-router")
        if load == 0.85 and seed:
            def dev95(r):
                return r["summary"]["classes"]["development"]["ttft_p95"]

            def goodput(r):
                return (r["summary"]["classes"].get("batch") or {}).get("goodput") or 0

            out += ["", "| policy | dev TTFT p95 | <= 1/3 of seed-rules' | <= 1/2 of vllm-router's | batch goodput "
                    ">= seed-rules' | all three |", "|---|---|---|---|---|---|"]
            for name, r in by.items():
                if name in PEER_ROUTERS or name == "seed-rules":
                    continue
                d = dev95(r)
                a = d != math.inf and d * 3 <= dev95(seed)
                b = bool(vllm) and d != math.inf and d * 2 <= dev95(vllm)
                c = goodput(r) >= goodput(seed)
                ratio_seed = f"{d / dev95(seed):.2f}x" if dev95(seed) not in (0, math.inf) and d != math.inf else "-"
                ratio_vllm = (f"{d / dev95(vllm):.2f}x" if vllm and dev95(vllm) not in (0, math.inf) and d != math.inf
                              else "-")
                g = f"{goodput(r) / goodput(seed):.2f}x" if goodput(seed) else "-"
                out.append(f"| {name} | {fmt_s(d)} | {ratio_seed} {'met' if a else 'not met'} "
                           f"| {ratio_vllm} {'met' if b else 'not met'} | {g} {'met' if c else 'not met'} "
                           f"| {'**met**' if a and b and c else 'not met'} |")
        out.append("")
    return "\n".join(out)


def medians(paths, load=0.85):
    """The median over several runs' results.json files (a single run's p95 of ~48 requests
    moves by several seconds between runs) of each router's headline figures, and the
    issue's targets judged on those medians."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs += [r for r in json.load(f)["runs"] if r["load"] == load]
    inf = math.inf

    def figure(r, cls, key):
        v = r["summary"]["classes"][cls][key]
        return inf if v is None else v

    out = [f"Medians over {len(paths)} result files at {int(load * 100)} % of capacity (runs per router in brackets)"]
    for trace in dict.fromkeys(r["trace"] for r in runs):
        groups = {}
        for r in runs:
            if r["trace"] == trace:
                groups.setdefault(r["router"], []).append(r)
        med = {name: {
            "n": len(rs),
            "dev95": statistics.median(figure(r, "development", "ttft_p95") for r in rs),
            "dev95_all": sorted(figure(r, "development", "ttft_p95") for r in rs),
            "prod95": statistics.median(figure(r, "production", "ttft_p95") for r in rs),
            "batch_lat95": statistics.median(figure(r, "batch", "latency_p95") for r in rs),
            "batch_goodput": statistics.median(r["summary"]["classes"]["batch"]["goodput"] or 0 for r in rs),
            "finish": statistics.median(inf if r["summary"]["finish"] is None else r["summary"]["finish"] for r in rs),
            "errors": statistics.median(r["summary"]["errors"] for r in rs),
        } for name, rs in groups.items()}
        seed, lite = med.get("seed-rules"), med.get("litellm")
        out += ["", f"### {trace}", "",
                "| router | dev TTFT p95, median (each run) | prod TTFT p95 | batch latency p95 | batch goodput (tok/s) "
                "| finish | errors | vs seed-rules dev p95 (target <= -30 %) | vs LiteLLM (target >= 5x) "
                "| batch goodput vs seed-rules (>= 1.00x) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in med.items():
            label = next(r["label"] for r in runs if r["router"] == name)
            vs_seed = vs_lite = vs_goodput = "-"
            if seed and name not in PEER_ROUTERS and name != "seed-rules":
                d, ds = m["dev95"], seed["dev95"]
                if ds not in (0, inf) and d != inf:
                    vs_seed = f"{(d / ds - 1) * 100:+.0f} % {'met' if d <= 0.7 * ds else 'not met'}"
                g = m["batch_goodput"] / seed["batch_goodput"] if seed["batch_goodput"] else inf
                vs_goodput = f"{g:.2f}x {'met' if g >= 1.0 else 'not met'}"
                if lite and m["dev95"]:
                    ratio = lite["dev95"] / m["dev95"]
                    vs_lite = f"{ratio:.1f}x {'met' if ratio >= 5 else 'not met'}"
            each = ", ".join(fmt_s(v) for v in m["dev95_all"])
            out.append(f"| {label} [{m['n']}] | {fmt_s(m['dev95'])} ({each}) | {fmt_s(m['prod95'])} "
                       f"| {fmt_s(m['batch_lat95'])} | {m['batch_goodput']:.1f} | {fmt_s(m['finish'])} | {m['errors']:.0f} "
                       f"| {vs_seed} | {vs_lite} | {vs_goodput} |")
    return "\n".join(out)


def render(meta, results):
    speeds = meta["speeds"]
    report = [f"{meta['date']}, commit {meta.get('commit')}; time_scale {meta['time_scale']}, cap {meta['cap']:.0f} s; "
              "effective speeds (tok/s) " + ", ".join(f"{n} {speeds[n]:.1f} (seed {SEED_SPEEDS[n]:.0f})" for n in NODES)]
    for name, t in meta["traces"].items():
        report.append(f"{name}: {t['requests']} requests {t['classes']}, mean {t['mean_tokens']:.0f} completion tokens, "
                      f"capacity {t['capacity_seed_rps']:.3f} req/s (seed speeds) / {t['capacity_effective_rps']:.3f} "
                      f"(as simulated)")
    loads = list(dict.fromkeys(r["load"] for r in results))
    for name in meta["traces"]:
        for load in loads:
            report += ["", f"### {name}, {int(load * 100)} % of capacity", "", table(results, name, load)]
    report += ["", verdicts([r for r in results if r["trace"] != "agents"])]
    if any(r["trace"] == "agents" for r in results):
        report += ["", agents_table(results)]
    if meta.get("skipped"):
        report += ["", "Skipped: " + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in meta["skipped"].items())]
    if meta.get("wall_s"):
        report.append(f"\nwall time {meta['wall_s'] / 60:.1f} min")
    return "\n".join(report)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 requests per trace, 85 %% only, short cap")
    parser.add_argument("--traces", default="mixed,sessions,agents")
    parser.add_argument("--loads", default=None, help="comma-separated fractions of capacity (default 0.5,0.85)")
    parser.add_argument("--routers", default=None,
                        help="policy names and nginx, litellm, vllm-router (default: every policy in policies/ and all three)")
    parser.add_argument("--time-scale", type=float, default=0.05, help="real seconds per simulated second (default 0.05)")
    parser.add_argument("--cap", type=float, default=None,
                        help="simulated seconds after the last arrival before open requests count as unfinished (default 300)")
    parser.add_argument("--bin-dir", default=os.path.join(REPO, "target", "release"),
                        help="where switchyard and switchyard-agent are (default target/release)")
    parser.add_argument("--policies", default=os.path.join(REPO, "policies"),
                        help="the policy folder to measure every policy of (default policies/)")
    parser.add_argument("--out", default=None, help="results folder (default target/bench-routing/<date-time>)")
    parser.add_argument("--regen-traces", action="store_true", help="rewrite tests/bench/traces/ from the seed")
    parser.add_argument("--traces-only", action="store_true", help="write or check the traces and stop")
    parser.add_argument("--report", metavar="RESULTS_JSON", help="print the tables of an earlier run's results.json")
    parser.add_argument("--median", metavar="RESULTS_JSON", nargs="+",
                        help="print the medians over several runs' results.json files at 85 %% load, and the targets")
    args = parser.parse_args()
    if args.median:
        print(medians(args.median))
        return
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print(render(saved["meta"], saved["runs"]))
        return
    args.cap = args.cap if args.cap is not None else (120.0 if args.quick else 300.0)
    loads = [float(x) for x in (args.loads or ("0.85" if args.quick else "0.5,0.85")).split(",")]
    args.out = os.path.abspath(args.out or os.path.join(REPO, "target", "bench-routing", time.strftime("%Y%m%d-%H%M%S")))
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.policies = os.path.abspath(args.policies)

    traces = {name: load_trace(name, args.regen_traces) for name in args.traces.split(",")}
    if args.traces_only:
        for name, trace in traces.items():
            counts = {cls: sum(1 for r in trace if r["class"] == cls) for cls in CLASSES}
            log(f"{name}: {len(trace)} requests {counts}, last arrival {trace[-1]['at']:.0f} s at 100 %")
        return
    full_traces = traces
    if args.quick:
        traces = {name: trace[:30] for name, trace in traces.items()}

    bench = Bench(args)
    results = []
    skipped = {}
    t_start = time.monotonic()
    try:
        bench.setup()
        policies = bench.policies()
        names = [n for n, _ in policies] + list(PEER_ROUTERS)
        if args.routers:
            wanted = args.routers.split(",")
            unknown = [w for w in wanted if w not in names]
            if unknown:
                raise SystemExit(f"unknown routers {unknown}; known: {names}")
            names = [n for n in names if n in wanted]
        log(f"routers: {', '.join(names)}; traces: {', '.join(traces)}; loads: {loads}; time_scale {args.time_scale}")
        speeds = bench.calibrate()
        meta = {"date": datetime.date.today().isoformat(), "time_scale": args.time_scale, "cap": args.cap,
                "commit": git("describe", "--always", "--dirty"), "dirty": git("status", "--short", "--untracked-files=no"),
                "bin_dir": args.bin_dir, "policy_dir": args.policies,
                "speeds": speeds, "seed_speeds": SEED_SPEEDS, "policies": policies, "traces": {}}
        for name, trace in traces.items():
            mean = statistics.mean(r["max_tokens"] for r in trace)
            mean_full = statistics.mean(r["max_tokens"] for r in full_traces[name])
            new = agents_new_prompt(full_traces[name]) if name == "agents" else 0.0
            cap_seed, cap_eff = capacity_rps(mean_full, SEED_SPEEDS, new), capacity_rps(mean_full, speeds, new)
            meta["traces"][name] = {"requests": len(trace), "mean_tokens": mean, "capacity_seed_rps": cap_seed,
                                    "capacity_effective_rps": cap_eff, "span_at_100": trace[-1]["at"],
                                    "classes": {cls: sum(1 for r in trace if r["class"] == cls) for cls in CLASSES}}
            log(f"{name}: {len(trace)} requests, mean {mean:.0f} tokens; capacity {cap_seed:.3f} req/s with the "
                f"seed's speeds, {cap_eff:.3f} as simulated")
        for name, trace in traces.items():
            ratio = meta["traces"][name]["capacity_seed_rps"] / meta["traces"][name]["capacity_effective_rps"]
            for load in loads:
                for router in names:
                    if router in skipped:
                        continue
                    log(f"run: {name} at {int(load * 100)} % through {router}")
                    try:
                        run = bench.run(router, name, trace, load, ratio)
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        first = str(e).splitlines()[0] if str(e) else type(e).__name__
                        log(f"{router} failed: {e}")
                        if router in PEER_ROUTERS or "active policy" in str(e) or "controller" in first:
                            skipped[router] = str(e)[:1000]
                        continue
                    run["summary"] = summarise(run, speeds)
                    s = run["summary"]["classes"]
                    def p95(cls, key):
                        return fmt_s((s.get(cls) or {}).get(key))
                    hit = run["summary"].get("prefix_hit")
                    log(f"  wall {run['wall_s']:.0f} s; dev TTFT p95 {p95('development', 'ttft_p95')}, "
                        f"prod TTFT p95 {p95('production', 'ttft_p95')}, batch latency p95 "
                        f"{p95('batch', 'latency_p95')}, finish {fmt_s(run['summary']['finish'])}, "
                        f"errors {run['summary']['errors']}, prefix hit "
                        f"{'-' if hit is None else f'{hit * 100:.0f} %'}, moves {run['summary']['session_moves']}")
                    results.append(run)
    finally:
        bench.procs.stop_all()
        shutil.rmtree(bench.work, ignore_errors=True)
    meta["skipped"] = skipped
    meta["wall_s"] = time.monotonic() - t_start
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "runs": [{k: v for k, v in r.items() if k != "records"} for r in results]}, f,
                  indent=1, default=lambda v: None if v == math.inf else v)
    text = render(meta, results)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
