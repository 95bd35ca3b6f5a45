"""Tiny random-weight instances of every native family, built offline (tests, ``rlalm models --check``).

Each instance is the family's real model class built from its real config classes with tiny sizes
(1-2 layers, hidden 32), and its real processor class around a byte-level BPE tokenizer trained in
memory on the paper's prompts (the real tokenizers need a download) with the family's special
tokens, a ``WhisperFeatureExtractor`` (128 mel bins, as the real checkpoints) and a chat template
written after the family's documented prompt format:

* Audio Flamingo 3: ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
  <sound>{text}<|im_end|>\\n<|im_start|>assistant\\n`` (the sound token before the text);
* Qwen2.5-Omni: the same ChatML with ``<|audio_bos|><|AUDIO|><|audio_eos|>`` before the text;
* Qwen3-Omni: ChatML without a default system turn, ``<|audio_start|><|audio_pad|><|audio_end|>``.

The templates are ours (the checkpoints' own files cannot be read offline); real checkpoints bring
their own. Voxtral (needs mistral-common) is the exception: its prompts are built by mistral-common's
code, not a template, so the tiny one renders as the real one does; only its Tekken tokenizer file is
ours (the same BPE as tiktoken ranks, Voxtral's special tokens and audio settings), written to a
temporary folder, and its feature window is the real 30 s. AF3's tiny feature window is 2 s (real: 30 s) so that a 3 s clip spans two windows and
the "feature rows are windows, not prompts" path is exercised.
"""
from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reliable_lalm.core import prompts
from reliable_lalm.core.items import SAMPLING_RATE
from reliable_lalm.models.families import FAMILIES
from reliable_lalm.models.hf_loading import audio_only_processor
from reliable_lalm.models.local_tokenizers import QWEN2_PRETOKENIZE_REGEX, train_byte_level_bpe

# Special tokens per family: (plain list of added special tokens, named ones the processor reads).
CHATML = ["<|im_start|>", "<|im_end|>"]


def chat_template(audio_markup: str, system: str | None) -> str:
    """A ChatML template: optional default system turn; audio parts as ``audio_markup``, then text."""
    sys_part = (f"{{% if loop.first and message['role'] != 'system' %}}<|im_start|>system\n{system}<|im_end|>\n"
                "{% endif %}") if system else ""
    return (
        "{% for message in messages %}" + sys_part +
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'audio' %}" + audio_markup + "{% endif %}{% endfor %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _corpus() -> list[str]:
    return [
        prompts.baseline_prompt("What is the primary sound source heard in the recording?",
                                ["Dog barking", "Car horn", "Piano melody", "Human speech"]),
        prompts.idk_prompt("Which instrument plays the melody?", ["Violin", "Guitar", "Flute", "Drums"]),
        "The answer is A. I don't know. The sound is a dog barking.",
    ] * 10


def train_tokenizer(special: list[str], named: dict[str, str], vocab_size: int = 512):
    """A ``Qwen2Tokenizer`` over a BPE trained on the prompts, with ``special`` and ``named`` tokens."""
    # local import: `rlalm models` lists the families and their tiny builders without torch
    from transformers import Qwen2Tokenizer

    vocab, merges = train_byte_level_bpe(_corpus(), vocab_size)
    extra = [t for t in dict.fromkeys(CHATML + special + list(named.values()))]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=extra,
                               padding_side="left", **({"extra_special_tokens": named} if named else {}))
    tokenizer.model_max_length = 32768
    return tokenizer


def feature_extractor(chunk_length_s: int):
    # local import: `rlalm models` lists the families and their tiny builders without torch
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=chunk_length_s,
                                   n_fft=400, padding_value=0.0, return_attention_mask=True)


def _finish(model, tokenizer):
    # local import: `rlalm models` lists the families and their tiny builders without torch
    from transformers import GenerationConfig

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(eos_token_id=[im_end, tokenizer.pad_token_id],
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.eval()
    return model


def _text_config(tokenizer, **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
                **extra)


def tiny_audioflamingo3(seed: int = 0):
    # local import: `rlalm models` lists the families and their tiny builders without torch
    import torch
    from transformers import (AudioFlamingo3Config, AudioFlamingo3EncoderConfig,
                              AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor, Qwen2Config)

    tokenizer = train_tokenizer(["<sound>"], {})
    chunk = 2
    processor = AudioFlamingo3Processor(feature_extractor=feature_extractor(chunk), tokenizer=tokenizer,
                                        chat_template=chat_template("<sound>", "You are a helpful assistant."),
                                        audio_token="<sound>", max_audio_len=6)
    config = AudioFlamingo3Config(
        audio_config=AudioFlamingo3EncoderConfig(num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, hidden_size=16,
                                                 max_source_positions=chunk * 100 // 2),
        text_config=Qwen2Config(**_text_config(tokenizer), tie_word_embeddings=False),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    torch.manual_seed(seed)
    return _finish(AudioFlamingo3ForConditionalGeneration(config), tokenizer), processor


def _omni_tokenizer(kind: str):
    if kind == "qwen2_5":
        named = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
                 "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
                 "vision_eos_token": "<|vision_eos|>"}
    else:
        named = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                 "audio_eos_token": "<|audio_end|>", "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                 "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}
    return train_tokenizer([], named), named


def _omni_processor(processor_class, tokenizer, template: str, chunk_length_s: int):
    """The real Omni processor class; audio-only when torchvision (for its video processor) is absent."""
    return audio_only_processor(processor_class, feature_extractor=feature_extractor(chunk_length_s),
                                tokenizer=tokenizer, chat_template=template)


def _omni_ids(tokenizer, named: dict[str, str]) -> dict:
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in named.items()}
    return dict(audio_token_id=ids["audio_token"], image_token_id=ids["image_token"],
                video_token_id=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
                vision_start_token_id=ids["vision_bos_token"], user_token_id=tokenizer("user", add_special_tokens=False).input_ids[0])


def tiny_qwen2_5_omni_thinker(seed: int = 0):
    # local import: `rlalm models` lists the families and their tiny builders without torch
    import torch
    from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    tokenizer, named = _omni_tokenizer("qwen2_5")
    processor = _omni_processor(Qwen2_5OmniProcessor, tokenizer,
                                chat_template("<|audio_bos|><|AUDIO|><|audio_eos|>", "You are a helpful assistant."), 4)
    ids = _omni_ids(tokenizer, named)
    ids["audio_token_index"] = ids.pop("audio_token_id")
    ids["image_token_index"] = ids.pop("image_token_id")
    ids["video_token_index"] = ids.pop("video_token_id")
    ids["audio_end_token_id"] = tokenizer.convert_tokens_to_ids(named["audio_eos_token"])
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=32, n_window=50, max_source_positions=200),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]),
        text_config=_text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                             "mrope_section": [1, 1, 2]}),
        **ids)
    torch.manual_seed(seed)
    return _finish(Qwen2_5OmniThinkerForConditionalGeneration(config), tokenizer), processor


def tiny_qwen3_omni_moe_thinker(seed: int = 0):
    # local import: `rlalm models` lists the families and their tiny builders without torch
    import torch
    from transformers import (Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerConfig,
                              Qwen3OmniMoeThinkerForConditionalGeneration)

    tokenizer, named = _omni_tokenizer("qwen3")
    processor = _omni_processor(Qwen3OmniMoeProcessor, tokenizer,
                                chat_template("<|audio_start|><|audio_pad|><|audio_end|>", None), 4)
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=32, n_window=50, n_window_infer=100, downsample_hidden_size=8,
                          max_source_positions=200),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           deepstack_visual_indexes=[0], num_position_embeddings=64),
        text_config=_text_config(tokenizer, head_dim=8, moe_intermediate_size=16, num_experts=4,
                                 num_experts_per_tok=2,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [1, 1, 2], "interleaved": True}),
        **_omni_ids(tokenizer, named))
    torch.manual_seed(seed)
    return _finish(Qwen3OmniMoeThinkerForConditionalGeneration(config), tokenizer), processor


# Tekken special tokens at the ranks mistral-common gives them (VoxtralProcessor hard-codes [AUDIO] = 24):
# the 20 legacy control tokens, then the audio ones; the ranks in between are fillers.
TEKKEN_SPECIAL = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]",
                  6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]",
                  11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]",
                  17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]", 19: "[TOOL_CONTENT]", 24: "[AUDIO]",
                  25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]"}
TEKKEN_NUM_SPECIAL = 100  # the real file reserves 1000


def tekken_json(vocab_size: int = 512) -> dict:
    """A valid Tekken tokenizer file (mistral-common's format) over a BPE trained on the prompts.

    The vocab is tiktoken's: ranks 0-255 are the single bytes, then each BPE merge in training order.
    The audio section is Voxtral's: 16 kHz, 12.5 audio tokens per second, 128 mel bins with hop
    160 and window 400, clips padded to 30 s chunks (so each chunk is 375 ``[AUDIO]`` tokens).
    Version v7 is the first Tekken version with audio; one user turn renders the same in later ones.
    """
    # local import: `rlalm models` lists the families and their tiny builders without torch
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
    _, merges = train_byte_level_bpe(_corpus(), vocab_size)
    pieces = [bytes([b]) for b in range(256)]
    for left, right in merges:
        piece = bytes(byte_of[c] for c in left + right)
        if piece not in pieces:
            pieces.append(piece)
    vocab = [{"rank": i, "token_bytes": base64.b64encode(p).decode("ascii"),
              "token_str": p.decode("utf-8", errors="replace")} for i, p in enumerate(pieces)]
    special = [{"rank": i, "token_str": TEKKEN_SPECIAL.get(i, f"<SPECIAL_{i}>"), "is_control": True}
               for i in range(TEKKEN_NUM_SPECIAL)]
    return {"config": {"pattern": QWEN2_PRETOKENIZE_REGEX, "num_vocab_tokens": len(vocab),
                       "default_vocab_size": TEKKEN_NUM_SPECIAL + len(vocab),
                       "default_num_special_tokens": TEKKEN_NUM_SPECIAL, "version": "v7"},
            "vocab": vocab, "special_tokens": special, "version": 1, "type": "Tekken",
            "audio": {"sampling_rate": SAMPLING_RATE, "frame_rate": 12.5, "chunk_length_s": 30.0,
                      "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}}}


def tekken_tokenizer():
    """transformers' mistral-common tokenizer (``MistralCommonBackend``) over :func:`tekken_json`.

    The backend reads its file by path (and copies it on ``save_pretrained``), so the file lives in
    a temporary folder owned by the tokenizer: removed when the tokenizer is garbage-collected.
    """
    # local import: `rlalm models` lists the families and their tiny builders without torch
    from transformers import MistralCommonBackend

    folder = tempfile.TemporaryDirectory(prefix="rlalm-tiny-tekken-")
    path = Path(folder.name) / "tekken.json"
    path.write_text(json.dumps(tekken_json()), encoding="utf-8")
    tokenizer = MistralCommonBackend(tokenizer_path=path, padding_side="left")
    tokenizer.rlalm_tekken_folder = folder
    return tokenizer


def tiny_voxtral(seed: int = 0):
    """Voxtral: a Whisper-style encoder over 30 s chunks (1500 positions, 4 frames per audio token) and Llama."""
    # local import: `rlalm models` lists the families and their tiny builders without torch
    import torch
    from transformers import (GenerationConfig, LlamaConfig, VoxtralConfig, VoxtralEncoderConfig,
                              VoxtralForConditionalGeneration, VoxtralProcessor)

    tokenizer = tekken_tokenizer()
    processor = VoxtralProcessor(feature_extractor=feature_extractor(30), tokenizer=tokenizer)
    eos, pad = tokenizer.convert_tokens_to_ids("</s>"), tokenizer.convert_tokens_to_ids("<pad>")
    hidden = 16
    config = VoxtralConfig(
        audio_config=VoxtralEncoderConfig(num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2,
                                          hidden_size=hidden, intermediate_size=4 * hidden, max_source_positions=1500),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                                bos_token_id=tokenizer.convert_tokens_to_ids("<s>"), eos_token_id=eos,
                                pad_token_id=pad, tie_word_embeddings=False,
                                # At the default 0.02 every prompt gets the same random answer (the
                                # shared "[/INST]" ending dominates); tests need answers that depend on it.
                                initializer_range=0.3),
        audio_token_id=processor.audio_token_id)
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos], pad_token_id=pad, do_sample=False)
    model.eval()
    return model, processor


@dataclass(frozen=True)
class TinySpec:
    family: str  # key of reliable_lalm.models.families.FAMILIES
    build: Callable  # seed -> (model, processor)
    requires: tuple[str, ...] = ()  # importable modules the build needs (beyond the default install)


def tiny_specs() -> dict[str, TinySpec]:
    """Derived from the families' rows: each row with a tiny builder, needing what its family needs."""
    return {f.name: TinySpec(f.name, f.tiny_builder(), f.extra_requirements) for f in FAMILIES.values() if f.tiny}


def build_tiny(family: str, seed: int = 0):
    """``(model, processor)`` of a tiny random-weight instance of ``family``."""
    return tiny_specs()[family].build(seed)


def save_tiny(model, processor, out_dir) -> str:
    """Save a tiny instance as a checkpoint folder, laid out like the hub's (for loading tests).

    Audio-only Omni processors cannot ``save_pretrained`` (no video processor to save): their parts
    are written as the hub has them (tokenizer, ``preprocessor_config.json``, ``chat_template.jinja``,
    ``processor_config.json`` naming the processor class).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if getattr(processor, "video_processor", None) is None and hasattr(processor, "video_token"):
        processor.tokenizer.save_pretrained(out)
        processor.feature_extractor.save_pretrained(out)
        (out / "chat_template.jinja").write_text(processor.chat_template, encoding="utf-8")
        base = type(processor).__mro__[1].__name__  # the real class under the audio-only subclass
        (out / "processor_config.json").write_text(json.dumps({"processor_class": base}), encoding="utf-8")
    else:
        processor.save_pretrained(out)
    return str(out)
