"""An audio LM behind any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

Why: models whose code pins other library versions than ours (vLLM 0.33 pins transformers < 5.21)
or that only exist as a hosted API are run as a server; this backend sends the benchmark to it and
writes the answers into the same resumable result stores as the in-process engine.

Each :class:`~reliable_lalm.models.base.GenerationRequest` becomes one chat request whose user
message has two content parts, the clip then the prompt text (the order of our in-process
Qwen2-Audio chat format):

* ``audio_format="input_audio"`` (default, the OpenAI API's form):
  ``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}``
* ``audio_format="audio_url"`` (what vLLM's Qwen2-Audio documents):
  ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,<base64 WAV>"}}``

The WAV is 16 kHz mono PCM16 (written with the stdlib :mod:`wave`), after the runner truncated the
clip to :attr:`window_seconds` (default 30, configurable: the server's model decides what it hears).

Decoding: greedy (``do_sample=False`` or temperature 0) is sent as ``temperature=0`` and asked once
per item, its text used for every requested sample index; sampling sends ``temperature``, ``top_p``
and (``top_k > 0``) ``top_k`` in the body's extra fields (vLLM and SGLang read it). Every request
carries ``seed`` = ``_row_seed(run seed, item id, sample index)``, as the in-process engine seeds
its rows. K@N: ``samples_via="n"`` asks for all missing samples of an item in one request with
``n=`` (the seed is that of the first sample index; reproducible for the same request shape);
``samples_via="requests"`` sends one request per sample, each with its own seed (for servers that
ignore or refuse ``n``).

Failures: see :meth:`OpenAIAudioBackend._complete`. An item that still fails after the retries is
returned as a ``Generation`` with ``error`` set, which the runners write as that item's error
record; the run goes on. A refused key (401/403), an unknown model or path (404) or an exhausted
quota raise :class:`~reliable_lalm.models.base.BackendFatalError` and stop the run with one line.

Secrets: the API key comes only from the environment (``OPENAI_API_KEY``, or the variable named by
``api_key_env``); it is never an argument, never in :meth:`describe` (so never in a result store),
and scrubbed from every error text. A key-less local server gets the placeholder ``"EMPTY"``.

Model spec: ``openai:<model>@<base_url>``, e.g. ``openai:Qwen/Qwen2-Audio-7B-Instruct@http://127.0.0.1:8000/v1``
(``resolve_model`` accepts it); without ``@<base_url>`` the base URL comes from ``OPENAI_BASE_URL``
or defaults to the OpenAI API.
"""
from __future__ import annotations

import base64
import io
import os
import threading
import wave
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from reliable_lalm.core.items import SAMPLING_RATE
from reliable_lalm.core.endpoints import endpoint_host as _host, endpoint_id
from reliable_lalm.models.base import (Backend, BackendFatalError, Generation, GenerationRequest, _row_seed)
from reliable_lalm.models.registry import ModelEntry

SPEC_PREFIX = "openai:"
API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
LOCAL_DUMMY_KEY = "EMPTY"  # what key-less local servers (vLLM without --api-key) expect; not a secret
AUDIO_FORMATS = ("input_audio", "audio_url")
SAMPLES_VIA = ("n", "requests")


def wav_bytes(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """A mono PCM16 WAV file of ``audio`` (float in [-1, 1]; values beyond are clipped)."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono 1-D, got shape {samples.shape}")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sampling_rate))
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def audio_content_part(audio: np.ndarray, audio_format: str = "input_audio",
                       sampling_rate: int = SAMPLING_RATE) -> dict[str, Any]:
    """The chat content part carrying one clip, in the form ``audio_format`` names."""
    data = base64.b64encode(wav_bytes(audio, sampling_rate)).decode("ascii")
    if audio_format == "input_audio":
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    if audio_format == "audio_url":
        return {"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}}
    raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, not {audio_format!r}")


class _ItemFailed(Exception):
    """This request failed for good (after the retries); the item gets an error record."""


class _Fatal(Exception):
    """Every further request would fail the same way; the run stops."""


@dataclass(frozen=True)
class _Call:
    request: int  # index into the requests of one generate_iter call
    samples: tuple[int, ...]  # the sample indices this HTTP request answers
    n: int  # choices asked for (1, or len(samples) with samples_via="n")
    seed: int


class OpenAIAudioBackend(Backend):
    """Generations from an OpenAI-compatible chat-completions endpoint serving an audio LM.

    ``max_concurrency`` requests are in flight at most (a thread pool of that size). ``timeout`` is
    per HTTP attempt; ``max_retries`` is the openai client's own retry count (429, 408/409, 5xx,
    timeouts and connection errors, exponential backoff honouring ``Retry-After``).
    """

    serves_remotely = True

    def __init__(self, model: str, base_url: str | None = None, *, audio_format: str = "input_audio",
                 max_concurrency: int = 8, timeout: float = 120.0, max_retries: int = 3,
                 malformed_retries: int = 2, samples_via: str = "n", window_seconds: float = 30.0,
                 system_prompt: str | None = None, api_key_env: str = API_KEY_ENV,
                 max_tokens_param: str = "max_tokens", extra_body: dict[str, Any] | None = None):
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, not {audio_format!r}")
        if samples_via not in SAMPLES_VIA:
            raise ValueError(f"samples_via must be one of {SAMPLES_VIA}, not {samples_via!r}")
        if max_concurrency < 1 or max_retries < 0 or malformed_retries < 0 or timeout <= 0:
            raise ValueError("max_concurrency >= 1, max_retries >= 0, malformed_retries >= 0, timeout > 0")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        # local import: openai is an optional extra, needed by this backend only
        from openai import OpenAI

        self.model = str(model)
        self.base_url = base_url or _env(BASE_URL_ENV)
        key = _env(api_key_env)
        if key is None:
            if self.base_url is None:
                raise BackendFatalError(f"no API key: set ${api_key_env}, or give a base URL of a key-less server")
            key = LOCAL_DUMMY_KEY
        self._secret = key if key != LOCAL_DUMMY_KEY else None  # kept only to scrub error texts
        self._client = OpenAI(api_key=key, base_url=self.base_url, timeout=float(timeout),
                              max_retries=int(max_retries))
        self.audio_format = audio_format
        self.max_concurrency = int(max_concurrency)
        self.batch_size = self.max_concurrency  # the runners size their audio-reading chunks from it
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.malformed_retries = int(malformed_retries)
        self.samples_via = samples_via
        self.window_seconds = float(window_seconds)
        self.sampling_rate = SAMPLING_RATE
        self.system_prompt = system_prompt
        self.max_tokens_param = max_tokens_param
        self.extra_body = dict(extra_body or {})
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="openai-audio")
        self._fatal: str | None = None
        self._lock = threading.Lock()
        self.stats = {"http_requests": 0, "malformed_retries": 0, "item_errors": 0,
                      "prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def from_pretrained(cls, source: str | None = None, **kwargs: Any) -> "OpenAIAudioBackend":
        """Registry hook: ``source`` is the base URL (``""``: from the environment); ``model`` in kwargs."""
        if "model" not in kwargs:
            raise TypeError("OpenAIAudioBackend.from_pretrained needs model=")
        for name in kwargs:
            if "key" in name.lower() and name != "api_key_env":
                raise TypeError(f"{name!r} is not accepted: the API key is read only from the environment")
        return cls(base_url=source or None, **kwargs)

    def __repr__(self) -> str:
        return f"OpenAIAudioBackend(model={self.model!r}, endpoint={_host(self.base_url)!r})"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def describe(self) -> dict[str, Any]:
        """The endpoint's whole base URL (scheme, host, port and path; never the key or URL
        credentials: two deployments behind one host differ by path), model, audio format and what
        else changes the answers, so result stores of different endpoints or settings never mix."""
        return {"backend": "OpenAIAudioBackend", "model": self.model, "endpoint": endpoint_id(self.base_url),
                "audio_format": self.audio_format, "samples_via": self.samples_via,
                "window_seconds": self.window_seconds, "system_prompt": self.system_prompt,
                "extra_body": self.extra_body}

    # ---------------------------------------------------------------- generation

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        """Yield items as soon as all their HTTP requests are answered (so the runner writes them
        to the store at once; a killed run loses only requests in flight)."""
        if self._fatal is not None:
            raise BackendFatalError(self._fatal)
        calls_left: dict[int, int] = {}
        answers: dict[int, list[tuple[_Call, Any]]] = {i: [] for i in range(len(requests))}
        errors: dict[int, str] = {}
        futures: dict[Future, _Call] = {}
        for i, req in enumerate(requests):
            calls = self._plan(i, req)
            calls_left[i] = len(calls)
            for call in calls:
                futures[self._pool.submit(self._complete, req, call)] = call
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                ready = []
                for future in done:
                    call = futures[future]
                    try:
                        answers[call.request].append((call, future.result()))
                    except _Fatal as err:
                        raise BackendFatalError(str(err)) from None
                    except _ItemFailed as err:
                        errors.setdefault(call.request, str(err))
                    calls_left[call.request] -= 1
                    if calls_left[call.request] == 0:
                        ready.append(call.request)
                if ready:
                    ready.sort()
                    yield ready, [self._assemble(requests[i], answers[i], errors.get(i)) for i in ready]
        finally:
            for future in pending:
                future.cancel()

    def _plan(self, index: int, req: GenerationRequest) -> list[_Call]:
        samples = req.samples
        seed = req.settings.seed
        if req.settings.greedy:  # one deterministic answer serves every sample index
            return [_Call(index, samples, 1, _row_seed(seed, req.item_id, samples[0]))]
        if self.samples_via == "n":
            return [_Call(index, samples, len(samples), _row_seed(seed, req.item_id, samples[0]))]
        return [_Call(index, (j,), 1, _row_seed(seed, req.item_id, j)) for j in samples]

    def _body(self, req: GenerationRequest, call: _Call) -> dict[str, Any]:
        s = req.settings
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": [
            audio_content_part(req.audio, self.audio_format, self.sampling_rate),
            {"type": "text", "text": req.prompt}]})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": call.n, "seed": call.seed,
                                self.max_tokens_param: s.max_new_tokens}
        extra = dict(self.extra_body)
        if s.greedy:
            body["temperature"] = 0.0
        else:
            body["temperature"] = float(s.temperature)
            body["top_p"] = float(s.top_p)
            if s.top_k > 0:
                extra["top_k"] = int(s.top_k)
        if extra:
            body["extra_body"] = extra
        return body

    def _complete(self, req: GenerationRequest, call: _Call) -> tuple[list[tuple[str, int | None, bool]], int]:
        """One chat completion: ``([(text, completion tokens or None, finished)] per choice, prompt tokens)``.

        The openai client retries 408/409/429/5xx, timeouts and connection errors itself
        (``max_retries``, exponential backoff, ``Retry-After`` honoured); that suffices for transport
        errors, so this method adds only what the client does not do:

        * a 200 whose body is not a usable completion (broken JSON, no choices, no text, fewer
          choices than ``n``) is asked again up to ``malformed_retries`` times: the client treats
          any 200 as success, and a proxy or an overloaded server does send such bodies;
        * the outcome is classified: 401/403/404 and an exhausted quota are fatal (every item would
          fail alike: stop the run); anything else left after the retries (a 429/5xx streak, a
          timeout, a 400 for this clip) fails this item only, with the cause scrubbed of the key.
        """
        # local import: openai is an optional extra, needed by this backend only
        import openai

        if self._fatal is not None:
            raise _Fatal(self._fatal)
        body = self._body(req, call)
        for attempt in range(self.malformed_retries + 1):
            if self._fatal is not None:  # another thread hit a fatal error: send nothing more
                raise _Fatal(self._fatal)
            with self._lock:
                self.stats["http_requests"] += 1
            try:
                response = self._client.chat.completions.create(**body)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                raise self._fatal_error(f"{_host(self.base_url)} refused the request "
                                        f"(HTTP {err.status_code}): {_message(err)}")
            except openai.RateLimitError as err:
                if _code(err) == "insufficient_quota":
                    raise self._fatal_error(f"{_host(self.base_url)}: quota exhausted: {_message(err)}")
                raise self._item_error(f"rate limited (HTTP 429) after {self.max_retries} retries: {_message(err)}")
            except openai.APITimeoutError:
                raise self._item_error(f"timed out after {self.max_retries + 1} attempts of {self.timeout:g} s")
            except openai.APIConnectionError as err:
                raise self._item_error(f"connection failed after {self.max_retries + 1} attempts: {err}")
            except openai.APIStatusError as err:
                retried = err.status_code >= 500 or err.status_code in (408, 409)
                raise self._item_error(f"HTTP {err.status_code}"
                                       f"{f' after {self.max_retries} retries' if retried else ''}: {_message(err)}")
            except ValueError as err:  # the client lets a broken JSON body through as JSONDecodeError
                problem = f"unparseable response body ({err})"
            else:
                parsed = _parse(response, call.n)
                if isinstance(parsed, tuple):
                    return parsed
                problem = parsed
            if attempt < self.malformed_retries:
                with self._lock:
                    self.stats["malformed_retries"] += 1
        raise self._item_error(f"malformed response after {self.malformed_retries + 1} attempts: {problem}")

    def _assemble(self, req: GenerationRequest, answers: list[tuple[_Call, Any]], error: str | None) -> Generation:
        samples = req.samples
        if error is not None:
            with self._lock:
                self.stats["item_errors"] += 1
            return Generation(req.item_id, samples, [], [], [], error=error)
        by_sample: dict[int, tuple[str, int | None, bool]] = {}
        prompt_tokens = 0
        for call, (choices, p_tokens) in answers:
            prompt_tokens = max(prompt_tokens, p_tokens)
            if len(call.samples) > 1 and call.n == 1:  # greedy: one answer for all indices
                choices = choices * len(call.samples)
            by_sample.update(zip(call.samples, choices))
        rows = [by_sample[j] for j in samples]
        return Generation(req.item_id, samples, texts=[t for t, _, _ in rows], new_tokens=[k for _, k, _ in rows],
                          finished=[f for _, _, f in rows], prompt_tokens=prompt_tokens)

    # ---------------------------------------------------------------- errors

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "<redacted>")
        return text

    def _fatal_error(self, reason: str) -> _Fatal:
        reason = self._scrub(reason)
        with self._lock:
            if self._fatal is None:
                self._fatal = reason
        return _Fatal(reason)

    def _item_error(self, reason: str) -> _ItemFailed:
        return _ItemFailed(self._scrub(reason))


def _parse(response: Any, n: int) -> tuple[list[tuple[str, int | None, bool]], int] | str:
    """The choices of a completion, or what is wrong with it."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        return f"response without choices: {str(response)[:200]!r}"
    if len(choices) < n:
        return f"{len(choices)} choices for n={n}"
    ordered = sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)[:n]
    out = []
    usage = getattr(response, "usage", None)
    completion = getattr(usage, "completion_tokens", None)
    for choice in ordered:
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str):
            return "a choice without text content"
        # usage counts all choices together: per-choice token counts are known only for n=1
        tokens = int(completion) if (n == 1 and completion is not None) else None
        out.append((content.strip(), tokens, getattr(choice, "finish_reason", None) != "length"))
    return out, int(getattr(usage, "prompt_tokens", 0) or 0)


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return " ".join(str(inner["message"]).split())[:300]
    return " ".join(str(getattr(err, "message", err)).split())[:300]


def _code(err: Any) -> str | None:
    code = getattr(err, "code", None)
    if code:
        return str(code)
    body = getattr(err, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    return str(inner.get("code") or inner.get("type") or "") or None if isinstance(inner, dict) else None


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


# -------------------------------------------------------------------------------------------------
# Registry


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``openai:<model>@<base_url>`` -> ``(model, base_url)``; ``openai:<model>`` -> ``(model, None)``."""
    if not spec.startswith(SPEC_PREFIX):
        raise ValueError(f"not an OpenAI endpoint spec (openai:<model>@<base_url>): {spec!r}")
    rest = spec[len(SPEC_PREFIX):]
    model, sep, base_url = rest.partition("@")
    if not model or (sep and not base_url):
        raise ValueError(f"model spec {spec!r}: expected openai:<model>@<base_url> or openai:<model>")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ValueError(f"model spec {spec!r}: the base URL must start with http:// or https://")
    return model, base_url or None


def model_entry(spec: str):
    """The :class:`~reliable_lalm.models.registry.ModelEntry` of an endpoint spec (no request is sent).

    The entry's name is the spec without URL credentials (``user:password@`` is dropped), so it can
    appear in parameters and paths.
    """
    model, base_url = parse_spec(spec)
    shown = base_url
    if base_url:
        parts = urlsplit(base_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return ModelEntry(f"{SPEC_PREFIX}{model}@{shown}" if shown else f"{SPEC_PREFIX}{model}",
                      "reliable_lalm.models.openai_audio:OpenAIAudioBackend", base_url or "",
                      family="openai-endpoint", description=f"{model} behind an OpenAI-compatible endpoint",
                      extra_requirements=("openai",), options={"model": model})
