"""Tokenizers and processors trained offline, for checkpoints built here (the real tokenizers need a
download): byte-level BPE with Qwen2's pre-tokenization, trained on a small corpus.

Used by the tiny native-family instances (``native_tiny``), the random-weight Qwen2-Audio layouts
(``hf_loading.build_random_model_and_processor``, ``standin``) and, through the same functions, the
embedded demo model.
"""
from __future__ import annotations

import json
from typing import Iterable

from reliable_lalm.core.items import SAMPLING_RATE

# Qwen2's pre-tokenization regex, so a local tokenizer splits text like the real one.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_AUDIO_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                              "<|audio_eos|>")


def train_byte_level_bpe(corpus: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE trained on ``corpus``: its vocab and merges (GPT-2 byte-to-unicode symbols)."""
    # local import: hf_loading imports this module, and resolving models needs no torch
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def train_qwen2_audio_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE trained on ``corpus`` in the real ``Qwen2Tokenizer`` class, with the
    Qwen2-Audio special tokens, left padding (batched generation must equal batch-size-1 generation)."""
    # local import: hf_loading imports this module, and resolving models needs no torch
    from transformers import Qwen2Tokenizer

    vocab, merges = train_byte_level_bpe(corpus, vocab_size)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges,
        unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN2_AUDIO_SPECIAL_TOKENS[1:]),
        padding_side="left",
    )
    tokenizer.model_max_length = 32768
    return tokenizer


def qwen2_audio_processor(tokenizer, *, num_mel_bins: int, chunk_length_s: int, chat_template: str):
    """A ``Qwen2AudioProcessor``: ``WhisperFeatureExtractor`` of ``num_mel_bins`` and a ``chunk_length_s`` window."""
    # local import: hf_loading imports this module, and resolving models needs no torch
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    feature_extractor = WhisperFeatureExtractor(
        feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=160,
        chunk_length=chunk_length_s, n_fft=400, padding_value=0.0, return_attention_mask=True,
    )
    return Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=chat_template)
