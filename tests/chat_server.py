"""A scripted, local, OpenAI-compatible chat-completions server for tests (the LLM normalizer's
text requests and the audio backend's requests alike).

It lets the tests drive the *real* ``openai`` client (no mocks of the client). With
``require_audio=True`` (:class:`AudioChatServer`) every request's user message must carry exactly
one audio content part (``input_audio`` with base64 WAV,
or ``audio_url`` with a ``data:audio/wav;base64,`` URL) whose WAV decodes to 16 kHz mono PCM16;
a request that does not is answered 400 and counted in ``bad_audio``. Each decoded clip is kept
(``clips``, float32) so tests can compare it with what they sent. It drives the *real* ``openai``
client through success, rate limits, server errors, malformed bodies and timeouts; binds to
127.0.0.1 on a free port; records every request (body and headers), the number of requests and the
highest number in flight at once. ``n > 1`` is answered with ``n`` choices unless the server is
built with ``supports_n=False`` (then 400, as servers without ``n`` do).

Each request is answered by ``responder(body, n)`` (``n`` counts requests from 0) returning one of
the actions below; a plain string means :class:`Reply` with that text; a :class:`Reply` whose
``texts`` is set answers one text per choice.

    with ChatServer(lambda body, n: Reply("dog")) as server:        # text (the LLM normalizer)
    with AudioChatServer(lambda body, n: Reply("dog")) as server:   # audio parts required
        client = OpenAI(api_key="x", base_url=server.base_url)
"""
from __future__ import annotations

import base64
import io
import json
import threading
import wave
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass
class Reply:
    """A well-formed completion whose message content is ``text``."""

    text: str
    texts: list[str] | None = None  # one per choice (default: ``text`` for every choice)
    finish_reason: str = "stop"
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
    """The text part(s) of the last user message of a chat request."""
    messages = body.get("messages") or []
    if not messages:
        return ""
    content = messages[-1].get("content", "")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def decode_audio(body: dict[str, Any]) -> tuple[Any, str]:
    """``(float32 samples, audio part type)`` of the request's single audio part; ValueError if invalid."""
    import numpy as np

    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages else None
    if not isinstance(content, list):
        raise ValueError("user content is not a list of parts")
    parts = [p for p in content if isinstance(p, dict) and p.get("type") in ("input_audio", "audio_url")]
    if len(parts) != 1:
        raise ValueError(f"{len(parts)} audio parts")
    part = parts[0]
    if part["type"] == "input_audio":
        if part["input_audio"].get("format") != "wav":
            raise ValueError("input_audio format is not wav")
        data = part["input_audio"]["data"]
    else:
        url = part["audio_url"]["url"]
        prefix = "data:audio/wav;base64,"
        if not url.startswith(prefix):
            raise ValueError("audio_url is not a data:audio/wav;base64 URL")
        data = url[len(prefix):]
    raw = base64.b64decode(data, validate=True)
    with wave.open(io.BytesIO(raw), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (16000, 1, 2):
            raise ValueError(f"WAV is {wav.getframerate()} Hz, {wav.getnchannels()} channels, "
                             f"{8 * wav.getsampwidth()} bit; 16000 Hz mono 16 bit expected")
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32767.0, part["type"]


class ChatServer:
    def __init__(self, responder: Responder, *, supports_n: bool = True, require_audio: bool = False):
        self.responder = responder
        self.require_audio = require_audio
        self.supports_n = supports_n
        self.clips: list[Any] = []  # decoded audio of each valid request, in arrival order
        self.audio_types: list[str] = []
        self.bad_audio = 0
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
                clip = kind = None
                if server.require_audio:
                    try:
                        clip, kind = decode_audio(body)
                    except (ValueError, KeyError, TypeError, wave.Error) as err:
                        with server._lock:
                            server.bad_audio += 1
                        self._send(400, json.dumps({"error": {"message": f"bad audio: {err}"}}).encode())
                        return
                if int(body.get("n") or 1) > 1 and not server.supports_n:
                    self._send(400, b'{"error": {"message": "n > 1 is not supported"}}')
                    return
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.clips.append(clip)
                    server.audio_types.append(kind)
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


class AudioChatServer(ChatServer):
    """The server for audio-LM tests: every request must carry one valid 16 kHz mono WAV part."""

    def __init__(self, responder: Responder, *, supports_n: bool = True):
        super().__init__(responder, supports_n=supports_n, require_audio=True)


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    texts = reply.texts if reply.texts is not None else [reply.text] * n
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "test-model"),
        "choices": [{"index": i, "finish_reason": reply.finish_reason,
                     "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                  "total_tokens": reply.prompt_tokens + reply.completion_tokens},
    }
