"""Stand-ins for what the paper profile needs and a CPU machine without downloads lacks.

``qwen2-audio-7b-layout-random`` (model registry): a checkpoint folder of the Qwen2-Audio-7B-Instruct
*layout* scaled down (:func:`reliable_lalm.models.hf_loading.scaled_down_7b_spec`: same module
names, 128 mel bins, 1500 audio positions, 8192 text positions; 2 text layers of width 64) with
random weights, and the real processor configuration: Whisper log-mel features with 128 bins and
the 30 s window, the official chat template with its default system prompt "You are a helpful
assistant." and the published generation_config.json (do_sample, top_k 20, top_p 0.5, temperature
0.7, repetition_penalty 1.1). The tokenizer is a byte-level BPE trained here with the Qwen2-Audio
special tokens (the real one needs a download). Built on first use under
``paths.CACHE_DIR/models/``, deterministically (fixed seeds: the same bytes on the same torch).

It runs the paper profile's code path end to end on CPU (``params/paper-dryrun.yaml``); its
answers are noise. It has no ``paper_label`` of its own; its Table 3 rows take the label of the model it
stands in for (``ModelEntry.stands_in_for``), so the dry run lays out the paper's rows.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

from reliable_lalm import paths
from reliable_lalm.models.hf_loading import QWEN2_AUDIO_INSTRUCT_GENERATION, random_layout_parts, scaled_down_7b_spec

LAYOUT_RANDOM_NAME = "qwen2-audio-7b-layout-random"
LAYOUT_RANDOM_VERSION = 1  # bump when the built folder's content changes
LAYOUT_RANDOM_SEED = 0


def layout_random_dir() -> Path:
    return paths.CACHE_DIR / "models" / f"{LAYOUT_RANDOM_NAME}-v{LAYOUT_RANDOM_VERSION}"


def build_layout_random_checkpoint(out_dir: str | Path, *, seed: int = LAYOUT_RANDOM_SEED) -> Path:
    """Write the stand-in checkpoint (config, weights, processor, generation config) to ``out_dir``."""
    out_dir = Path(out_dir)
    tokenizer, processor, config = random_layout_parts(scaled_down_7b_spec())
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.text_config.bos_token_id = tokenizer.pad_token_id  # the 7B's bos is <|endoftext|> too
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.pad_token_id, im_end],
                                               pad_token_id=tokenizer.pad_token_id,
                                               **QWEN2_AUDIO_INSTRUCT_GENERATION)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "# qwen2-audio-7b-layout-random\n\nRandom weights in the Qwen2-Audio-7B-Instruct layout, scaled down, "
        "with the real processor configuration (128 mel bins, 30 s window, the official chat template). "
        "Built by reliable_lalm.models.standin for the paper-dryrun profile; its answers are noise.\n",
        encoding="utf-8")
    return out_dir


def layout_random_source() -> str:
    """The stand-in checkpoint folder, built on first use (atomically: a half-built folder is never used)."""
    target = layout_random_dir()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_layout_random_checkpoint(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)

