"""Native transformers LALMs behind one backend: Audio Flamingo 3, the Qwen2.5-Omni and Qwen3-Omni thinkers
(and Voxtral, through its subclass in :mod:`reliable_lalm.models.voxtral`).

Each family is one row of :data:`reliable_lalm.models.families.FAMILIES` (model class, processor class,
the feature keys its processor must return, its language-model prefix for LoRA). :class:`NativeHFBackend`
serves all of them the same way, through the model's own processor and chat template and ``model.generate``:

* prompts are rendered with ``processor.apply_chat_template`` (one user turn: an audio part, then
  the prompt text) and encoded with ``processor(text=..., audio=..., sampling_rate=16000)`` -- audio
  goes in as ``audio=`` (transformers 5 silently ignores ``audios=``);
* batches are left-padded text; the processor keeps the audio features right-padded (checked at
  every batch: a feature mask that is not a prefix of ones is an error);
* the model must hear the audio: the inner model's ``get_audio_features`` is wrapped and, at every
  prefill, the number of valid feature frames it received must equal what the processor produced
  (a processor that dropped the audio, or a model that skipped it, raises
  :class:`~reliable_lalm.models.base.AudioNotReachedError`);
* K@N: every (request, sample index) is its own row; a logits processor (:class:`RowSeededSampler`)
  draws each row's token by the shared rule (:func:`reliable_lalm.models.sampling.choose_tokens`) from a
  uniform stream seeded by (run seed, item id, sample index) and turns the scores into a one-hot, which greedy decoding then picks. So a sample does not
  depend on its batch, on which other samples were requested with it, or on resuming, and
  ``model.generate``'s own sampler (one global RNG over the batch) is never used. Greedy K@N
  decodes one row and copies it (all greedy samples are the same).

Audio Flamingo 3 splits clips into 30 s windows, so its feature rows are windows, not requests;
that is why rows are never expanded inside ``generate`` (``num_return_sequences`` would repeat
each window row and misalign them with the prompts) but before the processor.

The Omni processors require a video processor, which in transformers 5 needs torchvision even for
audio-only use. Without torchvision the backend builds the same processor class with no image and
video sub-processors (:func:`reliable_lalm.models.hf_loading.audio_only_processor`): the audio path of
the class is unchanged. The family's training adapter (:class:`NativeTraining`) is at the end of this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, LogitsProcessorList

from reliable_lalm.core.plugins import load_object
from reliable_lalm.models.base import (AudioNotReachedError, Backend, Generation, GenerationRequest,
                                       GenerationSettings, state_dict_fingerprint)
from reliable_lalm.models.chat import chat_text
from reliable_lalm.models.families import ModelFamily, base_model, family_of_model
from reliable_lalm.models.hf_loading import load_model_and_processor
from reliable_lalm.models.sampling import choose_tokens, row_uniforms
from reliable_lalm.models.training_adapter import TrainingAdapter


def audio_window_seconds(processor, family: ModelFamily) -> float:
    """Seconds of audio the model hears (longer clips are truncated): the processor's own limit where
    the family has one (AF3's ``max_audio_len``), else the feature extractor's window."""
    fe = processor.feature_extractor
    if family.window_attr and getattr(processor, family.window_attr, None):
        return float(getattr(processor, family.window_attr))
    return float(fe.n_samples) / float(fe.sampling_rate)


# --------------------------------------------------------------------------------------------------
# Sampling (the rule is models.sampling's, shared with the Qwen2-Audio engine)


class RowSeededSampler:
    """A ``LogitsProcessor`` that samples each row from its own seeded stream and returns a one-hot.

    ``uniforms[r, t]`` is row r's draw for its t-th new token (from a generator seeded by
    :func:`~reliable_lalm.models.sampling.row_uniforms`); greedy decoding of the returned scores picks
    exactly the sampled token.
    """

    def __init__(self, uniforms, settings: GenerationSettings, prompt_length: int):
        self.uniforms = uniforms
        self.settings = settings
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        tokens = choose_tokens(scores, self.settings, self.uniforms[:, step])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, tokens.unsqueeze(1), 0.0)
        return out


# --------------------------------------------------------------------------------------------------
# The backend


@dataclass
class _Row:
    request: int  # index into the requests
    sample: int | None  # sample index (None: a greedy row shared by all samples of the request)
    text: str
    audio: np.ndarray = field(repr=False)


class NativeHFBackend(Backend):
    """A native transformers LALM (any :data:`FAMILIES` member) with its processor and chat template.

    ``batch_size``: requests per batch (each brings one row when greedy, ``num_samples`` rows when
    sampling). ``check_audio``: verify at every prefill that all audio frames reached the model.
    """

    DEFAULT_BATCH_SIZE = 8

    def __init__(self, model, processor, *, batch_size: int | None = None, check_audio: bool = True):
        self.model = model
        self.processor = processor
        self.family = family_of_model(model)
        if not isinstance(self, load_object(self.family.backend)):
            raise TypeError(f"{self.family.model_class} is served by {self.family.backend}, not {type(self).__name__}")
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation must equal batch-size-1 generation
        self.batch_size = int(batch_size or self.DEFAULT_BATCH_SIZE)
        self.check_audio = check_audio
        self._inner = base_model(model)
        self.device = self._inner.get_input_embeddings().weight.device
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        self.window_seconds = audio_window_seconds(processor, self.family)
        self.window_samples = int(round(self.window_seconds * self.sampling_rate))
        eos = getattr(self._inner.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.audio_token_id = int(processor.audio_token_id if getattr(processor, "audio_token_id", None) is not None
                                  else self.tokenizer.convert_tokens_to_ids(processor.audio_token))
        self._audio_frames_seen: list[int] = []
        self._audio_all_nonzero = True
        self._wrap_audio_features()
        self._chat_cache: dict[str, str] = {}
        self.stats = {"batches": 0, "rows": 0}
        text_config = getattr(self._inner.config, "text_config", self._inner.config)
        self.max_positions = getattr(text_config, "max_position_embeddings", None)

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, name_or_path, *, batch_size: int | None = None, device="auto", dtype="auto",
                        device_map=None, adapter=None, attn_implementation: str | None = None,
                        **kwargs) -> "NativeHFBackend":
        """Load a checkpoint of any native family (chosen by its config's ``model_type``)."""
        model, processor = load_model_and_processor(name_or_path, device=device, dtype=dtype, device_map=device_map,
                                                    adapter=adapter, attn_implementation=attn_implementation)
        return cls(model, processor, batch_size=batch_size, **kwargs)

    def describe(self) -> dict[str, Any]:
        """The model by content: checkpoint and adapter hashes and the dtype (never a path)."""
        source = getattr(self.model, "rlalm_source", None)
        dtype = str(self._inner.dtype).replace("torch.", "")
        if source is not None:
            return self.describe_checkpoint(source["model"], source.get("adapter"), dtype)
        return {"backend": type(self).__name__, "weights": state_dict_fingerprint(self.model),
                "adapter_weights": None, "dtype": dtype}

    # ---------------------------------------------------------------- audio check

    def _wrap_audio_features(self) -> None:
        """Record, at every call of the inner model's ``get_audio_features``, the valid frames it got."""
        inner_model = self._inner.model
        original = inner_model.get_audio_features
        backend = self

        def recording(input_features, *args, **kwargs):
            mask = args[0] if args else kwargs.get(backend.family.mask_key,
                                                   kwargs.get("feature_attention_mask", kwargs.get("input_features_mask")))
            frames = int(mask.sum()) if mask is not None else int(input_features.shape[0] * input_features.shape[-1])
            backend._audio_frames_seen.append(frames)
            backend._audio_all_nonzero &= bool((input_features != 0).any())
            return original(input_features, *args, **kwargs)

        inner_model.get_audio_features = recording
        self._original_get_audio_features = original

    def close(self) -> None:
        """Undo the audio-feature wrapper (the model is then as it was loaded)."""
        if getattr(self, "_original_get_audio_features", None) is not None:
            del self._inner.model.get_audio_features  # the instance attribute; the class method shows again
            self._original_get_audio_features = None

    def _assert_audio_reached(self, expected_frames: int) -> None:
        seen, self._audio_frames_seen = self._audio_frames_seen, []
        nonzero, self._audio_all_nonzero = self._audio_all_nonzero, True
        if not self.check_audio:
            return
        if not seen:
            raise AudioNotReachedError(f"{type(self._inner).__name__} generated without calling its audio encoder "
                                       "(were the clips passed to the processor as `audio=`?)")
        if sum(seen) != expected_frames or not nonzero:
            raise AudioNotReachedError(f"the audio encoder received {sum(seen)} feature frames "
                                       f"({'non-zero' if nonzero else 'all zero'}); the processor produced "
                                       f"{expected_frames}")

    # ---------------------------------------------------------------- encoding

    def fit_audio(self, audio: np.ndarray) -> np.ndarray:
        """Mono float32, truncated to what the model hears (``window_seconds``)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D, got shape {audio.shape}")
        if audio.size == 0:
            raise ValueError("empty audio")
        return audio[: self.window_samples]

    def chat_text(self, prompt: str) -> str:
        text = self._chat_cache.get(prompt)
        if text is None:
            if len(self._chat_cache) > 4096:
                self._chat_cache.clear()
            text = self._chat_cache[prompt] = self.render_chat(prompt)
        return text

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Positions of ``request``'s prompt as the processor lays it out (audio tokens expanded)."""
        enc = self.encode([self.chat_text(request.prompt)], [self.fit_audio(request.audio)])
        return int(enc["input_ids"].shape[-1])

    def render_chat(self, prompt: str) -> str:
        """``prompt`` in the model's chat template (uncached; :meth:`chat_text` caches it)."""
        return chat_text(self.processor, prompt)

    def audio_frames(self, enc) -> int:
        """Valid audio feature frames in a processor output (what the encoder must receive)."""
        return int(enc[self.family.mask_key].sum())

    def encode(self, texts: Sequence[str], audios: Sequence[np.ndarray]):
        """Processor output for a batch; raises unless it carries the audio features, right-padded."""
        # Padding is asked for the text only: a top-level ``padding=True`` would also reach the feature
        # extractor and pad the audio to the longest clip instead of the encoder's fixed window.
        enc = self.processor(text=list(texts), audio=list(audios), sampling_rate=self.sampling_rate,
                             text_kwargs={"padding": True, "padding_side": "left"}, return_tensors="pt")
        missing = [k for k in self.family.feature_keys if k not in enc]
        if missing:
            raise AudioNotReachedError(f"{type(self.processor).__name__} returned no {', '.join(missing)}: "
                                       "the audio was not processed")
        mask = enc[self.family.mask_key].long()
        # right padding: every row of the feature mask is 1...1 0...0
        if bool((mask[:, 1:] > mask[:, :-1]).any()):
            raise AudioNotReachedError("audio features are not right-padded (feature mask has a 0 before a 1)")
        per_row = (enc["input_ids"] == self.audio_token_id).sum(-1)
        if int(per_row.min()) < 1:
            raise AudioNotReachedError("a prompt has no audio tokens after processing (chat template without audio?)")
        return enc

    # ---------------------------------------------------------------- generation

    def generate_iter(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[list[int], list[Generation]]]:
        if not requests:
            return
        texts = [self.chat_text(r.prompt) for r in requests]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):  # a batch shares its decoding settings
            groups.setdefault((r.settings,), []).append(i)
        for (settings,), indices in groups.items():
            # Longest prompt first: similar lengths share a batch (less padding).
            indices = sorted(indices, key=lambda i: (-len(texts[i]), -len(requests[i].audio)))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                yield chunk, self._generate_batch([requests[i] for i in chunk], [texts[i] for i in chunk], settings)

    def _generate_batch(self, batch: Sequence[GenerationRequest], texts: Sequence[str],
                        settings: GenerationSettings) -> list[Generation]:
        rows: list[_Row] = []
        for b, (r, text) in enumerate(zip(batch, texts)):
            audio = self.fit_audio(r.audio)
            if settings.greedy:
                rows.append(_Row(b, None, text, audio))
            else:
                rows.extend(_Row(b, s, text, audio) for s in r.samples)
        enc = self.encode([row.text for row in rows], [row.audio for row in rows])
        prompt_length = int(enc["input_ids"].shape[1])
        expected_frames = self.audio_frames(enc)
        inputs = {k: (v.to(self.device, self._inner.dtype) if k == "input_features" else v.to(self.device))
                  for k, v in enc.items() if hasattr(v, "to")}
        config = GenerationConfig(max_new_tokens=settings.max_new_tokens, min_new_tokens=0, do_sample=False,
                                  num_beams=1, eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
                                  repetition_penalty=1.0, no_repeat_ngram_size=0, temperature=None,
                                  top_k=None, top_p=None)
        processors = LogitsProcessorList()
        if not settings.greedy:
            uniforms = row_uniforms(settings.seed, [(batch[row.request].item_id, int(row.sample)) for row in rows],
                                    settings.max_new_tokens)
            processors.append(RowSeededSampler(uniforms, settings, prompt_length))
        self._audio_frames_seen, self._audio_all_nonzero = [], True
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, generation_config=config, logits_processor=processors)
        self._assert_audio_reached(expected_frames)
        new = sequences[:, prompt_length:].cpu()
        eos = torch.tensor(self.eos_ids)
        lengths, finished = [], []
        for row_tokens in new:
            hits = torch.isin(row_tokens, eos).nonzero()
            lengths.append(int(hits[0]) + 1 if len(hits) else int(row_tokens.shape[0]))
            finished.append(bool(len(hits)))
        decoded = self.tokenizer.batch_decode([new[i, :lengths[i]] for i in range(len(rows))], skip_special_tokens=True)
        prompt_tokens = enc["attention_mask"].sum(-1).tolist()
        self.stats["batches"] += 1
        self.stats["rows"] += len(rows)
        out = []
        for b, r in enumerate(batch):
            mine = [i for i, row in enumerate(rows) if row.request == b]
            if settings.greedy:  # one decoded row serves every requested sample
                mine = mine * len(r.samples)
            out.append(Generation(item_id=r.item_id, sample_indices=tuple(r.samples),
                                  texts=[decoded[i].strip() for i in mine], new_tokens=[lengths[i] for i in mine],
                                  finished=[finished[i] for i in mine], prompt_tokens=int(prompt_tokens[mine[0]])))
        return out


# --------------------------------------------------------------------------------------------------
# Training (the adapter of every row of FAMILIES served by this backend)


class NativeTraining(TrainingAdapter):
    """Any native :class:`~reliable_lalm.models.families.ModelFamily`, through the model's own forward."""

    def load(self, source, *, device: str, dtype, adapter=None, merge_adapter: bool | None = None):
        return load_model_and_processor(source, device=device, dtype=dtype, adapter=adapter,
                                        merge_adapter=merge_adapter)

    def model_class(self):
        return getattr(transformers, self.family.model_class)

    def chat_text(self, processor, prompt: str) -> str:
        return chat_text(processor, prompt)

    def encode(self, processor, texts, audios, *, padding_side: str) -> dict:
        rate = int(processor.feature_extractor.sampling_rate)
        window = int(round(audio_window_seconds(processor, self.family) * rate))
        # Text padding only: a top-level padding=True would pad the audio to the longest clip instead
        # of the encoder's window (see NativeHFBackend.encode).
        enc = processor(text=list(texts), audio=[a[:window] for a in audios],
                        sampling_rate=rate,
                        text_kwargs={"padding": True, "padding_side": padding_side}, return_tensors="pt")
        missing = [k for k in self.feature_keys if k not in enc]
        if missing:
            raise ValueError(f"{type(processor).__name__} returned no {', '.join(missing)}: the audio was not processed")
        return dict(enc)

    def answer_logits(self, model, batch: dict, keep):
        # The model's own forward (each family places its audio and positions itself), its LM head
        # restricted to the columns that hold an answer position in some row.
        lm = base_model(model)
        columns = keep.any(dim=0).nonzero().squeeze(1)
        features = {k: batch[k] for k in self.feature_keys}
        features["input_features"] = features["input_features"].to(lm.dtype)
        out = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **features, use_cache=False,
                 logits_to_keep=columns)
        if out.logits.shape[1] == len(columns):
            return out.logits[keep[:, columns]].float()
        # A forward that ignores logits_to_keep (Qwen2.5-Omni's thinker) returns every position.
        return out.logits[:, :-1][keep].float()
