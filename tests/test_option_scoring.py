"""Per-option log-likelihoods: batching equivalence, a direct forward-pass reference, P(IDK), the
resumable runner, unsupported backends, and the MMAU unanswerable counts (metadata only)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from inference_fixtures import items_dir, make_items, tiny_demo_dir, tiny_model  # noqa: F401
from reliable_lalm import paths
from reliable_lalm.core import abstention as ab
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.items import BenchmarkItem, load_audio
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.option_scoring import score_options
from reliable_lalm.models import base as models_base
from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend


@pytest.fixture(scope="module")
def items(items_dir):
    return make_items(items_dir / "options", 9, seed=3)


def _requests(items, method="idk"):
    return [models_base.GenerationRequest(it.id, load_audio(it.audio_path),
                                          build_prompt(method, it.question, it.choices)) for it in items]


def _direct_logprob(model, processor, backend, request, text: str) -> tuple[float, int]:
    """Reference: one full forward pass over chat prompt + answer + <|im_end|>, no cache, no batching."""
    import torch

    full = backend._chat_text(request.prompt) + text + "<|im_end|>"
    enc = processor(text=[full], audio=[backend.fit_audio(request.audio)], sampling_rate=16000, return_tensors="pt")
    n = len(processor.tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logp = model(**enc).logits[0].double().log_softmax(-1)
    ids = enc["input_ids"][0]
    length = len(ids)
    return float(sum(logp[p - 1, ids[p]] for p in range(length - n, length))), n


def test_batched_equals_batch_size_one(tiny_model, items):
    model, processor = tiny_model
    reqs = _requests(items)
    conts = [[*it.choices, "IDK"] for it in items]  # 2 to 5 choices: ragged rows and continuation lengths
    single = Qwen2AudioBackend(model, processor, batch_size=1).score_continuations(reqs, conts)
    for size in (3, 16):
        batched = Qwen2AudioBackend(model, processor, batch_size=size).score_continuations(reqs, conts)
        assert [s.item_id for s in batched] == [r.item_id for r in reqs]
        for a, b in zip(single, batched):
            assert a.continuations == b.continuations and a.token_counts == b.token_counts
            np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=0, atol=1e-4)
    # a wrong batching (e.g. cache rows of another prompt) would move these by whole nats
    assert len({round(s.logprobs[0], 3) for s in single}) > 1


def test_matches_direct_forward_pass_on_shipped_demo_model(items):
    backend = Qwen2AudioBackend.from_pretrained(paths.DEMO_MODEL_DIR, batch_size=4, device="cpu")
    try:
        reqs = _requests(items[:4], "baseline")
        conts = [[*it.choices, "IDK"] for it in items[:4]]
        scores = backend.score_continuations(reqs, conts)
        k = 2  # one item (checked against every one of its continuations), scored inside a batch of 4
        for j, text in enumerate(conts[k]):
            ref, n = _direct_logprob(backend.model, backend.processor, backend, reqs[k], text)
            assert scores[k].token_counts[j] == n
            assert scores[k].logprobs[j] == pytest.approx(ref, abs=1e-4)
        alone = backend.score_continuations(reqs[k:k + 1], [list(items[k].choices)])[0]
        assert list(alone.logprobs) == pytest.approx(scores[k].logprobs[:-1], abs=1e-4)
    finally:
        backend.close()


def test_unterminated_scores_a_prefix_and_is_at_least_as_likely(tiny_model, items):
    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=4)
    reqs, conts = _requests(items[:3]), [list(it.choices) for it in items[:3]]
    full = backend.score_continuations(reqs, conts, terminate=True)
    prefix = backend.score_continuations(reqs, conts, terminate=False)
    for f, p in zip(full, prefix):
        assert [n - 1 for n in f.token_counts] == p.token_counts
        assert all(lp >= lf - 1e-6 for lp, lf in zip(p.logprobs, f.logprobs))  # dropping a factor <= 1


def test_runner_writes_probabilities_and_resumes(tiny_model, items, tmp_path):
    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=4)
    store_dir = tmp_path / "scores"
    first = score_options(backend, items[:4], store_dir, method="idk", progress=False)
    assert first.processed == 4 and first.already_done == 0
    second = score_options(backend, items, store_dir, method="idk", progress=False)
    assert second.already_done == 4 and second.processed == len(items) - 4
    records = ResultStore(store_dir).records()
    assert sorted(r["item_id"] for r in records) == sorted(it.id for it in items)  # no duplicates
    fresh = score_options(backend, items, tmp_path / "fresh", method="idk", progress=False)
    assert fresh.processed == len(items)
    again = {r["item_id"]: r for r in ResultStore(tmp_path / "fresh").records()}
    by_id = {it.id: it for it in items}
    for r in records:
        assert r["choices"] == list(by_id[r["item_id"]].choices) and r["error"] is None
        assert len(r["option_logprobs"]) == len(r["choices"]) == len(r["option_tokens"])
        np.testing.assert_allclose(r["option_logprobs"], again[r["item_id"]]["option_logprobs"], atol=1e-4)
        p_idk = ab.idk_probability(r["idk_logprob"], r["option_logprobs"])
        assert 0.0 <= p_idk <= 1.0
        assert 0.0 <= ab.idk_probability(r["idk_logprob"]) <= 1.0
        p = ab.option_probabilities(r["option_logprobs"], token_counts=r["option_tokens"])
        assert p.sum() == pytest.approx(1.0)
    # another prompt is another store: the baseline's scores never mix into the IDK one
    from reliable_lalm.core.results import ParamsMismatch

    with pytest.raises(ParamsMismatch):
        score_options(backend, items, store_dir, method="baseline", progress=False)


def test_runner_resumes_after_a_torn_write(tiny_model, items, tmp_path):
    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=4)
    store_dir = tmp_path / "torn"
    score_options(backend, items[:5], store_dir, progress=False)
    path = ResultStore(store_dir).records_path
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:20])  # a crash mid-write: two records and a torn line
    summary = score_options(backend, items[:5], store_dir, progress=False, chunk=2)
    assert summary.already_done == 2 and summary.processed == 3
    assert sorted(r["item_id"] for r in ResultStore(store_dir).records()) == sorted(it.id for it in items[:5])


def test_bad_item_gets_an_error_record(tiny_model, items, tmp_path):
    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=4)
    missing = BenchmarkItem(id="gone", audio_path=str(tmp_path / "nope.wav"), question="Q?", choices=("a", "b"),
                            answer="a", task="sound")
    summary = score_options(backend, [items[0], missing], tmp_path / "err", progress=False)
    assert summary.errors == 1 and "gone" in summary.error_items
    rec = ResultStore(tmp_path / "err").by_item()["gone"]
    assert rec["option_logprobs"] is None and rec["error"]


def test_backend_without_scores_is_refused(tmp_path):
    class TextOnly(models_base.Backend):
        def generate(self, requests):
            return []

    backend = TextOnly()
    assert backend.supports_option_logprobs is False
    req = models_base.GenerationRequest("x", np.zeros(1600, dtype=np.float32), "Q?")
    with pytest.raises(models_base.OptionScoringUnsupported):
        backend.score_continuations([req], [["a", "b"]])
    with pytest.raises(models_base.OptionScoringUnsupported):
        score_options(backend, [], tmp_path / "s")


def _mmau_metadata() -> Path | None:
    for root in (paths.SHARED_DIR, paths.REPO_ROOT.parent.parent / "shared"):
        path = root / "mmau" / "mmau-test-mini.2025-03-25.json"
        if path.is_file():
            return path
    return None


def test_mmau_test_mini_unanswerable_counts():
    """Counts only (no audio): every source item is built or skipped with a reason, for each kind."""
    path = _mmau_metadata()
    if path is None:
        pytest.skip("MMAU test-mini metadata not in ../shared/mmau/")
    from reliable_lalm.experiments.abstention import mmau_unanswerable_counts

    built, counts = mmau_unanswerable_counts(path, seed=0)
    n_source = built.n_source
    assert n_source == len(json.loads(path.read_text()))  # every record of the file is a source item
    for kind, group in counts.groupby("kind"):
        assert int(group["n_built"].sum() + group["n_skipped"].sum()) == n_source
    by_kind = counts.groupby("kind")["n_built"].sum()
    assert by_kind["foreign-audio"] == n_source  # three modalities: every item has a donor of another modality
    assert 0 < by_kind["no-answer"] <= n_source
    again, _ = mmau_unanswerable_counts(path, seed=0)
    assert [it.id for it in again.items] == [it.id for it in built.items]
    assert all(it.answer not in it.choices for it in built.items)
