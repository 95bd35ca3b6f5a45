"""Inputs a careless user or an attacker hands in: bounded numbers, over-long prompts, honest exits
when nothing was produced, pickled weights, deeply nested or BOM-prefixed JSON, and workers run
from notebooks. Each failure is one line (or one error record), never a traceback or a silent 0."""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer, Status  # noqa: E402
from inference_fixtures import make_items, tiny_demo_dir, tiny_model, write_benchmark_json  # noqa: E402,F401

from reliable_lalm import paths  # noqa: E402
from reliable_lalm.cli import main  # noqa: E402
from reliable_lalm.core.items import load_benchmark  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402

HAS_DEMO = (paths.DEMO_MODEL_DIR / "config.json").exists()
needs_demo = pytest.mark.skipif(not HAS_DEMO, reason="shipped demo model not built")
SOUNDS = ["Dog barking", "Cat meowing", "Car horn", "Rain"]


@pytest.fixture(autouse=True)
def clean_env(no_credentials):
    """Every test here runs without real credentials, endpoints or proxies, with a private cache."""


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, text
    return lines[0]


def _records(folder: Path, n: int, **change) -> list[dict]:
    from inference_fixtures import write_wav

    wav = write_wav(folder / "a.wav", 1.0, seed=1)
    return [{"id": f"r{i}", "audio_id": str(wav), "question": f"Question {i}?", "choices": ["Dog", "Cat"],
             "answer": "Dog", "task": "sound", **change} for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Numbers: finite and in range, refused by argparse in one line

@pytest.mark.parametrize("args,flag", [
    (["infer", "--temperature", "nan"], "--temperature"),
    (["infer", "--temperature", "inf"], "--temperature"),
    (["infer", "--temperature", "-1"], "--temperature"),
    (["infer", "--top-p", "0"], "--top-p"),
    (["infer", "--top-p", "1.5"], "--top-p"),
    (["infer", "--top-k", "-1"], "--top-k"),
    (["infer", "--samples", "1000000"], "--samples"),
    (["infer", "--samples", "100000"], "--samples"),
    (["train", "k-at-n", "--temperature", "nan"], "--temperature"),
    (["train", "k-at-n", "--samples", "1000000"], "--samples"),
    (["train", "sft", "--lr", "nan"], "--lr"),
    (["train", "sft", "--lora-alpha=-inf"], "--lora-alpha"),
    (["train", "sft", "--lora-dropout", "1"], "--lora-dropout"),
    (["train", "bench-step", "--audio-seconds", "0"], "--audio-seconds"),
    (["bench", "inference", "--repetition-penalty", "nan"], "--repetition-penalty"),
    (["bench", "inference", "--samples", "1000000"], "--samples"),
    (["score", "--level", "1.5"], "--level"),
    (["score", "--level", "nan"], "--level"),
])
def test_every_float_option_and_samples_are_bounded(tmp_path, capsys, args, flag):
    base = {"infer": ["--model", "demo", "--benchmark", "b.json", "--method", "baseline", "--out", str(tmp_path / "o")],
            "k-at-n": ["--model", "demo", "--benchmark", "b.json", "--modality", "sound", "--out", str(tmp_path / "o")],
            "sft": ["--model", "demo", "--benchmark", "b.json", "--modality", "sound", "--out", str(tmp_path / "o"),
                    "--samples-store", "s", "--k", "5"],
            "score": [str(tmp_path / "p.json")]}
    command = args[1] if args[0] in ("train", "bench") else args[0]
    with pytest.raises(SystemExit) as exit_:
        main(args + base.get(command, []))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err.strip().splitlines()[-1]


def test_generation_settings_refuse_values_that_are_not_finite():
    from reliable_lalm.models.base import GenerationSettings

    for bad in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": math.nan},
                {"repetition_penalty": math.nan}):
        with pytest.raises(ValueError):
            GenerationSettings(**bad)


# ------------------------------------------------------------------------------------------------
# Prompts: a character cap at load, the model's context per item before batching

def test_a_question_over_the_character_cap_is_rejected_at_load(tmp_path):
    from reliable_lalm.core.items import MAX_PROMPT_CHARS

    records = _records(tmp_path, 3)
    records[1]["question"] = "x" * 1_000_000
    path = tmp_path / "b.json"
    path.write_text(json.dumps(records))
    bench = load_benchmark(path)
    assert [it.id for it in bench.items] == ["r0", "r2"]
    [rejected] = bench.rejected
    assert rejected.item_id == "r1" and str(MAX_PROMPT_CHARS) in rejected.cause and "1000006 characters" in rejected.cause


@needs_demo
def test_a_prompt_over_the_context_is_its_own_error_record_naming_the_lengths(tmp_path, one_torch_thread):
    from reliable_lalm.core.items import MAX_PROMPT_CHARS, BenchmarkItem, load_audio
    from reliable_lalm.methods.execution import run_method
    from reliable_lalm.models.base import GenerationRequest, GenerationSettings
    from reliable_lalm.models.registry import load_backend

    backend = load_backend("demo", device="cpu", batch_size=4)
    items = make_items(tmp_path / "audio", 3, prefix="c")
    words = " ".join(f"w{i % 97}x{i % 13}" for i in range(200))  # 1218 characters, 1072 tokens: over 1024 with the answer
    assert len(words) < MAX_PROMPT_CHARS
    long = BenchmarkItem(id="long", audio_path=items[0].audio_path, question=f"{words}?", choices=items[0].choices,
                         answer=items[0].answer, task=items[0].task)
    settings = GenerationSettings(max_new_tokens=3)
    short = GenerationRequest("q", load_audio(items[1].audio_path), "What is it?", settings)
    assert backend.max_positions and backend.prompt_tokens(short) < backend.max_positions
    summary = run_method(backend, [items[0], long, items[1], items[2]], "baseline", tmp_path / "s",
                         settings=settings, progress=False)
    records = ResultStore(tmp_path / "s").by_item()
    assert summary.errors == 1 and records["long"]["model_output"] is None
    error = records["long"]["error"]
    assert "prompt too long" in error and f"> its {backend.max_positions} positions" in error
    assert all(records[it.id]["error"] is None and records[it.id]["model_output"] is not None for it in items)


def test_the_prompt_token_count_is_what_the_processor_lays_out(tiny_model):
    """The count the context check uses equals the processor's own, audio tokens included."""
    from reliable_lalm.core.items import load_audio
    from reliable_lalm.models.base import GenerationRequest
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    model, processor = tiny_model
    backend = Qwen2AudioBackend(model, processor, batch_size=1)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for it in make_items(Path(folder), 3, seed=5, max_seconds=40.0):
            request = GenerationRequest(it.id, load_audio(it.audio_path), f"{it.question} {' / '.join(it.choices)}")
            enc = backend.encode([request])
            assert backend.prompt_tokens(request) == int(enc["input_ids"].shape[-1])


# ------------------------------------------------------------------------------------------------
# Honest exits: nothing generated, every LLM request failed

@needs_demo
def test_infer_with_every_audio_missing_exits_non_zero_in_one_line(tmp_path, capsys, one_torch_thread):
    items = make_items(tmp_path / "audio", 2, prefix="m")
    bench = write_benchmark_json(tmp_path / "bench.json", items)
    shutil.rmtree(tmp_path / "audio")
    args = ["infer", "--model", "demo", "--benchmark", str(bench), "--method", "baseline", "--out",
            str(tmp_path / "out"), "--device", "cpu", "--max-new-tokens", "2", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "nothing generated: all 2 item(s) failed" in err
    assert main(args) == 1  # the rerun has nothing to do, and still nothing to show
    assert "nothing generated" in capsys.readouterr().err


def test_score_exits_non_zero_when_every_llm_request_fails(tmp_path, capsys):
    server = ChatServer(lambda body, n: Status(400, "this endpoint fails everything")).start()
    try:
        pred = tmp_path / "pred.json"
        pred.write_text(json.dumps([{"id": f"x{i}", "task": "sound", "choices": SOUNDS, "answer": "Rain",
                                     "model_output": f"zzq {i}"} for i in range(6)]))
        rc = main(["score", str(pred), "--normalizer", "openai", "--openai-base-url", server.base_url])
    finally:
        server.stop()
    captured = capsys.readouterr()
    assert rc != 0 and captured.out == ""  # no rule-based numbers under the LLM normalizer's name
    assert "every LLM normalization request failed (6 of 6" in _one_line(
        "\n".join(line for line in captured.err.splitlines() if not line.startswith(("WARNING", "LLM"))))


# ------------------------------------------------------------------------------------------------
# Pickles: refused safely, in one line

class _Planted:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@needs_demo
@pytest.mark.parametrize("where", ["model", "adapter"])
def test_pickled_weights_are_refused_in_one_line(tmp_path, capsys, where, one_torch_thread):
    marker = tmp_path / "PWNED"
    bench = write_benchmark_json(tmp_path / "bench.json", make_items(tmp_path / "audio", 1, prefix="p"))
    args = ["infer", "--benchmark", str(bench), "--method", "baseline", "--out", str(tmp_path / "out"),
            "--device", "cpu", "--no-progress"]
    if where == "model":
        model = tmp_path / "model"
        shutil.copytree(paths.DEMO_MODEL_DIR, model)
        (model / "model.safetensors").unlink()
        with open(model / "pytorch_model.bin", "wb") as fh:
            pickle.dump({"weight": _Planted(marker)}, fh, protocol=2)
        args += ["--model", str(model)]
    else:
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        shutil.copy(paths.ASSETS_DIR / "demo_adapters" / "sound-a32" / "adapter_config.json", adapter)
        with open(adapter / "adapter_model.bin", "wb") as fh:
            pickle.dump({"weight": _Planted(marker)}, fh, protocol=2)
        args += ["--model", "demo", "--adapter", str(adapter)]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlalm")]
    assert len(err) == 1 and "refused to load" in err[0] and "Traceback" not in err[0]
    assert not marker.exists()


@pytest.mark.parametrize("command", [["train", "k-at-n"], ["demo", "train"]])
def test_a_planted_checkpoint_ends_the_command_in_one_line(tmp_path, capsys, monkeypatch, command):
    from reliable_lalm.models.hf_loading import UnsafeCheckpointError

    def planted(*_a, **_k):
        raise UnsafeCheckpointError(f"{tmp_path}/optimizer.pt: refused to load: a pickled file ...")

    if command[0] == "train":
        from reliable_lalm.cli import train

        monkeypatch.setattr(train, "_run_k_at_n", planted)
        monkeypatch.setattr("reliable_lalm.models.hf_loading.resolve_model_source", lambda m: m)
        args = command + ["--model", "demo", "--benchmark", "b.json", "--modality", "sound", "--out", str(tmp_path)]
    else:
        monkeypatch.setattr("reliable_lalm.demo.train.train_demo", planted)
        args = command + ["--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert "optimizer.pt: refused to load" in _one_line(capsys.readouterr().err)


def test_load_torch_state_refuses_a_planted_optimizer_in_one_line(tmp_path):
    import torch

    from reliable_lalm.models.hf_loading import UnsafeCheckpointError
    from reliable_lalm.training.loop import load_torch_state

    marker = tmp_path / "PWNED"
    torch.save({"optimizer": _Planted(marker)}, tmp_path / "optimizer.pt")
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_torch_state(tmp_path / "optimizer.pt")
    assert "optimizer.pt" in str(caught.value) and "\n" not in str(caught.value) and not marker.exists()


# ------------------------------------------------------------------------------------------------
# JSON: deeply nested documents and byte-order marks

def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    from reliable_lalm.benchmarks.registry import load as load_registered

    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "b.json"
    path.write_text(deep)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_benchmark(path)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_registered(f"mmar:{path}")
    lines = [json.dumps(r) for r in _records(tmp_path, 3)]
    lines[1] = '{"id": "deep", "question": ' + deep + "}"
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    bench = load_benchmark(jsonl)
    assert [it.id for it in bench.items] == ["r0", "r2"]
    assert "nested too deeply" in bench.rejected[0].cause and bench.rejected[0].line == 2
    assert main(["score", str(path)]) == 2
    assert "nested too deeply" in _one_line(capsys.readouterr().err)


def test_a_byte_order_mark_is_accepted_by_every_json_reader(tmp_path, capsys):
    from reliable_lalm.benchmarks.registry import load as load_registered
    from reliable_lalm.core import jsonio

    records = _records(tmp_path, 2)
    for suffix, text in ((".json", json.dumps(records)), (".jsonl", "\n".join(json.dumps(r) for r in records))):
        path = tmp_path / f"bom{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert [it.id for it in load_benchmark(path).items] == ["r0", "r1"], suffix
        assert [it.id for it in load_registered(f"mmau:{path}").items] == ["r0", "r1"], suffix
    pred = tmp_path / "pred.json"
    pred.write_bytes(b"\xef\xbb\xbf" + json.dumps([{**r, "model_output": "Dog"} for r in records]).encode())
    assert main(["score", str(pred)]) == 0
    assert json.loads(capsys.readouterr().out)["n_correct"] == 2
    few = tmp_path / "few.json"
    few.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"question": "q", "choices": ["a", "b"], "reasoning": "r",
                                                   "answer": "a"}]).encode())
    assert jsonio.load_file(few)[0]["answer"] == "a"


# ------------------------------------------------------------------------------------------------
# Workers from notebooks: the Experiment loads them by their registry entry

@needs_demo
def test_a_worker_runs_through_experiment_as_notebooks_call_it(tmp_path, monkeypatch):
    from reliable_lalm.experiments import Experiment
    from reliable_lalm.models.worker import worker_script

    for name, value in {"RLALM_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}.items():
        monkeypatch.setenv(name, value)
    model = f"worker:{sys.executable} {worker_script('demo_worker')}"
    exp = Experiment(profile="ci", model=model, limit_per_task=1, bootstrap=0, batch_size=4, device="cpu")
    try:
        store = exp.run("baseline", progress=False)
        records = ResultStore(store).records()
        assert len(records) == 3 and all(r["error"] is None for r in records)
        assert ResultStore(store).manifest()["params"]["model"]["backend"] == "WorkerBackend"
        assert exp.run("baseline", progress=False) == store  # cached: found again under the same key
        with pytest.raises(ValueError, match="adapter"):
            exp.backend(adapter=tmp_path)
    finally:
        for backend in exp._backends.values():
            backend.close()


def test_the_old_k_at_n_step_name_still_works_and_says_it_is_deprecated(tmp_path, capsys, monkeypatch):
    from reliable_lalm.cli import main, train

    seen = []
    monkeypatch.setattr(train, "_run_k_at_n", lambda args: seen.append(args.train_command) or 0)
    monkeypatch.setattr(train, "resolve_model_source", lambda model: model)
    common = ["--model", "demo", "--benchmark", "b.json", "--modality", "sound", "--out", str(tmp_path / "o")]
    assert main(["train", "knn", *common]) == 0
    assert "deprecated name, use 'rlalm train k-at-n'" in capsys.readouterr().err
    assert main(["train", "k-at-n", *common]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert seen == ["knn", "k-at-n"]
