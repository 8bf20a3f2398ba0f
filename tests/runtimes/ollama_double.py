#!/usr/bin/env python3
"""A test double of Ollama's REST API, backed by a real OpenAI-compatible LLM server.

Ollama's own server cannot be installed on the test machines, so this stands in for it.
Every token it returns comes from a real backend (the llama.cpp server that start.sh
launches), re-emitted in Ollama's wire format, so text, token counts and timings are real.

Usage:
  ollama_double.py --backend http://127.0.0.1:PORT --model NAME=BACKEND_MODEL [--model ...]
                   [--pullable NAME=BACKEND_MODEL ...] [--preloaded] [--gguf PATH]
                   [--port 0] [--version 0.12.6] [--quiet]

It binds 127.0.0.1:PORT (default 0: the kernel picks a free port), prints exactly one line
`url=http://127.0.0.1:PORT` on stdout, then serves until SIGTERM or SIGINT (exit status 0).

Reference: Ollama's docs/api.md (github.com/ollama/ollama, read at commit
01e52d24bc00defcd9bcc6d995b11df0f08bc6f1, and the older 9fbfa74219fa74d030c816cc99d3bee0d1c1923d),
with error strings and details taken from the server's server/routes.go where the docs say
nothing. Each handler below names the docs/api.md section it follows. Departures from a real
Ollama (all deliberate, for a test double):
  * `format`, `tools`, `images`, `suffix`, `template` and input `context` are accepted but do
    not change the generation (the backend is a plain OpenAI chat endpoint).
  * The final /api/generate object carries no `context` (docs: deprecated; optional).
  * /api/pull downloads nothing: it plays back the documented progress sequence for names
    given with --pullable, then lists the model in /api/tags.
  * `load_duration` is the double's own (tiny) bookkeeping time: the backend has the model
    loaded already, so there is no real load to time.
  * Counters: eval_count is the backend's usage.completion_tokens when its stream reports
    usage, else the number of streamed deltas (one per token on llama.cpp);
    prompt_eval_count is usage.prompt_tokens, else the backend's /extras/tokenize/count of
    the ChatML-rendered prompt (exact for ChatML models such as the tiny test model).
    prompt_eval_duration runs from sending the backend request to its first token (so it
    includes any wait in the backend's queue), eval_duration from that token to the end.
  * /_double/stats is NOT part of Ollama's API; it exists for tests only. So is --record FILE,
    which appends every POST body the double receives to FILE as one JSON line
    {"path": ..., "body": <the raw body as text>} before handling it.
  * The OpenAI-compatible endpoints (docs/openai.md: /v1/chat/completions, /v1/completions,
    /v1/embeddings) hand the body to the backend with only `model` mapped to the backend's
    name, and relay the backend's answer as it comes.
Python standard library only.
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The version this double claims. docs.ollama.com's "Get version" page (GET /api/version,
# OpenAPI VersionResponse) gives {"version": "0.12.6"} as its example; --version overrides.
DEFAULT_VERSION = "0.12.6"
DEFAULT_KEEP_ALIVE_S = 300.0  # docs/api.md: keep_alive "(default: `5m`)"
FOREVER = None                # expires_at for a negative keep_alive / --preloaded
EMBED_FALLBACK_DIM = 32       # length of the hash-derived fallback embedding


def now_rfc3339():
    """UTC time as Go's time.Now().UTC() marshals it (docs: "2023-08-04T19:22:45.499127Z")."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_rfc3339(dt):
    """A local time with its offset, as Ollama writes modified_at / expires_at."""
    return dt.astimezone().isoformat()


def canonical(name):
    """docs/api.md "Model names": `model:tag`, the tag defaults to `latest`; Ollama compares
    names case-insensitively."""
    name = (name or "").strip()
    if not name:
        return ""
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name.lower()


def display(name):
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DUR_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value):
    """keep_alive -> seconds (float), FOREVER (negative) or raises ValueError.

    Follows Ollama's api.Duration: a JSON number is seconds, a string is a Go duration
    ("5m", "1h30m", "0"); anything negative keeps the model loaded indefinitely. A bare
    number in a string ("300") is taken as seconds too (lenient)."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError("invalid keep_alive")
    if isinstance(value, (int, float)):
        return FOREVER if value < 0 else float(value)
    if isinstance(value, str):
        s = value.strip()
        neg = s.startswith("-")
        body = s.lstrip("+-")
        try:
            secs = float(body)
        except ValueError:
            pos, secs = 0, 0.0
            for m in _DUR_RE.finditer(body):
                if m.start() != pos:
                    break
                secs += float(m.group(1)) * _DUR_UNIT[m.group(2)]
                pos = m.end()
            if pos != len(body) or not body:
                raise ValueError(f'time: invalid duration "{value}"')
        return FOREVER if neg and secs > 0 else secs
    raise ValueError("invalid keep_alive")


# --------------------------------------------------------------------------------------
# Optional GGUF metadata (--gguf): lets /api/show, /api/tags and /api/ps report the real
# architecture, parameter count, file type and size of the file the backend serves.
# --------------------------------------------------------------------------------------
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
# llama.cpp's LLAMA_FTYPE values, as Ollama names them (quantization_level).
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
               10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
               15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def read_gguf(path):
    """Return (kv dict, parameter count) from a GGUF v2/v3 file's header."""
    with open(path, "rb") as f:
        def unpack(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(unpack("<Q")).decode("utf-8", "replace")

        def value(t):
            if t in _GGUF_SCALARS:
                return unpack(_GGUF_SCALARS[t])
            if t == 8:
                return string()
            if t == 9:
                et, n = unpack("<I"), unpack("<Q")
                return [value(et) for _ in range(n)]
            raise ValueError(f"unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = unpack("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = unpack("<Q"), unpack("<Q")
        kv = {}
        for _ in range(n_kv):
            key = string()
            kv[key] = value(unpack("<I"))
        params = 0
        for _ in range(n_tensors):
            string()
            dims = [unpack("<Q") for _ in range(unpack("<I"))]
            unpack("<I")
            unpack("<Q")
            params += math.prod(dims)
    return kv, params


def human_number(n):
    """Ollama's format.HumanNumber, used for details.parameter_size ("8.0B", "494.03M")."""
    for unit, div, whole, frac in (("B", 1e9, "%.0f", "%.1f"), ("M", 1e6, "%.0f", "%.2f")):
        if n >= div:
            x = n / div
            return (whole if x == math.floor(x) else frac) % x + unit
    if n >= 1e3:
        return "%.0fK" % (n / 1e3)
    return str(n)


# The Go-template form of ChatML, which is how `ollama show` prints a ChatML model's template.
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)


class ModelMeta:
    """What /api/tags, /api/ps and /api/show say about a model."""

    def __init__(self, gguf_path):
        self.path = gguf_path
        self.kv = {}
        self.params = 0
        self.size = 0
        if gguf_path:
            self.kv, self.params = read_gguf(gguf_path)
            self.size = os.path.getsize(gguf_path)
        arch = self.kv.get("general.architecture", "llama")
        self.family = arch
        self.parameter_size = human_number(self.params) if self.params else "unknown"
        ft = self.kv.get("general.file_type")
        self.quantization = _FILE_TYPES.get(ft, "unknown") if ft is not None else "unknown"
        self.context_length = self.kv.get(f"{arch}.context_length")
        chat_template = self.kv.get("tokenizer.chat_template", "")
        chatml = "<|im_start|>" in chat_template or not chat_template
        self.template = CHATML_GO_TEMPLATE if chatml else chat_template
        self.stops = ["<|im_start|>", "<|im_end|>"] if chatml else []

    def details(self):
        # docs/api.md "List Local Models" / "Show Model Information": the details object.
        return {"parent_model": "", "format": "gguf", "family": self.family,
                "families": [self.family], "parameter_size": self.parameter_size,
                "quantization_level": self.quantization}

    def model_info(self, verbose):
        # docs/api.md "Show Model Information": model_info is the GGUF key/values without
        # general.name and tokenizer.chat_template; arrays longer than 5 are [] unless verbose.
        info = {}
        for k, v in self.kv.items():
            if k in ("general.name", "tokenizer.chat_template"):
                continue
            if isinstance(v, list) and len(v) > 5 and not verbose:
                v = []
            info[k] = v
        if "general.architecture" not in info:
            info["general.architecture"] = self.family
        if self.params:
            info["general.parameter_count"] = self.params
        return info


# --------------------------------------------------------------------------------------
# State shared by all request threads.
# --------------------------------------------------------------------------------------
class Model:
    def __init__(self, name, backend_model, meta, modified_at):
        self.name = display(name)
        self.backend_model = backend_model
        self.meta = meta
        self.modified_at = modified_at
        self.digest = hashlib.sha256(
            f"{self.name}\0{backend_model}\0{meta.path}\0{meta.size}".encode()).hexdigest()


class State:
    def __init__(self, args):
        self.backend = args.backend.rstrip("/")
        self.backend_timeout = args.backend_timeout
        self.record = args.record
        self.lock = threading.Lock()
        self.meta = ModelMeta(args.gguf)
        self.models = {}     # canonical name -> Model
        self.pullable = {}   # canonical name -> backend model
        self.loaded = {}     # canonical name -> {"refs": int, "expires": datetime|None}
        start = datetime.now(timezone.utc)
        for spec in args.model:
            name, backend_model = spec
            self.models[canonical(name)] = Model(name, backend_model, self.meta, start)
        for name, backend_model in args.pullable:
            self.pullable[canonical(name)] = backend_model
        if args.preloaded:
            for key in self.models:
                self.loaded[key] = {"refs": 0, "expires": FOREVER}
        self.stats = {"requests": 0, "cancelled": 0, "in_flight": 0,
                      "backend_requests": 0, "by_endpoint": {}}
        # What the backend can do, learnt on first use (None: unknown yet).
        self.backend_stream_usage = None   # reports usage in streamed chunks
        self.backend_tokenize = None       # has llama-cpp-python's /extras/tokenize/count
        self.backend_embed = {}            # backend model -> bool
        self.active = set()                # BackendStream objects, aborted on shutdown

    def find(self, name):
        with self.lock:
            return self.models.get(canonical(name))

    # A model counts as loaded from its first chat/generate/embed request until keep_alive
    # runs out after its last one (Ollama starts the timer when the last request ends).
    def acquire(self, m):
        key = canonical(m.name)
        with self.lock:
            entry = self.loaded.setdefault(key, {"refs": 0, "expires": FOREVER})
            entry["refs"] += 1

    def release(self, m, keep_alive):
        key = canonical(m.name)
        with self.lock:
            entry = self.loaded.get(key)
            if entry is None:
                return
            entry["refs"] = max(0, entry["refs"] - 1)
            if entry["refs"] == 0:
                if keep_alive is FOREVER:
                    entry["expires"] = FOREVER
                elif keep_alive <= 0:
                    del self.loaded[key]
                else:
                    entry["expires"] = datetime.now(timezone.utc) + timedelta(seconds=keep_alive)

    def unload(self, m):
        with self.lock:
            entry = self.loaded.get(canonical(m.name))
            if entry is not None and entry["refs"] == 0:
                del self.loaded[canonical(m.name)]
            elif entry is not None:
                entry["expires"] = datetime.now(timezone.utc)  # goes once the last one ends

    def running(self):
        now = datetime.now(timezone.utc)
        out = []
        with self.lock:
            for key, entry in list(self.loaded.items()):
                m = self.models.get(key)
                if m is None:
                    del self.loaded[key]
                    continue
                if entry["refs"] == 0 and entry["expires"] is not FOREVER and entry["expires"] <= now:
                    del self.loaded[key]
                    continue
                out.append((m, entry["expires"]))
        return out

    def count(self, field, delta=1):
        with self.lock:
            self.stats[field] += delta


class BackendError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Cancelled(Exception):
    """The Ollama client went away; the backend request has been aborted."""


class BackendStream:
    """One streaming POST to the backend's OpenAI API, abortable from another thread."""

    def __init__(self, state, path, body):
        u = urllib.parse.urlsplit(state.backend)
        self.state = state
        self.path = (u.path.rstrip("/") + path) if u.path else path
        self.body = json.dumps(body).encode()
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80,
                                               timeout=state.backend_timeout)
        self.resp = None
        self.aborted = False
        self._lock = threading.Lock()

    def open(self):
        with self.state.lock:
            self.state.active.add(self)
        self.state.count("backend_requests")
        try:
            self.conn.connect()
            with self._lock:
                if self.aborted:
                    raise Cancelled()
            self.conn.request("POST", self.path, body=self.body, headers={
                "Content-Type": "application/json", "Accept": "text/event-stream"})
            self.resp = self.conn.getresponse()
        except OSError as e:
            if self.aborted:
                raise Cancelled() from e
            raise BackendError(502, f"backend unreachable: {e}") from e
        if self.resp.status != 200:
            raw = self.resp.read()
            raise BackendError(self.resp.status, backend_message(raw, self.resp.status))

    def events(self):
        """Yield each `data:` JSON object of the SSE stream until [DONE]."""
        while True:
            try:
                line = self.resp.readline()
            except (OSError, http.client.HTTPException, ValueError) as e:
                if self.aborted:
                    raise Cancelled() from e
                raise BackendError(502, f"backend stream broke: {e}") from e
            if not line:
                if self.aborted:
                    raise Cancelled()
                return
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                obj = json.loads(data)
            except ValueError:
                continue
            if isinstance(obj, dict) and "error" in obj:
                raise BackendError(500, backend_message(data, 500))
            yield obj

    def abort(self):
        """Close the backend connection under the reader's feet, so the backend sees its
        client disconnect and stops generating."""
        with self._lock:
            self.aborted = True
            sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        with self.state.lock:
            self.state.active.discard(self)
        try:
            self.conn.close()
        except OSError:
            pass


def backend_message(raw, status):
    try:
        obj = json.loads(raw)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        return str(err)
    except ValueError:
        return raw.decode("utf-8", "replace").strip() or f"backend returned HTTP {status}"


def backend_post_json(state, path, body, timeout=None):
    """A plain (non-streaming) JSON POST to the backend; returns (status, parsed body)."""
    req = urllib.request.Request(state.backend + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    state.count("backend_requests")
    try:
        with urllib.request.urlopen(req, timeout=timeout or state.backend_timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, backend_message(raw, e.code)


def count_tokens(state, text):
    """Prompt tokens via llama-cpp-python's /extras/tokenize/count when the backend has it;
    otherwise a rough estimate (4 characters a token)."""
    if state.backend_tokenize is not False:
        try:
            status, body = backend_post_json(state, "/extras/tokenize/count", {"input": text},
                                             timeout=30)
            if status == 200 and isinstance(body, dict) and isinstance(body.get("count"), int):
                state.backend_tokenize = True
                return body["count"]
            state.backend_tokenize = False
        except (OSError, ValueError):
            state.backend_tokenize = False
    return max(1, len(text) // 4)


def render_chatml(messages):
    """The prompt text the backend renders for these messages, for counting its tokens when
    the backend does not report usage while streaming. Exact for ChatML models (the tiny
    test model and Qwen-style models); an approximation for other templates."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


def backend_options(options):
    """Ollama `options` (docs/api.md "Generate request (With options)") -> OpenAI request
    fields the backend understands. num_predict <= 0 means "no limit" in Ollama."""
    out = {}
    if not isinstance(options, dict):
        return out
    n = options.get("num_predict")
    if isinstance(n, (int, float)) and not isinstance(n, bool) and n > 0:
        out["max_tokens"] = int(n)
    for key in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                "frequency_penalty", "repeat_penalty"):
        if options.get(key) is not None:
            out[key] = options[key]
    stop = options.get("stop")
    if isinstance(stop, str):
        out["stop"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop"] = [s for s in stop if isinstance(s, str)]
    return out


def hash_embedding(text, dim=EMBED_FALLBACK_DIM):
    """Deterministic stand-in embedding, used when the backend cannot embed (llama.cpp
    started without embedding=True answers /v1/embeddings with an error). Each text always
    maps to the same unit-length vector of `dim` floats derived from SHA-256 of the text, so
    tests get stable, distinct vectors; they carry no meaning."""
    out, counter = [], 0
    while len(out) < dim:
        block = hashlib.sha256(f"{counter}\0{text}".encode()).digest()
        for i in range(0, len(block), 4):
            out.append(int.from_bytes(block[i:i + 4], "little") / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    return normalize(out[:dim])


def normalize(vec):
    norm = math.sqrt(sum(v * v for v in vec)) or 1e-12
    return [v / max(norm, 1e-12) for v in vec]


# --------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked NDJSON streams, like Ollama
    server_version = "ollama-double"
    state: State = None
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("ollama_double: %s - %s\n" % (self.address_string(), fmt % args))

    # ---- plumbing -------------------------------------------------------------------
    def _route(self, method):
        self.t0 = time.monotonic_ns()
        path = urllib.parse.urlsplit(self.path).path
        routes = {
            ("GET", "/"): self.h_root, ("HEAD", "/"): self.h_root,
            ("GET", "/api/version"): self.h_version, ("HEAD", "/api/version"): self.h_version,
            ("POST", "/api/chat"): self.h_chat,
            ("POST", "/api/generate"): self.h_generate,
            ("POST", "/api/embed"): self.h_embed,
            ("POST", "/api/embeddings"): self.h_embeddings,
            ("GET", "/api/tags"): self.h_tags, ("HEAD", "/api/tags"): self.h_tags,
            ("GET", "/api/ps"): self.h_ps,
            ("POST", "/api/show"): self.h_show,
            ("POST", "/api/pull"): self.h_pull,
            ("POST", "/api/copy"): self.h_copy,
            ("DELETE", "/api/delete"): self.h_delete,
            ("GET", "/_double/stats"): self.h_stats,
            ("POST", "/v1/chat/completions"): self.h_openai,
            ("POST", "/v1/completions"): self.h_openai,
            ("POST", "/v1/embeddings"): self.h_openai,
        }
        handler = routes.get((method, path))
        counted = path.startswith("/api/") or path.startswith("/v1/")
        if counted:
            with self.state.lock:
                self.state.stats["requests"] += 1
                self.state.stats["in_flight"] += 1
                by = self.state.stats["by_endpoint"]
                by[path] = by.get(path, 0) + 1
        try:
            if handler is None:
                # gin's defaults: 405 when the path exists with another method, else 404.
                if any(p == path for (_, p) in routes):
                    self.send_text(405, "405 method not allowed")
                else:
                    self.send_text(404, "404 page not found")
                return
            handler()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if counted:
                self.state.count("in_flight", -1)

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def read_body(self):
        data = self.read_raw_body()
        if self.state.record:
            with self.state.lock, open(self.state.record, "a", encoding="utf-8") as f:
                path = urllib.parse.urlsplit(self.path).path
                f.write(json.dumps({"path": path, "body": data.decode("utf-8", "replace")}) + "\n")
        return data

    def read_raw_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def read_json(self):
        """Parse the JSON body like gin's ShouldBindJSON; on error answer 400, return None."""
        raw = self.read_body()
        if not raw.strip():
            self.send_json(400, {"error": "missing request body"})
            return None
        try:
            obj = json.loads(raw)
        except ValueError as e:
            self.send_json(400, {"error": f"invalid character in request body: {e}"})
            return None
        if not isinstance(obj, dict):
            self.send_json(400, {"error": "json: cannot unmarshal request body"})
            return None
        return obj

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_text(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_stream(self):
        # docs/api.md "Conventions / Streaming responses": a stream of JSON objects, one a
        # line (Ollama sends application/x-ndjson, chunked).
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def stream_line(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def h_openai(self):
        # docs/openai.md: OpenAI compatibility. The model is looked up like /api/chat's; the
        # rest of the body reaches the backend unchanged.
        path = urllib.parse.urlsplit(self.path).path
        obj = self.read_json()
        if obj is None:
            return
        name = obj.get("model") or ""
        m = self.state.find(name)
        if m is None:
            self.send_json(404, {"error": {"message": 'model "%s" not found, try pulling it first' % name,
                                           "type": "api_error", "param": None, "code": None}})
            return
        obj["model"] = m.backend_model
        u = urllib.parse.urlsplit(self.state.backend)
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=self.state.backend_timeout)
        try:
            conn.request("POST", u.path.rstrip("/") + path, body=json.dumps(obj).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            self.state.count("backend_requests")
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.end_stream()
        except OSError as e:
            self.send_json(502, {"error": {"message": f"backend unreachable: {e}", "type": "api_error"}})
        finally:
            conn.close()

    def unknown_model_for_inference(self, name):
        # Real Ollama (server/routes.go handleScheduleError) answers a chat/generate for a
        # model it does not have with 404 and `model %q not found, try pulling it first`.
        self.send_json(404, {"error": 'model "%s" not found, try pulling it first' % name})

    # ---- simple endpoints -------------------------------------------------------------
    def h_root(self):
        self.send_text(200, "Ollama is running")

    def h_version(self):
        # docs.ollama.com "Get version" (GET /api/version -> {"version": ...}); not in the
        # docs/api.md revisions read, but served by every Ollama since 0.1.x.
        self.send_json(200, {"version": self.server.ollama_version})

    def h_stats(self):
        # TEST-ONLY: not part of Ollama's API. requests = /api/* requests received,
        # in_flight = /api/* requests being handled now, cancelled = chat/generate requests
        # whose client went away before the end (the backend request was then closed),
        # backend_requests = HTTP requests this double sent to the backend.
        with self.state.lock:
            stats = json.loads(json.dumps(self.state.stats))
        self.send_json(200, stats)

    def h_tags(self):
        # docs/api.md "List Local Models" (GET /api/tags): {"models": [{name, model,
        # modified_at, size, digest, details{...}}]}, most recently modified first.
        with self.state.lock:
            models = sorted(self.state.models.values(), key=lambda m: m.modified_at, reverse=True)
        self.send_json(200, {"models": [{
            "name": m.name, "model": m.name, "modified_at": local_rfc3339(m.modified_at),
            "size": m.meta.size, "digest": m.digest, "details": m.meta.details(),
        } for m in models]})

    def h_ps(self):
        # docs/api.md "List Running Models" (GET /api/ps): name, model, size, digest,
        # details, expires_at, size_vram; longest remaining first. size_vram = size (as if
        # fully offloaded to a GPU). A negative keep_alive (or --preloaded) never expires;
        # it is reported ~292 years ahead, like Ollama's max duration.
        now = datetime.now(timezone.utc)
        out = []
        for m, expires in self.state.running():
            exp = expires if expires is not FOREVER else now + timedelta(days=292 * 365)
            entry = {"name": m.name, "model": m.name, "size": m.meta.size, "digest": m.digest,
                     "details": m.meta.details(), "expires_at": local_rfc3339(exp),
                     "size_vram": m.meta.size}
            if m.meta.context_length:
                entry["context_length"] = m.meta.context_length
            out.append((exp, entry))
        out.sort(key=lambda e: e[0], reverse=True)
        self.send_json(200, {"models": [e for _, e in out]})

    def h_show(self):
        # docs/api.md "Show Model Information" (POST /api/show {"model", "verbose"}):
        # modelfile, parameters, template, details, model_info (+ license, capabilities,
        # modified_at as the server sends). Unknown: 404 "model 'x' not found" (routes.go).
        req = self.read_json()
        if req is None:
            return
        name = req.get("model") or req.get("name")
        if not name:
            self.send_json(400, {"error": "model is required"})
            return
        m = self.state.find(name)
        if m is None:
            self.send_json(404, {"error": f"model '{name}' not found"})
            return
        meta = m.meta
        params = "\n".join("%-30s %s" % ("stop", json.dumps(s)) for s in meta.stops)
        modelfile = ('# Modelfile generated by "ollama show"\n'
                     "# To build a new Modelfile based on this, replace FROM with:\n"
                     f"# FROM {m.name}\n\n"
                     f"FROM {meta.path or m.backend_model}\n"
                     f'TEMPLATE """{meta.template}"""\n'
                     + "".join(f"PARAMETER stop {s}\n" for s in meta.stops))
        self.send_json(200, {
            "license": "", "modelfile": modelfile, "parameters": params,
            "template": meta.template, "details": meta.details(),
            "model_info": meta.model_info(bool(req.get("verbose"))),
            "capabilities": ["completion"], "modified_at": local_rfc3339(m.modified_at),
        })

    def h_copy(self):
        # docs/api.md "Copy a Model": 200, or 404 when the source does not exist.
        req = self.read_json()
        if req is None:
            return
        src, dst = req.get("source") or "", req.get("destination") or ""
        m = self.state.find(src)
        if m is None:
            self.send_json(404, {"error": f'model "{src}" not found'})
            return
        if not dst:
            self.send_json(400, {"error": f'destination "{dst}" is invalid'})
            return
        with self.state.lock:
            self.state.models[canonical(dst)] = Model(dst, m.backend_model, m.meta,
                                                      datetime.now(timezone.utc))
        self.send_json(200, {})

    def h_delete(self):
        # docs/api.md "Delete a Model": 200, or 404 when the model does not exist.
        req = self.read_json()
        if req is None:
            return
        name = req.get("model") or req.get("name") or ""
        with self.state.lock:
            m = self.state.models.pop(canonical(name), None)
            self.state.loaded.pop(canonical(name), None)
        if m is None:
            self.send_json(404, {"error": f"model '{name}' not found"})
        else:
            self.send_json(200, {})

    def h_pull(self):
        # docs/api.md "Pull a Model" (POST /api/pull {"model", "insecure", "stream"}):
        # "pulling manifest", several {"status": "downloading <digest>", digest, total,
        # completed}, "verifying sha256 digest", "writing manifest", "removing any unused
        # layers", "success"; with stream false only the last object. Names not given with
        # --pullable (nor already present) fail as Ollama does when the registry has no
        # such manifest: an {"error"} line after "pulling manifest" (HTTP 500 unstreamed).
        req = self.read_json()
        if req is None:
            return
        name = req.get("model") or req.get("name") or ""
        stream = req.get("stream") is not False
        key = canonical(name)
        if not key:
            self.send_json(400, {"error": "invalid model name"})
            return
        with self.state.lock:
            backend_model = self.state.pullable.get(key)
            existing = self.state.models.get(key)
        if backend_model is None and existing is not None:
            backend_model = existing.backend_model
        error = "pull model manifest: file does not exist"
        if not stream:
            if backend_model is None:
                self.send_json(500, {"error": error})
                return
            self._finish_pull(name, backend_model)
            self.send_json(200, {"status": "success"})
            return
        self.start_stream()
        self.stream_line({"status": "pulling manifest"})
        if backend_model is None:
            self.stream_line({"error": error})
            self.end_stream()
            return
        size = self.state.meta.size or 1 << 20
        digest = "sha256:" + hashlib.sha256(f"{key}\0{backend_model}".encode()).hexdigest()
        self.stream_line({"status": f"downloading {digest}", "digest": digest, "total": size})
        for i in range(1, 5):
            time.sleep(0.01)
            self.stream_line({"status": f"downloading {digest}", "digest": digest,
                              "total": size, "completed": size * i // 4})
        for status in ("verifying sha256 digest", "writing manifest",
                       "removing any unused layers"):
            self.stream_line({"status": status})
        self._finish_pull(name, backend_model)
        self.stream_line({"status": "success"})
        self.end_stream()

    def _finish_pull(self, name, backend_model):
        with self.state.lock:
            self.state.models[canonical(name)] = Model(name, backend_model, self.state.meta,
                                                       datetime.now(timezone.utc))

    # ---- embeddings -------------------------------------------------------------------
    def _embed_texts(self, m, texts):
        """Return (vectors, prompt token count). Uses the backend's /v1/embeddings when it
        works; otherwise hash_embedding() (see its docstring for why)."""
        st = self.state
        if texts and st.backend_embed.get(m.backend_model) is not False:
            try:
                status, body = backend_post_json(st, "/v1/embeddings",
                                                 {"model": m.backend_model, "input": texts})
            except (OSError, ValueError):
                status, body = 0, None
            if status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
                st.backend_embed[m.backend_model] = True
                data = sorted(body["data"], key=lambda d: d.get("index", 0))
                vecs = []
                for d in data:
                    e = d.get("embedding")
                    if e and isinstance(e[0], list):  # per-token embeddings: mean-pool
                        e = [sum(col) / len(e) for col in zip(*e)]
                    vecs.append(normalize([float(x) for x in e]))
                usage = body.get("usage") or {}
                return vecs, int(usage.get("prompt_tokens") or 0)
            st.backend_embed[m.backend_model] = False
        tokens = sum(count_tokens(st, t) for t in texts) if texts else 0
        return [hash_embedding(t) for t in texts], tokens

    def h_embed(self):
        # docs/api.md "Generate Embeddings" (POST /api/embed {"model", "input": str|[str],
        # "truncate", "options", "keep_alive"}) -> {"model", "embeddings": [[...]],
        # "total_duration", "load_duration", "prompt_eval_count"}.
        req = self.read_json()
        if req is None:
            return
        inp = req.get("input")
        if isinstance(inp, str):
            texts = [inp] if inp else []
        elif isinstance(inp, list) and all(isinstance(t, str) for t in inp):
            texts = inp
        elif inp is None:
            texts = []
        else:
            self.send_json(400, {"error": "invalid input type"})
            return
        name = req.get("model") or ""
        m = self.state.find(name)
        if m is None:
            self.send_json(404, {"error": f"model '{name}' not found"})
            return
        try:
            keep_alive = parse_keep_alive(req.get("keep_alive"))
        except ValueError as e:
            self.send_json(400, {"error": str(e)})
            return
        self.state.acquire(m)
        try:
            t_loaded = time.monotonic_ns()
            vecs, tokens = self._embed_texts(m, texts)
            dims = req.get("dimensions")
            if isinstance(dims, int) and 0 < dims:
                vecs = [normalize(v[:dims]) if dims < len(v) else v for v in vecs]
        finally:
            self.state.release(m, keep_alive)
        out = {"model": name, "embeddings": vecs}
        if texts:
            t_end = time.monotonic_ns()
            out.update(total_duration=t_end - self.t0, load_duration=max(1, t_loaded - self.t0),
                       prompt_eval_count=tokens)
        self.send_json(200, out)

    def h_embeddings(self):
        # docs/api.md "Generate Embedding" (legacy POST /api/embeddings {"model", "prompt"})
        # -> {"embedding": [...]}; superseded by /api/embed.
        req = self.read_json()
        if req is None:
            return
        name = req.get("model") or ""
        m = self.state.find(name)
        if m is None:
            self.unknown_model_for_inference(name)
            return
        prompt = req.get("prompt") or ""
        vecs, _ = self._embed_texts(m, [prompt]) if prompt else ([[]], 0)
        self.send_json(200, {"embedding": vecs[0]})

    # ---- chat / generate --------------------------------------------------------------
    def h_chat(self):
        # docs/api.md "Generate a chat completion" (POST /api/chat): model, messages,
        # options, stream (default true), keep_alive. Stream objects are
        # {"model","created_at","message":{"role":"assistant","content"},"done":false};
        # the final one adds done_reason and total_duration, load_duration,
        # prompt_eval_count, prompt_eval_duration, eval_count, eval_duration (ns).
        # Empty messages: "Load a model" / "Unload a model" (keep_alive 0).
        req = self.read_json()
        if req is None:
            return
        prep = self._prepare(req)
        if prep is None:
            return
        m, keep_alive, name = prep
        messages = req.get("messages") or []
        if not isinstance(messages, list):
            self.send_json(400, {"error": "messages must be a list"})
            return
        if not messages:
            self._load_or_unload(m, name, keep_alive,
                                 {"message": {"role": "assistant", "content": ""}})
            return
        msgs = [{"role": str(x.get("role") or "user"), "content": str(x.get("content") or "")}
                for x in messages if isinstance(x, dict)]
        body = {"model": m.backend_model, "messages": msgs}
        body.update(backend_options(req.get("options")))
        self._generate(req, m, name, keep_alive, "/v1/chat/completions", body,
                       render_chatml(msgs), chat=True)

    def h_generate(self):
        # docs/api.md "Generate a completion" (POST /api/generate): model, prompt, system,
        # raw, options, stream (default true), keep_alive. Stream objects carry `response`
        # instead of `message`; the final one has done_reason and the counters (no
        # `context`). Empty prompt: "Load a model" / "Unload a model" (keep_alive 0).
        req = self.read_json()
        if req is None:
            return
        prep = self._prepare(req)
        if prep is None:
            return
        m, keep_alive, name = prep
        prompt = req.get("prompt") or ""
        if not prompt:
            self._load_or_unload(m, name, keep_alive, {"response": ""})
            return
        opts = backend_options(req.get("options"))
        if req.get("raw"):
            # raw: no template, the prompt goes to the model as is (/v1/completions).
            if req.get("system") or req.get("template") or req.get("context"):
                self.send_json(400, {"error": "raw mode does not support template, system, or context"})
                return
            body = {"model": m.backend_model, "prompt": prompt, **opts}
            self._generate(req, m, name, keep_alive, "/v1/completions", body, prompt, chat=False)
            return
        msgs = ([{"role": "system", "content": str(req["system"])}] if req.get("system") else [])
        msgs.append({"role": "user", "content": str(prompt)})
        body = {"model": m.backend_model, "messages": msgs, **opts}
        self._generate(req, m, name, keep_alive, "/v1/chat/completions", body,
                       render_chatml(msgs), chat=False)

    def _prepare(self, req):
        name = req.get("model") or ""
        if not name:
            self.send_json(400, {"error": "model is required"})
            return None
        m = self.state.find(name)
        if m is None:
            self.unknown_model_for_inference(name)
            return None
        try:
            keep_alive = parse_keep_alive(req.get("keep_alive"))
        except ValueError as e:
            self.send_json(400, {"error": str(e)})
            return None
        return m, keep_alive, name

    def _load_or_unload(self, m, name, keep_alive, payload):
        out = {"model": name, "created_at": now_rfc3339(), **payload, "done": True}
        if keep_alive is not FOREVER and keep_alive == 0:
            self.state.unload(m)
            out["done_reason"] = "unload"
        else:
            self.state.acquire(m)
            self.state.release(m, keep_alive)
            out["done_reason"] = "load"
        self.send_json(200, out)

    def _watch_client(self, on_disconnect, stop):
        """Poll the client socket; when the client closes it, call on_disconnect()."""
        sock = self.connection

        def run():
            while not stop.is_set():
                try:
                    readable, _, _ = select.select([sock], [], [], 0.05)
                    if not readable:
                        continue
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        on_disconnect()
                    return  # EOF seen, or the client sent more (pipelining): stop watching
                except (OSError, ValueError):
                    on_disconnect()
                    return

        t = threading.Thread(target=run, name="client-watch", daemon=True)
        t.start()
        return t

    def _generate(self, req, m, name, keep_alive, path, body, prompt_text, chat):
        st = self.state
        stream = req.get("stream") is not False  # docs: streaming unless "stream": false
        body = dict(body, stream=True, stream_options={"include_usage": True})
        field = "message" if chat else "response"

        def piece(text):
            return {"role": "assistant", "content": text} if chat else text

        st.acquire(m)
        t_loaded = time.monotonic_ns()
        backend = BackendStream(st, path, body)
        cancelled = threading.Event()
        stop_watch = threading.Event()

        def on_disconnect():
            if not cancelled.is_set():
                cancelled.set()
                backend.abort()

        watcher = self._watch_client(on_disconnect, stop_watch)
        started_stream = False
        try:
            # Backends that report usage in the stream make this unnecessary; the first
            # request finds out which kind this backend is.
            prompt_count = None
            if st.backend_stream_usage is not True:
                prompt_count = count_tokens(st, prompt_text)
            t_send = time.monotonic_ns()
            backend.open()
            t_first = t_last = None
            n_tokens, finish, usage, parts = 0, None, None, []
            for ev in backend.events():
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev.get("choices") or []:
                    if path.endswith("/chat/completions"):
                        text = (ch.get("delta") or {}).get("content")
                    else:
                        text = ch.get("text")
                    if text:
                        now = time.monotonic_ns()
                        t_first = t_first or now
                        t_last = now
                        n_tokens += 1
                        if stream:
                            if not started_stream:
                                self.start_stream()
                                started_stream = True
                            self.stream_line({"model": name, "created_at": now_rfc3339(),
                                              field: piece(text), "done": False})
                        else:
                            parts.append(text)
                    if ch.get("finish_reason"):
                        finish = ch["finish_reason"]
            if cancelled.is_set():
                raise Cancelled()
            t_end = time.monotonic_ns()
            if finish is None:
                raise BackendError(502, "backend stream ended without a finish_reason")
            if usage and usage.get("completion_tokens") is not None:
                st.backend_stream_usage = True
                n_tokens = int(usage["completion_tokens"])
                prompt_count = int(usage.get("prompt_tokens") or prompt_count or 0)
            elif st.backend_stream_usage is None:
                st.backend_stream_usage = False
            t_first = t_first or t_end
            final = {
                "model": name, "created_at": now_rfc3339(),
                field: piece("" if stream else "".join(parts)),
                "done": True, "done_reason": "length" if finish == "length" else "stop",
                "total_duration": time.monotonic_ns() - self.t0,
                "load_duration": max(1, t_loaded - self.t0),
                "prompt_eval_count": prompt_count or 0,
                "prompt_eval_duration": max(1, t_first - t_send),
                "eval_count": n_tokens,
                "eval_duration": max(1, t_end - t_first) if n_tokens else 0,
            }
            if stream:
                if not started_stream:
                    self.start_stream()
                    started_stream = True
                self.stream_line(final)
                self.end_stream()
            else:
                self.send_json(200, final)
        except Cancelled:
            st.count("cancelled")
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            # The client vanished between two lines: close the backend request too.
            backend.abort()
            st.count("cancelled")
            self.close_connection = True
        except BackendError as e:
            if cancelled.is_set():
                st.count("cancelled")
                self.close_connection = True
            elif started_stream:
                # routes.go streamResponse: an error after output is one more NDJSON line.
                try:
                    self.stream_line({"error": e.message})
                    self.end_stream()
                except OSError:
                    self.close_connection = True
            else:
                self.send_json(500, {"error": e.message})
        finally:
            stop_watch.set()
            backend.close()
            st.release(m, keep_alive)


def parse_pair(s):
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected NAME=BACKEND_MODEL, got {s!r}")
    name, backend_model = s.split("=", 1)
    if not name or not backend_model:
        raise argparse.ArgumentTypeError(f"expected NAME=BACKEND_MODEL, got {s!r}")
    return name, backend_model


def main():
    p = argparse.ArgumentParser(description="Ollama REST API test double over an OpenAI-compatible backend")
    p.add_argument("--backend", required=True, help="base URL of the backend, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", action="append", type=parse_pair, default=[],
                   metavar="NAME=BACKEND_MODEL", help="a model the double has (repeatable)")
    p.add_argument("--pullable", action="append", type=parse_pair, default=[],
                   metavar="NAME=BACKEND_MODEL", help="a model /api/pull can fetch (repeatable)")
    p.add_argument("--preloaded", action="store_true",
                   help="list every --model in /api/ps from the start (never expiring)")
    p.add_argument("--gguf", help="GGUF file the backend serves: real details/model_info/size")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: the kernel picks)")
    p.add_argument("--version", default=DEFAULT_VERSION, help="what /api/version reports")
    p.add_argument("--backend-timeout", type=float, default=600.0,
                   help="seconds a backend read may block")
    p.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    p.add_argument("--record", help="append every POST body received to this file (JSON lines)")
    args = p.parse_args()

    state = State(args)
    Handler.state = state
    Handler.quiet = args.quiet
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.ollama_version = args.version

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it must not run on this
        # (the serving) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"url=http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        with state.lock:
            active = list(state.active)
        for b in active:  # let the backend see in-flight requests end
            b.abort()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
