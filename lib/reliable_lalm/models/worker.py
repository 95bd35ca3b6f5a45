"""Isolated workers: a model served by a separate process in its own Python environment.

Why: some LALMs only run with the library versions they were released with (Qwen-Audio-Chat's
remote code needs transformers 4.32, SALMONN pins 4.28) and cannot be imported next to ours. A
*worker* is a small script run by that environment's interpreter; :class:`WorkerBackend` starts it
and talks to it over its stdin/stdout with the JSONL protocol below, and the runners write its
answers into the same resumable stores as any backend. The workers shipped with the package are in
:mod:`reliable_lalm.models.workers` (see ``docs/workers.md``); ``workers/jsonl_worker.py`` is a
stdlib-only helper (Python >= 3.8) that implements the worker side.

Protocol (version 1). UTF-8, one JSON object per line, ``type`` says which:

worker -> host, first line (the handshake; nothing else may come first on stdout)::

    {"type": "hello", "protocol": 1, "model": {...}, "window_seconds": 30.0, "sampling_rate": 16000}

  ``model`` identifies the model and everything that changes its answers (it goes into the result
  store's parameters: model folder or revision, dtype, prompt format); ``window_seconds`` is the
  audio the model hears (longer clips are truncated by the runner).

host -> worker, one line per :class:`~reliable_lalm.models.base.GenerationRequest`::

    {"type": "generate", "id": 7, "item_id": "q3", "audio": {"path": "/tmp/.../7.wav"},
     "prompt": "...", "settings": {"max_new_tokens": 64, "do_sample": false, "temperature": 1.0,
     "top_p": 1.0, "top_k": 0, "num_samples": 1, "seed": 0}, "sample_indices": [0],
     "seeds": [1234567]}

  ``audio`` is ``{"path": ...}`` (a mono 16 kHz WAV the host deletes once answered) or
  ``{"wav_base64": ...}`` (the same file's bytes); ``seeds[j]`` is the seed of
  ``sample_indices[j]`` (``_row_seed(run seed, item id, sample index)``): a sampling worker seeds
  each sample with it so that samples do not depend on batching or resumption.

worker -> host, one line per request, in any order (matched by ``id``)::

    {"type": "result", "id": 7, "texts": ["B"], "new_tokens": [3], "finished": [true], "prompt_tokens": 120}
    {"type": "error", "id": 7, "error": "why this item failed"}

  ``texts`` has one entry per sample index; ``new_tokens`` entries may be ``null`` (unknown). An
  ``error`` line fails that item only (an error record; the run goes on).

worker -> host, any time::

    {"type": "fatal", "error": "why the worker cannot go on"}

  then the worker exits; the run stops with that reason (:class:`BackendFatalError`).

host -> worker, at the end: ``{"type": "shutdown"}``; the worker exits with status 0.

The worker writes logs to stderr only (the host keeps them in a log file and shows its tail when
the worker dies). A worker that exits, breaks the protocol, or does not answer within
``request_timeout`` seconds stops the run; ``max_consecutive_errors`` error lines in a row do too
(a worker failing every item is broken, not unlucky). Restarting the command resumes the run.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shlex
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import soundfile as sf

from reliable_lalm.core.items import SAMPLING_RATE
from reliable_lalm.models.base import Backend, BackendFatalError, Generation, GenerationRequest, _row_seed
from reliable_lalm.models.registry import ModelEntry

PROTOCOL_VERSION = 1
SPEC_PREFIX = "worker:"
AUDIO_TRANSPORTS = ("path", "base64")
WORKERS_DIR = Path(__file__).resolve().parent / "workers"
_EOF = object()


class WorkerBackend(Backend):
    """A backend served by a worker process speaking the JSONL protocol of this module.

    ``command``: the argv that starts the worker (its own interpreter and script); ``env``: extra
    environment variables for it (the worker is configured by environment variables only; with
    ``inherit_env=False`` it gets only these plus ``PATH``/``HOME``). ``wav_subtype``: how clips are
    written (``"FLOAT"``: 32-bit float, lossless; ``"PCM_16"`` for loaders that need integer PCM).
    ``pipeline``: requests sent ahead of the answers (a worker may batch them).
    """

    serves_remotely = True

    def __init__(self, command: Sequence[str] | str, *, env: dict[str, str] | None = None,
                 inherit_env: bool = True, cwd: str | os.PathLike | None = None, audio_transport: str = "path",
                 wav_subtype: str = "FLOAT", startup_timeout: float = 900.0, request_timeout: float | None = None,
                 pipeline: int = 8, max_consecutive_errors: int = 20):
        if audio_transport not in AUDIO_TRANSPORTS:
            raise ValueError(f"audio_transport must be one of {AUDIO_TRANSPORTS}, not {audio_transport!r}")
        if pipeline < 1 or max_consecutive_errors < 1:
            raise ValueError("pipeline and max_consecutive_errors must be >= 1")
        self.command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not self.command:
            raise ValueError("empty worker command")
        self.audio_transport = audio_transport
        self.wav_subtype = wav_subtype
        self.request_timeout = request_timeout
        self.pipeline = int(pipeline)
        self.batch_size = self.pipeline  # the runners size their audio-reading chunks from it
        self.max_consecutive_errors = int(max_consecutive_errors)
        self._consecutive_errors = 0
        self._next_id = 0
        self._abandoned: set[int] = set()  # ids sent by a generate_iter its caller left early
        self._tmp = tempfile.TemporaryDirectory(prefix="rlalm-worker-")
        self._log_path = Path(self._tmp.name) / "worker-stderr.log"
        self._log = open(self._log_path, "wb")
        base = dict(os.environ) if inherit_env else {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
        self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      env={**base, **(env or {})}, cwd=cwd, bufsize=0)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True, name="rlalm-worker-reader")
        self._reader.start()
        hello = self._receive(startup_timeout, what="the worker's hello")
        if hello.get("type") != "hello":
            self._die(f"the worker's first line is not a hello: {str(hello)[:200]}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            self._die(f"the worker speaks protocol {hello.get('protocol')!r}, this host {PROTOCOL_VERSION}")
        self.hello = hello
        self.window_seconds = float(hello.get("window_seconds") or 30.0)
        self.sampling_rate = int(hello.get("sampling_rate") or SAMPLING_RATE)

    @classmethod
    def from_pretrained(cls, source: str, *, batch_size: int | None = None, device: str | None = None,
                        adapter: Any = None, **kwargs: Any) -> "WorkerBackend":
        """Registry hook: ``source`` is the worker command line (shell-quoted). The experiments'
        loader arguments: ``batch_size`` sets ``pipeline``; ``device`` is the worker's own setting (its
        environment variables), so it is not passed; a worker cannot load a LoRA adapter."""
        if adapter is not None:
            raise ValueError("a worker model cannot load a LoRA adapter (it runs in its own environment)")
        if batch_size is not None and "pipeline" not in kwargs:
            kwargs["pipeline"] = batch_size
        return cls(source, **kwargs)

    def describe(self) -> dict[str, Any]:
        """The worker's own model description (not the command: interpreter paths differ by machine)."""
        return {"backend": "WorkerBackend", "protocol": PROTOCOL_VERSION, "worker": self.hello.get("model"),
                "window_seconds": self.window_seconds}

    # ---------------------------------------------------------------- process plumbing

    def _read_stdout(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            self._lines.put(raw)
        self._lines.put(_EOF)

    def _stderr_tail(self, limit: int = 1500) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            text = self._log_path.read_bytes()[-limit:].decode("utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines() if line.strip())[-limit:]

    def _die(self, reason: str) -> None:
        self.close(kill=True)  # the worker has exited: its log is complete
        tail = self._stderr_tail()
        raise BackendFatalError(f"worker {self.command[-1]!r}: {reason}" + (f"; its stderr ends: {tail}" if tail else ""))

    def _receive(self, timeout: float | None, what: str) -> dict[str, Any]:
        try:
            raw = self._lines.get(timeout=timeout)
        except queue.Empty:
            self._die(f"no answer within {timeout:g} s while waiting for {what}")
        if raw is _EOF:
            code = self._proc.wait(timeout=30)
            self._die(f"exited with status {code} while the host waited for {what}")
        try:
            message = json.loads(raw)
        except ValueError:
            self._die(f"wrote a line that is not JSON (stdout is for the protocol only): {raw[:200]!r}")
        if not isinstance(message, dict):
            self._die(f"wrote a JSON line that is not an object: {raw[:200]!r}")
        if message.get("type") == "fatal":
            self._die(f"gave up: {message.get('error')}")
        return message

    def _send(self, message: dict[str, Any]) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self._proc.poll()
            self._die(f"stopped reading requests (exit status {code})")

    def close(self, kill: bool = False) -> None:
        """Ask the worker to exit (or kill it) and remove the temporary files."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            try:
                if kill:
                    proc.kill()
                else:
                    self._send_quietly({"type": "shutdown"})
                    proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=30)
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def _send_quietly(self, message: dict[str, Any]) -> None:
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            pass

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close(kill=True)
        except Exception:
            pass

    # ---------------------------------------------------------------- generation

    def _audio_field(self, rid: int, audio: np.ndarray) -> tuple[dict[str, Any], Path]:
        path = Path(self._tmp.name) / f"{rid}.wav"
        sf.write(str(path), np.asarray(audio, dtype=np.float32), self.sampling_rate, subtype=self.wav_subtype)
        if self.audio_transport == "path":
            return {"path": str(path)}, path
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        path.unlink()
        return {"wav_base64": data}, path

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        """Send up to ``pipeline`` requests ahead, yield each item as its answer arrives."""
        if self._proc.poll() is not None:
            self._die(f"is not running (exit status {self._proc.returncode})")
        pending: dict[int, tuple[int, GenerationRequest, Path]] = {}
        try:
            yield from self._exchange(requests, pending)
        finally:  # the caller stopped early: answers to these ids may still come, and are dropped
            self._abandoned.update(pending)

    def _exchange(self, requests, pending) -> Iterator[tuple[list[int], list[Generation]]]:
        next_to_send = 0
        while next_to_send < len(requests) or pending:
            while next_to_send < len(requests) and len(pending) < self.pipeline:
                req = requests[next_to_send]
                rid = self._next_id
                self._next_id += 1
                audio, path = self._audio_field(rid, req.audio)
                samples = req.samples
                self._send({"type": "generate", "id": rid, "item_id": req.item_id, "audio": audio,
                            "prompt": req.prompt, "settings": req.settings.to_dict(),
                            "sample_indices": list(samples),
                            "seeds": [_row_seed(req.settings.seed, req.item_id, j) for j in samples]})
                pending[rid] = (next_to_send, req, path)
                next_to_send += 1
            message = self._receive(self.request_timeout, what=f"the answers to {len(pending)} request(s)")
            rid = message.get("id")
            if rid in self._abandoned:
                self._abandoned.discard(rid)
                continue
            if rid not in pending:
                self._die(f"answered an unknown request id {rid!r}: {str(message)[:200]}")
            index, req, path = pending.pop(rid)
            path.unlink(missing_ok=True)
            yield [index], [self._generation(req, message)]

    def _generation(self, req: GenerationRequest, message: dict[str, Any]) -> Generation:
        samples = req.samples
        kind = message.get("type")
        if kind == "error":
            self._consecutive_errors += 1
            if self._consecutive_errors >= self.max_consecutive_errors:
                self._die(f"failed {self._consecutive_errors} items in a row; the last: {message.get('error')}")
            return Generation(req.item_id, samples, [], [], [], error=str(message.get("error") or "worker error"))
        if kind != "result":
            self._die(f"answered with a {kind!r} line: {str(message)[:200]}")
        texts = message.get("texts")
        if not isinstance(texts, list) or len(texts) != len(samples) or not all(isinstance(t, str) for t in texts):
            self._die(f"answered {req.item_id!r} with {texts!r} for sample indices {list(samples)}")
        self._consecutive_errors = 0
        new_tokens = message.get("new_tokens") or [None] * len(samples)
        finished = message.get("finished") or [True] * len(samples)
        return Generation(req.item_id, samples, texts=[t.strip() for t in texts], new_tokens=list(new_tokens),
                          finished=[bool(f) for f in finished], prompt_tokens=int(message.get("prompt_tokens") or 0))


# -------------------------------------------------------------------------------------------------
# Registry


def model_entry(spec: str):
    """``worker:<command line>`` -> a :class:`~reliable_lalm.models.registry.ModelEntry` (nothing started)."""
    if not spec.startswith(SPEC_PREFIX) or not spec[len(SPEC_PREFIX):].strip():
        raise ValueError(f"not a worker spec (worker:<command line>): {spec!r}")
    command = spec[len(SPEC_PREFIX):].strip()
    shlex.split(command)  # a malformed command line fails here, not when the run starts
    return ModelEntry(spec, "reliable_lalm.models.worker:WorkerBackend", command, family="worker",
                      description=f"isolated worker process: {command}")


class WorkerNotConfigured(RuntimeError):
    """A registered worker model whose environment is not set up; the message names what is missing."""


@dataclass(frozen=True)
class ConfiguredWorker:
    """A shipped worker served under a registry name: the interpreter of its environment comes from
    ``<prefix>_PYTHON``, the model's code and weights from ``required`` (read by the worker itself)."""

    script: str  # a worker script in WORKERS_DIR, without ".py"
    prefix: str  # environment variable prefix
    required: tuple[str, ...]

    @property
    def variables(self) -> tuple[str, ...]:
        return (f"{self.prefix}_PYTHON", *self.required)

    def missing(self) -> list[str]:
        return [name for name in self.variables if not os.environ.get(name, "").strip()]

    def command(self) -> str:
        """The worker command line, or :class:`WorkerNotConfigured` naming the unset variables."""
        missing = self.missing()
        if missing:
            raise WorkerNotConfigured(f"worker environment not configured: set {', '.join(missing)} "
                                      f"(docs/workers.md)")
        return shlex.join([os.environ[f"{self.prefix}_PYTHON"].strip(), str(worker_script(self.script))])


# The paper's other Table 3 models, as registry entries (models.registry) served by shipped workers.
CONFIGURED_WORKERS: dict[str, ConfiguredWorker] = {
    "qwen-audio-chat": ConfiguredWorker("qwen_audio_chat_worker", "RLALM_QWEN_AUDIO_CHAT",
                                        ("RLALM_QWEN_AUDIO_CHAT_DIR",)),
    "salmonn": ConfiguredWorker("salmonn_worker", "RLALM_SALMONN",
                                ("RLALM_SALMONN_REPO", "RLALM_SALMONN_CKPT", "RLALM_SALMONN_WHISPER",
                                 "RLALM_SALMONN_BEATS", "RLALM_SALMONN_VICUNA")),
}


def qwen_audio_chat_command() -> str:
    """Registry source of ``qwen-audio-chat``: its worker's command line (environment variables)."""
    return CONFIGURED_WORKERS["qwen-audio-chat"].command()


def salmonn_command() -> str:
    """Registry source of ``salmonn``: its worker's command line (environment variables)."""
    return CONFIGURED_WORKERS["salmonn"].command()


def worker_script(name: str) -> Path:
    """The path of a worker script shipped in :mod:`reliable_lalm.models.workers` (e.g. ``"demo_worker"``)."""
    path = WORKERS_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no worker script {path}")
    return path
