"""The shipped demo checkpoint: loads offline as the real class and reproduces its model card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reliable_lalm import paths
from reliable_lalm.demo.card import CARD_METRICS_FILE

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


@pytest.fixture(scope="module")
def measured():
    from reliable_lalm.demo.card import evaluate_demo

    return evaluate_demo(progress=False)


def test_demo_reproduces_its_card_and_is_not_degenerate(measured):
    card = json.loads((paths.DEMO_MODEL_DIR / CARD_METRICS_FILE).read_text())
    # Exactly: greedy decoding (and seeded sampling) of a fixed checkpoint on a fixed, seeded benchmark.
    assert measured == card
    # Not degenerate: no single output dominates, and the IDK prompt makes it refuse some items.
    assert measured["most_common_output_share"] < 0.25
    assert 0 < measured["idk_prompt_rej"] < 0.9
    assert measured["acc"] < 0.95  # partial knowledge, as Qwen2-Audio on MMAU
    # No rule that ignores the audio gets far: the answers are balanced.
    for name, row in measured["baselines"].items():
        assert row["total"] < measured["chance_acc"] + 0.05, name
    # It hears the audio: above the best such rule and above itself with silent clips, in every modality.
    from reliable_lalm.demo.card import best_prior_baseline

    for task in ("sound", "music", "speech"):
        s = measured["by_task"][task]
        assert s["acc"] >= best_prior_baseline(measured, task)[1] + 0.05, task
        assert s["acc"] >= s["silent_audio_acc"] + 0.05, task
    # Knowledge falls with difficulty, and the IDK prompt refuses what it gets wrong more often.
    levels = measured["by_difficulty"]
    assert levels["easy"]["acc"] > levels["medium"]["acc"] > levels["hard"]["acc"]
    assert measured["idk_prompt_rej_on_wrong"] > measured["idk_prompt_rej_on_right"] + 0.1
    assert measured["knn_agreement"]["on_right"] > measured["knn_agreement"]["on_wrong"]


def test_demo_meets_the_issue_15_bar(measured):
    from reliable_lalm.demo.card import best_prior_baseline

    for task in ("sound", "music", "speech"):
        s = measured["by_task"][task]
        assert s["acc"] >= best_prior_baseline(measured, task)[1] + 0.15, task
        assert s["acc"] >= s["silent_audio_acc"] + 0.15, task
    levels = measured["by_difficulty"]
    assert levels["easy"]["acc"] >= levels["hard"]["acc"] + 0.2
    assert measured["idk_prompt_rej"] < 0.6
    assert measured["knn_agreement"]["on_right"] > measured["knn_agreement"]["on_wrong"] + 0.1
