"""How a prompt and one audio clip become model input: the Qwen2-Audio chat format.

Used by inference and by training alike, so the demo model and the 7B model see the same text.
"""
from __future__ import annotations

from typing import Any

AUDIO_PLACEHOLDER = "audio"  # the chat template only needs to know an audio part is there


def conversation(prompt: str) -> list[dict[str, Any]]:
    """One user turn: the audio first, then the text (Qwen2-Audio's documented order)."""
    return [{"role": "user", "content": [{"type": "audio", "audio_url": AUDIO_PLACEHOLDER},
                                         {"type": "text", "text": prompt}]}]


def chat_text(processor, prompt: str) -> str:
    """The chat-formatted prompt ending in the assistant header (no audio tokens expanded yet)."""
    return processor.apply_chat_template(conversation(prompt), add_generation_prompt=True, tokenize=False)
