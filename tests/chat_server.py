"""A scripted, local, OpenAI-compatible chat-completions server for tests.

It lets the tests drive the *real* ``openai`` client (no mocks of the client) through success,
rate limits, server errors, malformed bodies and timeouts. It binds to 127.0.0.1 on a free port
only, serves ``POST /v1/chat/completions`` and ``POST /chat/completions``, and records every
request (body and headers), the number of requests and the highest number in flight at once.

Each request is answered by ``responder(body, n)`` (``n`` counts requests from 0) returning one of
the actions below; a plain string means :class:`Reply` with that text.

    with ChatServer(lambda body, n: Reply("dog")) as server:
        client = OpenAI(api_key="x", base_url=server.base_url)
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass
class Reply:
    """A well-formed completion whose message content is ``text``."""

    text: str
    prompt_tokens: int = 100
    completion_tokens: int = 3
    delay: float = 0.0  # seconds to wait before answering (to hold requests in flight)


@dataclass
class Status:
    """An HTTP error with an OpenAI-style error body (e.g. 429, 500)."""

    code: int
    message: str = "scripted error"
    headers: dict[str, str] | None = None
    error_code: str | None = None  # the body's error.code (defaults to the status as text)


@dataclass
class Raw:
    """Arbitrary bytes with a given status, e.g. a truncated JSON body."""

    body: bytes
    code: int = 200
    content_type: str = "application/json"


@dataclass
class Hang:
    """Answer only after ``seconds`` (longer than the client's timeout), then a normal reply."""

    seconds: float
    text: str = "late"


Action = Union[Reply, Status, Raw, Hang, str]
Responder = Callable[[dict[str, Any], int], Action]


def user_prompt(body: dict[str, Any]) -> str:
    """The text of the last user message of a chat request."""
    messages = body.get("messages") or []
    return str(messages[-1].get("content", "")) if messages else ""


class ChatServer:
    def __init__(self, responder: Responder):
        self.responder = responder
        self.requests: list[dict[str, Any]] = []  # parsed JSON bodies, in arrival order
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()  # wakes hanging handlers at shutdown
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API does

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.split("?")[0] not in PATHS:
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "bad json"}}')
                    return
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._act(server.responder(body, n), body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _act(self, action: Action, body: dict[str, Any]) -> None:
                if isinstance(action, str):
                    action = Reply(action)
                if isinstance(action, Hang):
                    if server._closing.wait(action.seconds):
                        return
                    action = Reply(action.text)
                if isinstance(action, Reply):
                    if action.delay:
                        server._closing.wait(action.delay)
                    self._send(200, json.dumps(completion(body, action)).encode())
                elif isinstance(action, Status):
                    code = action.error_code or str(action.code)
                    err = {"error": {"message": action.message, "type": "scripted", "code": code}}
                    self._send(action.code, json.dumps(err).encode(), action.headers)
                elif isinstance(action, Raw):
                    self._send(action.code, action.body, content_type=action.content_type)
                else:
                    raise TypeError(f"unknown action {action!r}")

            def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None,
                      content_type: str = "application/json") -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False  # hanging handlers must not block shutdown

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> "ChatServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply.text}}],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }
