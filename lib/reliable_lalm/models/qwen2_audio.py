"""Qwen2-Audio backend: ``Qwen2AudioForConditionalGeneration`` with its transformers processor.

The engine (:class:`Qwen2AudioBackend`): requests are sorted by prompt length and generated in left-padded
batches with an explicit decoding loop over the model's KV cache:

* one prefill per question: for K@N the audio and the prompt are encoded once and the cache is
  repeated N times, so N continuations share the prefix (``generate(num_return_sequences=N)``
  would run the audio encoder and the prompt N times);
* finished rows are dropped from the batch (the cache is compacted), so one long answer does
  not keep a whole batch busy;
* the processor's work for the next batch (tokenizing, log-mel features) runs in a background
  thread while the model works on the current batch;
* sampling (:func:`reliable_lalm.models.sampling.choose_tokens`, the rule every engine shares)
  draws its randomness from a ``torch.Generator`` seeded by (run seed, item id, sample index): a sample does not depend on which batch it landed in, so a resumed or re-batched run
  reproduces it;
* a forward pre-hook on ``model.model.audio_tower`` checks, at every prefill, that the audio
  features of every row reached the model (with ``audio=`` dropped or misspelled the processor
  silently returns text only and the model answers without hearing anything).

CUDA out-of-memory splits the batch in two and retries.
"""
from __future__ import annotations

import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from transformers import DynamicCache, Qwen2AudioForConditionalGeneration

from reliable_lalm.core.items import SAMPLING_RATE
from reliable_lalm.models.base import (AudioNotReachedError, Backend, ContinuationScores, Generation,
                                       GenerationRequest, GenerationSettings, _unencodable, state_dict_fingerprint)
from reliable_lalm.models.chat import chat_text
from reliable_lalm.models.families import base_model
from reliable_lalm.models.hf_loading import audio_tower, feature_window_seconds, load_model_and_processor
from reliable_lalm.models.sampling import choose_tokens, row_uniforms
from reliable_lalm.models.training_adapter import END_OF_TURN, TrainingAdapter


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


class Qwen2AudioBackend(Backend):
    """Qwen2AudioForConditionalGeneration (demo or 7B) with a transformers processor.

    ``batch_size``: prompts per batch (each with ``num_samples`` rows). ``None``: chosen from free
    GPU memory on CUDA, :data:`CPU_BATCH_SIZE` on CPU.
    """

    # The name result stores key this engine's outputs on (Backend.describe_name): its name before
    # the rename, so the stores, caches and shipped adapters' provenance made under it stay valid.
    STORE_NAME = "HFBackend"
    CPU_BATCH_SIZE = 32
    MAX_AUTO_BATCH = 128
    places_text_before_audio = True  # MCoT's examples go before the audio (chat content: text, audio, text)

    def __init__(self, model, processor, *, batch_size: int | None = None, check_audio: bool = True,
                 compact: bool = True, feature_device: str | None = None, prefetch: bool = True):
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
        self._chat_cache: dict[tuple[str, str], str] = {}
        self._hook = audio_tower(model).register_forward_pre_hook(self._record_audio, with_kwargs=True)
        self.special_tokens = self._special_token_strings(processor)
        text_config = getattr(self._inner.config, "text_config", self._inner.config)
        self.max_positions = getattr(text_config, "max_position_embeddings", None)
        self.stats = {"batches": 0, "prefill_rows": 0, "decode_steps": 0, "oom_splits": 0, "compactions": 0}
        self._description: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, name_or_path, *, batch_size: int | None = None, device="auto", dtype="auto",
                        device_map=None, adapter=None, **kwargs) -> "Qwen2AudioBackend":
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

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the chat-formatted prompt, each audio placeholder counted as the audio tokens it
        expands to (the clip as heard: cut to the window)."""
        text = self._chat_text(request.prompt, request.text_before_audio)
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        placeholders = sum(1 for i in ids if i == self.audio_token_id)
        audio = audio_token_count(min(len(request.audio), self.window_samples), self.hop_length)
        return len(ids) + placeholders * (audio - 1)

    def check_settings(self, settings: GenerationSettings) -> None:
        if self.max_positions and settings.max_new_tokens >= self.max_positions:
            raise ValueError(f"max_new_tokens={settings.max_new_tokens} does not fit the model: it has "
                             f"{self.max_positions} positions for the prompt and the answer together")

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def describe(self) -> dict[str, Any]:
        """The model by content: checkpoint and adapter hashes and the dtype (never a path)."""
        if self._description is None:
            source = getattr(self.model, "rlalm_source", None)
            dtype = str(self._inner.dtype).replace("torch.", "")
            if source is not None:
                self._description = self.describe_checkpoint(source["model"], source.get("adapter"), dtype)
            else:  # built in memory (tests, benchmarks): hash the weights themselves
                self._description = {"backend": self.describe_name(), "weights": state_dict_fingerprint(self.model),
                                     "adapter_weights": None, "dtype": dtype}
        return self._description

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

    def _chat_text(self, prompt: str, text_before_audio: str = "") -> str:
        # Prompts repeat (agent step 1, K@N, several methods over one benchmark); the chat
        # template is a Jinja render (~1 ms), worth caching.
        key = (text_before_audio, prompt)
        text = self._chat_cache.get(key)
        if text is None:
            if len(self._chat_cache) > 4096:
                self._chat_cache.clear()
            text = self._chat_cache[key] = chat_text(self.processor, prompt, text_before_audio)
        return text

    def _prompt_lengths(self, requests: Sequence[GenerationRequest], texts: Sequence[str] | None = None) -> list[int]:
        """Estimated token length of each prompt (text + audio tokens), to batch prompts of similar length.

        The text part is estimated from its UTF-8 size (about 3 bytes a token, an overestimate for
        English): tokenizing every prompt twice would cost more than it saves.
        """
        texts = texts if texts is not None else [self._chat_text(r.prompt, r.text_before_audio) for r in requests]
        return [len(t.encode("utf-8")) // 3 + audio_token_count(min(len(r.audio), self.window_samples), self.hop_length)
                for t, r in zip(texts, requests)]

    def _auto_batch_size(self, prompt_len: int, settings: GenerationSettings) -> int:
        if self.batch_size:
            return max(1, int(self.batch_size))
        if self.device.type != "cuda":
            return self.CPU_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(self.device)
        return estimate_batch_size(free, self._inner.config, torch.finfo(self._inner.dtype).bits // 8, prompt_len,
                                   settings.max_new_tokens, settings.num_samples, cap=self.MAX_AUTO_BATCH)

    def plan_batches(self, requests: Sequence[GenerationRequest], texts: Sequence[str] | None = None
                     ) -> list[list[int]]:
        """The batches :meth:`generate` runs, as lists of indices into ``requests``: requests grouped by
        decoding settings and sample count, each group sorted longest prompt first and cut at the
        batch size (the benchmark feeds its Hugging Face ``generate`` peer the same batches)."""
        texts = texts if texts is not None else [self._chat_text(r.prompt, r.text_before_audio) for r in requests]
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
        return plan

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        if not requests:
            return
        texts = [self._chat_text(r.prompt, r.text_before_audio) for r in requests]  # rendered once, used twice
        plan = self.plan_batches(requests, texts)

        def encode(chunk):
            return self.encode([requests[i] for i in chunk], [texts[i] for i in chunk])

        def run(chunk, enc):
            return self._generate_with_oom_split([requests[i] for i in chunk], chunk, [texts[i] for i in chunk], enc)

        if not self.prefetch or len(plan) == 1:
            for chunk in plan:
                yield from run(chunk, encode(chunk))
            return
        # The processor prepares batch k+1 in a background thread while the model runs batch k. The
        # first batch is encoded here: there is nothing to overlap it with, and handing it to the
        # thread only adds a wake-up (measurable on a loaded CPU).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlalm-encode") as pool:
            enc = encode(plan[0])
            for k, chunk in enumerate(plan):
                if k > 0:
                    enc = pending.result()
                if k + 1 < len(plan):
                    pending = pool.submit(encode, plan[k + 1])
                yield from run(chunk, enc)

    def _generate_with_oom_split(self, batch, indices, texts, enc=None):
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
        texts = list(texts) if texts is not None else [self._chat_text(r.prompt, r.text_before_audio) for r in requests]
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

        settings = batch[0].settings
        samples = [r.samples for r in batch]
        n = len(samples[0])
        if enc is None:
            enc = self.encode(batch, texts)
        dev = self.device
        input_ids, attention, positions, prompt_tokens = self._prefill_inputs(enc)
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
                uniforms = row_uniforms(settings.seed, [(r.item_id, s) for r, idx in zip(batch, samples) for s in idx],
                                        steps).to(dev)
            eos = torch.tensor(self.eos_ids, device=dev)
            # Repetition penalty (HF's): every token of the prompt (padding excluded, so a batch
            # equals batch size 1) and of the answer so far, one row of the vocabulary per row.
            seen = None
            if settings.repetition_penalty != 1.0:
                seen = torch.zeros((len(batch), logits.shape[-1]), dtype=torch.bool, device=dev)
                seen.scatter_(1, input_ids.clamp(max=logits.shape[-1] - 1), enc["attention_mask"].to(dev).bool())
                if n > 1:
                    seen = seen.repeat_interleave(n, dim=0)
            generated = torch.full((rows, steps), self.pad_id, dtype=torch.long, device=dev)
            n_new = torch.zeros(rows, dtype=torch.long, device=dev)
            finished = torch.zeros(rows, dtype=torch.bool, device=dev)
            live = torch.arange(rows, device=dev)  # original row of each row still in the batch
            stopped = torch.zeros(rows, dtype=torch.bool, device=dev)  # per row of the current batch
            pad = torch.full((), self.pad_id, dtype=torch.long, device=dev)
            for t in range(steps):
                if seen is not None:
                    logits = penalize_repetitions(logits, seen, settings.repetition_penalty)
                tokens = choose_tokens(logits, settings, None if uniforms is None else uniforms[live, t])
                tokens = torch.where(stopped, pad, tokens)  # rows that hit EOS only wait for compaction
                if seen is not None:
                    seen[torch.arange(len(live), device=dev), tokens] = True
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
                    if seen is not None:
                        seen = seen[keep]
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

    # ---------------------------------------------------------------- scoring continuations

    supports_option_logprobs = True

    def _continuation_ids(self, text: str, terminate: bool) -> list[int]:
        """Token ids of an assistant answer ``text`` (+ ``<|im_end|>``), tokenized on its own.

        The chat prompt ends in a newline (the assistant header), so BPE never merges across the
        prompt/answer boundary: these are the tokens the model would generate for that answer
        (the same rule the SFT collator checks).
        """
        with self._tokenizer_lock:
            ids = self.tokenizer(str(text) + (END_OF_TURN if terminate else ""), add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"continuation {text!r} has no tokens")
        return list(ids)

    def score_continuations(self, requests: Sequence[GenerationRequest],
                            continuations_per_request: Sequence[Sequence[str]], *,
                            terminate: bool = True) -> list[ContinuationScores]:
        """Log-likelihoods of candidate answers: one prefill per prompt, the candidates batched on its cache.

        Per batch of prompts (sorted by length, left-padded as in :meth:`generate`): the audio and
        prompt are encoded once; the KV cache row of prompt ``i`` is repeated once per candidate of
        ``i``; all candidates (right-padded) run through the language model in one forward pass on
        that cache. The first candidate token's log-probability comes from the prefill's last
        position. Results equal batch size 1 up to floating-point noise (tested).
        """
        if len(continuations_per_request) != len(requests):
            raise ValueError(f"{len(requests)} requests but {len(continuations_per_request)} continuation lists")
        if not requests:
            return []
        conts = [[self._continuation_ids(c, terminate) for c in cs] for cs in continuations_per_request]
        if any(not cs for cs in conts):
            raise ValueError("every request needs at least one continuation")
        texts = [self._chat_text(r.prompt) for r in requests]
        lengths = self._prompt_lengths(requests, texts)
        order = sorted(range(len(requests)), key=lambda i: -lengths[i])
        out: list[ContinuationScores | None] = [None] * len(requests)
        start = 0
        while start < len(order):
            head = order[start]
            # Memory per prompt ~ its candidates' rows over prompt + candidate tokens (as K@N rows).
            rows = max(len(cs) for cs in conts)
            longest = max(len(c) for cs in conts for c in cs)
            size = self._auto_batch_size(lengths[head], GenerationSettings(max_new_tokens=longest, num_samples=rows))
            chunk = order[start:start + size]
            for indices, scores in self._score_with_oom_split(
                    chunk, [requests[i] for i in chunk], [texts[i] for i in chunk],
                    [conts[i] for i in chunk], [list(continuations_per_request[i]) for i in chunk]):
                for i, sc in zip(indices, scores):
                    out[i] = sc
            start += size
        return out  # type: ignore[return-value]

    def _score_with_oom_split(self, indices, batch, texts, conts, names):
        try:
            result = self._score_batch(batch, texts, conts, names)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            self.stats["oom_splits"] += 1
            h = len(batch) // 2
            yield from self._score_with_oom_split(indices[:h], batch[:h], texts[:h], conts[:h], names[:h])
            yield from self._score_with_oom_split(indices[h:], batch[h:], texts[h:], conts[h:], names[h:])
            return
        yield indices, result

    def _prefill_inputs(self, enc):
        """``(input_ids, attention_mask, position ids, prompt lengths)`` of an encoded, left-padded
        batch on the model's device (generation and continuation scoring prefill alike)."""
        if "input_features" not in enc:
            raise AudioNotReachedError("the processor returned no input_features for this batch")
        input_ids = enc["input_ids"].to(self.device)
        attention = enc["attention_mask"].to(self.device)
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        return input_ids, attention, positions, attention.sum(-1).tolist()

    def _score_batch(self, batch: Sequence[GenerationRequest], texts: Sequence[str],
                     conts: Sequence[Sequence[Sequence[int]]], names: Sequence[Sequence[str]]
                     ) -> list[ContinuationScores]:

        enc = self.encode(batch, texts)
        dev = self.device
        input_ids, attention, positions, prompt_tokens = self._prefill_inputs(enc)
        row_item = [b for b, cs in enumerate(conts) for _ in cs]
        flat = [list(c) for cs in conts for c in cs]
        lens = torch.tensor([len(c) for c in flat], device=dev)
        width = int(lens.max())
        tokens = torch.full((len(flat), width), self.pad_id, dtype=torch.long, device=dev)
        for r, c in enumerate(flat):
            tokens[r, :len(c)] = torch.tensor(c, dtype=torch.long)
        index = torch.tensor(row_item, dtype=torch.long, device=dev)
        self._audio_calls = []
        with torch.inference_mode():
            out = self._inner.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                    input_features=enc["input_features"].to(dev, self._inner.dtype),
                                    feature_attention_mask=enc["feature_attention_mask"].to(dev), use_cache=True,
                                    **{self._cache_kw: DynamicCache(config=self._inner.config)})
            self._assert_audio_reached(len(batch), (input_ids == self.audio_token_id).sum(-1))
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            first = self._inner.lm_head(out.last_hidden_state[:, -1, :]).float().to(dev).log_softmax(-1)
            total = first[index].gather(1, tokens[:, :1]).squeeze(1)
            if width > 1:
                cache.batch_select_indices(index)  # one cache row per candidate (rows repeat)
                step_in = tokens[:, :-1]
                valid = torch.arange(width - 1, device=dev)[None, :] < (lens[:, None] - 1)
                attn = torch.cat([attention[index], valid.to(attention.dtype)], dim=1)
                pos = positions[index, -1:] + 1 + torch.arange(width - 1, device=dev)[None, :]
                hidden = self._inner.model(input_ids=step_in, attention_mask=attn, position_ids=pos, use_cache=True,
                                           **{self._cache_kw: cache}).last_hidden_state
                for t in range(width - 1):  # one position at a time: rows x vocab, never rows x width x vocab
                    logp = self._inner.lm_head(hidden[:, t, :]).float().to(dev).log_softmax(-1)
                    picked = logp.gather(1, tokens[:, t + 1:t + 2]).squeeze(1)
                    total = total + torch.where(valid[:, t], picked, torch.zeros_like(picked))
        self.stats["batches"] += 1
        self.stats["prefill_rows"] += len(batch)
        total = total.double().cpu().tolist()
        out_scores, r = [], 0
        for b, req in enumerate(batch):
            n = len(conts[b])
            out_scores.append(ContinuationScores(item_id=req.item_id, continuations=list(names[b]),
                                                 logprobs=total[r:r + n], token_counts=[len(c) for c in conts[b]],
                                                 prompt_tokens=int(prompt_tokens[b])))
            r += n
        return out_scores


def penalize_repetitions(logits, seen, penalty: float):
    """HF's ``RepetitionPenaltyLogitsProcessor`` on a boolean mask of the tokens already seen per row:
    a seen token's logit is divided by ``penalty`` when positive, multiplied when negative."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


# ------------------------------------------------------------------------------------------
# Training


class Qwen2AudioTraining(TrainingAdapter):
    """Qwen2AudioForConditionalGeneration (the 7B and the demo model)."""

    def load(self, source, *, device: str, dtype, adapter=None, merge_adapter: bool | None = None):
        return load_model_and_processor(source, device=device, dtype=dtype, adapter=adapter,
                                        merge_adapter=merge_adapter)

    def model_class(self):
        return Qwen2AudioForConditionalGeneration

    def chat_text(self, processor, prompt: str) -> str:
        return chat_text(processor, prompt)

    def encode(self, processor, texts, audios, *, padding_side: str) -> dict:
        tokenizer = processor.tokenizer
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = padding_side
        try:
            return dict(processor(text=list(texts), audio=list(audios), sampling_rate=SAMPLING_RATE,
                                  return_tensors="pt", padding=True))
        finally:
            tokenizer.padding_side = previous_side

    def answer_logits(self, model, batch: dict, keep):
        # The LM head runs on the answer positions only: the 156k-entry vocabulary projection is never
        # materialised for the ~330 prompt/audio positions of a batch.
        lm = base_model(model)
        # The audio encoder's conv has no input cast: match its dtype (bf16 under DeepSpeed/bf16).
        features = batch["input_features"].to(lm.model.audio_tower.conv1.weight.dtype)
        out = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], input_features=features,
                       feature_attention_mask=batch["feature_attention_mask"], use_cache=False)
        return lm.lm_head(out.last_hidden_state[:, :-1][keep]).float()

    def audio_positions(self, model, feature_frames: int) -> int:
        _, positions = base_model(model).model.audio_tower._get_feat_extract_output_lengths(torch.tensor(feature_frames))
        return int(positions)
