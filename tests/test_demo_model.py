"""The shipped demo checkpoint: loads offline as the real class and reproduces its model card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reliable_lalm import paths
from reliable_lalm.demo.cli import CARD_METRICS_FILE

pytestmark = pytest.mark.skipif(not (paths.DEMO_MODEL_DIR / "config.json").exists(),
                                reason="no shipped demo checkpoint")


def test_demo_loads_offline_as_the_real_class(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    processor = AutoProcessor.from_pretrained(paths.DEMO_MODEL_DIR)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(paths.DEMO_MODEL_DIR)
    assert isinstance(processor, Qwen2AudioProcessor)
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert processor.tokenizer.padding_side == "left"
    # Generation stops at <|im_end|>, as for Qwen2-Audio-7B-Instruct.
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in np.atleast_1d(model.generation_config.eos_token_id)
    assert hasattr(model.model, "audio_tower") and hasattr(model.model, "language_model")
    size = sum(f.stat().st_size for f in paths.DEMO_MODEL_DIR.iterdir())
    assert size < 25 * 2**20


def test_demo_reproduces_its_card_and_is_not_degenerate():
    from reliable_lalm.demo.cli import evaluate_demo

    card = json.loads((paths.DEMO_MODEL_DIR / CARD_METRICS_FILE).read_text())
    measured = evaluate_demo(progress=False)
    # Exactly: greedy decoding of a fixed checkpoint on a fixed, seeded benchmark.
    assert measured["acc"] == card["acc"]
    assert measured["idk_prompt_rej"] == card["idk_prompt_rej"]
    for task in ("sound", "music", "speech"):
        assert measured["by_task"][task] == card["by_task"][task]
    # Not degenerate: no single output dominates, and the IDK prompt makes it refuse some items.
    assert measured["most_common_output_share"] < 0.25
    assert measured["idk_prompt_rej"] > 0
    assert measured["acc"] > measured["chance_acc"] + 0.05  # hears something: above a random choice
    assert measured["acc"] < 0.9  # partial knowledge, as Qwen2-Audio on MMAU
    # IDK-prompt refusals follow difficulty: hard items are refused far more often than easy ones.
    levels = measured["by_difficulty"]
    assert levels == card["by_difficulty"]
    assert levels["hard"]["idk_prompt_rej"] > levels["medium"]["idk_prompt_rej"] >= levels["easy"]["idk_prompt_rej"]
    assert levels["hard"]["idk_prompt_rej"] > 0.2
