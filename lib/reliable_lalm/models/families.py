"""The transformers model families this package serves in-process: one row each, the one source of truth.

A :class:`ModelFamily` row says, for the checkpoints whose ``config.json`` ``model_type`` it lists,
which backend serves them, which transformers classes load them, the processor's quirks (the key of
its audio-feature mask, whether it also wants image/video sub-processors, where its audio window is),
the optional packages it needs, where its language model sits (the default LoRA targets are derived
from that prefix), its tiny offline builder and its training adapter. Classes and builders are
``"module:attribute"`` strings, imported only when used, so reading the table imports no torch.

Everything else is derived from :data:`FAMILIES`: the registry's backend per ``model_type``
(:func:`reliable_lalm.models.registry.backends_by_model_type`), the extras of the named checkpoints'
entries, the tiny instances (:func:`reliable_lalm.models.native_tiny.tiny_specs`) and the training
adapter of a loaded model. Adding a native family is one row here plus its tiny builder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from reliable_lalm.core.plugins import load_object
from reliable_lalm.models.training_adapter import DEFAULT_LANGUAGE_MODEL_PREFIX, TrainingNotSupported

NATIVE_BACKEND = "reliable_lalm.models.hf_generic:NativeHFBackend"
NATIVE_TRAINING = "reliable_lalm.models.hf_generic:NativeTraining"
# The attention projections LoRA adapts (Table 9 of the paper names q, k and v).
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def language_model_lora_pattern(language_model_prefix: str) -> str:
    """PEFT ``target_modules`` (a regex, ``re.fullmatch`` on module names) of the q/k/v projections
    below a language-model prefix: its last component anywhere in the name, then a projection.

    Derived from the component, not the whole prefix, so that the same pattern also matches the
    names under a PEFT wrapper and under a full Omni checkpoint (``thinker.`` in front); for the
    ``model.language_model.`` families it is the pattern the shipped demo adapters were trained with.
    """
    component = language_model_prefix.rstrip(".").rsplit(".", 1)[-1]
    return rf".*{re.escape(component)}.*\.({'|'.join(LORA_PROJECTIONS)})"


def lora_targets_for(language_model_prefix: str) -> dict[str, Any]:
    """``lora_targets`` mode -> PEFT ``target_modules``. ``language_model_only``: the language model's
    q/k/v; ``paper_names``: Table 9's names as PEFT reads a list (every module whose name ends in one
    of them: the audio encoder's q/k/v too)."""
    return {"language_model_only": language_model_lora_pattern(language_model_prefix),
            "paper_names": list(LORA_PROJECTIONS)}


# The modes of a training config made without a model (``LoraSFTConfig``): those of a family whose
# language model sits at the default prefix; a family elsewhere gets its own (ModelFamily.lora_targets).
LORA_TARGETS: dict[str, Any] = lora_targets_for(DEFAULT_LANGUAGE_MODEL_PREFIX)
LANGUAGE_MODEL_QKV: str = LORA_TARGETS["language_model_only"]


@dataclass(frozen=True)
class ModelFamily:
    """One transformers model family served in-process; everything else is its backend's."""

    name: str  # family name (the generating model's own model_type)
    model_class: str  # transformers class that generates text
    processor_class: str  # transformers processor class
    model_types: tuple[str, ...]  # checkpoint config.json model_types this family serves
    mask_key: str | None  # processor output key of the audio-feature mask (None: the processor returns none)
    backend: str = NATIVE_BACKEND  # "module:Class" serving the family
    training: str | None = NATIVE_TRAINING  # "module:Class" of its TrainingAdapter (None: cannot be trained)
    no_training_reason: str = ""  # why not, when ``training`` is None
    # The tiny random instance's builder, seed -> (model, processor): "module:function" (or the function)
    tiny: str | Callable | None = None
    language_model_prefix: str = DEFAULT_LANGUAGE_MODEL_PREFIX  # module names of the language model start so
    vision_subprocessors: bool = False  # the processor class also wants image/video processors
    window_attr: str | None = None  # processor attribute with the longest audio in seconds (else the FE window)
    extra_requirements: tuple[str, ...] = ()  # modules the family needs beyond the default install (an extra)
    description: str = ""

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """Processor outputs the model's forward takes besides the text."""
        return ("input_features",) if self.mask_key is None else ("input_features", self.mask_key)

    @property
    def lora_targets(self) -> dict[str, Any]:
        return lora_targets_for(self.language_model_prefix)

    def tiny_builder(self) -> Callable:
        return load_object(self.tiny) if isinstance(self.tiny, str) else self.tiny

    def training_adapter(self):
        """The family's :class:`~reliable_lalm.models.training_adapter.TrainingAdapter`."""
        if self.training is None:
            raise TrainingNotSupported(self.no_training_reason or f"{self.name} cannot be fine-tuned here")
        return load_object(self.training)(self)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    # The paper's model (and the demo model): its own engine (one prefill per question for K@N,
    # compaction of finished rows, continuation scoring) in models/qwen2_audio.py.
    ModelFamily("qwen2_audio", "Qwen2AudioForConditionalGeneration", "Qwen2AudioProcessor", ("qwen2_audio",),
                mask_key="feature_attention_mask", backend="reliable_lalm.models.qwen2_audio:Qwen2AudioBackend",
                training="reliable_lalm.models.qwen2_audio:Qwen2AudioTraining",
                description="Qwen2-Audio (Whisper-style encoder + Qwen LM)"),
    ModelFamily("audioflamingo3", "AudioFlamingo3ForConditionalGeneration", "AudioFlamingo3Processor",
                ("audioflamingo3",), mask_key="input_features_mask", window_attr="max_audio_len",
                tiny="reliable_lalm.models.native_tiny:tiny_audioflamingo3",
                description="Audio Flamingo 3 (Whisper-style encoder + Qwen2 LM; 30 s windows)"),
    # Full Omni checkpoints are served by their thinker (text output only).
    ModelFamily("qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration", "Qwen2_5OmniProcessor",
                ("qwen2_5_omni", "qwen2_5_omni_thinker"), mask_key="feature_attention_mask",
                vision_subprocessors=True, tiny="reliable_lalm.models.native_tiny:tiny_qwen2_5_omni_thinker",
                description="Qwen2.5-Omni thinker (text output only; talker and token2wav not loaded)"),
    ModelFamily("qwen3_omni_moe_thinker", "Qwen3OmniMoeThinkerForConditionalGeneration", "Qwen3OmniMoeProcessor",
                ("qwen3_omni_moe", "qwen3_omni_moe_thinker"), mask_key="feature_attention_mask",
                vision_subprocessors=True, tiny="reliable_lalm.models.native_tiny:tiny_qwen3_omni_moe_thinker",
                description="Qwen3-Omni MoE thinker (text output only)"),
    # Prompts through mistral-common, no feature mask, 30 s chunks: the subclass in models/voxtral.py.
    ModelFamily("voxtral", "VoxtralForConditionalGeneration", "VoxtralProcessor", ("voxtral",), mask_key=None,
                backend="reliable_lalm.models.voxtral:VoxtralBackend", training=None,
                no_training_reason="Voxtral cannot be fine-tuned here yet: its prompts are built by mistral-common's "
                                   "chat requests, which the shared SFT collation does not call",
                tiny="reliable_lalm.models.native_tiny:tiny_voxtral", extra_requirements=("mistral_common",),
                description="Voxtral (Mistral AI: Whisper-style encoder + Mistral LM; Tekken tokenizer)"),
)}


def families_by_model_type() -> dict[str, ModelFamily]:
    """``model_type`` -> its family, over every row's ``model_types``."""
    return {t: f for f in FAMILIES.values() for t in f.model_types}


def family_for_model_type(model_type: str) -> ModelFamily:
    family = families_by_model_type().get(str(model_type))
    if family is None:
        raise ValueError(f"no model family serves model_type {model_type!r} "
                         f"(known: {', '.join(sorted(families_by_model_type()))})")
    return family


def base_model(model):
    """The transformers model under a PEFT wrapper (LoRA layers are in place), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def family_of_model(model) -> ModelFamily:
    """The family of a loaded model, by its class name (PEFT wrappers unwrapped)."""
    name = type(base_model(model)).__name__
    for family in FAMILIES.values():
        if family.model_class == name:
            return family
    raise ValueError(f"{name} is not a served model family ({', '.join(f.model_class for f in FAMILIES.values())})")
