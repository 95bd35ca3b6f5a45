"""What LoRA SFT needs to know about a model family: one :class:`TrainingAdapter` per family.

Training code (:mod:`.lora_sft`, :mod:`.sft_data`) never names a model class or its internals; it
asks the adapter of the loaded model for:

* loading base (+ adapter) and processor, and the model class used to reload a merged checkpoint;
* collation of :class:`~reliable_lalm.training.sft_data.SFTExample` s into a batch: the prompt through
  the model's own chat template, the answer and the end-of-turn token after it, right padding, the
  processor's audio-feature keys, labels on the answer only;
* the forward of the answer loss: the logits at the answer positions, in float32;
* the LoRA ``target_modules`` of each ``lora_targets`` mode and where the language model is (so that
  ``language_model_only`` never wraps the audio encoder);
* how many audio positions a feature window becomes (the SFT step benchmark's synthetic inputs).

The adapter is found from the model through the model registry: the backend class that serves a
``model_type`` (:data:`reliable_lalm.models.registry.BACKENDS_BY_MODEL_TYPE`, or a registered
:class:`~reliable_lalm.models.registry.ModelEntry`) returns it from
:meth:`reliable_lalm.models.base.Backend.training_adapter`. A new family therefore brings its
adapter in its own backend module; a native transformers family needs only its ``NativeFamily`` row.
"""
from __future__ import annotations

from typing import Any, Sequence

from reliable_lalm.training.sft_data import END_OF_TURN, IGNORE_INDEX, SFTExample

# lora_targets -> PEFT target_modules, over transformers' module naming (the language model of a
# multimodal model lives under ``...language_model.``: every family the registry serves does).
# language_model_only: the LM's q/k/v (a regex, re.fullmatch); paper_names: Table 9's names as PEFT
# reads a list (every module whose name ends in one of them: the audio encoder's q/k/v too).
LANGUAGE_MODEL_QKV = r".*language_model.*\.(q_proj|k_proj|v_proj)"
LORA_TARGETS: dict[str, Any] = {"language_model_only": LANGUAGE_MODEL_QKV,
                                "paper_names": ["q_proj", "k_proj", "v_proj"]}


class TrainingNotSupported(TypeError):
    """The model's backend has no training adapter (e.g. an API endpoint or an isolated worker)."""


def causal_lm(model):
    """The transformers model under a PEFT wrapper (LoRA layers are in place), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class TrainingAdapter:
    """The shared behaviour; a family overrides what differs (at least :meth:`load`, :meth:`model_class`,
    :meth:`chat_text`, :meth:`encode` and :meth:`answer_logits`)."""

    name = ""
    feature_keys: tuple[str, ...] = ("input_features",)  # processor outputs the forward takes
    end_of_turn = END_OF_TURN  # closes the assistant turn; trained as part of the answer
    language_model_prefix = "model.language_model."  # module names of the language model start so

    # ------------------------------------------------------------------ loading

    def load(self, source, *, device: str, dtype, adapter=None, merge_adapter: bool | None = None):
        """``(model, processor)``; with ``adapter`` a PeftModel, merged only in fp32 unless forced
        (:func:`reliable_lalm.models.hf_loading.attach_adapter`)."""
        raise NotImplementedError

    def model_class(self):
        """The transformers class of a saved (merged) checkpoint of this family."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data

    def chat_text(self, processor, prompt: str) -> str:
        """The prompt in the model's chat template, ending in the assistant header."""
        raise NotImplementedError

    def encode(self, processor, texts: Sequence[str], audios: Sequence[Any], *, padding_side: str) -> dict:
        """Processor output (tensors) for a batch of rendered texts and their audio clips."""
        raise NotImplementedError

    def collate(self, processor, examples: Sequence[SFTExample]) -> dict:
        """input_ids / attention_mask / the feature keys / labels, right-padded, labels on the answer
        and the end-of-turn token only (positions of real tokens start at 0)."""
        texts = [self.chat_text(processor, ex.prompt) + ex.target + self.end_of_turn for ex in examples]
        batch = dict(self.encode(processor, texts, [ex.audio for ex in examples], padding_side="right"))
        batch["labels"] = answer_labels(processor.tokenizer, batch["input_ids"], batch["attention_mask"], examples,
                                        self.end_of_turn)
        return batch

    def prompt_inputs(self, model, processor, prompt: str, audio) -> dict:
        """One prompt (chat-formatted, ending in the assistant header) and its audio as model inputs on
        the model's device, features in its dtype."""
        device = next(model.parameters()).device
        dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        inputs = self.encode(processor, [self.chat_text(processor, prompt)], [audio], padding_side="left")
        return {k: (v.to(device, dtype) if k == "input_features" else v.to(device)) for k, v in inputs.items()}

    # ------------------------------------------------------------------ loss

    def answer_logits(self, model, batch: dict, keep):
        """Float32 logits of the positions ``keep`` marks (``keep[b, t]``: the token at ``t + 1`` is
        an answer token), in row-major order: shape ``(keep.sum(), vocab)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ LoRA

    def lora_target_modules(self, lora_targets: str):
        """PEFT ``target_modules`` of a ``lora_targets`` mode."""
        try:
            return LORA_TARGETS[lora_targets]
        except KeyError:
            raise ValueError(f"lora_targets must be one of {', '.join(LORA_TARGETS)}, not {lora_targets!r}") from None

    def in_language_model(self, module_name: str) -> bool:
        """Whether a module (name relative to the transformers model, or under a PEFT wrapper) belongs
        to the language model."""
        return module_name.removeprefix("base_model.model.").startswith(self.language_model_prefix)

    # ------------------------------------------------------------------ step benchmark

    def audio_positions(self, model, feature_frames: int) -> int:
        """Audio token positions the encoder makes of ``feature_frames`` mel frames."""
        raise NotImplementedError


def answer_labels(tokenizer, input_ids, attention_mask, examples: Sequence[SFTExample], end_of_turn: str):
    """Labels of a right-padded batch: each row's answer + ``end_of_turn`` tokens, -100 elsewhere."""
    import torch

    labels = torch.full_like(input_ids, IGNORE_INDEX)
    lengths = attention_mask.sum(dim=1).tolist()
    for row, (ex, length) in enumerate(zip(examples, lengths)):
        target_ids = tokenizer(ex.target + end_of_turn, add_special_tokens=False)["input_ids"]
        start = length - len(target_ids)
        # The chat prompt ends in a newline, so BPE never merges across the prompt/target boundary;
        # check it anyway: a silent shift would train on the wrong tokens.
        if input_ids[row, start:length].tolist() != target_ids:
            raise ValueError(f"item {ex.item_id!r}: target tokens do not align with the end of the input")
        labels[row, start:length] = torch.tensor(target_ids)
    return labels


# ------------------------------------------------------------------------------------------
# Qwen2-Audio


class Qwen2AudioTraining(TrainingAdapter):
    """Qwen2AudioForConditionalGeneration (the 7B and the demo model)."""

    name = "qwen2_audio"
    feature_keys = ("input_features", "feature_attention_mask")

    def load(self, source, *, device: str, dtype, adapter=None, merge_adapter: bool | None = None):
        from reliable_lalm.models.hf_loading import load_model_and_processor

        return load_model_and_processor(source, device=device, dtype=dtype, adapter=adapter,
                                        merge_adapter=merge_adapter)

    def model_class(self):
        from transformers import Qwen2AudioForConditionalGeneration

        return Qwen2AudioForConditionalGeneration

    def chat_text(self, processor, prompt: str) -> str:
        from reliable_lalm.models.qwen_chat import chat_text

        return chat_text(processor, prompt)

    def encode(self, processor, texts, audios, *, padding_side: str) -> dict:
        tokenizer = processor.tokenizer
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = padding_side
        try:
            return dict(processor(text=list(texts), audio=list(audios), sampling_rate=16000, return_tensors="pt",
                                  padding=True))
        finally:
            tokenizer.padding_side = previous_side

    def answer_logits(self, model, batch: dict, keep):
        # The LM head runs on the answer positions only: the 156k-entry vocabulary projection is never
        # materialised for the ~330 prompt/audio positions of a batch.
        lm = causal_lm(model)
        # The audio encoder's conv has no input cast: match its dtype (bf16 under DeepSpeed/bf16).
        features = batch["input_features"].to(lm.model.audio_tower.conv1.weight.dtype)
        out = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], input_features=features,
                       feature_attention_mask=batch["feature_attention_mask"], use_cache=False)
        return lm.lm_head(out.last_hidden_state[:, :-1][keep]).float()

    def audio_positions(self, model, feature_frames: int) -> int:
        import torch

        _, positions = causal_lm(model).model.audio_tower._get_feat_extract_output_lengths(torch.tensor(feature_frames))
        return int(positions)


# ------------------------------------------------------------------------------------------
# Native transformers families (reliable_lalm.models.hf_generic.FAMILIES)


class NativeTraining(TrainingAdapter):
    """Any :class:`~reliable_lalm.models.hf_generic.NativeFamily`, through the model's own forward."""

    def __init__(self, family):
        self.family = family
        self.name = family.name
        self.feature_keys = family.feature_keys
        self.language_model_prefix = family.language_model_prefix

    def load(self, source, *, device: str, dtype, adapter=None, merge_adapter: bool | None = None):
        from reliable_lalm.models.hf_generic import load_model_and_processor

        model, processor, _ = load_model_and_processor(source, device=device, dtype=dtype, adapter=adapter,
                                                       merge_adapter=merge_adapter)
        return model, processor

    def model_class(self):
        import transformers

        return getattr(transformers, self.family.model_class)

    def chat_text(self, processor, prompt: str) -> str:
        from reliable_lalm.models.hf_generic import chat_text

        return chat_text(processor, prompt)

    def encode(self, processor, texts, audios, *, padding_side: str) -> dict:
        from reliable_lalm.models.hf_generic import audio_window_seconds

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
        lm = causal_lm(model)
        columns = keep.any(dim=0).nonzero().squeeze(1)
        features = {k: batch[k] for k in self.feature_keys}
        features["input_features"] = features["input_features"].to(lm.dtype)
        out = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **features, use_cache=False,
                 logits_to_keep=columns)
        if out.logits.shape[1] == len(columns):
            return out.logits[keep[:, columns]].float()
        # A forward that ignores logits_to_keep (Qwen2.5-Omni's thinker) returns every position.
        return out.logits[:, :-1][keep].float()

    def audio_positions(self, model, feature_frames: int) -> int:
        raise NotImplementedError(f"the SFT step benchmark builds Qwen2-Audio layouts only, not {self.name}")


# ------------------------------------------------------------------------------------------
# lookup


def adapter_for_model_type(model_type: str) -> TrainingAdapter:
    """The adapter of the backend registered for a transformers ``model_type``."""
    from reliable_lalm.core.plugins import load_reference
    from reliable_lalm.models.registry import BACKENDS_BY_MODEL_TYPE

    backend = BACKENDS_BY_MODEL_TYPE.get(str(model_type))
    if backend is None:
        raise TrainingNotSupported(f"no backend serves model_type {model_type!r}, so none can train it "
                                   f"(registered: {', '.join(sorted(BACKENDS_BY_MODEL_TYPE))})")
    return load_reference(backend).training_adapter(str(model_type))


def adapter_for_model(model) -> TrainingAdapter:
    """The adapter of a loaded transformers model (PEFT wrappers unwrapped), by its ``config.model_type``."""
    return adapter_for_model_type(causal_lm(model).config.model_type)


def adapter_for_source(name_or_path) -> TrainingAdapter:
    """The adapter of a model name, checkpoint folder or cached hub id, as the model registry
    resolves it (the entry's backend and family; nothing is loaded)."""
    from reliable_lalm.models.registry import _config_of, resolve_model

    entry = resolve_model(str(name_or_path))
    model_type = entry.family
    if not model_type:
        config = _config_of(entry.resolve_source()) or {}
        model_type = str(config.get("model_type", ""))
    return entry.backend_class().training_adapter(model_type)
