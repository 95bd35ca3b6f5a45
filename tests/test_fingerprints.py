"""One content fingerprint for every cached result: a change of any input is never answered from a cache.

Each test changes one thing — an audio file's bytes, a question, the model weights at the same
path, a prompt template, the seed, ``max_new_tokens`` — and checks a fresh computation, both
through ``rlalm infer`` into a folder the user named (which must refuse, in one line, to mix
results) and through an :class:`~reliable_lalm.experiments.Experiment` (which must compute afresh
in a folder of its own). The LLM normalizer's cache key (endpoint and model) is covered in
``tests/test_adversarial.py``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_fixtures import make_items, tiny_demo_dir, write_benchmark_json, write_wav  # noqa: F401
from reliable_lalm import paths
from reliable_lalm.cli import main
from reliable_lalm.core import fingerprint as fp
from reliable_lalm.core.results import ResultStore


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture()
def setup(tmp_path, tiny_demo_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_demo_dir, model)
    items = make_items(tmp_path / "audio", 4, prefix="f")
    bench = write_benchmark_json(tmp_path / "bench.json", items)
    return model, bench, items


def _infer(model, bench, out, *extra):
    return main(["infer", "--model", str(model), "--benchmark", str(bench), "--method", "baseline", "--out",
                 str(out), "--device", "cpu", "--max-new-tokens", "3", "--no-progress", *extra])


def _perturb_weights(model: Path) -> None:
    """Rewrite the checkpoint at the same path with slightly different weights."""
    from safetensors.torch import load_file, save_file

    path = model / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(path), metadata={"format": "pt"})


def _edit_question(bench: Path) -> None:
    records = json.loads(bench.read_text())
    records[1]["question"] = records[1]["question"] + " Listen carefully."
    bench.write_text(json.dumps(records))


def _change(change: str, model: Path, bench: Path, items, monkeypatch) -> dict:
    """Make one change to the inputs; returns the setting changes (name -> value) it needs."""
    if change == "audio":
        write_wav(Path(items[2].audio_path), 1.0, seed=999)
    elif change == "question":
        _edit_question(bench)
    elif change == "weights":
        _perturb_weights(model)
    elif change == "prompt":
        from reliable_lalm.core import prompts

        monkeypatch.setattr(prompts, "SELECT_INSTRUCTION", "Pick exactly one of these:")
    elif change == "seed":
        return {"seed": 7}
    else:
        return {"max_new_tokens": 4}
    return {}


def test_file_hashes_are_content_not_path(tmp_path):
    a = write_wav(tmp_path / "a.wav", 0.5, seed=1)
    b = tmp_path / "b.wav"
    shutil.copy(a, b)
    assert fp.file_sha256(a) == fp.file_sha256(b)
    write_wav(b, 0.5, seed=2)  # same path, same size, new bytes: the memo must not answer
    assert fp.file_sha256(a) != fp.file_sha256(b)


def test_model_fingerprint_ignores_the_card_and_sees_the_weights(tmp_path, tiny_demo_dir):
    model = tmp_path / "m"
    shutil.copytree(tiny_demo_dir, model)
    before = fp.model_fingerprint(model)
    (model / "README.md").write_text("a new card")
    assert fp.model_fingerprint(model) == before
    _perturb_weights(model)
    assert fp.model_fingerprint(model) != before


@pytest.mark.parametrize("change", ["audio", "question", "weights", "prompt", "seed", "max_new_tokens"])
def test_rlalm_infer_never_reuses_results_of_other_inputs(setup, tmp_path, change, monkeypatch, capsys):
    model, bench, items = setup
    out = tmp_path / "out"
    assert _infer(model, bench, out) == 0
    first = ResultStore(out).records()
    assert len(first) == 4
    assert _infer(model, bench, out) == 0  # unchanged inputs: everything is reused
    assert ResultStore(out).records() == first
    settings = _change(change, model, bench, items, monkeypatch)
    extra = [arg for name, value in settings.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    capsys.readouterr()
    rc = _infer(model, bench, out, *extra)  # a later --max-new-tokens overrides the default one
    err = capsys.readouterr().err
    assert rc == 2, err
    errors = [line for line in err.splitlines() if "rlalm infer: error" in line]
    assert len(errors) == 1 and "other" in errors[0], err  # one line: results of other inputs/parameters
    err = errors[0]
    what = {"audio": "audio", "question": "item", "weights": "model.weights", "prompt": "prompt",
            "seed": "settings.seed", "max_new_tokens": "settings.max_new_tokens"}[change]
    assert what in err
    assert ResultStore(out).records() == first  # nothing mixed in
    fresh = tmp_path / "fresh"
    assert _infer(model, bench, fresh, *extra) == 0
    assert len(ResultStore(fresh).records()) == 4


@pytest.mark.parametrize("change", ["audio", "question", "weights", "prompt", "seed", "max_new_tokens"])
def test_experiment_computes_afresh_when_an_input_changes(setup, tmp_path, change, monkeypatch):
    from reliable_lalm.experiments import Experiment

    model, bench, items = setup

    def experiment(**kw):
        settings = dict(profile="fp", model=str(model), benchmark=str(bench), device="cpu", bootstrap=0,
                        max_new_tokens=3, results_root=tmp_path / "results")
        settings.update(kw)
        return Experiment(**settings)

    first_dir = experiment().run("baseline", progress=False)
    first = ResultStore(first_dir).records()
    assert len(first) == 4
    again = experiment()
    monkeypatch.setattr(type(again), "backend", lambda self, adapter=None: pytest.fail("cached run loaded the model"))
    assert again.run("baseline", progress=False) == first_dir  # the fast path: nothing recomputed
    monkeypatch.undo()
    kwargs = _change(change, model, bench, items, monkeypatch)
    second_dir = experiment(**kwargs).run("baseline", progress=False)
    assert second_dir != first_dir
    second = ResultStore(second_dir).records()
    assert len(second) == 4  # computed afresh, not copied
    assert ResultStore(first_dir).records() == first  # the old results are untouched
    if change in ("audio", "question", "prompt"):
        changed = {"audio": "f2", "question": "f1"}.get(change)
        keys_1 = {r["item_id"]: r["input"]["key"] for r in first}
        keys_2 = {r["item_id"]: r["input"]["key"] for r in second}
        differ = {i for i in keys_1 if keys_1[i] != keys_2[i]}
        assert differ == ({changed} if changed else set(keys_1))


def test_a_stale_record_names_the_item_and_what_differs(setup, tmp_path):
    from reliable_lalm.methods.execution import pending_items
    from reliable_lalm.methods.generation import StaleResultsError

    model, bench, items = setup
    out = tmp_path / "out"
    assert _infer(model, bench, out) == 0
    store = ResultStore(out)
    assert pending_items(store, items, "baseline") == []
    write_wav(Path(items[3].audio_path), 2.0, seed=12345)
    with pytest.raises(StaleResultsError, match=r"item 'f3': audio differs"):
        pending_items(store, items, "baseline")


def test_records_carry_their_input_fingerprint(setup, tmp_path):
    model, bench, items = setup
    out = tmp_path / "out"
    assert _infer(model, bench, out) == 0
    for record in ResultStore(out).records():
        item = next(it for it in items if it.id == record["item_id"])
        assert record["input"]["audio"] == fp.file_sha256(item.audio_path)[:16]
        assert record["input"]["prompt"] == fp.text_digest(record["prompt"])
    manifest = ResultStore(out).manifest()
    assert manifest["params"]["model"]["weights"] == fp.model_fingerprint(model)
    assert str(model) not in json.dumps(manifest["params"])  # a cache keyed by content travels between clones


def test_items_fingerprint_covers_the_audio(tmp_path):
    items = make_items(tmp_path, 3, prefix="g")
    before = fp.items_fingerprint(items)
    audio = np.zeros(1600, dtype=np.float32)
    import soundfile as sf

    sf.write(items[0].audio_path, audio, 16000)
    assert fp.items_fingerprint(items) != before


@pytest.mark.parametrize("how", ["copy -p", "in place, touch -r"])
def test_new_bytes_under_a_restored_mtime_are_hashed_again(tmp_path, monkeypatch, how):
    """Weights of the same size copied in with the old mtime, or a WAV whose first seconds were
    replaced and its mtime restored: the memo (in memory and on disk) must not answer."""
    import hashlib
    import os
    import time

    monkeypatch.setattr(fp, "RACY_NS", 0, raising=False)  # memoize even files written just now: the ctime must tell
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(fp, "_memo", {})
    monkeypatch.setattr(fp, "_memo_loaded", set())
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(3 << 20))  # over persist_above: goes to the on-disk memo too
    first = fp.file_sha256(weights)
    old = os.stat(weights)
    time.sleep(0.05)  # a later tick of the file-time clock
    if how == "copy -p":
        new = tmp_path / "new.safetensors"
        new.write_bytes(os.urandom(3 << 20))
        os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
        shutil.copy2(new, weights)
    else:
        with open(weights, "r+b") as fh:
            fh.write(os.urandom(1 << 20))
        os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    now = os.stat(weights)
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    truth = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert truth != first
    assert fp.file_sha256(weights) == truth
    fp._memo.clear()
    fp._memo_loaded.clear()  # a new process: only the on-disk memo
    assert fp.file_sha256(weights) == truth
