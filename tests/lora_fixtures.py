"""An oracle for LoRA targets, independent of the training code: the language model's attention
projections of a native-family model, found by walking its modules under the family's
language-model prefix (the audio encoders have q/k/v projections too: that is the trap)."""
from __future__ import annotations

from typing import Sequence

from reliable_lalm.models.families import FAMILIES, family_of_model

QKV = ("q_proj", "k_proj", "v_proj")


def language_model_qkv(model, projections: Sequence[str] = QKV) -> list[str]:
    """Names of the language model's ``nn.Linear`` projections, never the audio encoder's."""
    import torch

    family = family_of_model(model)
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    names = [name for name, module in base.named_modules()
             if isinstance(module, torch.nn.Linear) and name.startswith(family.language_model_prefix)
             and name.rsplit(".", 1)[-1] in projections]
    assert names, f"no {'/'.join(projections)} under {family.language_model_prefix!r} in {type(model).__name__}"
    return names


def language_model_qkv_regex(family: str, projections: Sequence[str] = QKV) -> str:
    """The same set as a peft ``target_modules`` regex (``re.fullmatch`` on module names)."""
    prefix = FAMILIES[family].language_model_prefix.replace(".", r"\.")
    return rf"{prefix}.*\.({'|'.join(projections)})"
