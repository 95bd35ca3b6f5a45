"""Supervised examples (audio, prompt, target) and their collation into model batches.

Loss is on the target tokens and the closing ``<|im_end|>`` only; prompt, audio and padding
tokens get label -100. Shared by the demo model's training recipe and the LoRA SFT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from reliable_lalm.models.qwen_chat import chat_text

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"


@dataclass
class SFTExample:
    audio: np.ndarray  # mono float32, 16 kHz
    prompt: str  # the user text (a prompt template already filled in)
    target: str  # the assistant answer
    item_id: str = ""


def collate_sft(processor, examples: Sequence[SFTExample], *, sampling_rate: int = 16000) -> dict:
    """Batch of input_ids / attention_mask / input_features / feature_attention_mask / labels.

    Right padding for training (positions of real tokens start at 0, as in left-padded generation,
    where positions follow the attention mask).
    """
    import torch

    tokenizer = processor.tokenizer
    texts = [chat_text(processor, ex.prompt) + ex.target + END_OF_TURN for ex in examples]
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        batch = processor(text=texts, audio=[ex.audio for ex in examples], sampling_rate=sampling_rate,
                          return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side
    input_ids = batch["input_ids"]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    for row, (ex, length) in enumerate(zip(examples, lengths)):
        target_ids = tokenizer(ex.target + END_OF_TURN, add_special_tokens=False)["input_ids"]
        start = length - len(target_ids)
        # The chat prompt ends in a newline, so BPE never merges across the prompt/target boundary;
        # check it anyway: a silent shift would train on the wrong tokens.
        if input_ids[row, start:length].tolist() != target_ids:
            raise ValueError(f"item {ex.item_id!r}: target tokens do not align with the end of the input")
        labels[row, start:length] = torch.tensor(target_ids)
    batch["labels"] = labels
    return dict(batch)
