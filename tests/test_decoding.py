"""Decoding as a profile choice (issue 17 item 6): the engine's repetition penalty equals HF
generate's, batched output equals batch-size-1 output, and ``decoding: generation_config`` reads
the checkpoint's published sampling settings."""
from __future__ import annotations

import json

import pytest

from inference_fixtures import items_dir, make_items, tiny_demo_dir, tiny_model  # noqa: F401
from reliable_lalm import paths
from reliable_lalm.core import prompts
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.items import load_audio
from reliable_lalm.models import qwen2_audio
from reliable_lalm.models.base import GenerationRequest, GenerationSettings

pytestmark = pytest.mark.skipif(not (paths.DEMO_MODEL_DIR / "config.json").exists(),
                                reason="shipped demo model not built")


@pytest.fixture(scope="module")
def demo():
    from reliable_lalm.models.hf_loading import load_model_and_processor

    return load_model_and_processor(paths.DEMO_MODEL_DIR, device="cpu")


@pytest.fixture(scope="module")
def requests_of(items_dir):
    items = make_items(items_dir / "decoding", 8, max_seconds=3.5)

    def build(settings):
        # Content descriptions: phrases long enough for a repeated token to matter.
        return [GenerationRequest(it.id, load_audio(it.audio_path),
                                  prompts.agent_content_prompt("Sound") if i % 2 else
                                  build_prompt("baseline", it.question, it.choices), settings)
                for i, it in enumerate(items)]
    return build


def _hf_generate(model, backend, request, **kwargs):
    import torch

    enc = backend.encode([request])
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=request.settings.max_new_tokens, do_sample=False, **kwargs)
    return backend.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("penalty", [1.1, 2.0])
def test_repetition_penalised_greedy_equals_hf_generate_and_batch_size_one(demo, requests_of, penalty):
    model, processor = demo
    settings = GenerationSettings(max_new_tokens=24, repetition_penalty=penalty)
    reqs = requests_of(settings)
    batched = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    single = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=1)
    try:
        out_b = batched.generate(reqs)
        out_1 = single.generate(reqs)
        assert [g.texts for g in out_b] == [g.texts for g in out_1]
        assert [g.new_tokens for g in out_b] == [g.new_tokens for g in out_1]
        for r, g in zip(reqs, out_1):
            assert g.text == _hf_generate(model, single, r, repetition_penalty=penalty)
    finally:
        batched.close()
        single.close()


def test_the_penalty_is_really_applied(tiny_model, requests_of):
    """On an untrained model (long, repetitive answers) a strong penalty changes some answer; the
    trained demo's answers are too short for it to matter."""
    backend = qwen2_audio.Qwen2AudioBackend(*tiny_model, batch_size=4)
    try:
        plain = backend.generate(requests_of(GenerationSettings(max_new_tokens=24)))
        penalised = backend.generate(requests_of(GenerationSettings(max_new_tokens=24, repetition_penalty=2.0)))
    finally:
        backend.close()
    assert [g.text for g in plain] != [g.text for g in penalised]


def test_reference_loop_applies_the_same_repetition_penalty(demo, requests_of):
    from reliable_lalm.cli.bench import Question, _Loop

    model, processor = demo
    settings = GenerationSettings(max_new_tokens=24, repetition_penalty=2.0)
    reqs = requests_of(settings)[:4]
    loop = _Loop(model, processor, settings.max_new_tokens)
    engine = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    try:
        engine_texts = [g.text for g in engine.generate(reqs)]
    finally:
        engine.close()
    loop_texts = [loop.answer(Question(r.item_id, r.audio, r.prompt), do_sample=False, repetition_penalty=2.0)[0]
                  for r in reqs]
    assert loop_texts == engine_texts


def test_settings_key_unchanged_without_penalty():
    assert "repetition_penalty" not in GenerationSettings().to_dict()
    assert GenerationSettings(repetition_penalty=1.1).to_dict()["repetition_penalty"] == 1.1
    with pytest.raises(ValueError):
        GenerationSettings(repetition_penalty=0.0)


def test_published_generation_config_is_read_from_the_checkpoint(tmp_path):
    from reliable_lalm.models.hf_loading import published_generation_settings

    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.7, "repetition_penalty": 1.1,
         "eos_token_id": [1, 2]}))
    assert published_generation_settings(str(tmp_path)) == {
        "do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.7, "repetition_penalty": 1.1}
    # The demo's file says greedy: nothing else is invented.
    assert published_generation_settings(str(paths.DEMO_MODEL_DIR))["do_sample"] is False
    (tmp_path / "generation_config.json").unlink()
    with pytest.raises(FileNotFoundError):
        published_generation_settings(str(tmp_path))
