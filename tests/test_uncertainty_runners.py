"""Answer scoring and follow-up prompts (methods.uncertainty) on real engines, and the audio
controls (benchmarks.audio_controls): batching, an independent log-probability reference,
resumability, error records, determinism and where files go."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from inference_fixtures import items_dir, make_items, tiny_demo_dir, tiny_model  # noqa: F401
from reliable_lalm import paths
from reliable_lalm.benchmarks.audio_controls import build_audio_controls, control_audio
from reliable_lalm.core import prompts
from reliable_lalm.core.items import load_audio
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.registry import get_method
from reliable_lalm.methods.uncertainty import run_follow_up, score_texts
from reliable_lalm.models.base import GenerationRequest, GenerationSettings
from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend


@pytest.fixture(scope="module")
def items(items_dir):
    return make_items(items_dir / "uncertainty", 7, seed=11)


def _baseline_prompt(it):
    return get_method("baseline").build_prompt(it.question, it.choices)


def test_scores_batched_equal_batch_size_one_and_resume(tiny_model, items, tmp_path):
    model, processor = tiny_model
    texts = {it.id: [it.choices[0], f"{it.choices[-1]} and more words", "IDK"] for it in items}
    runs = {}
    for size in (1, 4):
        store = tmp_path / f"bs{size}"
        summary = score_texts(Qwen2AudioBackend(model, processor, batch_size=size), items, store, method="baseline",
                              prompt_of=_baseline_prompt, texts_of=lambda it: texts[it.id], progress=False)
        assert summary.errors == 0 and summary.processed == len(items)
        runs[size] = ResultStore(store).by_item(0)
    for it in items:
        a, b = runs[1][it.id], runs[4][it.id]
        assert a["texts"] == texts[it.id] and a["token_counts"] == b["token_counts"]
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], rtol=0, atol=1e-4)
        assert all(lp < 0 for lp in a["logprobs"])
    # resumable: a second run scores nothing; other texts for an item are refused, never mixed
    again = score_texts(Qwen2AudioBackend(model, processor, batch_size=4), items, tmp_path / "bs4", method="baseline",
                        prompt_of=_baseline_prompt, texts_of=lambda it: texts[it.id], progress=False)
    assert again.processed == 0 and again.already_done == len(items)
    from reliable_lalm.methods.generation import StaleResultsError
    with pytest.raises(StaleResultsError, match="prompt differs"):
        score_texts(Qwen2AudioBackend(model, processor, batch_size=4), items, tmp_path / "bs4", method="baseline",
                    prompt_of=_baseline_prompt, texts_of=lambda it: ["other"], progress=False)


def test_greedy_answer_score_equals_generated_token_logprobs(items, tmp_path):
    """Reference: transformers' own generate() on the shipped demo model, raw logits per step."""
    import torch

    backend = Qwen2AudioBackend.from_pretrained(paths.DEMO_MODEL_DIR, batch_size=4, device="cpu")
    try:
        chosen = items[:4]
        reqs = [GenerationRequest(it.id, load_audio(it.audio_path), _baseline_prompt(it),
                                  GenerationSettings(max_new_tokens=24)) for it in chosen]
        gens = backend.generate(reqs)
        answers = {g.item_id: g.text for g in gens}
        reference = {}
        for it, req, g in zip(chosen, reqs, gens):
            enc = backend.processor(text=[backend._chat_text(req.prompt)], audio=[backend.fit_audio(req.audio)],
                                    sampling_rate=16000, return_tensors="pt")
            with torch.inference_mode():
                out = backend.model.generate(**enc, do_sample=False, max_new_tokens=24, output_logits=True,
                                             return_dict_in_generate=True, repetition_penalty=1.0)
            new = out.sequences[0, enc["input_ids"].shape[1]:]
            if g.finished[0]:  # the answer ended at end-of-turn: the scored text is the whole answer
                reference[it.id] = (sum(torch.log_softmax(out.logits[t][0].double(), -1)[new[t]].item()
                                        for t in range(len(new))), len(new))
        assert reference, "no greedy answer ended at end-of-turn within 24 tokens"
        score_texts(backend, chosen, tmp_path / "greedy", method="baseline", prompt_of=_baseline_prompt,
                    texts_of=lambda it: [answers[it.id]], progress=False)
    finally:
        backend.close()
    records = ResultStore(tmp_path / "greedy").by_item(0)
    for item_id, (ref, n) in reference.items():
        assert records[item_id]["token_counts"][0] == n
        assert records[item_id]["logprobs"][0] == pytest.approx(ref, abs=1e-4)


def test_follow_up_prompts_keep_going_past_items_without_an_answer(tiny_model, items, tmp_path):
    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=3)
    answers = {it.id: it.choices[1] for it in items}
    answers[items[2].id] = None  # the baseline failed on this item: nothing to ask about
    settings = GenerationSettings(max_new_tokens=4)
    summary = run_follow_up(backend, items, answers, tmp_path / "verbal", method="verbalized-confidence",
                            settings=settings, progress=False)
    assert summary.errors == 1 and "no answer" in summary.error_items[items[2].id]
    records = ResultStore(tmp_path / "verbal").by_item(0)
    assert "Proposed answer: " + items[0].choices[1] in records[items[0].id]["prompt"]
    assert records[items[0].id]["prompt"].endswith(prompts.VERBALIZED_INSTRUCTION)
    # batch size 1 gives the same replies
    run_follow_up(Qwen2AudioBackend(model, processor, batch_size=1), items, answers, tmp_path / "verbal1",
                  method="verbalized-confidence", settings=settings, progress=False)
    one = ResultStore(tmp_path / "verbal1").by_item(0)
    assert {k: r["model_output"] for k, r in one.items()} == {k: r["model_output"] for k, r in records.items()}
    # P(True): "True" and "False" scored after the verification prompt
    from reliable_lalm.methods.uncertainty import follow_up_prompt_of
    score_texts(backend, items, tmp_path / "ptrue", method="p-true", prompt_of=follow_up_prompt_of("p-true", answers),
                texts_of=lambda it: list(prompts.P_TRUE_ANSWERS), progress=False)
    ptrue = ResultStore(tmp_path / "ptrue").by_item(0)
    assert ptrue[items[2].id]["error"] and ptrue[items[0].id]["texts"] == ["True", "False"]
    assert all(math.isfinite(v) for v in ptrue[items[0].id]["logprobs"])


def test_audio_controls(items, tmp_path):
    source_dir = Path(items[0].audio_path).parent
    before = sorted(p.name for p in source_dir.iterdir())
    built = build_audio_controls(items, tmp_path / "clips", seed=3)
    again = build_audio_controls(items, tmp_path / "clips2", seed=3)
    assert sorted(p.name for p in source_dir.iterdir()) == before  # nothing written beside the user's audio
    for control in ("silence", "white-noise"):
        assert [v.id for v in built.items[control]] == [f"{it.id}::{control}" for it in items]
        for it, v, w in zip(items, built.items[control], again.items[control]):
            assert v.question == it.question and v.choices == it.choices and v.answer == it.answer
            assert str(tmp_path / "clips" / control) in v.audio_path
            src, got = load_audio(it.audio_path), load_audio(v.audio_path)
            assert len(got) == len(src)
            assert open(v.audio_path, "rb").read() == open(w.audio_path, "rb").read()  # deterministic bytes
            if control == "silence":
                assert not got.any()
            else:
                rms = lambda x: float(np.sqrt(np.mean(np.asarray(x, float) ** 2)))  # noqa: E731
                assert rms(got) == pytest.approx(rms(src), rel=1e-5)
                assert abs(np.corrcoef(got, src)[0, 1]) < 0.1  # noise, not the clip
    # another seed draws other noise; a missing clip is skipped with its cause
    other = control_audio(load_audio(items[0].audio_path), "white-noise", seed=4, item_id=items[0].id)
    assert not np.array_equal(other, load_audio(built.items["white-noise"][0].audio_path))
    from dataclasses import replace
    broken = replace(items[0], id="gone", audio_path=str(tmp_path / "nope.wav"))
    res = build_audio_controls([broken, items[1]], tmp_path / "clips3")
    assert "missing" in res.skipped["gone"] and len(res.items["silence"]) == 1
    with pytest.raises(ValueError, match="unknown audio control"):
        build_audio_controls(items, tmp_path / "x", controls=("reverse",))
