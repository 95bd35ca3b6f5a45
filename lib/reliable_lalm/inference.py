"""Batched, resumable inference for Qwen2-Audio-class models, and the method runners.

Engine (:class:`HFBackend`)
    Requests (item id, audio, prompt, settings) are sorted by prompt length and generated in
    left-padded batches with an explicit decoding loop over the model's KV cache:

    * one prefill per question: for K@N the audio and the prompt are encoded once and the cache is
      repeated N times, so N continuations share the prefix (``generate(num_return_sequences=N)``
      would run the audio encoder and the prompt N times);
    * finished rows are dropped from the batch (the cache is compacted), so one long answer does
      not keep a whole batch busy;
    * the processor's work for the next batch (tokenizing, log-mel features) runs in a background
      thread while the model works on the current batch;
    * sampling draws its randomness from a ``torch.Generator`` seeded by (run seed, item id, sample
      index): a sample does not depend on which batch it landed in, so a resumed or re-batched run
      reproduces it;
    * a forward pre-hook on ``model.model.audio_tower`` checks, at every prefill, that the audio
      features of every row reached the model (with ``audio=`` dropped or misspelled the processor
      silently returns text only and the model answers without hearing anything).

Runners (:func:`run_method`, :func:`sample_knn`)
    Write one record per ``(item_id, sample_index)`` into a :class:`~reliable_lalm.results.ResultStore`
    after every batch, and skip finished keys when re-run: a run killed at any point (even
    ``kill -9``) is finished by running the same command again, without duplicates.

Policies
    * A bad item (missing/unreadable/empty audio, audio < 0.1 s, empty or duplicated choices, a prompt
      that cannot be built) gets an *error record* (``error`` = the reason, ``model_output`` =
      ``None``) and the run goes on. Error records count as done on resume: input errors are
      deterministic. ``retry_errors=True`` removes them from the store first and tries those items
      again (do not use it while another process writes to the same store).
    * Audio longer than the feature extractor's window (30 s for Qwen2-Audio, 4 s for the demo) is
      truncated to the window, as the processor would silently do, and the record gets a
      ``warning``. Stereo and non-16 kHz files are downmixed and resampled by
      :func:`reliable_lalm.data.load_audio`.
    * A prompt the model must not see is an item error before batching: text UTF-8 cannot encode
      (a lone surrogate such as ``"\ud83d"`` is valid JSON) or a special token of the tokenizer
      (``<|AUDIO|>`` makes the processor count one audio too many for the whole batch;
      ``<|im_start|>`` would be read as a control token). If a batch still raises an input error
      (``ValueError``, ``TypeError``, ``UnicodeError``, ``KeyError``, ``IndexError``: what the
      processor raises for text it cannot handle), it is split in halves until the failing items
      are alone; they get error records, the others are generated.
    * Exceptions that are not about one item (CUDA errors, a model bug, the audio check, or an input
      error that every item of a batch raises on its own) stop the run; CUDA out-of-memory splits
      the batch in two and retries.
    * A run holds the store's writer lock (:meth:`~reliable_lalm.results.ResultStore.writer_lock`):
      a second process on the same store is refused with the pid of the first.
"""
from __future__ import annotations

import abc
import hashlib
import inspect
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .chat import chat_text
from .data import SAMPLING_RATE, BenchmarkItem, ItemError, load_audio
from .results import ResultStore, record_line

METHODS: tuple[str, ...] = ("baseline", "idk", "mcot", "agent")
# Defaults for the real 7B model; the demo model's callers pass shorter ones.
DEFAULT_MAX_NEW_TOKENS = {"baseline": 64, "idk": 64, "mcot": 256, "agent": 128}
AGENT_TYPE_MAX_NEW_TOKENS = 16  # step 1 answers one word ("Sound"); no need to wait for 128 tokens
MIN_AUDIO_SECONDS = 0.1  # shorter clips give 0-1 audio tokens after the encoder's two halvings
KNN_DEFAULT_TEMPERATURE = 1.0  # the paper does not state its sampling settings for K@N


class AudioNotReachedError(RuntimeError):
    """The model generated without the audio features of every prompt (a processor/model mismatch)."""


# --------------------------------------------------------------------------------------------------
# Requests, settings, results


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings, all explicit (the checkpoint's generation_config only supplies EOS ids).

    Greedy unless ``do_sample``. ``top_k=0`` and ``top_p=1.0`` switch those filters off.
    ``num_samples`` continuations are drawn per prompt from one shared prefill.
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling settings {self}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationRequest:
    item_id: str
    audio: np.ndarray  # mono float32 at 16 kHz
    prompt: str  # user text (a filled prompt template); the chat format is added by the backend
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    sample_indices: tuple[int, ...] | None = None  # default: range(settings.num_samples)

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

    @property
    def text(self) -> str:
        return self.texts[0]


class Backend(abc.ABC):
    """Turns requests into generations. ``generate`` returns them in request order."""

    window_seconds: float = 30.0  # audio the model hears; longer audio is truncated by the runner
    sampling_rate: int = SAMPLING_RATE

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        ...

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        """Yield ``(request indices, generations)`` as batches finish (default: one batch)."""
        yield list(range(len(requests))), self.generate(requests)

    def describe(self) -> dict[str, Any]:
        """What identifies the model in a result store's parameters."""
        return {"backend": type(self).__name__}

    def check_prompt(self, prompt: str) -> str | None:
        """Why this prompt cannot be generated from (one line), or None. Checked per item before batching."""
        return _unencodable(prompt)

    def check_settings(self, settings: GenerationSettings) -> None:
        """Raise ``ValueError`` for settings this model cannot run (checked once per run, not per item)."""


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


def audio_token_count(n_samples: int, hop_length: int = 160) -> int:
    """Audio tokens the processor inserts for a clip (mel frames, conv stride 2, pooling 2)."""
    frames = max(1, n_samples // hop_length)
    return max(0, (((frames - 1) // 2 + 1) - 2) // 2 + 1)


def estimate_batch_size(free_bytes: int, config, dtype_bytes: int, prompt_len: int, max_new_tokens: int,
                        num_samples: int = 1, *, cap: int = 128) -> int:
    """Prompts per batch that fit in ``free_bytes`` of GPU memory (a rough bound; OOM still splits).

    Per prompt: the KV cache of every sample row over prompt + new tokens, plus prefill activations
    (a few hidden-size and two intermediate-size tensors per token, and the audio encoder's
    positions), doubled for allocator slack; 80 % of the free memory is used.
    """
    text_cfg, audio_cfg = config.text_config, config.audio_config
    head_dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
    kv_per_token = 2 * text_cfg.num_hidden_layers * text_cfg.num_key_value_heads * head_dim * dtype_bytes
    per_prompt = (kv_per_token * (prompt_len + max_new_tokens) * num_samples
                  + prompt_len * (6 * text_cfg.hidden_size + 2 * text_cfg.intermediate_size) * dtype_bytes
                  + 2 * audio_cfg.max_source_positions * (6 * audio_cfg.d_model + 2 * audio_cfg.encoder_ffn_dim)
                  * dtype_bytes)
    return int(max(1, min(cap, 0.8 * free_bytes // (2 * per_prompt))))


class HFBackend(Backend):
    """Qwen2AudioForConditionalGeneration (demo or 7B) with a transformers processor.

    ``batch_size``: prompts per batch (each with ``num_samples`` rows). ``None``: chosen from free
    GPU memory on CUDA, :data:`CPU_BATCH_SIZE` on CPU.
    """

    CPU_BATCH_SIZE = 32
    MAX_AUTO_BATCH = 128

    def __init__(self, model, processor, *, batch_size: int | None = None, check_audio: bool = True,
                 compact: bool = True, feature_device: str | None = None, prefetch: bool = True):
        import torch

        from .modeling import audio_tower, base_model, feature_window_seconds

        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation must equal batch-size-1 generation
        self.batch_size = batch_size
        self.compact = compact
        self.prefetch = prefetch
        # The fast tokenizer is not safe to use from two threads at once (padding settings are
        # mutated per call): the prefetching encoder and the decoder share this lock.
        self._tokenizer_lock = threading.Lock()
        self._inner = base_model(model)
        self.device = self._inner.get_input_embeddings().weight.device
        fe = processor.feature_extractor
        self.sampling_rate = int(fe.sampling_rate)
        self.hop_length = int(fe.hop_length)
        self.window_seconds = feature_window_seconds(processor)
        self.window_samples = int(fe.n_samples)
        # Whisper log-mel on the GPU when the model is there (30 s of numpy STFT per clip is slow).
        self.feature_device = feature_device or ("cuda" if self.device.type == "cuda" else "cpu")
        eos = getattr(self._inner.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.audio_token_id = int(self._inner.config.audio_token_id)
        forward_params = inspect.signature(self._inner.model.forward).parameters
        # transformers renamed past_key_values to cache (5.x); support both spellings.
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        self.check_audio = check_audio
        self._audio_calls: list[tuple[int, bool]] = []
        self._chat_cache: dict[str, str] = {}
        self._hook = audio_tower(model).register_forward_pre_hook(self._record_audio, with_kwargs=True)
        self.special_tokens = self._special_token_strings(processor)
        text_config = getattr(self._inner.config, "text_config", self._inner.config)
        self.max_positions = getattr(text_config, "max_position_embeddings", None)
        self._torch = torch
        self.stats = {"batches": 0, "prefill_rows": 0, "decode_steps": 0, "oom_splits": 0, "compactions": 0}

    @classmethod
    def from_pretrained(cls, name_or_path, *, batch_size: int | None = None, device="auto", dtype="auto",
                        device_map=None, adapter=None, **kwargs) -> "HFBackend":
        from .modeling import load_model_and_processor

        model, processor = load_model_and_processor(name_or_path, device=device, dtype=dtype,
                                                    device_map=device_map, adapter=adapter)
        return cls(model, processor, batch_size=batch_size, **kwargs)

    @staticmethod
    def _special_token_strings(processor) -> tuple[str, ...]:
        """Every special token string of the tokenizer (and the processor's audio markers), longest first."""
        tok = processor.tokenizer
        found = set(getattr(tok, "all_special_tokens", ()) or ())
        for added in (getattr(tok, "added_tokens_decoder", None) or {}).values():
            if getattr(added, "special", False):
                found.add(str(added.content))
        for name in ("audio_token", "audio_bos_token", "audio_eos_token"):
            value = getattr(processor, name, None)
            if isinstance(value, str):
                found.add(value)
        return tuple(sorted((t for t in found if t), key=len, reverse=True))

    def check_prompt(self, prompt: str) -> str | None:
        problem = _unencodable(prompt)
        if problem is not None:
            return problem
        for token in self.special_tokens:
            if token in prompt:
                return (f"prompt contains {token!r}, a special token of the tokenizer (from the question or "
                        f"choices); the processor would read it as a control token, not text")
        return None

    def check_settings(self, settings: GenerationSettings) -> None:
        if self.max_positions and settings.max_new_tokens >= self.max_positions:
            raise ValueError(f"max_new_tokens={settings.max_new_tokens} does not fit the model: it has "
                             f"{self.max_positions} positions for the prompt and the answer together")

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def describe(self) -> dict[str, Any]:
        source = getattr(self.model, "rlalm_source", None) or {
            "model": getattr(self.model, "name_or_path", "") or type(self.model).__name__, "adapter": None}
        return {"backend": "HFBackend", **source, "dtype": str(self._inner.dtype).replace("torch.", ""),
                "window_seconds": self.window_seconds}

    # ---------------------------------------------------------------- audio check

    def _record_audio(self, module, args, kwargs):
        features = args[0] if args else kwargs.get("input_features")
        if features is not None:
            self._audio_calls.append((int(features.shape[0]), bool((features != 0).any())))

    def _assert_audio_reached(self, batch_rows: int, audio_tokens) -> None:
        if not self.check_audio:
            return
        calls, self._audio_calls = self._audio_calls, []
        if not calls:
            raise AudioNotReachedError("generation ran without audio: the audio tower was never called at "
                                       "prefill (were the clips passed to the processor as `audio=`?)")
        seen = sum(n for n, _ in calls)
        if seen != batch_rows or not all(nonzero for _, nonzero in calls):
            raise AudioNotReachedError(f"the audio tower saw {seen} clips ({calls}) for {batch_rows} prompts")
        if int(audio_tokens.min()) < 1:
            raise AudioNotReachedError("a prompt has no audio tokens after processing")

    # ---------------------------------------------------------------- batching

    def fit_audio(self, audio: np.ndarray) -> np.ndarray:
        """Truncate to the feature extractor's window (what the model can hear)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D, got shape {audio.shape}")
        return audio[: self.window_samples]

    def _chat_text(self, prompt: str) -> str:
        # Prompts repeat (agent step 1, K@N, several methods over one benchmark); the chat
        # template is a Jinja render (~1 ms), worth caching.
        text = self._chat_cache.get(prompt)
        if text is None:
            if len(self._chat_cache) > 4096:
                self._chat_cache.clear()
            text = self._chat_cache[prompt] = chat_text(self.processor, prompt)
        return text

    def _prompt_lengths(self, requests: Sequence[GenerationRequest], texts: Sequence[str] | None = None) -> list[int]:
        """Estimated token length of each prompt (text + audio tokens), to batch prompts of similar length.

        The text part is estimated from its UTF-8 size (about 3 bytes a token, an overestimate for
        English): tokenizing every prompt twice would cost more than it saves.
        """
        texts = texts if texts is not None else [self._chat_text(r.prompt) for r in requests]
        return [len(t.encode("utf-8")) // 3 + audio_token_count(min(len(r.audio), self.window_samples), self.hop_length)
                for t, r in zip(texts, requests)]

    def _auto_batch_size(self, prompt_len: int, settings: GenerationSettings) -> int:
        if self.batch_size:
            return max(1, int(self.batch_size))
        if self.device.type != "cuda":
            return self.CPU_BATCH_SIZE
        torch = self._torch
        free, _ = torch.cuda.mem_get_info(self.device)
        return estimate_batch_size(free, self._inner.config, torch.finfo(self._inner.dtype).bits // 8, prompt_len,
                                   settings.max_new_tokens, settings.num_samples, cap=self.MAX_AUTO_BATCH)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        for indices, generations in self.generate_iter(requests):
            for i, g in zip(indices, generations):
                out[i] = g
        return out  # type: ignore[return-value]

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        if not requests:
            return
        texts = [self._chat_text(r.prompt) for r in requests]  # rendered once, used twice
        lengths = self._prompt_lengths(requests, texts)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):  # a batch shares its decoding settings and sample count
            groups.setdefault((r.settings, len(r.samples)), []).append(i)
        plan: list[list[int]] = []
        for (settings, n_samples), indices in groups.items():
            # Longest first: the biggest batch meets the memory limit (if any) at once.
            indices = sorted(indices, key=lambda i: -lengths[i])
            start = 0
            while start < len(indices):
                size = self._auto_batch_size(lengths[indices[start]], replace(settings, num_samples=n_samples))
                plan.append(indices[start:start + size])
                start += size

        def encode(chunk):
            return self.encode([requests[i] for i in chunk], [texts[i] for i in chunk])

        def run(chunk, enc):
            return self._generate_with_oom_split([requests[i] for i in chunk], chunk, [texts[i] for i in chunk], enc)

        if not self.prefetch:
            for chunk in plan:
                yield from run(chunk, encode(chunk))
            return
        # The processor prepares batch k+1 in a background thread while the model runs batch k.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlalm-encode") as pool:
            pending = pool.submit(encode, plan[0])
            for k, chunk in enumerate(plan):
                enc = pending.result()
                if k + 1 < len(plan):
                    pending = pool.submit(encode, plan[k + 1])
                yield from run(chunk, enc)

    def _generate_with_oom_split(self, batch, indices, texts, enc=None):
        torch = self._torch
        try:
            result = self._generate_batch(batch, texts, enc)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            self.stats["oom_splits"] += 1
            half = len(batch) // 2  # the halves are encoded again, each on its own
            yield from self._generate_with_oom_split(batch[:half], indices[:half], texts[:half])
            yield from self._generate_with_oom_split(batch[half:], indices[half:], texts[half:])
            return
        yield indices, result

    # ---------------------------------------------------------------- the decoding loop

    def encode(self, requests: Sequence[GenerationRequest], texts: Sequence[str] | None = None):
        """Processor output for a batch: chat-formatted, left-padded, audio passed as ``audio=``."""
        texts = list(texts) if texts is not None else [self._chat_text(r.prompt) for r in requests]
        audios = [self.fit_audio(r.audio) for r in requests]
        extra = {} if self.feature_device == "cpu" else {"device": self.feature_device}
        with self._tokenizer_lock:
            return self.processor(text=texts, audio=audios, sampling_rate=self.sampling_rate, padding=True,
                                  return_tensors="pt", **extra)

    def _forward(self, **kwargs):
        cache = kwargs.pop("cache")
        out = self._inner.model(**kwargs, use_cache=True, **{self._cache_kw: cache})
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        # Only the last position's logits are needed: computing them for a whole prompt of 850
        # tokens x 156k vocabulary would cost gigabytes at prefill.
        logits = self._inner.lm_head(out.last_hidden_state[:, -1, :]).float().to(self.device)  # lm_head may sit on another GPU
        return logits, cache

    def _generate_batch(self, batch: Sequence[GenerationRequest], texts: Sequence[str] | None = None,
                        enc=None) -> list[Generation]:
        torch = self._torch
        from transformers import DynamicCache

        settings = batch[0].settings
        samples = [r.samples for r in batch]
        n = len(samples[0])
        if enc is None:
            enc = self.encode(batch, texts)
        if "input_features" not in enc:
            raise AudioNotReachedError("the processor returned no input_features for this batch")
        dev = self.device
        input_ids = enc["input_ids"].to(dev)
        attention = enc["attention_mask"].to(dev)
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        prompt_tokens = attention.sum(-1).tolist()
        self._audio_calls = []
        with torch.inference_mode():
            logits, cache = self._forward(
                input_ids=input_ids, attention_mask=attention, position_ids=positions,
                input_features=enc["input_features"].to(dev, self._inner.dtype),
                feature_attention_mask=enc["feature_attention_mask"].to(dev),
                cache=DynamicCache(config=self._inner.config))
            self._assert_audio_reached(len(batch), (input_ids == self.audio_token_id).sum(-1))
            rows = len(batch) * n
            if n > 1:  # K@N: N continuations of one prefill
                cache.batch_repeat_interleave(n)
                logits = logits.repeat_interleave(n, dim=0)
                attention = attention.repeat_interleave(n, dim=0)
                positions = positions.repeat_interleave(n, dim=0)
            last_pos = positions[:, -1:]
            steps = settings.max_new_tokens
            uniforms = None
            if not settings.greedy:
                # Per-row generators: the draw for (item, sample) is the same in any batch.
                uniforms = torch.stack([
                    torch.rand(steps, generator=torch.Generator().manual_seed(_row_seed(settings.seed, r.item_id, s)),
                               dtype=torch.float64)
                    for r, idx in zip(batch, samples) for s in idx]).to(dev)
            eos = torch.tensor(self.eos_ids, device=dev)
            generated = torch.full((rows, steps), self.pad_id, dtype=torch.long, device=dev)
            n_new = torch.zeros(rows, dtype=torch.long, device=dev)
            finished = torch.zeros(rows, dtype=torch.bool, device=dev)
            live = torch.arange(rows, device=dev)  # original row of each row still in the batch
            stopped = torch.zeros(rows, dtype=torch.bool, device=dev)  # per row of the current batch
            pad = torch.full((), self.pad_id, dtype=torch.long, device=dev)
            for t in range(steps):
                tokens = self._choose(logits, settings, None if uniforms is None else uniforms[live, t])
                tokens = torch.where(stopped, pad, tokens)  # rows that hit EOS only wait for compaction
                generated[live, t] = tokens
                n_new[live[~stopped]] = t + 1
                newly = torch.isin(tokens, eos) & ~stopped
                finished[live[newly]] = True
                stopped |= newly
                if t == steps - 1 or bool(stopped.all()):
                    break
                if self.compact and int(stopped.sum()) * 4 >= len(live):
                    # Drop finished rows from the cache once a quarter of the batch is done.
                    keep = (~stopped).nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    self.stats["compactions"] += 1
                    live, tokens, stopped = live[keep], tokens[keep], stopped[keep]
                    attention, last_pos = attention[keep], last_pos[keep]
                attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=1)
                last_pos = last_pos + 1
                logits, cache = self._forward(input_ids=tokens[:, None], attention_mask=attention,
                                              position_ids=last_pos, cache=cache)
                self.stats["decode_steps"] += 1
        self.stats["batches"] += 1
        self.stats["prefill_rows"] += len(batch)
        generated, n_new, finished = generated.cpu(), n_new.cpu().tolist(), finished.cpu().tolist()
        with self._tokenizer_lock:
            texts = self.tokenizer.batch_decode([generated[i, :n_new[i]] for i in range(rows)],
                                                skip_special_tokens=True)
        out = []
        for b, r in enumerate(batch):
            sl = slice(b * n, (b + 1) * n)
            out.append(Generation(item_id=r.item_id, sample_indices=tuple(samples[b]),
                                  texts=[t.strip() for t in texts[sl]], new_tokens=n_new[sl],
                                  finished=finished[sl], prompt_tokens=int(prompt_tokens[b])))
        return out

    def _choose(self, logits, settings: GenerationSettings, uniforms):
        """Next token per row: argmax, or inverse-CDF sampling with the row's own uniform draw."""
        torch = self._torch
        if settings.greedy:
            return logits.argmax(dim=-1)
        scores = logits / settings.temperature
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        if settings.top_k and settings.top_k < sorted_scores.shape[-1]:
            sorted_scores[:, settings.top_k:] = float("-inf")
        probs = sorted_scores.softmax(dim=-1)
        if settings.top_p < 1.0:
            before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above
            probs = probs.masked_fill(before >= settings.top_p, 0.0)  # the top token always stays
        cdf = probs.double().cumsum(dim=-1)
        target = (uniforms * cdf[:, -1]).unsqueeze(1)
        pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
        return order.gather(1, pick).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Runners


@dataclass
class RunSummary:
    method: str
    store: str
    n_items: int  # items asked for
    already_done: int  # items skipped because every key was already in the store
    processed: int  # items handled in this run (generated or errored)
    generated_records: int
    errors: int  # error records written in this run
    warnings: int  # records written with a warning in this run
    seconds: float
    error_items: dict[str, str] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items_per_second": self.items_per_second}


@dataclass
class _Prepared:
    item: BenchmarkItem
    audio: np.ndarray | None = None
    warning: str | None = None
    error: str | None = None


def check_choices(item: BenchmarkItem) -> None:
    choices = [str(c).strip() for c in item.choices]
    if len(choices) < 2:
        raise ItemError(item.id, f"{len(choices)} choices")
    if any(not c for c in choices):
        raise ItemError(item.id, "a choice is empty")
    if len(set(choices)) != len(choices):
        raise ItemError(item.id, f"duplicated choices {choices}")


def prepare_item(item: BenchmarkItem, window_seconds: float, sampling_rate: int = SAMPLING_RATE) -> _Prepared:
    """Validate an item and read its audio; item-level problems become ``error``, not exceptions."""
    try:
        check_choices(item)
        audio = load_audio(item.audio_path, sampling_rate=sampling_rate, item_id=item.id)
        seconds = len(audio) / sampling_rate
        if seconds < MIN_AUDIO_SECONDS:
            raise ItemError(item.id, f"audio is {seconds:.3f} s long; at least {MIN_AUDIO_SECONDS} s is needed")
    except ItemError as err:
        return _Prepared(item, error=err.cause)
    warning = None
    window = int(round(window_seconds * sampling_rate))
    if len(audio) > window:
        warning = (f"audio is {seconds:.1f} s, longer than the model's {window_seconds:g} s window: "
                   f"truncated to the first {window_seconds:g} s")
        audio = audio[:window]
    return _Prepared(item, audio=audio, warning=warning)


def _prepared_chunks(items: Sequence[BenchmarkItem], window_seconds: float, sampling_rate: int,
                     chunk: int) -> Iterator[list[_Prepared]]:
    """Read audio ``chunk`` items at a time, the next chunk in background threads while the model
    works on the current one (decoding mp3/flac and resampling is CPU work)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(start):
            return [pool.submit(prepare_item, it, window_seconds, sampling_rate) for it in items[start:start + chunk]]
        pending = submit(0)
        for start in range(0, len(items), chunk):
            current = [f.result() for f in pending]
            if start + chunk < len(items):
                pending = submit(start + chunk)
            yield current


def _item_fields(item: BenchmarkItem) -> dict[str, Any]:
    return {"task": item.task, "question": item.question, "choices": list(item.choices), "answer": item.answer}


def store_params(backend: Backend, method: str, settings: GenerationSettings, few_shot=(), **extra) -> dict[str, Any]:
    """What a result store is keyed on: results of other settings never mix into it."""
    from .prompts import PROMPT_VERSION

    params = {"method": method, "settings": settings.to_dict(), "prompt_version": PROMPT_VERSION,
              "model": backend.describe(), "few_shot": [asdict(e) for e in few_shot]}
    params.update(extra)
    return params


def _open(store: ResultStore | str | os.PathLike, params: dict[str, Any], settings: GenerationSettings) -> ResultStore:
    if isinstance(store, ResultStore):
        return store
    return ResultStore.open(store, params, seed=settings.seed)


def drop_error_records(store: ResultStore) -> int:
    """Rewrite the store without its error records (for ``retry_errors``); returns how many were removed.

    The store is append-only with first-record-wins, so a retried key must not have an older record.
    """
    records = store.records()
    kept = [r for r in records if r.get("error") is None]
    removed = len(records) - len(kept)
    if removed:
        tmp = store.records_path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in kept:
                fh.write(record_line(r))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, store.records_path)
    return removed


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, dynamic_ncols=True)


def _default_settings(method: str) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=DEFAULT_MAX_NEW_TOKENS.get(method, 64))


BatchHook = Callable[[int, list[dict[str, Any]]], None]
# What a processor or tokenizer raises for input it cannot handle: one item's problem, not the run's.
ITEM_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, UnicodeError, KeyError, IndexError)


def _generate_isolating(backend: Backend, requests: Sequence[GenerationRequest]
                        ) -> Iterator[tuple[list[int], list[Generation], dict[int, str]]]:
    """``backend.generate_iter`` that turns an input error of one request into that request's failure.

    Yields ``(request indices, generations, {request index: reason})``. When a batch raises one of
    :data:`ITEM_INPUT_ERRORS`, the requests not generated yet are split in halves until each failing
    one is alone. If every one of them fails on its own (and there are several), the error is not
    about an item: it is raised.
    """
    pending = set(range(len(requests)))
    batches = iter(backend.generate_iter(requests))
    while True:
        try:
            indices, generations = next(batches)
        except StopIteration:
            return
        except ITEM_INPUT_ERRORS as err:
            first_error = err
            break
        pending.difference_update(indices)
        yield indices, generations, {}
    todo = sorted(pending)
    done: list[tuple[list[int], list[Generation]]] = []
    failed: dict[int, str] = {}

    def isolate(idx: list[int]) -> None:
        try:
            generations = backend.generate([requests[i] for i in idx])
        except ITEM_INPUT_ERRORS as err:
            if len(idx) == 1:
                failed[idx[0]] = f"generation failed: {_one_line(err)}"
                return
            isolate(idx[: len(idx) // 2])
            isolate(idx[len(idx) // 2:])
            return
        done.append((idx, generations))

    isolate(todo)
    if len(todo) > 1 and len(failed) == len(todo):
        raise first_error
    for idx, generations in done:
        yield idx, generations, {}
    if failed:
        yield [], [], failed


def _run_prompts(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *, method: str,
                 settings: GenerationSettings, make_prompt: Callable[[BenchmarkItem], str],
                 make_record: Callable[[BenchmarkItem, Generation, int], dict[str, Any]] | None = None,
                 error_store: ResultStore | None = None, n_samples: int = 1, progress: bool = True,
                 desc: str = "", on_batch: BatchHook | None = None, chunk: int | None = None) -> None:
    """Generate ``n_samples`` outputs per item for the keys missing from ``store``, writing as batches finish.

    Item errors go to ``error_store`` (default: ``store``), one error record per missing key; an item
    with an error record there is not retried.
    """
    error_store = error_store or store
    done = store.done_keys()
    err_done = error_store.done_keys() if error_store is not store else set()
    todo: list[tuple[BenchmarkItem, tuple[int, ...]]] = []
    for item in items:
        missing = tuple(j for j in range(n_samples) if (item.id, j) not in done)
        if missing and not any((item.id, j) in err_done for j in missing):
            todo.append((item, missing))
    missing_of = {item.id: missing for item, missing in todo}
    chunk = chunk or max(64, 8 * int(getattr(backend, "batch_size", None) or 32))
    backend.check_settings(settings)
    batches = 0
    bar = _progress(len(todo), desc or method, progress)
    try:
        for prepared in _prepared_chunks([it for it, _ in todo], backend.window_seconds, backend.sampling_rate, chunk):
            requests: list[GenerationRequest] = []
            warnings: dict[str, str | None] = {}
            errors: list[dict[str, Any]] = []
            for p in prepared:
                prompt = None
                if p.error is None:
                    try:
                        prompt = make_prompt(p.item)
                    except (ValueError, TypeError) as err:  # e.g. a choice the template cannot render
                        p.error = f"prompt: {err}"
                    else:
                        p.error = backend.check_prompt(prompt)
                if p.error is not None:
                    for j in missing_of[p.item.id]:
                        errors.append({"item_id": p.item.id, "sample_index": j, "method": method,
                                       "prompt": prompt, "model_output": None, "error": p.error,
                                       "warning": None, "settings": settings.to_dict(), **_item_fields(p.item)})
                    continue
                warnings[p.item.id] = p.warning
                requests.append(GenerationRequest(p.item.id, p.audio, prompt, settings,
                                                  sample_indices=missing_of[p.item.id]))
            if errors:
                error_store.extend(errors)
                bar.update(len({e["item_id"] for e in errors}))
            by_id = {p.item.id: p.item for p in prepared}
            for indices, generations, failed in (_generate_isolating(backend, requests) if requests else ()):
                if failed:
                    errors = [{"item_id": requests[i].item_id, "sample_index": j, "method": method,
                               "prompt": requests[i].prompt, "model_output": None, "error": cause, "warning": None,
                               "settings": settings.to_dict(), **_item_fields(by_id[requests[i].item_id])}
                              for i, cause in failed.items() for j in requests[i].samples]
                    error_store.extend(errors)
                    bar.update(len(failed))
                if not generations:
                    continue
                records = []
                for i, g in zip(indices, generations):
                    item, req = by_id[g.item_id], requests[i]
                    for j, (text, k, fin) in enumerate(zip(g.texts, g.new_tokens, g.finished)):
                        extra = make_record(item, g, j) if make_record is not None else {"model_output": text}
                        records.append({"item_id": item.id, "sample_index": g.sample_indices[j], "method": method,
                                        "prompt": req.prompt, "error": None, "warning": warnings.get(item.id),
                                        "settings": settings.to_dict(), "new_tokens": k, "finished": fin,
                                        **_item_fields(item), **extra})
                store.extend(records)  # one write per batch: a crash loses at most this batch
                bar.update(len(generations))
                batches += 1
                if on_batch is not None:
                    on_batch(batches, records)
    finally:
        bar.close()


def _summarize(method: str, store: ResultStore, items: Sequence[BenchmarkItem], done_before: set,
               n_samples: int, seconds: float) -> RunSummary:
    """Counts of this run, from the records the store gained."""
    ids = {it.id for it in items}
    new = [r for r in store.records()
           if (str(r["item_id"]), int(r.get("sample_index", 0))) not in done_before and r["item_id"] in ids]
    already = sum(all((it.id, j) in done_before for j in range(n_samples)) for it in items)
    errors = {r["item_id"]: r["error"] for r in new if r.get("error") is not None}
    return RunSummary(method=method, store=str(store.directory), n_items=len(items), already_done=already,
                      processed=len({r["item_id"] for r in new}),
                      generated_records=sum(r.get("error") is None for r in new), errors=len(errors),
                      warnings=len({r["item_id"] for r in new if r.get("warning")}), seconds=seconds,
                      error_items=errors)


def run_method(backend: Backend, items: Sequence[BenchmarkItem], method: str,
               store_dir_or_store: ResultStore | str | os.PathLike, *, settings: GenerationSettings | None = None,
               few_shot: Sequence[Any] = (), progress: bool = True, retry_errors: bool = False,
               on_batch: BatchHook | None = None, chunk: int | None = None) -> RunSummary:
    """Run a prompting method ("baseline", "idk", "mcot" or "agent") over ``items`` into a result store.

    Resumable: keys already in the store are skipped. Returns counts for this run.
    """
    from . import prompts

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    settings = settings or _default_settings(method)
    if settings.num_samples != 1:
        raise ValueError("run_method writes one output per item; use sample_knn for several samples")
    store = _open(store_dir_or_store, store_params(backend, method, settings, few_shot), settings)
    with store.writer_lock():  # a second process on this store is refused, not run twice
        if retry_errors:
            drop_error_records(store)
        done_before = store.done_keys()
        start = time.perf_counter()
        if method == "agent":
            _run_agent(backend, items, store, settings=settings, progress=progress, retry_errors=retry_errors,
                       on_batch=on_batch, chunk=chunk)
        else:
            few = tuple(few_shot)
            _run_prompts(backend, items, store, method=method, settings=settings,
                         make_prompt=lambda it: prompts.build_prompt(method, it.question, it.choices, few_shot=few),
                         progress=progress, on_batch=on_batch, chunk=chunk)
        summary = _summarize(method, store, items, done_before, 1, time.perf_counter() - start)
        store.update_manifest(last_run=summary.to_dict())
    return summary


def sample_knn(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore | str | os.PathLike,
               n_samples: int = 5, settings: GenerationSettings | None = None, *, method: str = "baseline",
               progress: bool = True, retry_errors: bool = False, on_batch: BatchHook | None = None,
               chunk: int | None = None) -> RunSummary:
    """K@N sampling: ``n_samples`` answers per item (sample_index 0..N-1) from one shared prefill each.

    Default settings: pure sampling at temperature 1 (the paper gives none), 64 new tokens.
    Samples are reproducible from ``settings.seed`` whatever the batching or resumption.
    """
    from . import prompts

    if method not in ("baseline", "idk", "mcot"):
        raise ValueError("K@N sampling uses a single-call prompt (baseline, idk or mcot)")
    settings = settings or GenerationSettings(max_new_tokens=DEFAULT_MAX_NEW_TOKENS[method], do_sample=True,
                                              temperature=KNN_DEFAULT_TEMPERATURE)
    settings = replace(settings, num_samples=n_samples)
    store = _open(store, store_params(backend, method, settings, kind="knn"), settings)
    with store.writer_lock():
        if retry_errors:
            drop_error_records(store)
        done_before = store.done_keys()
        start = time.perf_counter()
        _run_prompts(backend, items, store, method=method, settings=settings, n_samples=n_samples,
                     make_prompt=lambda it: prompts.build_prompt(method, it.question, it.choices),
                     progress=progress, desc=f"K@{n_samples} {method}", on_batch=on_batch, chunk=chunk)
        summary = _summarize(f"knn:{method}", store, items, done_before, n_samples, time.perf_counter() - start)
        store.update_manifest(last_run=summary.to_dict())
    return summary


AGENT_STEP_DIRS = ("agent_step1_type", "agent_step2_content")


def _run_agent(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *,
               settings: GenerationSettings, progress: bool, retry_errors: bool, on_batch: BatchHook | None,
               chunk: int | None) -> None:
    """The task agent (paper Table 7): type -> content -> answer, each step batched over all items.

    Steps 1 and 2 keep their outputs in their own stores inside the final store's folder, so a run
    interrupted in any step resumes there. Item errors go straight to the final store. A step-1
    reply naming no single type ends the item with an empty answer (scored invalid) and a warning.
    """
    from . import prompts

    params = store.manifest().get("params", {})
    type_store = ResultStore.open(store.directory / AGENT_STEP_DIRS[0], {**params, "step": "type"}, seed=settings.seed)
    content_store = ResultStore.open(store.directory / AGENT_STEP_DIRS[1], {**params, "step": "content"},
                                     seed=settings.seed)
    if retry_errors:
        drop_error_records(type_store)
        drop_error_records(content_store)

    def pending_after(candidates):
        done = store.done_keys()
        return [it for it in candidates if (it.id, 0) not in done]

    pending = pending_after(items)
    # Step 1: the audio type.
    type_settings = replace(settings, max_new_tokens=min(settings.max_new_tokens, AGENT_TYPE_MAX_NEW_TOKENS))

    def type_record(item, g, j):
        return {"model_output": g.texts[j], "agent_type_raw": g.texts[j],
                "agent_type": prompts.parse_audio_type(g.texts[j])}

    _run_prompts(backend, pending, type_store, method="agent", settings=type_settings,
                 make_prompt=lambda it: prompts.agent_type_prompt(), make_record=type_record,
                 error_store=store, progress=progress, desc="agent 1/3 type", on_batch=on_batch, chunk=chunk)
    types = type_store.by_item()
    untyped = []
    for it in pending_after(pending):
        rec = types.get(it.id)
        if rec is not None and rec.get("agent_type") is None:
            untyped.append({"item_id": it.id, "sample_index": 0, "method": "agent", "prompt": None,
                            "model_output": "", "error": None, "settings": settings.to_dict(),
                            "agent_type_raw": rec.get("agent_type_raw"), "agent_type": None, "agent_content": None,
                            "agent_type_prompt": rec.get("prompt"),
                            "warning": _join(rec.get("warning"), "agent step 1 named no single audio type "
                                             f"({rec.get('agent_type_raw')!r}); steps 2-3 skipped"),
                            **_item_fields(it)})
    store.extend(untyped)
    typed = [it for it in pending_after(pending) if it.id in types]

    # Step 2: the content description.
    def content_record(item, g, j):
        return {"model_output": g.texts[j], "agent_type": types[item.id]["agent_type"], "agent_content": g.texts[j]}

    _run_prompts(backend, typed, content_store, method="agent", settings=settings,
                 make_prompt=lambda it: prompts.agent_content_prompt(types[it.id]["agent_type"]),
                 make_record=content_record, error_store=store, progress=progress, desc="agent 2/3 content",
                 on_batch=on_batch, chunk=chunk)
    contents = content_store.by_item()
    ready = [it for it in pending_after(typed) if it.id in contents]

    # Step 3: the answer, given type and content.
    def answer_record(item, g, j):
        t, c = types[item.id], contents[item.id]
        return {"model_output": g.texts[j], "agent_type_raw": t.get("agent_type_raw"), "agent_type": t["agent_type"],
                "agent_content": c.get("agent_content"), "agent_type_prompt": t.get("prompt"),
                "agent_content_prompt": c.get("prompt")}

    def answer_prompt(it):
        content = contents[it.id].get("agent_content") or ""
        if not content.strip():  # the template needs text; record that the description was empty
            content = "(no description)"
        return prompts.agent_answer_prompt(types[it.id]["agent_type"], content, it.question, it.choices)

    _run_prompts(backend, ready, store, method="agent", settings=settings, make_prompt=answer_prompt,
                 make_record=answer_record, progress=progress, desc="agent 3/3 answer", on_batch=on_batch,
                 chunk=chunk)


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
