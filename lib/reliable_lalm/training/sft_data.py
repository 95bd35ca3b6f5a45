"""Supervised examples (audio, prompt, target).

Their collation into a model's batch is the model family's (:meth:`reliable_lalm.models.training_adapter.
TrainingAdapter.collate`): the prompt through the model's chat template, loss on the target tokens
and the closing end-of-turn token only; prompt, audio and padding tokens get label -100. Shared
by the demo model's training recipe and the LoRA SFT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SFTExample:
    audio: np.ndarray  # mono float32, 16 kHz
    prompt: str  # the user text (a prompt template already filled in)
    target: str  # the assistant answer
    item_id: str = ""
