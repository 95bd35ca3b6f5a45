"""A model made ready for LoRA SFT: the base (and adapter) loaded by its family's training adapter,
LoRA attached to exactly the target modules (:func:`add_lora`, :func:`assert_only_lora_trainable`),
and the loss on the answer tokens only (:class:`AnswerLoss`: the LM head run on those positions
alone, so the 156k-entry vocabulary projection is never materialised for the ~330 prompt/audio
positions of a batch)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model

from reliable_lalm.models.registry import adapter_for_model, adapter_for_source
from reliable_lalm.models.families import LORA_TARGETS
from reliable_lalm.models.training_adapter import IGNORE_INDEX, TrainingAdapter
from reliable_lalm.training.lora_config import DEFAULT_TARGET_MODULES, LoraSFTConfig


# --------------------------------------------------------------------------------------------
# model preparation and loss


def lora_target_names(model, pattern: Any = DEFAULT_TARGET_MODULES) -> list[str]:
    """Names of the ``nn.Linear`` modules LoRA will wrap, matched as peft does: a string with
    ``re.fullmatch``, a list of names by the module name's last parts (``q_proj`` matches
    ``...self_attn.q_proj`` anywhere in the model)."""
    def matches(name: str) -> bool:
        if isinstance(pattern, str):
            return re.fullmatch(pattern, name) is not None
        return any(name == t or name.endswith(f".{t}") for t in pattern)

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and matches(name)]


def assert_only_lora_trainable(model, *, language_model_only: bool = True,
                               adapter: TrainingAdapter | None = None) -> int:
    """Raise unless every parameter that requires grad is a LoRA parameter (and, with
    ``language_model_only``, inside the language model as ``adapter`` places it); return their count."""
    adapter = adapter or adapter_for_model(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, _ in trainable if "lora_" not in n]
    if bad:
        raise AssertionError(f"{len(bad)} non-LoRA parameters would be trained, e.g. {bad[:3]}")
    if not trainable:
        raise AssertionError("no trainable parameter: LoRA was not applied")
    outside_lm = [n for n, _ in trainable if not adapter.in_language_model(n)]
    if outside_lm and language_model_only:
        raise AssertionError(f"LoRA parameters outside the language model: {outside_lm[:3]}")
    return sum(p.numel() for _, p in trainable)


def add_lora(model, config: LoraSFTConfig, adapter: TrainingAdapter | None = None):
    """Wrap ``model`` with LoRA on ``config.target_modules`` (by default the language model's q/k/v);
    everything else frozen."""
    adapter = adapter or adapter_for_model(model)
    spec, language_model_only = lora_targets_of(config, adapter)
    targets = lora_target_names(model, spec)
    if not targets:
        raise ValueError(f"target_modules {spec!r} matches no linear layer")
    if language_model_only and not all(adapter.in_language_model(name) for name in targets):
        raise ValueError(f"target_modules {spec!r} matches layers outside the language model")
    for param in model.parameters():
        param.requires_grad_(False)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(config.seed)  # lora_A initialisation
    peft_model = get_peft_model(model, config.lora_config(targets))
    assert_only_lora_trainable(peft_model, language_model_only=language_model_only, adapter=adapter)
    return peft_model


def lora_targets_of(config: LoraSFTConfig, adapter: TrainingAdapter) -> tuple[Any, bool]:
    """(PEFT target spec, whether LoRA must stay inside the language model). A config left at its mode's
    default targets the family's own language model (its row's prefix), wherever that sits; explicit
    ``target_modules`` are taken as given."""
    if config.target_modules == LORA_TARGETS[config.lora_targets]:
        return adapter.lora_target_modules(config.lora_targets), config.lora_targets == "language_model_only"
    return config.target_modules, not config.wraps_audio_encoder


class AnswerLoss(torch.nn.Module):
    """Mean next-token cross-entropy over the label (answer) positions of a collated batch.

    Same value as the model's own ``(..., labels=...).loss``, but the LM head runs on the answer
    positions only and the softmax is in float32. Both back-ends train this module.
    """

    def __init__(self, peft_model, adapter: TrainingAdapter | None = None):
        super().__init__()
        self.model = peft_model  # the PeftModel; adapters are saved through it
        self.adapter = adapter or adapter_for_model(peft_model)

    def forward(self, **batch):
        return answer_loss(self.model, batch, self.adapter)


def answer_loss(model, batch: dict, adapter: TrainingAdapter | None = None):
    adapter = adapter or adapter_for_model(model)
    labels = batch["labels"]
    shift_labels = labels[:, 1:]
    keep = (shift_labels != IGNORE_INDEX) & (batch["attention_mask"][:, 1:] != 0)
    if not bool(keep.any()):
        raise ValueError("batch has no answer token to train on")
    logits = adapter.answer_logits(model, batch, keep)
    return F.cross_entropy(logits, shift_labels[keep].to(logits.device))



def load_base(model_path: str | Path, *, device: str, dtype, adapter: str | Path | None = None):
    """The base model (and, with ``adapter``, the LoRA on top, not merged) and its processor, loaded
    by the loader inference uses for its family ("demo", a registered name, a folder or a cached hub
    id, never a download). Its left padding does not reach training: collation pads on the right."""
    return adapter_for_source(model_path).load(model_path, device=device, dtype=dtype, adapter=adapter,
                                               merge_adapter=False)


def to_device(batch: dict, device: str) -> dict:
    """A collated batch's tensors on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}
