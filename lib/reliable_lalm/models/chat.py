"""How a prompt and one audio clip become model input: the one chat-template builder.

Used by inference and by training alike, for every family whose processor has a Jinja chat template
(Voxtral's prompts are mistral-common's: :mod:`.voxtral`), so the demo model and the 7B model see
the same text in both.
"""
from __future__ import annotations

from typing import Any

AUDIO_PLACEHOLDER = "audio"  # the chat template only needs to know an audio part is there


def conversation(prompt: str, text_before_audio: str = "") -> list[dict[str, Any]]:
    """One user turn: the audio, then the text (the documented order of every family served here);
    with ``text_before_audio`` (MCoT's few-shot examples, paper Table 6) a text part comes first:
    text, audio, text. The audio part is typed and keyed ``audio``: what every template tests."""
    before = [{"type": "text", "text": text_before_audio + "\n"}] if text_before_audio else []
    return [{"role": "user", "content": [*before, {"type": "audio", "audio": AUDIO_PLACEHOLDER},
                                         {"type": "text", "text": prompt}]}]


def chat_text(processor, prompt: str, text_before_audio: str = "") -> str:
    """The chat-formatted prompt ending in the assistant header (no audio tokens expanded yet)."""
    if not getattr(processor, "chat_template", None):
        raise ValueError(f"{type(processor).__name__} has no chat template: pass a checkpoint with one")
    return processor.apply_chat_template(conversation(prompt, text_before_audio), add_generation_prompt=True,
                                         tokenize=False)
