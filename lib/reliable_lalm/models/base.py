"""The audio-LM backend protocol: what every model offers the methods, the runners and the metrics.

A backend turns :class:`GenerationRequest` (item id, mono 16 kHz audio, a filled prompt template,
decoding settings) into :class:`Generation` (texts per sample index). Backends batch as they
like but must return what batch size 1 would: a sample depends only on (run seed, item id,
sample index), never on its batch. ``num_samples > 1`` asks for K@N samples; a backend that can
shares one prefill among them. Backends that can score text continuations implement
:meth:`Backend.score_continuations` (per-option log-likelihoods for confidence-based abstention).
"""
from __future__ import annotations

import abc
import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from reliable_lalm.core.fingerprint import directory_fingerprint, model_fingerprint
from reliable_lalm.core.items import SAMPLING_RATE


class AudioNotReachedError(RuntimeError):
    """The model generated without the audio features of every prompt (a processor/model mismatch)."""


# --------------------------------------------------------------------------------------------------
# Requests, settings, results


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings, all explicit (the checkpoint's generation_config only supplies EOS ids;
    :func:`reliable_lalm.models.hf_loading.published_generation_settings` reads its sampling
    values when a profile asks for ``decoding: generation_config``).

    Greedy unless ``do_sample``. ``top_k=0`` and ``top_p=1.0`` switch those filters off.
    ``repetition_penalty`` is HF's (CTRL-style): the logit of every token already in the prompt or
    the answer is divided by it when positive, multiplied when negative, before greedy choice or
    sampling; 1.0 switches it off. ``num_samples`` continuations are drawn per prompt from one
    shared prefill.
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_samples: int = 1
    seed: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if not all(math.isfinite(v) for v in (self.temperature, self.top_p, self.repetition_penalty)) \
                or self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid sampling settings {self}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Off (1.0) is left out, so result stores keyed before the penalty existed keep their keys:
        # their outputs were computed without one.
        if data["repetition_penalty"] == 1.0:
            data.pop("repetition_penalty")
        return data


def context_problem(backend: "Backend", request: "GenerationRequest") -> str | None:
    """Why ``request`` does not fit the model's context (one line naming the lengths), or None.

    Checked per item before any batching, so an over-long item becomes its own error record: in a
    batch it would pad every other row to its length (a 1 MB question asked for hundreds of GB),
    and past the model's positions it would yield garbage without a warning.
    """
    limit = getattr(backend, "max_positions", None)
    if not limit:
        return None
    prompt = backend.prompt_tokens(request)
    if prompt is None or prompt + request.settings.max_new_tokens <= limit:
        return None
    return (f"prompt too long for the model: {prompt} prompt tokens (text and audio) + "
            f"{request.settings.max_new_tokens} new tokens > its {limit} positions")


@dataclass
class GenerationRequest:
    item_id: str
    audio: np.ndarray  # mono float32 at 16 kHz
    prompt: str  # user text (a filled prompt template); the chat format is added by the backend
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    sample_indices: tuple[int, ...] | None = None  # default: range(settings.num_samples)
    # User text placed BEFORE the audio in the chat turn (MCoT's few-shot examples, Table 6); only
    # sent to backends with ``places_text_before_audio`` (others get it joined into ``prompt``).
    text_before_audio: str = ""

    @property
    def samples(self) -> tuple[int, ...]:
        if self.sample_indices is not None:
            return tuple(self.sample_indices)
        return tuple(range(self.settings.num_samples))


@dataclass
class Generation:
    item_id: str
    sample_indices: tuple[int, ...]
    texts: list[str]  # one per sample index, special tokens skipped, stripped
    new_tokens: list[int]  # generated tokens per sample (EOS included)
    finished: list[bool]  # True: stopped at EOS; False: hit max_new_tokens
    prompt_tokens: int = 0
    # Set when this item failed inside the backend (e.g. an endpoint timed out after its retries):
    # texts/new_tokens/finished are then empty and the runner writes an error record per sample
    # index naming this cause; the run goes on.
    error: str | None = None

    @property
    def text(self) -> str:
        return self.texts[0]


class Backend(abc.ABC):
    """Turns requests into generations. ``generate`` returns them in request order."""

    window_seconds: float = 30.0  # audio the model hears; longer audio is truncated by the runner
    places_text_before_audio: bool = False  # honours GenerationRequest.text_before_audio
    sampling_rate: int = SAMPLING_RATE

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generations in request order. Backends override this or :meth:`generate_iter` (or both):
        by default each is built from the other."""
        if type(self).generate_iter is Backend.generate_iter:
            raise NotImplementedError(f"{type(self).__name__} must implement generate or generate_iter")
        out: list[Generation | None] = [None] * len(requests)
        for indices, generations in self.generate_iter(requests):
            for i, g in zip(indices, generations):
                out[i] = g
        return out  # type: ignore[return-value]

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        """Yield ``(request indices, generations)`` as batches finish (default: one batch)."""
        if type(self).generate is Backend.generate:
            raise NotImplementedError(f"{type(self).__name__} must implement generate or generate_iter")
        yield list(range(len(requests))), self.generate(requests)

    def describe(self) -> dict[str, Any]:
        """What identifies the model in a result store's parameters."""
        return {"backend": self.describe_name()}

    # The name result stores key this backend's outputs on (default: the class name).
    STORE_NAME: str | None = None

    @classmethod
    def describe_name(cls) -> str:
        return cls.STORE_NAME or cls.__name__

    @classmethod
    def describe_checkpoint(cls, source: str, adapter: str | None, dtype: str) -> dict[str, Any]:
        """What identifies a loaded checkpoint in result keys (by content, never by path), computable
        without loading it: the experiments' "already complete" check uses the same function."""
        return {"backend": cls.describe_name(), "weights": model_fingerprint(source),
                "adapter_weights": directory_fingerprint(adapter) if adapter else None, "dtype": dtype}

    def check_prompt(self, prompt: str) -> str | None:
        """Why this prompt cannot be generated from (one line), or None. Checked per item before batching."""
        return _unencodable(prompt)

    # A backend whose model runs elsewhere (an endpoint, a worker process): loaded by its registry
    # entry alone, without a local batch size, device or adapter; described only once it answers.
    serves_remotely: bool = False
    # Positions of the model's context (prompt, audio and answer together); None where unknown.
    max_positions: int | None = None

    def prompt_tokens(self, request: "GenerationRequest") -> int | None:
        """How many positions ``request``'s prompt takes (text and audio tokens), or None where the
        backend cannot tell (an endpoint, a worker): :func:`context_problem` then checks nothing."""
        return None

    def check_settings(self, settings: GenerationSettings) -> None:
        """Raise ``ValueError`` for settings this model cannot run (checked once per run, not per item)."""

    # ---------------------------------------------------------------- scoring continuations
    supports_option_logprobs: bool = False  # True where score_continuations works

    def score_continuations(self, requests: Sequence[GenerationRequest],
                            continuations_per_request: Sequence[Sequence[str]], *,
                            terminate: bool = True) -> list["ContinuationScores"]:
        """Log-likelihood of each candidate text as the assistant's complete answer to each request.

        For request ``i`` and continuation ``c``: ``sum_t log P(token_t | audio, prompt, tokens_<t)``
        over the tokens of ``c`` (followed by the end-of-turn token with ``terminate``, so that
        ``c`` is scored as the *whole* answer, not as the prefix of a longer one), with the
        token count beside it for length normalisation. Only the request's audio and prompt are
        used (decoding settings are ignored). Backends without access to token probabilities
        raise :class:`OptionScoringUnsupported` (the default).
        """
        raise OptionScoringUnsupported(f"{type(self).__name__} cannot score continuations")


def _unencodable(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"prompt is not valid text: UTF-8 cannot encode {text[err.start:err.end]!r} at character "
                f"{err.start} ({err.reason}; a lone surrogate in the question or choices?)")
    return None


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _row_seed(seed: int, item_id: str, sample_index: int) -> int:
    digest = hashlib.sha256(f"{seed}\x1f{item_id}\x1f{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class BackendFatalError(RuntimeError):
    """A failure every further request would repeat (a refused API key, an unknown model, a worker
    that died): the run stops with this one-line reason instead of writing an error per item."""


class OptionScoringUnsupported(NotImplementedError):
    """The backend cannot score continuations (e.g. a chat API without log-probabilities)."""



def state_dict_fingerprint(model) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes) of an in-memory model."""
    # local import: the protocol serves endpoint and worker backends, which run without torch
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        h.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class ContinuationScores:
    """What :meth:`Backend.score_continuations` returns for one request, one entry per continuation."""

    item_id: str
    continuations: list[str]
    logprobs: list[float]  # sum of the continuation's token log-probabilities (natural log)
    token_counts: list[int]  # tokens scored per continuation (end-of-turn included with terminate)
    prompt_tokens: int = 0
