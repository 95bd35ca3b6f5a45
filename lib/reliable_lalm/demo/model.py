"""The embedded demo LALM: a tiny ``Qwen2AudioForConditionalGeneration`` of the real class.

It is built from an explicit small config, a byte-level BPE ``Qwen2Tokenizer`` trained locally
with the Qwen2-Audio special tokens, and a ``Qwen2AudioProcessor`` (``WhisperFeatureExtractor``
with a 4 s window instead of 30 s), saved with ``save_pretrained``. ``from_pretrained(path)``
then loads it exactly as ``Qwen/Qwen2-Audio-7B-Instruct`` is loaded: same chat template,
prompts, generation and LoRA target modules.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from transformers import (GenerationConfig, Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration,
                          Qwen2Config)

from reliable_lalm.models.local_tokenizers import qwen2_audio_processor, train_qwen2_audio_tokenizer

# The chat template of Qwen2-Audio-7B-Instruct (transformers' Qwen2AudioProcessor default).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


@dataclass
class DemoModelConfig:
    """Sizes of the demo model. Defaults: ~1 M parameters, 4 s audio window."""

    vocab_size: int = 1024  # BPE vocabulary trained on the demo corpus (special tokens on top)
    num_mel_bins: int = 128  # as Whisper-large-v3 / Qwen2-Audio
    chunk_length_s: int = 4  # feature-extractor window (the real model: 30 s)
    encoder_d_model: int = 64
    encoder_layers: int = 2
    encoder_heads: int = 4
    encoder_ffn_dim: int = 256
    text_hidden_size: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate_size: int = 384
    max_position_embeddings: int = 1024
    extra: dict = field(default_factory=dict)

    @property
    def max_source_positions(self) -> int:
        # 100 mel frames per second; conv2 halves them.
        return self.chunk_length_s * 100 // 2


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """Train a byte-level BPE on ``corpus`` and wrap it in the real ``Qwen2Tokenizer`` class."""
    return train_qwen2_audio_tokenizer(corpus, vocab_size)


def build_processor(tokenizer, config: DemoModelConfig):
    return qwen2_audio_processor(tokenizer, num_mel_bins=config.num_mel_bins, chunk_length_s=config.chunk_length_s,
                                 chat_template=CHAT_TEMPLATE)


def build_model(tokenizer, config: DemoModelConfig, *, seed: int = 0):
    torch.manual_seed(seed)
    audio_config = Qwen2AudioEncoderConfig(
        num_mel_bins=config.num_mel_bins, encoder_layers=config.encoder_layers,
        encoder_attention_heads=config.encoder_heads, encoder_ffn_dim=config.encoder_ffn_dim,
        d_model=config.encoder_d_model, max_source_positions=config.max_source_positions,
    )
    text_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden_size,
        intermediate_size=config.text_intermediate_size, num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads, num_key_value_heads=config.text_kv_heads,
        max_position_embeddings=config.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model_config = Qwen2AudioConfig(
        audio_config=audio_config, text_config=text_config,
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    model = Qwen2AudioForConditionalGeneration(model_config)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id,
        do_sample=False, max_new_tokens=32,
    )
    return model


def create_untrained(out_dir: str | Path, corpus: Iterable[str], config: DemoModelConfig | None = None,
                     *, seed: int = 0) -> Path:
    """Tokenizer + processor + randomly initialised model, saved with ``save_pretrained``."""
    config = config or DemoModelConfig()
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(corpus, vocab_size=config.vocab_size)
    processor = build_processor(tokenizer, config)
    model = build_model(tokenizer, config, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "demo_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return out_dir


