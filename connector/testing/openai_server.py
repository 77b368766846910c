"""An OpenAI-compatible server on loopback for the tests and benchmarks: /v1/embeddings and streamed
/v1/chat/completions, with faults the test controls (429 with Retry-After, 500, 400 for marked
inputs, hangs, and being down altogether). The connector talks to it with the real `openai` client.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connector.embed.hashing import HashingEmbedder


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by `stop()` are expected: no traceback on stderr."""


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"error": {"message": "injected fault", "type": "server_error"}}'


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    at: float
    authorization: str | None = None  # the header as received: which key reached this host


class FakeOpenAI:
    """Start with `start()`; `url` is the base_url to give the client (ends in /v1)."""

    def __init__(self, dimensions: int = 64, latency_s: float = 0.0) -> None:
        self.dimensions = dimensions
        self.latency_s = latency_s
        self.faults: list[Fault] = []  # consumed one per request, first
        self.reject_marker: str | None = None  # 400 for a request holding an input with it
        self.hang_s = 0.0
        self.chat_reply = "The answer, from source [1]."
        self.requests: list[Recorded] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()
        self._embedder = HashingEmbedder(dimensions)
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def embedding_inputs(self) -> list[list[str]]:
        return [r.body["input"] for r in self.requests if r.path.endswith("/embeddings")]

    def start(self) -> FakeOpenAI:
        handler = _handler(self)
        self._server = _QuietServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: open connections are cut and the port refuses new ones until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # ----------------------------------------------------------------- behaviour

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        inputs = body["input"]
        if isinstance(inputs, str):
            inputs = [inputs]
        if self.reject_marker and any(self.reject_marker in text for text in inputs):
            return 400, {"error": {"message": "Invalid input: rejected text", "type": "invalid"}}
        dims = int(body.get("dimensions") or self.dimensions)
        embedder = self._embedder if dims == self.dimensions else HashingEmbedder(dims)
        vectors = embedder.embed(inputs)
        data = []
        for i, vector in enumerate(vectors):
            if body.get("encoding_format") == "base64":
                value: Any = base64.b64encode(vector).decode()
            else:
                value = json.loads(json.dumps(list(memoryview(vector).cast("f"))))
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(len(text.split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real servers set it: the headers and the body go out in two writes, and
    # Nagle held the body until the client's delayed ACK of the headers (40 ms a response).
    disable_nagle_algorithm = True
    fake: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.fake._lock:
            auth = self.headers.get("Authorization")
            self.fake.requests.append(Recorded(self.path, body, time.monotonic(), auth))
            self.fake.concurrent += 1
            self.fake.max_concurrent = max(self.fake.max_concurrent, self.fake.concurrent)
        try:
            self._serve(body)
        finally:
            with self.fake._lock:
                self.fake.concurrent -= 1

    def _serve(self, body: dict[str, Any]) -> None:
        time.sleep(self.fake.hang_s + self.fake.latency_s)
        fault = self.fake._next_fault()
        if fault is not None:
            self._send(fault.status, fault.body.encode(), fault.headers)
            return
        if self.path.endswith("/embeddings"):
            status, payload = self.fake.embeddings(body)
            self._send(status, json.dumps(payload).encode())
        elif self.path.endswith("/chat/completions"):
            self._chat(body)
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _chat(self, body: dict[str, Any]) -> None:
        words = self.fake.chat_reply.split(" ")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            chunk = {
                "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }  # fmt: skip
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"fake": server})
