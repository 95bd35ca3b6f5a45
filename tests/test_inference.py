"""Inference engine: batching equivalence, K@N sampling, resume after kill -9, bad inputs, audio check."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from inference_fixtures import (items_dir, make_items, tiny_demo_dir, tiny_model, write_benchmark_json,  # noqa: F401
                                write_wav)
from reliable_lalm.methods import execution as inf
from reliable_lalm.models import base as models_base, qwen2_audio
from reliable_lalm import paths
from reliable_lalm.core import prompts
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.items import BenchmarkItem, load_audio
from reliable_lalm.core.results import ResultStore

GREEDY = models_base.GenerationSettings(max_new_tokens=10)


def _requests(items, settings=GREEDY, prompt=None):
    return [models_base.GenerationRequest(it.id, load_audio(it.audio_path),
                                  prompt or build_prompt("baseline", it.question, it.choices), settings)
            for it in items]


@pytest.fixture(scope="module")
def items(items_dir):
    return make_items(items_dir / "main", 10)


def _hf_generate(model, backend, request, max_new_tokens):
    """Reference: transformers' own generate() on one prompt (what public scripts run)."""
    import torch

    enc = backend.encode([request])
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return backend.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _check_batched_equals_single(model, processor, items, n_reference=3, reqs=None):
    reqs = reqs or _requests(items)
    batched = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    single = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=1)
    uncompacted = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4, compact=False)
    unprefetched = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4, prefetch=False)
    try:
        out_b = batched.generate(reqs)
        out_1 = single.generate(reqs)
        out_u = uncompacted.generate(reqs)
        out_p = unprefetched.generate(reqs)
        assert [g.item_id for g in out_b] == [r.item_id for r in reqs]  # request order kept despite sorting
        assert [g.texts for g in out_b] == [g.texts for g in out_1] == [g.texts for g in out_u] == [g.texts for g in out_p]
        assert [g.new_tokens for g in out_b] == [g.new_tokens for g in out_1] == [g.new_tokens for g in out_u]
        # Prompts of different lengths really were padded together.
        assert len({g.prompt_tokens for g in out_b}) > 1
        for r, g in list(zip(reqs, out_1))[:n_reference]:
            assert g.text == _hf_generate(model, single, r, r.settings.max_new_tokens)
    finally:
        batched.close()
        single.close()
        uncompacted.close()
        unprefetched.close()
    return out_b, batched.stats


def test_batched_greedy_equals_batch_size_one(tiny_model, items):
    model, processor = tiny_model
    out, _ = _check_batched_equals_single(model, processor, items)
    assert any(g.text for g in out)  # something was generated


@pytest.mark.skipif(not (paths.DEMO_MODEL_DIR / "config.json").exists(), reason="shipped demo model not built")
def test_batched_greedy_equals_batch_size_one_shipped_demo(items):
    from reliable_lalm.models.hf_loading import load_model_and_processor

    model, processor = load_model_and_processor(paths.DEMO_MODEL_DIR, device="cpu")
    # Multiple-choice answers (a word or two) mixed with content descriptions (a phrase of varying
    # length): rows of one batch finish at different steps.
    settings = models_base.GenerationSettings(max_new_tokens=40)
    reqs = [r for pair in zip(_requests(items[:5], settings),
                              _requests(items[5:], settings, prompt=prompts.agent_content_prompt("Sound")))
            for r in pair]
    out, stats = _check_batched_equals_single(model, processor, items, n_reference=4, reqs=reqs)
    assert len({g.new_tokens[0] for g in out}) > 2
    assert stats["compactions"] > 0  # the trained model stops early: finished rows were dropped mid-batch


@pytest.mark.parametrize("prefetch", [True, False])
def test_the_next_batch_is_encoded_in_the_background(tiny_model, items, prefetch):
    import threading

    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=3, prefetch=prefetch)
    encoded_in, original = [], backend.encode

    def encode(*args, **kwargs):
        encoded_in.append(threading.current_thread() is threading.main_thread())
        return original(*args, **kwargs)

    backend.encode = encode
    out = backend.generate(_requests(items))
    backend.close()
    assert len(out) == len(items) and len(encoded_in) == 4  # 10 prompts in batches of 3
    # The first batch has nothing to overlap with: it is encoded in the calling thread either way.
    assert encoded_in == [True] + [not prefetch] * 3


def test_k_at_n_one_greedy_sample_equals_greedy_answer(tiny_model, items, tmp_path):
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=3)
    greedy = inf.run_method(backend, items[:5], "baseline", tmp_path / "greedy", settings=GREEDY, progress=False)
    k_at_n = inf.sample_k_at_n(backend, items[:5], tmp_path / "k_at_n", n_samples=1, settings=GREEDY, progress=False)
    backend.close()
    assert greedy.generated_records == k_at_n.generated_records == 5
    a = {k: r["model_output"] for k, r in ResultStore(tmp_path / "greedy").by_item().items()}
    b = {k: r["model_output"] for k, r in ResultStore(tmp_path / "k_at_n").by_item().items()}
    assert a == b


def _k_at_n_outputs(backend, items, store_dir, seed):
    settings = models_base.GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=seed)
    inf.sample_k_at_n(backend, items, store_dir, n_samples=5, settings=settings, progress=False)
    return {(r["item_id"], r["sample_index"]): r["model_output"] for r in ResultStore(store_dir).records()}


def test_k_at_n_reproducible_and_seed_dependent(tiny_model, items, tmp_path):
    model, processor = tiny_model
    b3, b1 = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=3), qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=1)
    first = _k_at_n_outputs(b3, items[:4], tmp_path / "s0a", seed=0)
    again = _k_at_n_outputs(b1, items[:4], tmp_path / "s0b", seed=0)  # other batching, same samples
    other = _k_at_n_outputs(b3, items[:4], tmp_path / "s1", seed=1)
    b3.close()
    b1.close()
    assert sorted(first) == sorted((it.id, j) for it in items[:4] for j in range(5))
    assert first == again
    assert first != other
    # The N samples of one question are not copies of each other.
    assert len({first[(items[0].id, j)] for j in range(5)}) > 1


def test_k_at_n_resume_fills_missing_samples_only(tiny_model, items, tmp_path):
    """A K@N store missing some samples of an item gets exactly those, equal to an uninterrupted run's."""
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=2)
    reference = _k_at_n_outputs(backend, items[:3], tmp_path / "full", seed=3)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "manifest.json").write_text((tmp_path / "full" / "manifest.json").read_text())
    lines = (tmp_path / "full" / "records.jsonl").read_text().splitlines()
    dropped = {(items[0].id, 3), (items[0].id, 4), (items[2].id, 0)}
    kept = [x for x in lines if (json.loads(x)["item_id"], json.loads(x)["sample_index"]) not in dropped]
    (partial / "records.jsonl").write_text("\n".join(kept) + "\n")
    seen = []
    settings = models_base.GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3)
    inf.sample_k_at_n(backend, items[:3], partial, n_samples=5, settings=settings, progress=False,
                   on_batch=lambda n, records: seen.extend((r["item_id"], r["sample_index"]) for r in records))
    backend.close()
    assert set(seen) == dropped
    resumed = {(r["item_id"], r["sample_index"]): r["model_output"] for r in ResultStore(partial).records()}
    assert resumed == reference


def test_sampling_respects_top_k_1(tiny_model, items):
    """top_k=1 leaves one token: sampling must then reproduce greedy decoding exactly."""
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    greedy = backend.generate(_requests(items[:4]))
    sampled = backend.generate(_requests(items[:4], models_base.GenerationSettings(
        max_new_tokens=10, do_sample=True, top_k=1, num_samples=3, seed=7)))
    backend.close()
    for g, s in zip(greedy, sampled):
        assert s.texts == [g.text] * 3


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    from inference_fixtures import make_items
    from pathlib import Path
    from reliable_lalm.methods import execution as inf
    from reliable_lalm.models import base as models_base, qwen2_audio
    from reliable_lalm.models.hf_loading import load_model_and_processor

    model, processor = load_model_and_processor({model!r}, device="cpu")
    items = make_items(Path({items!r}), 10)
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=2)
    kill_after = int(sys.argv[1])

    def on_batch(n, records):
        with open({log!r}, "a") as fh:
            fh.write(json.dumps([r["item_id"] for r in records]) + "\\n")
        if n == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash right after a batch was written

    inf.run_method(backend, items, "baseline", {store!r}, settings=models_base.GenerationSettings(max_new_tokens=6),
                   progress=False, on_batch=on_batch, chunk=4)
""")


@pytest.mark.slow  # three interpreter start-ups: ~30 s on 2 busy cores; the in-process crash test is fast
def test_resume_after_kill_minus_9(tiny_demo_dir, tiny_model, items_dir, tmp_path):
    store, log = tmp_path / "store", tmp_path / "batches.log"
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent), model=str(tiny_demo_dir),
                                           items=str(items_dir / "resume"), log=str(log), store=str(store)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    killed = subprocess.run([sys.executable, str(script), "3"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first_run = [json.loads(line) for line in log.read_text().splitlines()]
    done_first = {i for batch in first_run for i in batch}
    assert len(first_run) == 3 and 0 < len(done_first) < 10
    lines_before = (store / "records.jsonl").read_text().splitlines()
    with open(store / "records.jsonl", "a") as fh:  # and a torn line, as if killed mid-write
        fh.write('{"item_id": "q9", "sample_ind')
    log.unlink()
    finished = subprocess.run([sys.executable, str(script), "0"], env=env, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    second_run = {i for line in log.read_text().splitlines() for i in json.loads(line)}
    assert not second_run & done_first  # finished items were not regenerated
    lines = (store / "records.jsonl").read_text().splitlines()
    assert lines[:len(lines_before)] == lines_before  # earlier records untouched
    keys = Counter((json.loads(x)["item_id"], json.loads(x)["sample_index"]) for x in lines)
    assert set(keys) == {(f"q{i}", 0) for i in range(10)} and set(keys.values()) == {1}  # each once
    # A third run (same model folder, so the same store parameters) has nothing left to do.
    backend = qwen2_audio.Qwen2AudioBackend(*tiny_model, batch_size=2)
    again = inf.run_method(backend, make_items(items_dir / "resume", 10), "baseline", store,
                           settings=models_base.GenerationSettings(max_new_tokens=6), progress=False)
    backend.close()
    assert again.processed == 0 and again.already_done == 10
    assert (store / "records.jsonl").read_text().splitlines() == lines


def test_crash_in_a_batch_resumes_in_process(tiny_model, items, tmp_path):
    """An exception after k batches (in-process crash) then a re-run: same result as an uninterrupted run."""
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=3)

    class Crash(Exception):
        pass

    def crash(n, records):
        if n == 2:
            raise Crash()

    with pytest.raises(Crash):
        inf.run_method(backend, items, "idk", tmp_path / "s", settings=GREEDY, progress=False, on_batch=crash, chunk=6)
    partial = ResultStore(tmp_path / "s").done_keys()
    summary = inf.run_method(backend, items, "idk", tmp_path / "s", settings=GREEDY, progress=False)
    assert summary.already_done == len(partial) > 0
    assert summary.processed == len(items) - len(partial)
    resumed = {k: r["model_output"] for k, r in ResultStore(tmp_path / "s").by_item().items()}
    inf.run_method(backend, items, "idk", tmp_path / "ref", settings=GREEDY, progress=False)
    reference = {k: r["model_output"] for k, r in ResultStore(tmp_path / "ref").by_item().items()}
    backend.close()
    assert resumed == reference


def test_bad_inputs_become_error_records_and_the_run_goes_on(tiny_model, items_dir, tmp_path):
    import soundfile as sf

    model, processor = tiny_model
    good = make_items(items_dir / "bad_case", 3, prefix="ok")
    folder = tmp_path / "audio"
    corrupt = folder / "corrupt.wav"
    folder.mkdir()
    corrupt.write_bytes(b"RIFF\x00\x00garbage, not a wav file")
    stereo = folder / "stereo44k.wav"
    rng = np.random.default_rng(0)
    sf.write(str(stereo), (0.1 * rng.standard_normal((44100 * 2, 2))).astype(np.float32), 44100)
    long = write_wav(folder / "long.wav", 6.0, seed=3)  # the demo window is 4 s
    short = write_wav(folder / "short.wav", 0.01, seed=4)
    base = dict(question="What is heard?", answer="Dog", task="sound")
    bad = [
        BenchmarkItem(id="missing", audio_path=str(folder / "nope.wav"), choices=("Dog", "Cat"), **base),
        BenchmarkItem(id="corrupt", audio_path=str(corrupt), choices=("Dog", "Cat"), **base),
        BenchmarkItem(id="short", audio_path=str(short), choices=("Dog", "Cat"), **base),
        BenchmarkItem(id="empty_choice", audio_path=str(long), choices=("Dog", " "), **base),
        BenchmarkItem(id="dup_choice", audio_path=str(long), choices=("Dog", "Dog", "Cat"), **base),
        BenchmarkItem(id="stereo", audio_path=str(stereo), choices=("Dog", "Cat"), **base),
        BenchmarkItem(id="long", audio_path=str(long), choices=("Dog", "Cat"), **base),
    ]
    all_items = good[:2] + bad + good[2:]
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    summary = inf.run_method(backend, all_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
    records = ResultStore(tmp_path / "s").by_item()
    assert set(records) == {it.id for it in all_items}
    errors = {k: r["error"] for k, r in records.items() if r["error"]}
    assert set(errors) == {"missing", "corrupt", "short", "empty_choice", "dup_choice"}
    assert "missing" in errors["missing"] and "unreadable" in errors["corrupt"] and "duplicated" in errors["dup_choice"]
    assert all(records[k]["model_output"] is None for k in errors)
    assert all(isinstance(records[k]["model_output"], str) for k in ("stereo", "long", "ok0", "ok1", "ok2"))
    assert "truncated" in records["long"]["warning"] and records["stereo"]["warning"] is None
    assert summary.errors == 5 and summary.warnings == 1 and summary.processed == len(all_items)
    # Errors count as done: a re-run does nothing ...
    again = inf.run_method(backend, all_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
    assert again.processed == 0 and again.already_done == len(all_items)
    # ... unless asked to retry them; a fixed file then gets a real answer.
    write_wav(folder / "nope.wav", 1.0, seed=5)
    retry = inf.run_method(backend, all_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False,
                           retry_errors=True)
    backend.close()
    assert retry.processed == 5 and retry.errors == 4
    records = ResultStore(tmp_path / "s").by_item()
    assert records["missing"]["error"] is None and isinstance(records["missing"]["model_output"], str)
    raw = (tmp_path / "s" / "records.jsonl").read_text().splitlines()
    assert len(raw) == len(all_items)  # the retried error records were replaced, not duplicated


def test_truncated_audio_is_what_the_model_hears(tiny_model, items_dir):
    """6 s of audio and its first 4 s (the demo window) give the same greedy answer."""
    model, processor = tiny_model
    audio = load_audio(write_wav(items_dir / "trunc.wav", 6.0, seed=11))
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=2)
    out = backend.generate([models_base.GenerationRequest("a", audio, "What is heard?", GREEDY),
                            models_base.GenerationRequest("b", audio[: 4 * 16000], "What is heard?", GREEDY)])
    backend.close()
    assert out[0].texts == out[1].texts


class _DropAudio:
    """A processor that silently loses the audio and returns text features only (what the old
    ``audios=`` spelling did in some transformers versions)."""

    def __init__(self, processor):
        self._p = processor

    def __getattr__(self, name):
        return getattr(self._p, name)

    def __call__(self, *, text, **kwargs):
        return self._p.tokenizer(text, padding=True, return_tensors="pt")


def test_audio_check_fires_when_the_processor_drops_audio(tiny_model, items):
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=2)
    backend.processor = _DropAudio(processor)
    with pytest.raises(models_base.AudioNotReachedError):
        backend.generate(_requests(items[:2]))
    backend.close()


def test_audio_check_fires_when_features_do_not_reach_the_model(tiny_model, items, monkeypatch):
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=2)
    original = backend._forward

    def forward_without_features(**kwargs):  # the model then only embeds the <|AUDIO|> placeholders
        kwargs.pop("input_features", None)
        kwargs.pop("feature_attention_mask", None)
        return original(**kwargs)

    monkeypatch.setattr(backend, "_forward", forward_without_features)
    with pytest.raises(models_base.AudioNotReachedError, match="never called"):
        backend.generate(_requests(items[:2]))
    monkeypatch.undo()
    assert len(backend.generate(_requests(items[:2]))) == 2  # and passes when the audio is there
    backend.close()


class ScriptedBackend(models_base.Backend):
    """Answers by prompt kind, and records each call, to check the agent's orchestration."""

    window_seconds = 4.0

    def __init__(self, untyped=(), fail_on=None, unparsed=("q1",)):
        self.calls: list[list[str]] = []
        self.untyped, self.fail_on, self.unparsed = set(untyped), fail_on, set(unparsed)

    def generate(self, requests):
        kinds = {self._kind(r.prompt) for r in requests}
        assert len(kinds) <= 1, "one agent step per batch"
        self.calls.append([f"{self._kind(r.prompt)}:{r.item_id}" for r in requests])
        if self.fail_on in kinds:
            raise RuntimeError("crash in step " + self.fail_on)
        out = []
        for r in requests:
            kind = self._kind(r.prompt)
            text = {"type": "" if r.item_id in self.untyped else "Not sure." if r.item_id in self.unparsed
                    else "It is music.",
                    "content": f"a piano plays for {r.item_id}", "answer": "Violin"}[kind]
            out.append(models_base.Generation(r.item_id, r.samples, [text] * len(r.samples), [3] * len(r.samples),
                                      [True] * len(r.samples)))
        return out

    @staticmethod
    def _kind(prompt):
        if prompt == prompts.agent_type_prompt():
            return "type"
        return "content" if prompt.startswith("What is the") and "content?" in prompt else "answer"


def test_agent_runs_each_step_batched_and_resumes(items, tmp_path):
    settings = models_base.GenerationSettings(max_new_tokens=32)
    crashing = ScriptedBackend(untyped={"q2"}, fail_on="answer")
    with pytest.raises(RuntimeError, match="answer"):
        inf.run_method(crashing, items, "agent", tmp_path / "agent", settings=settings, progress=False)
    assert [c[0].split(":")[0] for c in crashing.calls] == ["type", "content", "answer"]
    assert len(crashing.calls[0]) == len(items)  # step 1 for all items in one batch
    assert len(crashing.calls[1]) == len(items) - 1  # the item with an empty step-1 reply skips steps 2-3
    backend = ScriptedBackend(untyped={"q2"})
    summary = inf.run_method(backend, items, "agent", tmp_path / "agent", settings=settings, progress=False)
    assert [c[0].split(":")[0] for c in backend.calls] == ["answer"]  # steps 1-2 were not redone
    assert summary.processed == len(items) - 1 and summary.already_done == 1
    records = ResultStore(tmp_path / "agent").by_item()
    assert set(records) == {it.id for it in items}
    r = records["q0"]
    assert (r["agent_type_raw"], r["agent_type"]) == ("It is music.", "Music")
    assert r["agent_content"] == "a piano plays for q0" and r["model_output"] == "Violin"
    assert r["prompt"] == prompts.agent_answer_prompt("Music", "a piano plays for q0", r["question"], r["choices"])
    assert records["q2"]["model_output"] == "" and "empty reply" in records["q2"]["warning"]
    # A reply naming no type fills {Type} as it is, and the item is answered (with a warning).
    r = records["q1"]
    assert (r["agent_type_raw"], r["agent_type"]) == ("Not sure.", "Not sure.")
    assert r["prompt"].startswith("The Not sure. content is:") and r["model_output"] == "Violin"
    assert "no single audio type" in r["warning"]


def test_agent_on_the_model(tiny_model, items, tmp_path):
    """The real backend through the three steps (an untrained model rarely names a type)."""
    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    summary = inf.run_method(backend, items[:4], "agent", tmp_path / "a",
                             settings=models_base.GenerationSettings(max_new_tokens=6), progress=False)
    backend.close()
    assert backend.stats["prefill_rows"] > backend.stats["batches"]  # several prompts per model call
    records = ResultStore(tmp_path / "a").by_item()
    assert summary.processed == 4 and set(records) == {it.id for it in items[:4]}
    assert all("agent_type_raw" in r and isinstance(r["model_output"], str) for r in records.values())


@pytest.mark.skipif(not (paths.DEMO_MODEL_DIR / "config.json").exists(), reason="shipped demo model not built")
def test_agent_on_the_shipped_demo_runs_all_three_steps(tmp_path):
    """The trained demo names audio types, so steps 2 and 3 run on the model too."""
    import soundfile as sf

    from reliable_lalm.demo import synthetic
    from reliable_lalm.models.hf_loading import load_model_and_processor

    rng = np.random.default_rng(5)
    items = []
    for i, task in enumerate(["sound", "music", "speech"] * 2):
        audio, record = synthetic.generate_item(rng, task, item_id=f"a{i}")
        sf.write(str(tmp_path / f"a{i}.wav"), audio, 16000)
        items.append(BenchmarkItem(id=f"a{i}", audio_path=str(tmp_path / f"a{i}.wav"), question=record["question"],
                                   choices=tuple(record["choices"]), answer=record["answer"], task=task))
    backend = qwen2_audio.Qwen2AudioBackend(*load_model_and_processor(paths.DEMO_MODEL_DIR, device="cpu"), batch_size=6)
    inf.run_method(backend, items, "agent", tmp_path / "agent", settings=models_base.GenerationSettings(max_new_tokens=24),
                   progress=False)
    backend.close()
    records = ResultStore(tmp_path / "agent").by_item()
    typed = [r for r in records.values() if r["agent_type"] in prompts.AGENT_AUDIO_TYPES]
    assert len(typed) >= 4
    for r in typed:
        assert r["agent_content"] and r["prompt"].startswith(f"The {r['agent_type']} content is:")
        assert isinstance(r["model_output"], str) and r["error"] is None


def test_infer_cli(tiny_demo_dir, items_dir, tmp_path, capsys):
    from reliable_lalm.cli import main

    items = make_items(items_dir / "cli", 4, prefix="c")
    bench = write_benchmark_json(tmp_path / "bench.json", items)
    args = ["infer", "--model", str(tiny_demo_dir), "--benchmark", str(bench), "--method", "baseline",
            "--out", str(tmp_path / "out"), "--batch-size", "2", "--limit", "3", "--device", "cpu",
            "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    assert len(ResultStore(tmp_path / "out").records()) == 3
    assert main(args[:-1] + ["--samples", "2", "--out", str(tmp_path / "k_at_n"), "--no-progress"]) == 0
    records = ResultStore(tmp_path / "k_at_n").records()
    assert sorted((r["item_id"], r["sample_index"]) for r in records) == [(f"c{i}", j) for i in range(3) for j in (0, 1)]
    manifest = ResultStore(tmp_path / "k_at_n").manifest()
    assert manifest["params"]["settings"]["do_sample"] is True and manifest["params"]["kind"] == "knn"  # the stored kind, kept


def test_store_refuses_other_settings(tiny_model, items, tmp_path):
    from reliable_lalm.core.results import ParamsMismatch

    model, processor = tiny_model
    backend = qwen2_audio.Qwen2AudioBackend(model, processor, batch_size=4)
    inf.run_method(backend, items[:2], "baseline", tmp_path / "s", settings=GREEDY, progress=False)
    with pytest.raises(ParamsMismatch):
        inf.run_method(backend, items[:2], "baseline", tmp_path / "s",
                       settings=models_base.GenerationSettings(max_new_tokens=11), progress=False)
    backend.close()
