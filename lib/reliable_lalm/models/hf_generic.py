"""Native transformers LALMs behind one backend: Audio Flamingo 3, the Qwen2.5-Omni and Qwen3-Omni thinkers
(and Voxtral, through its subclass in :mod:`reliable_lalm.models.voxtral`).

Each family is described by a :class:`NativeFamily` (model class, processor class, the feature keys
its processor must return, its language-model prefix for LoRA). :class:`NativeHFBackend` serves all
of them the same way, through the model's own processor and chat template and ``model.generate``:

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
  draws each row's token by inverse-CDF from a uniform stream seeded by (run seed, item id, sample
  index) and turns the scores into a one-hot, which greedy decoding then picks. So a sample does not
  depend on its batch, on which other samples were requested with it, or on resuming, and
  ``model.generate``'s own sampler (one global RNG over the batch) is never used. Greedy K@N
  decodes one row and copies it (all greedy samples are the same).

Audio Flamingo 3 splits clips into 30 s windows, so its feature rows are windows, not requests;
that is why rows are never expanded inside ``generate`` (``num_return_sequences`` would repeat
each window row and misalign them with the prompts) but before the processor.

The Omni processors require a video processor, which in transformers 5 needs torchvision even for
audio-only use. Without torchvision the backend builds the same processor class with no image and
video sub-processors (:func:`audio_only_processor`): the audio path of the class is unchanged.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from reliable_lalm.core.plugins import load_reference
from reliable_lalm.models.base import (AudioNotReachedError, Backend, Generation, GenerationRequest,
                                       GenerationSettings, _row_seed)

AUDIO_PLACEHOLDER = "audio"  # what the audio content part carries; templates only test its type


@dataclass(frozen=True)
class NativeFamily:
    """What differs between native families; everything else is the shared backend."""

    name: str  # family name (the thinker's / model's own model_type)
    model_class: str  # transformers class that generates text
    processor_class: str  # transformers processor class
    model_types: tuple[str, ...]  # checkpoint config.json model_types this family serves
    mask_key: str | None  # processor output key of the audio-feature mask (None: the processor returns none)
    language_model_prefix: str = "model.language_model."  # LoRA targets live below this prefix
    vision_subprocessors: bool = False  # the processor class also wants image/video processors
    window_attr: str | None = None  # processor attribute with the longest audio in seconds (else the FE window)
    extra_requirements: tuple[str, ...] = ()  # modules the family needs beyond the default install (an extra)
    description: str = ""
    backend: str = "reliable_lalm.models.hf_generic:NativeHFBackend"  # "module:Class" serving the family

    @property
    def feature_keys(self) -> tuple[str, str]:
        return ("input_features", self.mask_key)


FAMILIES: dict[str, NativeFamily] = {f.name: f for f in (
    NativeFamily("audioflamingo3", "AudioFlamingo3ForConditionalGeneration", "AudioFlamingo3Processor",
                 ("audioflamingo3",), mask_key="input_features_mask", window_attr="max_audio_len",
                 description="Audio Flamingo 3 (Whisper-style encoder + Qwen2 LM; 30 s windows)"),
    NativeFamily("qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration", "Qwen2_5OmniProcessor",
                 ("qwen2_5_omni", "qwen2_5_omni_thinker"), mask_key="feature_attention_mask",
                 vision_subprocessors=True,
                 description="Qwen2.5-Omni thinker (text output only; talker and token2wav not loaded)"),
    NativeFamily("qwen3_omni_moe_thinker", "Qwen3OmniMoeThinkerForConditionalGeneration", "Qwen3OmniMoeProcessor",
                 ("qwen3_omni_moe", "qwen3_omni_moe_thinker"), mask_key="feature_attention_mask",
                 vision_subprocessors=True,
                 description="Qwen3-Omni MoE thinker (text output only)"),
    # Prompts through mistral-common, no feature mask, 30 s chunks: the subclass in models/voxtral.py.
    NativeFamily("voxtral", "VoxtralForConditionalGeneration", "VoxtralProcessor", ("voxtral",), mask_key=None,
                 extra_requirements=("mistral_common",), backend="reliable_lalm.models.voxtral:VoxtralBackend",
                 description="Voxtral (Mistral AI: Whisper-style encoder + Mistral LM; Tekken tokenizer)"),
)}


def family_for_model_type(model_type: str) -> NativeFamily:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ValueError(f"no native family serves model_type {model_type!r} "
                     f"(known: {', '.join(t for f in FAMILIES.values() for t in f.model_types)})")


def family_of_model(model) -> NativeFamily:
    """The family of a loaded model, by its class name (PEFT wrappers unwrapped)."""
    inner = _base_model(model)
    name = type(inner).__name__
    for family in FAMILIES.values():
        if family.model_class == name:
            return family
    raise ValueError(f"{name} is not a native family ({', '.join(f.model_class for f in FAMILIES.values())})")


def _base_model(model):
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


# --------------------------------------------------------------------------------------------------
# Prompts


def conversation(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the audio part first, then the text (each family's template places the audio)."""
    return [{"role": "user", "content": [{"type": "audio", "audio": AUDIO_PLACEHOLDER},
                                         {"type": "text", "text": prompt}]}]


def chat_text(processor, prompt: str) -> str:
    """The prompt in the model's chat template, ending in the assistant header (audio not expanded yet)."""
    if not getattr(processor, "chat_template", None):
        raise ValueError(f"{type(processor).__name__} has no chat template: pass a checkpoint with one")
    return processor.apply_chat_template(conversation(prompt), add_generation_prompt=True, tokenize=False)


# --------------------------------------------------------------------------------------------------
# Processors


def audio_only_processor(processor_class, *, feature_extractor, tokenizer, chat_template=None):
    """``processor_class`` built without image/video sub-processors (those need torchvision).

    The subclass only relaxes the constructor's type check for ``image_processor`` and
    ``video_processor``; tokenization, audio features and audio-token expansion are the class's own.
    Passing images or videos to it fails.
    """
    class AudioOnly(processor_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name in ("image_processor", "video_processor"):
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    AudioOnly.__name__ = AudioOnly.__qualname__ = f"{processor_class.__name__}AudioOnly"
    return AudioOnly(image_processor=None, video_processor=None, feature_extractor=feature_extractor,
                     tokenizer=tokenizer, chat_template=chat_template)


def _missing_vision_backend(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, (ImportError, TypeError, ValueError)) and ("torchvision" in text.lower()
                                                                     or "video_processor" in text
                                                                     or "image_processor" in text)


def _read_chat_template(source: str, local_files_only: bool) -> str | None:
    """The processor's chat template file of a checkpoint (``chat_template.jinja`` or ``.json``)."""
    for name in ("chat_template.jinja", "chat_template.json"):
        path = Path(source) / name
        if not path.is_file():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, name, local_files_only=local_files_only))
            except Exception:  # noqa: BLE001 - absent file or no network: try the next name
                continue
        text = path.read_text(encoding="utf-8")
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def load_processor(source: str, family: NativeFamily, *, local_files_only: bool = False):
    """The checkpoint's processor; for the Omni families without torchvision, its audio-only form."""
    import transformers

    processor_class = getattr(transformers, family.processor_class)
    try:
        processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    except Exception as err:  # noqa: BLE001 - decide below whether it is the known vision-backend case
        if not (family.vision_subprocessors and _missing_vision_backend(err)):
            raise
    else:
        if isinstance(processor, processor_class):
            return processor
        if not family.vision_subprocessors:  # e.g. a folder without processor files: AutoProcessor gave a tokenizer
            raise TypeError(f"{source}: AutoProcessor gave {type(processor).__name__}, not {family.processor_class}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    feature_extractor = transformers.WhisperFeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
    template = _read_chat_template(source, local_files_only) or getattr(tokenizer, "chat_template", None)
    return audio_only_processor(processor_class, feature_extractor=feature_extractor, tokenizer=tokenizer,
                                chat_template=template)


def audio_window_seconds(processor, family: NativeFamily) -> float:
    """Seconds of audio the model hears (longer clips are truncated): the processor's own limit where
    the family has one (AF3's ``max_audio_len``), else the feature extractor's window."""
    fe = processor.feature_extractor
    if family.window_attr and getattr(processor, family.window_attr, None):
        return float(getattr(processor, family.window_attr))
    return float(fe.n_samples) / float(fe.sampling_rate)


def load_model_and_processor(name_or_path, *, device="auto", dtype="auto", device_map=None, adapter=None,
                             merge_adapter: bool | None = None, attn_implementation: str | None = None):
    """``(model, processor, family)`` of a checkpoint of any native family (by its ``model_type``),
    in eval mode; ``adapter`` attached as for Qwen2-Audio (merged only in fp32:
    :func:`reliable_lalm.models.hf_loading.attach_adapter`)."""
    import transformers

    from reliable_lalm.models.hf_loading import attach_adapter, refusing_pickled_code, resolve_device, resolve_dtype

    source = str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().exists() else str(name_or_path)
    local_only = not Path(source).exists() and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
    family = family_for_model_type(config.model_type)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_only}
    if attn_implementation:
        load_kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    # The thinker class loads from a full Omni checkpoint (transformers maps away "thinker."
    # and ignores the talker / token2wav weights).
    with refusing_pickled_code(source):
        model = getattr(transformers, family.model_class).from_pretrained(source, **load_kwargs)
    if device_map is None:
        model = model.to(device)
    if adapter is not None:
        model = attach_adapter(model, adapter, torch_dtype, merge=merge_adapter)
    model.eval()
    model.rlalm_source = {"model": source, "adapter": str(adapter) if adapter is not None else None}
    return model, load_processor(source, family, local_files_only=local_only), family


# --------------------------------------------------------------------------------------------------
# Sampling


def choose_tokens(logits, settings: GenerationSettings, uniforms):
    """Next token per row: argmax, or inverse-CDF sampling with each row's own uniform draw.

    The same rule as the Qwen2-Audio engine: temperature, then top-k, then top-p (the top token
    always stays), then the first token whose cumulative mass exceeds ``u`` times the total.
    """
    import torch

    if settings.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    if settings.top_k and settings.top_k < sorted_scores.shape[-1]:
        sorted_scores[:, settings.top_k:] = float("-inf")
    probs = sorted_scores.softmax(dim=-1)
    if settings.top_p < 1.0:
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= settings.top_p, 0.0)
    cdf = probs.double().cumsum(dim=-1)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(1, pick).squeeze(1)


class RowSeededSampler:
    """A ``LogitsProcessor`` that samples each row from its own seeded stream and returns a one-hot.

    ``uniforms[r, t]`` is row r's draw for its t-th new token (from a generator seeded by
    :func:`~reliable_lalm.models.base._row_seed`); greedy decoding of the returned scores picks
    exactly the sampled token.
    """

    def __init__(self, uniforms, settings: GenerationSettings, prompt_length: int):
        self.uniforms = uniforms
        self.settings = settings
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores):
        import torch

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
        import torch

        self._torch = torch
        self.model = model
        self.processor = processor
        self.family = family_of_model(model)
        if not isinstance(self, load_reference(self.family.backend)):
            raise TypeError(f"{self.family.model_class} is served by {self.family.backend}, not {type(self).__name__}")
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # batched generation must equal batch-size-1 generation
        self.batch_size = int(batch_size or self.DEFAULT_BATCH_SIZE)
        self.check_audio = check_audio
        self._inner = _base_model(model)
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
        model, processor, _ = load_model_and_processor(name_or_path, device=device, dtype=dtype,
                                                       device_map=device_map, adapter=adapter,
                                                       attn_implementation=attn_implementation)
        return cls(model, processor, batch_size=batch_size, **kwargs)

    @classmethod
    def training_adapter(cls, model_type: str):
        from reliable_lalm.training.adapters import NativeTraining

        return NativeTraining(family_for_model_type(model_type))

    def describe(self) -> dict[str, Any]:
        """The model by content: checkpoint and adapter hashes and the dtype (never a path)."""
        from reliable_lalm.models.base import state_dict_fingerprint

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
        torch = self._torch
        from transformers import GenerationConfig, LogitsProcessorList

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
            uniforms = torch.stack([
                torch.rand(settings.max_new_tokens, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(_row_seed(settings.seed, batch[row.request].item_id,
                                                                              int(row.sample))))
                for row in rows])
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
