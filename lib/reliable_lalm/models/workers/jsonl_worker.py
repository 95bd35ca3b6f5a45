"""The worker side of the JSONL worker protocol (version 1; specified in reliable_lalm.models.worker).

Standard library only and Python >= 3.8, so that it runs in a model's own, older environment. A
worker script builds its model, then calls :func:`serve` with a function that answers one request::

    import jsonl_worker

    def generate(request):           # the parsed "generate" line
        path = jsonl_worker.audio_path(request)
        texts = [my_model(path, request["prompt"], seed) for seed in request["seeds"]]
        return {"texts": texts}      # optional: "new_tokens", "finished", "prompt_tokens"

    jsonl_worker.serve({"name": "my-model", "revision": "abc"}, generate, window_seconds=30.0)

:func:`serve` first points ``sys.stdout`` at stderr, so that prints of the model's code cannot
corrupt the protocol stream, and writes protocol lines to the original stdout only. An exception
raised by ``generate`` becomes an ``error`` line for that request (the worker goes on); one of
``fatal_exceptions`` (default: MemoryError) a ``fatal`` line, and the worker exits with status 1.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import traceback

PROTOCOL_VERSION = 1


def env(name, default=None, required=False):
    """An environment variable (workers are configured by environment variables only)."""
    value = os.environ.get(name, "").strip()
    if not value:
        if required:
            fail_startup("environment variable %s is required" % name)
        return default
    return value


def fail_startup(reason):
    """Report a start-up failure as a ``fatal`` line (the host shows it) and exit."""
    out = getattr(sys, "__stdout__", None) or sys.stdout
    out.write(json.dumps({"type": "fatal", "error": reason}) + "\n")
    out.flush()
    sys.exit(1)


def audio_path(request):
    """A filesystem path to the request's WAV (writes a base64-transported clip to a temp file)."""
    audio = request["audio"]
    if "path" in audio:
        return audio["path"]
    handle, path = tempfile.mkstemp(suffix=".wav", prefix="rlalm-worker-")
    with os.fdopen(handle, "wb") as fh:
        fh.write(base64.b64decode(audio["wav_base64"]))
    request.setdefault("_temp_files", []).append(path)
    return path


def _cleanup(request):
    for path in request.get("_temp_files", ()):
        try:
            os.unlink(path)
        except OSError:
            pass


def serve(model, generate, window_seconds=30.0, sampling_rate=16000, fatal_exceptions=(MemoryError,)):
    """Handshake, then answer requests from stdin until ``shutdown`` or end of input."""
    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # everything else the process prints goes to the log

    def send(message):
        protocol_out.write(json.dumps(message, ensure_ascii=False) + "\n")
        protocol_out.flush()

    send({"type": "hello", "protocol": PROTOCOL_VERSION, "model": model,
          "window_seconds": float(window_seconds), "sampling_rate": int(sampling_rate)})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            send({"type": "fatal", "error": "the host sent a line that is not JSON: %r" % line[:200]})
            sys.exit(1)
        kind = request.get("type")
        if kind == "shutdown":
            break
        if kind != "generate":
            send({"type": "fatal", "error": "unknown request type %r" % kind})
            sys.exit(1)
        try:
            answer = generate(request)
            texts = [str(t) for t in answer["texts"]]
            if len(texts) != len(request["sample_indices"]):
                raise ValueError("%d texts for %d sample indices" % (len(texts), len(request["sample_indices"])))
            send({"type": "result", "id": request["id"], "texts": texts,
                  "new_tokens": answer.get("new_tokens"), "finished": answer.get("finished"),
                  "prompt_tokens": answer.get("prompt_tokens", 0)})
        except fatal_exceptions as err:
            send({"type": "fatal", "error": "%s: %s" % (type(err).__name__, err)})
            sys.exit(1)
        except Exception as err:  # this item failed; the next may not
            traceback.print_exc(file=sys.stderr)
            send({"type": "error", "id": request.get("id"), "error": "%s: %s" % (type(err).__name__, err)})
        finally:
            _cleanup(request)
