#!/usr/bin/env python3
"""A recording OpenAI-compatible runtime for the data plane's tests (a test double: the real
runtimes cannot show the bytes they received, stall on purpose or refuse on demand).

Usage:
  recording_runtime.py --model NAME [--record FILE] [--delay SECONDS] [--status CODE]
                       [--end done|no-done|cut]

Binds 127.0.0.1 on a port the kernel picks, prints `url=http://127.0.0.1:PORT`, then serves
until SIGTERM:
  * every POST appends {"path", "headers", "body"} (the raw body as text) to FILE, as one
    JSON line, before anything else;
  * after --delay seconds it answers: with --status (e.g. 503, 429) an OpenAI error, else a
    canned chat completion (SSE when the body says "stream": true, ending in data: [DONE]);
  * --end shapes a stream's end: `done` (default) as above, `no-done` a clean end of the
    body without `data: [DONE]`, `cut` the connection closed after the first event (no end
    of the chunked body);
  * GET /v1/models lists NAME; GET /_stats gives {"requests": N} (POSTs received).
Python standard library only.
"""
import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args = None
    lock = threading.Lock()
    requests = 0

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": self.args.model, "object": "model"}]})
        elif self.path == "/_stats":
            with Handler.lock:
                self.send_json(200, {"requests": Handler.requests})
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with Handler.lock:
            Handler.requests += 1
            if self.args.record:
                with open(self.args.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"path": self.path, "headers": dict(self.headers.items()),
                                        "body": body.decode("utf-8", "replace")}) + "\n")
        time.sleep(self.args.delay)
        if self.args.status:
            self.send_json(self.args.status, {"error": {"message": f"refused with {self.args.status}",
                                                        "type": "overloaded", "code": self.args.status}},
                           {"Retry-After": "1"})
            return
        try:
            stream = bool(json.loads(body or b"{}").get("stream"))
        except ValueError:
            stream = False
        if not stream:
            self.send_json(200, {"id": "chatcmpl-rec", "object": "chat.completion", "created": 1,
                                 "model": self.args.model,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "recorded"},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in ["re", "cord", "ed"]:
            event = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 1, "model": self.args.model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if self.args.end == "cut":
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
        if self.args.end == "no-done":
            self.wfile.write(b"0\r\n\r\n")
            return
        data = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--record")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--status", type=int, default=0)
    p.add_argument("--end", choices=["done", "no-done", "cut"], default="done")
    Handler.args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"url=http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
