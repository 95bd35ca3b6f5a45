"""Isolated workers: the JSONL protocol end to end with a stand-in worker process.

The demo worker runs the shipped demo model in a separate process configured by environment
variables only; its answers (greedy and K@N, both audio transports) must equal the in-process
Qwen2AudioBackend's. Small stdlib-only workers test the failure paths: an error line is that item's error
record, a worker that dies or speaks another protocol stops the run with its reason, prints of a
worker's model code do not corrupt the protocol. The Qwen-Audio-Chat and SALMONN workers run only
where their code, weights and environments are given (environment variables), else they skip.
"""
from __future__ import annotations

import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from inference_fixtures import make_items  # noqa: E402

from reliable_lalm import paths  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402
from reliable_lalm.methods import execution as runners  # noqa: E402
from reliable_lalm.models.base import BackendFatalError, GenerationSettings  # noqa: E402
from reliable_lalm.models.registry import resolve_model  # noqa: E402
from reliable_lalm.models.worker import WORKERS_DIR, WorkerBackend, model_entry, worker_script  # noqa: E402

GREEDY = GenerationSettings(max_new_tokens=8)
SAMPLING = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3)
WORKER_ENV = {"RLALM_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.fixture(scope="module")
def worker_items(tmp_path_factory):
    return make_items(tmp_path_factory.mktemp("worker_items"), 5, seed=11, prefix="w")


def outputs(store_dir: Path) -> dict:
    return {(r["item_id"], r["sample_index"]): (r["model_output"], r["new_tokens"], r["finished"], r["prompt"],
                                                r["error"]) for r in ResultStore(store_dir).records()}


@pytest.mark.slow  # two model loads (~20 s on 2 busy cores)
def test_demo_worker_equals_in_process_backend(worker_items, tmp_path, one_torch_thread):
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    local = Qwen2AudioBackend.from_pretrained(str(paths.DEMO_MODEL_DIR), device="cpu", batch_size=2)
    runners.run_method(local, worker_items, "baseline", tmp_path / "local", settings=GREEDY, progress=False)
    runners.sample_k_at_n(local, worker_items, tmp_path / "local_k_at_n", n_samples=2, settings=SAMPLING, progress=False)
    local.close()

    command = [sys.executable, str(worker_script("demo_worker"))]
    worker = WorkerBackend(command, env=WORKER_ENV)
    assert worker.hello["protocol"] == 1 and worker.window_seconds == local.window_seconds
    assert worker.describe()["worker"]["weights"] == local.describe()["weights"]  # the same model, by content
    summary = runners.run_method(worker, worker_items, "baseline", tmp_path / "worker", settings=GREEDY,
                                 progress=False)
    worker.close()
    assert summary.errors == 0 and worker._proc.returncode == 0  # shut down cleanly
    assert outputs(tmp_path / "worker") == outputs(tmp_path / "local")

    worker = WorkerBackend(command, env=WORKER_ENV, audio_transport="base64", pipeline=3)
    runners.sample_k_at_n(worker, worker_items, tmp_path / "worker_k_at_n", n_samples=2, settings=SAMPLING,
                       progress=False)
    worker.close()
    assert outputs(tmp_path / "worker_k_at_n") == outputs(tmp_path / "local_k_at_n")
    assert len({v[0] for v in outputs(tmp_path / "worker_k_at_n").values()}) > 1  # sampling did sample


def test_error_line_is_an_item_error_and_the_run_goes_on(worker_items, tmp_path):
    entry = resolve_model(f"worker:{sys.executable} {worker_script('demo_worker')}")
    assert entry == model_entry(f"worker:{sys.executable} {worker_script('demo_worker')}")
    worker = entry.load(env={**WORKER_ENV, "RLALM_WORKER_FAIL_ITEMS": "w1,w3"})
    summary = runners.run_method(worker, worker_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
    worker.close()
    records = ResultStore(tmp_path / "s").by_item()
    assert summary.errors == 2 and set(summary.error_items) == {"w1", "w3"}
    assert records["w1"]["error"] == "generation failed: RuntimeError: injected failure for w1"
    assert records["w1"]["model_output"] is None
    assert all(isinstance(records[k]["model_output"], str) and records[k]["error"] is None for k in ("w0", "w2", "w4"))


FAKE_WORKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {workers!r})
    import jsonl_worker

    mode = jsonl_worker.env("FAKE_MODE", "echo")
    seen = []

    def generate(request):
        seen.append(request["item_id"])
        print("chatty model code writing to stdout")  # must not break the protocol
        if mode == "crash" and len(seen) == 3:
            sys.stderr.write("segfault-like death of the model\\n")
            sys.stderr.flush()
            os._exit(3)
        path = jsonl_worker.audio_path(request)
        size = os.path.getsize(path)
        return {{"texts": ["%s %d bytes seed %d" % (request["item_id"], size, s) for s in request["seeds"]]}}

    if mode == "old":
        sys.stdout.write('{{"type": "hello", "protocol": 0, "model": {{}}}}\\n')
        sys.stdout.flush()
        sys.stdin.readline()
    else:
        jsonl_worker.serve({{"name": "fake"}}, generate, window_seconds=4.0)
""")


@pytest.fixture
def fake_worker(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.format(workers=str(WORKERS_DIR)))
    return [sys.executable, str(script)]


def test_stdlib_worker_answers_and_stdout_prints_are_harmless(worker_items, tmp_path, fake_worker):
    worker = WorkerBackend(fake_worker, env={"FAKE_MODE": "echo"}, inherit_env=False, pipeline=2)
    assert worker.window_seconds == 4.0 and worker.describe()["worker"] == {"name": "fake"}
    summary = runners.sample_k_at_n(worker, worker_items, tmp_path / "s", n_samples=2, settings=SAMPLING,
                                 progress=False)
    worker.close()
    assert summary.errors == 0
    from reliable_lalm.models.base import _row_seed

    for (item, j), (text, *_rest) in outputs(tmp_path / "s").items():
        assert text.startswith(f"{item} ") and text.endswith(f"seed {_row_seed(SAMPLING.seed, item, j)}")
    assert not list(Path(worker._tmp.name).glob("*.wav"))  # answered clips are deleted


def test_a_dying_worker_stops_the_run_with_its_reason_and_the_run_resumes(worker_items, tmp_path, fake_worker):
    worker = WorkerBackend(fake_worker, env={"FAKE_MODE": "crash"}, pipeline=1)
    with pytest.raises(BackendFatalError) as info:
        runners.run_method(worker, worker_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
    message = str(info.value)
    assert "exited with status 3" in message and "segfault-like death" in message
    assert {r["item_id"] for r in ResultStore(tmp_path / "s").records()} == {"w0", "w1"}  # answered before it died
    worker = WorkerBackend(fake_worker, env={"FAKE_MODE": "echo"})  # the same run, restarted, resumes
    summary = runners.run_method(worker, worker_items, "baseline", tmp_path / "s", settings=GREEDY,
                                 progress=False)
    worker.close()
    assert summary.already_done == 2 and summary.processed == 3
    assert len(ResultStore(tmp_path / "s").records()) == 5


def test_protocol_mismatch_and_startup_failure_are_fatal(fake_worker, tmp_path):
    with pytest.raises(BackendFatalError, match="protocol 0"):
        WorkerBackend(fake_worker, env={"FAKE_MODE": "old"})
    with pytest.raises(BackendFatalError, match="cannot load"):
        WorkerBackend([sys.executable, str(worker_script("demo_worker"))],
                      env={**WORKER_ENV, "RLALM_WORKER_MODEL": str(tmp_path / "no_such_model")})
    with pytest.raises(ValueError):
        model_entry("worker:")


# ---------------------------------------------------------------- the real workers (skip here)


def _real_worker_env(prefix: str, needed: tuple[str, ...]) -> dict[str, str]:
    missing = [name for name in (f"{prefix}_PYTHON", *needed) if not os.environ.get(name)]
    if missing:
        pytest.skip(f"written against the published code but not run: set {', '.join(missing)} "
                    f"(the worker's interpreter and the model's code/weights) to run it")
    return {name: os.environ[name] for name in needed}


@pytest.mark.parametrize("name, prefix, needed", [
    ("qwen_audio_chat_worker", "RLALM_QWEN_AUDIO_CHAT", ("RLALM_QWEN_AUDIO_CHAT_DIR",)),
    ("salmonn_worker", "RLALM_SALMONN", ("RLALM_SALMONN_REPO", "RLALM_SALMONN_CKPT", "RLALM_SALMONN_WHISPER",
                                         "RLALM_SALMONN_BEATS", "RLALM_SALMONN_VICUNA")),
])
def test_real_worker_answers_the_paper_prompts(name, prefix, needed, worker_items, tmp_path):
    env = _real_worker_env(prefix, needed)
    worker = WorkerBackend([os.environ[f"{prefix}_PYTHON"], str(worker_script(name))], env=env,
                           request_timeout=600)
    for method in ("baseline", "idk"):
        summary = runners.run_method(worker, worker_items[:2], method, tmp_path / method,
                                     settings=GenerationSettings(max_new_tokens=32), progress=False)
        assert summary.errors == 0
        assert all(r["model_output"].strip() for r in ResultStore(tmp_path / method).records())
    worker.close()


def test_real_workers_report_missing_configuration_through_the_protocol(tmp_path):
    """The real workers' start-up checks run anywhere: a missing variable or a wrong checkout is a
    one-line fatal reason, not a hang or a traceback on the protocol stream."""
    base = {"PYTHONPATH": ""}
    with pytest.raises(BackendFatalError, match="RLALM_QWEN_AUDIO_CHAT_DIR is required"):
        WorkerBackend([sys.executable, str(worker_script("qwen_audio_chat_worker"))], env=base, inherit_env=False)
    env = {**base, **{f"RLALM_SALMONN_{k}": str(tmp_path) for k in ("REPO", "CKPT", "WHISPER", "BEATS", "VICUNA")}}
    with pytest.raises(BackendFatalError, match="has no model.py"):
        WorkerBackend([sys.executable, str(worker_script("salmonn_worker"))], env=env, inherit_env=False)


# ---------------------------------------------------------------- the paper's Table 3 workers

PAPER_WORKER_VARIABLES = ("RLALM_QWEN_AUDIO_CHAT_PYTHON", "RLALM_QWEN_AUDIO_CHAT_DIR", "RLALM_SALMONN_PYTHON",
                          "RLALM_SALMONN_REPO", "RLALM_SALMONN_CKPT", "RLALM_SALMONN_WHISPER",
                          "RLALM_SALMONN_BEATS", "RLALM_SALMONN_VICUNA")


def test_paper_workers_are_registered_with_the_papers_labels(monkeypatch):
    from reliable_lalm.models.registry import resolve_model
    from reliable_lalm.models.worker import WorkerNotConfigured

    for name in PAPER_WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    qwen, salmonn = resolve_model("qwen-audio-chat"), resolve_model("salmonn")
    assert (qwen.paper_label, salmonn.paper_label) == ("Qwen-Audio-Chat", "SALMONN")
    assert qwen.backend_class() is WorkerBackend and salmonn.backend_class() is WorkerBackend
    with pytest.raises(WorkerNotConfigured, match="RLALM_QWEN_AUDIO_CHAT_PYTHON, RLALM_QWEN_AUDIO_CHAT_DIR"):
        qwen.resolve_source()
    monkeypatch.setenv("RLALM_QWEN_AUDIO_CHAT_PYTHON", "/opt/venvs/qwen audio/bin/python")
    with pytest.raises(WorkerNotConfigured, match="set RLALM_QWEN_AUDIO_CHAT_DIR "):
        qwen.resolve_source()
    monkeypatch.setenv("RLALM_QWEN_AUDIO_CHAT_DIR", "/models/Qwen-Audio-Chat")
    command = shlex.split(qwen.resolve_source())
    assert command == ["/opt/venvs/qwen audio/bin/python", str(worker_script("qwen_audio_chat_worker"))]
    with pytest.raises(ValueError, match="adapter"):
        WorkerBackend.from_pretrained("true", adapter="some/adapter")


def test_table3_keeps_an_unconfigured_workers_rows_and_says_why(monkeypatch, tmp_path):
    from reliable_lalm import reporting
    from reliable_lalm.experiments import Experiment, table3_scores
    from reliable_lalm.reporting.tables import to_markdown

    for name in PAPER_WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RLALM_SALMONN_PYTHON", sys.executable)  # partly configured: still not run
    exp = Experiment(profile="t", model="demo", limit_per_task=2, bootstrap=0, results_root=tmp_path)
    rows = table3_scores(exp, ["qwen-audio-chat", "salmonn"], idk=True)
    assert [k for k in rows] == [("demo", "no"), ("demo", "yes"), ("Qwen-Audio-Chat", "no"), ("Qwen-Audio-Chat", "yes"),
                                 ("SALMONN", "no"), ("SALMONN", "yes")]
    table = reporting.table3(rows)
    assert table.loc[("demo", "no")].notna().all() and table.loc[("SALMONN", "yes")].isna().all()
    text = to_markdown(table)
    assert "| SALMONN | yes | not run | not run |" in text
    assert "SALMONN / no: not run: worker environment not configured: set RLALM_SALMONN_REPO" in text
    assert "RLALM_QWEN_AUDIO_CHAT_PYTHON" in text
