"""What the training tests compare models by: next-token logits at the end of each prompt."""
from __future__ import annotations

from typing import Sequence

import torch

from reliable_lalm.models.registry import adapter_for_model
from reliable_lalm.training.sft_data import SFTExample


def logits_of(model, processor, examples: Sequence[SFTExample]):
    """Next-token logits at the end of each prompt (float32, CPU), for comparing models."""
    adapter = adapter_for_model(model)
    rows = []
    for ex in examples:
        inputs = adapter.prompt_inputs(model, processor, ex.prompt, ex.audio)
        with torch.no_grad():
            rows.append(model(**inputs).logits[0, -1].float().cpu())
    return torch.stack(rows)
