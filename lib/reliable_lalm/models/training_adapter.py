"""What LoRA SFT needs to know about a model family: the shared base of every :class:`TrainingAdapter`.

Training code (:mod:`reliable_lalm.training.lora_sft`) never names a model class or its internals;
it asks the adapter of the loaded model for:

* loading base (+ adapter) and processor, and the model class used to reload a merged checkpoint;
* collation of supervised examples (``audio``, ``prompt``, ``target``, ``item_id``:
  :class:`reliable_lalm.training.sft_data.SFTExample`) into a batch: the prompt through the model's
  own chat template, the answer and the end-of-turn token after it, right padding, the processor's
  audio-feature keys, labels on the answer only;
* the forward of the answer loss: the logits at the answer positions, in float32;
* the LoRA ``target_modules`` of each ``lora_targets`` mode, derived from where the family's
  language model sits (so that ``language_model_only`` never wraps the audio encoder);
* how many audio positions a feature window becomes (the SFT step benchmark's synthetic inputs).

Each family's adapter lives beside its backend (``Qwen2AudioTraining`` in :mod:`.qwen2_audio`,
``NativeTraining`` in :mod:`.hf_generic`) and is named by its row in
:data:`reliable_lalm.models.families.FAMILIES`; :func:`reliable_lalm.models.registry.adapter_for_model`
and its siblings find it.
"""
from __future__ import annotations

from typing import Any, Sequence

IGNORE_INDEX = -100  # the label of positions without loss (prompt, audio, padding)
END_OF_TURN = "<|im_end|>"  # ChatML's, which every trainable family served here closes its turns with
DEFAULT_LANGUAGE_MODEL_PREFIX = "model.language_model."


class TrainingNotSupported(TypeError):
    """The model's backend has no training adapter (e.g. an API endpoint or an isolated worker)."""


class TrainingAdapter:
    """The shared behaviour; a family overrides what differs (at least :meth:`load`, :meth:`model_class`,
    :meth:`chat_text`, :meth:`encode` and :meth:`answer_logits`). Built from its family's row."""

    end_of_turn = END_OF_TURN  # closes the assistant turn; trained as part of the answer

    def __init__(self, family):
        self.family = family  # a reliable_lalm.models.families.ModelFamily
        self.name = family.name
        self.feature_keys: tuple[str, ...] = family.feature_keys  # processor outputs the forward takes
        self.language_model_prefix: str = family.language_model_prefix

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

    def collate(self, processor, examples: Sequence[Any]) -> dict:
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
        """PEFT ``target_modules`` of a ``lora_targets`` mode, for this family's language model."""
        targets = self.family.lora_targets
        try:
            return targets[lora_targets]
        except KeyError:
            raise ValueError(f"lora_targets must be one of {', '.join(targets)}, not {lora_targets!r}") from None

    def in_language_model(self, module_name: str) -> bool:
        """Whether a module (name relative to the transformers model, or under a PEFT wrapper) belongs
        to the language model."""
        return module_name.removeprefix("base_model.model.").startswith(self.language_model_prefix)

    # ------------------------------------------------------------------ step benchmark

    def audio_positions(self, model, feature_frames: int) -> int:
        """Audio token positions the encoder makes of ``feature_frames`` mel frames."""
        raise NotImplementedError(f"the SFT step benchmark builds Qwen2-Audio layouts only, not {self.name}")


def answer_labels(tokenizer, input_ids, attention_mask, examples: Sequence[Any], end_of_turn: str):
    """Labels of a right-padded batch: each row's answer + ``end_of_turn`` tokens, -100 elsewhere."""
    # local import: `rlalm profiles` reads LORA_TARGETS from this module without torch
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
