#!/usr/bin/env python3
"""A chaos run: the seed's cluster under mixed load while its machines come and go.

What it does
------------
A controller (seed-rules, the decision record kept) and three simulated agents (the seed's
m4, ryzen and xeon, all serving qwen25-coder-7b, at time_scale 0.05) on loopback, as real
processes. Client threads send, until the run ends: OpenAI chats (streamed and whole),
Ollama chats (streamed and whole), Anthropic messages (streamed and whole), some with a
coding agent's session header, each tagged with its own id (`metadata.chaos`). Meanwhile,
one fault every few seconds, in turn: an agent killed (SIGKILL) and restarted, an agent
stopped (SIGSTOP) and continued, the laptop put to sleep and woken (`POST /power/sleep`),
the active policy swapped, a canary started and stopped, a node drained with a 1-s deadline
(its streams move) and undrained, bad input sent (malformed JSON, a 100 KB model name, a
wrong key, an unknown model), and every ninth fault the controller itself restarted
(SIGTERM, then started again on the same ports).

Checked at the end
------------------
- every request ended in a complete answer or an explicit error (an error status, an error
  event in its own framing, or a connection the client saw refused or broken): none silently
  truncated (a 200 stream that ends without its end marker or an error, a 200 whole answer
  that is not one);
- the decision record holds at most one record per request id, one for every request
  answered 200 (a request the controller was stopped under may have none: counted apart),
  and each record's outcome agrees with what the client saw (complete: 200; an error event:
  a 5xx);
- controller and agent memory (RSS) and open descriptors after warm-up and at the end.

Run (after `cargo build -p switchyard-cli -p switchyard-agent --bins`):
    python3 tests/bench/chaos.py [--minutes 5] [--clients 6]
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from routing import Procs, free_port, grep_file, http_post, wait_until  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEY = "chaos-prompt-key-0123456789"
NODES = ("m4", "ryzen", "xeon")
KINDS = ("openai-stream", "openai-whole", "ollama-stream", "ollama-whole", "anthropic-stream", "anthropic-whole")


class Cluster:
    """The controller and the agents, on fixed ports so that a restart keeps its address."""

    def __init__(self, args, work):
        self.args, self.work, self.procs = args, work, Procs()
        self.port, self.link_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = os.urandom(16).hex()
        self.controller = None
        self.agents = {}
        self.agent_ports = {node: free_port() for node in NODES}
        self.controller_runs = 0
        sy = self.bin("switchyard")
        subprocess.run([sy, "certs", "init", "--dir", self.path("certs")], check=True, stdout=subprocess.DEVNULL)
        for node in NODES:
            subprocess.run([sy, "certs", "issue", "--dir", self.path("certs"), "--node", node], check=True,
                           stdout=subprocess.DEVNULL)
        with open(self.path("admin.token"), "w") as f:
            f.write(self.token)
        with open(self.path("controller.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:{self.port}"\n[admin]\ntoken_file = "admin.token"\n'
                    f'[agents]\nlisten = "127.0.0.1:{self.link_port}"\nca = "certs/ca.pem"\n'
                    f'cert = "certs/controller.pem"\nkey = "certs/controller.key"\n'
                    f'[policy]\ndir = "{REPO}/policies"\nactive = "seed-rules"\nwatch = false\n'
                    f'[limits]\nfirst_byte_timeout_ms = 10000\ntotal_timeout_ms = 30000\n'
                    f'[decisions]\npath = "decisions.redb"\n'
                    f'[[api_keys]]\nname = "chaos"\nkey = "{KEY}"\n')
        for node in NODES:
            bundle = self.path("certs", "nodes", node)
            with open(self.path(f"{node}.toml"), "w") as f:
                f.write(f'node = "{node}"\nmax_concurrency = 2\nmax_tokens = 4096\ntelemetry_interval_ms = 200\n'
                        f'[runtime]\nkind = "simulated"\nprofile = "{node}"\ntime_scale = 0.05\n'
                        f'[[models]]\nlogical = "qwen25-coder-7b"\nlocal = "qwen25-coder-7b"\ncontext_length = 8192\n'
                        f'[controller]\naddress = "127.0.0.1:{self.link_port}"\nserver_name = "localhost"\n'
                        f'ca = "{bundle}/ca.pem"\ncert = "{bundle}/node.pem"\nkey = "{bundle}/node.key"\n')

    def bin(self, name):
        return os.path.join(self.args.bin_dir, name)

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def start_controller(self):
        self.controller_runs += 1
        log = self.path(f"controller-{self.controller_runs}.log")
        self.controller = self.procs.start([self.bin("switchyard"), "serve", "--config", self.path("controller.toml")],
                                           log, env={"SWITCHYARD_LOG": "warn,switchyard_controller::app=info"},
                                           cwd=self.work)
        wait_until("controller", lambda: grep_file(log, r"(switchyard listening on)"), 60, proc=self.controller)

    def stop_controller(self):
        self.procs.stop(self.controller, grace=20.0)

    def start_agent(self, node):
        self.agents[node] = self.procs.start(
            [self.bin("switchyard-agent"), "run", "--listen", f"127.0.0.1:{self.agent_ports[node]}",
             "--config", self.path(f"{node}.toml")], self.path(f"agent-{node}.log"), env={"SWITCHYARD_LOG": "warn"})

    def admin(self, method, path, body=None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return 0, str(e).encode()

    def healthy(self):
        status, body = self.admin("GET", "/admin/nodes")
        if status != 200:
            return set()
        return {n["name"] for n in json.loads(body)["snapshot"].get("nodes", []) if n.get("healthy")}


def request_of(kind, chaos_id, tokens, session):
    """Path, body and headers of one request of `kind`."""
    api, shape = kind.split("-")
    stream = shape == "stream"
    headers = {"Content-Type": "application/json"}
    messages = [{"role": "user", "content": f"chaos request {chaos_id}: tell me about switchyards"}]
    metadata = {"chaos": chaos_id}
    if api == "anthropic":
        headers.update({"x-api-key": KEY, "anthropic-version": "2023-06-01"})
        if session:
            headers["x-claude-code-session-id"] = session
        body = {"model": "qwen25-coder-7b", "max_tokens": tokens, "stream": stream, "messages": messages,
                "metadata": metadata}
        return "/v1/messages", body, headers
    headers["Authorization"] = f"Bearer {KEY}"
    if session:
        headers["x-switchyard-session"] = session
    if api == "ollama":
        body = {"model": "qwen25-coder-7b", "stream": stream, "messages": messages,
                "options": {"num_predict": tokens}, "metadata": metadata}
        return "/api/chat", body, headers
    body = {"model": "qwen25-coder-7b", "max_tokens": tokens, "stream": stream, "messages": messages,
            "metadata": metadata}
    return "/v1/chat/completions", body, headers


def classify(kind, status, text):
    """complete | error-status | error-event | truncated, from what the client received."""
    if status != 200:
        return "error-status"
    api, shape = kind.split("-")
    lines = [line for line in text.splitlines() if line.strip()]
    if shape == "whole":
        try:
            value = json.loads(text)
        except ValueError:
            return "truncated"
        if api == "openai":
            ok = isinstance(value.get("choices", [{}])[0].get("message", {}).get("content"), str)
        elif api == "ollama":
            ok = value.get("done") is True and "error" not in value
        else:
            ok = value.get("type") == "message" and isinstance(value.get("content"), list)
        return "complete" if ok else "truncated"
    if api == "ollama":
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                return "truncated"
        if events and events[-1].get("done") is True:
            return "complete"
        return "error-event" if any("error" in e for e in events) else "truncated"
    data = [line[6:] for line in lines if line.startswith("data: ")]
    if api == "openai":
        if data and data[-1] == "[DONE]" and not any('"error"' in d[:12] for d in data):
            return "complete"
        return "error-event" if any(d.startswith('{"error"') for d in data) else "truncated"
    types = []
    for d in data:
        try:
            types.append(json.loads(d).get("type"))
        except ValueError:
            return "truncated"
    if types and types[-1] == "message_stop" and "error" not in types:
        return "complete"
    return "error-event" if "error" in types else "truncated"


def send(url, kind, tokens, session):
    chaos_id = uuid.uuid4().hex[:16]
    path, body, headers = request_of(kind, chaos_id, tokens, session)
    result = {"id": chaos_id, "kind": kind, "status": 0, "outcome": "", "node": "", "continued": False}
    host, port = url[len("http://"):].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", path, body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        result["status"] = response.status
        result["node"] = response.getheader("x-switchyard-node") or ""
        try:
            text = response.read().decode(errors="replace")
        except (http.client.IncompleteRead, OSError) as e:
            # The body broke off and the client's HTTP framing says so: not silent.
            result["outcome"] = "broken-body"
            result["error"] = repr(e)[:200]
            return result
        result["outcome"] = classify(kind, response.status, text)
        result["continued"] = '"continued"' in text or bool(response.getheader("x-switchyard-continued-from"))
        if result["outcome"] == "truncated":
            result["text"] = text[-400:]
    except (ConnectionError, OSError, http.client.HTTPException) as e:
        result["outcome"] = "connection-error"
        result["error"] = repr(e)[:200]
    finally:
        connection.close()
    return result


def bad_input(url):
    """Requests that must be refused with a clear error, never served."""
    cases = [
        ("/v1/chat/completions", b'{"model": "qwen25-coder-7b", "messages": [', {"Authorization": f"Bearer {KEY}"}),
        ("/v1/chat/completions", json.dumps({"model": "m" * 100_000, "messages": []}).encode(),
         {"Authorization": f"Bearer {KEY}"}),
        ("/v1/chat/completions", json.dumps({"model": "qwen25-coder-7b", "messages": []}).encode(),
         {"Authorization": "Bearer not-a-key-0123456789"}),
        ("/api/chat", json.dumps({"model": "no-such-model", "messages": []}).encode(),
         {"Authorization": f"Bearer {KEY}"}),
    ]
    statuses = []
    for path, body, headers in cases:
        status, _ = http_post(url + path, body, headers, timeout=10)
        statuses.append(status)
    return statuses


def sample(pid):
    """RSS (MiB) and open descriptors of `pid`."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def faults(cluster, stop, log, interval, restarts):
    """One fault every `interval` seconds, in turn; the controller restarted every ninth
    (with `restarts`; otherwise an agent is killed in its place)."""
    plan = ["kill-agent", "swap-policy", "stop-agent", "bad-input", "sleep-laptop", "canary", "drain-deadline",
            "kill-agent", "restart-controller" if restarts else "kill-agent"]
    policies = ["least-loaded", "finish-time", "seed-rules"]
    turn = 0
    while not stop.wait(interval):
        fault = plan[turn % len(plan)]
        turn += 1
        at = time.monotonic()
        detail = ""
        if fault == "kill-agent":
            node = random.choice(NODES)
            cluster.agents[node].kill()
            cluster.agents[node].wait()
            cluster.procs.running.remove(cluster.agents[node])
            stop.wait(2)
            cluster.start_agent(node)
            detail = node
        elif fault == "stop-agent":
            node = random.choice(NODES)
            os.kill(cluster.agents[node].pid, signal.SIGSTOP)
            stop.wait(3)
            os.kill(cluster.agents[node].pid, signal.SIGCONT)
            detail = node
        elif fault == "sleep-laptop":
            port = cluster.agent_ports["m4"]
            http_post(f"http://127.0.0.1:{port}/power/sleep", b"{}", timeout=5)
            stop.wait(3)
            http_post(f"http://127.0.0.1:{port}/power/wake", b"{}", timeout=5)
        elif fault == "swap-policy":
            name = policies[turn % len(policies)]
            status, _ = cluster.admin("POST", f"/admin/policies/{name}/activate")
            detail = f"{name}: {status}"
        elif fault == "canary":
            status, _ = cluster.admin("POST", "/admin/canary", {"policy": "least-loaded", "percent": 30})
            stop.wait(3)
            stopped, _ = cluster.admin("DELETE", "/admin/canary")
            detail = f"start {status}, stop {stopped}"
        elif fault == "drain-deadline":
            node = random.choice(NODES)
            status, _ = cluster.admin("POST", f"/admin/nodes/{node}/drain", {"deadline_s": 1})
            stop.wait(3)
            undrained, _ = cluster.admin("POST", f"/admin/nodes/{node}/undrain")
            detail = f"{node}: {status}, undrain {undrained}"
        elif fault == "bad-input":
            statuses = bad_input(cluster.url)
            detail = ",".join(map(str, statuses))
            if any(s < 400 or s >= 500 for s in statuses):
                log.append({"fault": fault, "violation": f"bad input answered {statuses}"})
        elif fault == "restart-controller":
            cluster.stop_controller()
            cluster.start_controller()
        log.append({"fault": fault, "detail": detail, "took_s": round(time.monotonic() - at, 1)})


def client(cluster, stop, results, lock):
    rng = random.Random()
    sessions = [f"chaos-session-{i}" for i in range(4)]
    while not stop.is_set():
        kind = rng.choice(KINDS)
        result = send(cluster.url, kind, rng.randint(8, 48), rng.choice(sessions + [None, None]))
        result["at"] = time.monotonic()
        with lock:
            results.append(result)
        if result["outcome"] in ("connection-error", "error-status"):
            time.sleep(0.2)


def records_of(cluster):
    """Every record of the decision record: NDJSON export lines with a `record`."""
    status, body = cluster.admin("GET", "/admin/decisions/export?since=0")
    if status != 200:
        raise SystemExit(f"export failed: {status} {body[:200]!r}")
    records = []
    for line in body.decode().splitlines():
        value = json.loads(line)
        record = value.get("record") or (value if value.get("type") == "record" else None)
        if record:
            records.append(record)
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults")
    parser.add_argument("--no-controller-restart", action="store_true",
                        help="keep one controller process (to watch its memory over the whole run)")
    parser.add_argument("--bin-dir", default=os.path.join(REPO, "target", "debug"))
    args = parser.parse_args()
    if not 0 < args.minutes <= 30:
        raise SystemExit("--minutes must be more than 0 and at most 30")
    work = tempfile.mkdtemp(prefix="switchyard-chaos-")
    cluster = Cluster(args, work)
    results, lock, fault_log, samples = [], threading.Lock(), [], []
    try:
        cluster.start_controller()
        for node in NODES:
            cluster.start_agent(node)
        wait_until("agents", lambda: cluster.healthy() == set(NODES), 60)
        stop_load, stop_faults = threading.Event(), threading.Event()
        clients = [threading.Thread(target=client, args=(cluster, stop_load, results, lock)) for _ in range(args.clients)]
        for c in clients:
            c.start()
        chaos = threading.Thread(target=faults, args=(cluster, stop_faults, fault_log, args.fault_every,
                                                  not args.no_controller_restart))
        started = time.monotonic()
        chaos.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            row = {"t": round(time.monotonic() - started)}
            for name, proc in [("controller", cluster.controller)] + list(cluster.agents.items()):
                row[name] = sample(proc.pid)
            samples.append(row)
        stop_faults.set()
        chaos.join()
        stop_load.set()
        for c in clients:
            c.join()
        # Let the last records be written, then read them.
        time.sleep(2)
        records = records_of(cluster)
        report(args, results, records, fault_log, samples)
    finally:
        cluster.procs.stop_all()
        if os.environ.get("CHAOS_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(args, results, records, fault_log, samples):
    by_outcome = {}
    for r in results:
        by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + 1
    by_id = {}
    for record in records:
        tags = dict(tuple(t) for t in record.get("request", {}).get("tags", []))
        if "chaos" in tags:
            by_id.setdefault(tags["chaos"], []).append(record)
    violations = [f for f in fault_log if "violation" in f]
    missing, mismatched, twice = 0, 0, 0
    for r in results:
        found = by_id.get(r["id"], [])
        if len(found) > 1:
            twice += 1
        if r["status"] == 200 and not found:
            missing += 1
        for record in found:
            status = record["outcome"]["status"]
            if r["outcome"] == "complete" and status != 200:
                mismatched += 1
            if r["outcome"] == "error-event" and status < 500:
                mismatched += 1
    truncated = by_outcome.get("truncated", 0)
    continued = sum(1 for r in results if r["continued"])
    restarts = "no controller restart" if args.no_controller_restart else "the controller restarted every ninth fault"
    print(f"## Chaos run: {args.minutes:g} min, {args.clients} clients, a fault every {args.fault_every:g} s, {restarts}\n")
    print("| requests | complete | error status | error event | broken body | connection refused/reset | "
          "silently truncated | continued on another node |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(results)} | {by_outcome.get('complete', 0)} | {by_outcome.get('error-status', 0)} | "
          f"{by_outcome.get('error-event', 0)} | {by_outcome.get('broken-body', 0)} | "
          f"{by_outcome.get('connection-error', 0)} | {truncated} | {continued} |\n")
    counts = {}
    for f in fault_log:
        counts[f["fault"]] = counts.get(f["fault"], 0) + 1
    print("Faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    statuses = {}
    for r in results:
        if r["outcome"] == "error-status":
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print("Error statuses: " + (", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "none") + "\n")
    print("| invariant | violations |")
    print("|---|---|")
    print(f"| silently truncated answers | {truncated} |")
    print(f"| requests with more than one record | {twice} |")
    print(f"| 200 answers with no record | {missing} |")
    print(f"| records whose outcome disagrees with the client | {mismatched} |")
    print(f"| bad input not refused with a 4xx | {len(violations)} |\n")
    warm = next((s for s in samples if s["t"] >= 60), samples[0] if samples else None)
    last = samples[-1] if samples else None
    if warm and last:
        print("| process | RSS after warm-up (MiB) | RSS at end (MiB) | fds after warm-up | fds at end |")
        print("|---|---|---|---|---|")
        for name in ["controller"] + list(NODES):
            a, b = warm.get(name), last.get(name)
            if a and b:
                print(f"| {name} | {a[0]:.0f} | {b[0]:.0f} | {a[1]} | {b[1]} |")
        print("\n(the controller and killed agents restart during the run: their figures are those of the "
              "process running at each sample)")
        series = [f"{s['t']}s {s['controller'][0]:.0f}" for s in samples if s.get("controller")]
        print("\ncontroller RSS (MiB) over the run: " + ", ".join(series[::max(1, len(series) // 20)]))
    for r in results:
        if r["outcome"] == "truncated":
            print("TRUNCATED", json.dumps(r)[:600])
        if r["status"] == 200 and not by_id.get(r["id"]):
            print("NO RECORD", json.dumps(r)[:300])
    if truncated or twice or missing or mismatched or violations:
        sys.exit(1)


if __name__ == "__main__":
    main()
