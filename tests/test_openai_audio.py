"""OpenAIAudioBackend against a local OpenAI-compatible audio chat server (the real openai client).

Covers: request shape (audio part decodes to the clip sent, seeds, greedy = temperature 0, both
audio formats), 429/5xx retried then success, malformed bodies retried, a timeout becoming that
item's error record while the run goes on (and retry_errors filling it later), 401 stopping the
run with one line, the concurrency bound, K@N through ``n`` and through repeated requests, resume
after ``kill -9`` without duplicates, the key never reaching a store file, the registry spec.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import AudioChatServer, Hang, Raw, Reply, Status, user_prompt  # noqa: E402
from inference_fixtures import write_wav  # noqa: E402

from reliable_lalm.core.items import BenchmarkItem, load_audio  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402
from reliable_lalm.methods import execution as runners  # noqa: E402
from reliable_lalm.models.base import BackendFatalError, GenerationSettings, _row_seed  # noqa: E402
from reliable_lalm.models.openai_audio import OpenAIAudioBackend, model_entry, parse_spec  # noqa: E402
from reliable_lalm.models.registry import resolve_model  # noqa: E402

SECRET = "sk-test-0123456789-SECRET"
GREEDY = GenerationSettings(max_new_tokens=12)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


@pytest.fixture(scope="module")
def clip_items(tmp_path_factory) -> list[BenchmarkItem]:
    folder = tmp_path_factory.mktemp("openai_items")
    items = []
    for i in range(10):
        path = write_wav(folder / f"q{i}.wav", 0.4 + 0.05 * i, seed=100 + i)
        items.append(BenchmarkItem(id=f"q{i}", audio_path=str(path), question=f"What is heard in clip q{i}?",
                                   choices=("Dog", "Cat", "Rain"), answer="Dog", task="sound"))
    return items


def item_of(body) -> str:
    return re.search(r"clip (q\d+)", user_prompt(body)).group(1)


def answer(body, n):
    return Reply(f"answer {item_of(body)}")


def backend_for(server, **kw) -> OpenAIAudioBackend:
    kw.setdefault("timeout", 10.0)
    return OpenAIAudioBackend("test-audio-lm", server.base_url, **kw)


def files_text(folder: Path) -> str:
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("audio_format", ["input_audio", "audio_url"])
def test_success_request_shape_and_no_key_in_store(clip_items, tmp_path, api_key, audio_format):
    with AudioChatServer(answer) as server:
        backend = backend_for(server, audio_format=audio_format)
        summary = runners.run_method(backend, clip_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
        backend.close()
    assert summary.errors == 0 and summary.generated_records == len(clip_items)
    records = ResultStore(tmp_path / "s").by_item()
    assert {k: r["model_output"] for k, r in records.items()} == {it.id: f"answer {it.id}" for it in clip_items}
    assert server.bad_audio == 0 and set(server.audio_types) == {audio_format}
    assert server.count == len(clip_items)  # greedy: one request per item
    by_item = {item_of(b): (b, clip) for b, clip in zip(server.requests, server.clips)}
    for it in clip_items:
        body, clip = by_item[it.id]
        assert body["model"] == "test-audio-lm" and body["n"] == 1 and body["temperature"] == 0
        assert body["max_tokens"] == GREEDY.max_new_tokens and "top_p" not in body
        assert body["seed"] == _row_seed(GREEDY.seed, it.id, 0)
        sent = load_audio(it.audio_path)
        assert clip.shape == sent.shape and np.max(np.abs(clip - sent)) <= 1.0 / 32767 + 1e-6  # PCM16 of the clip
        content = body["messages"][-1]["content"]
        assert content[0]["type"] == audio_format and content[1] == {"type": "text", "text": records[it.id]["prompt"]}
    assert all(h["authorization"] == f"Bearer {SECRET}" for h in server.headers)  # the key was sent...
    assert SECRET not in files_text(tmp_path / "s")  # ...and never written
    manifest = ResultStore(tmp_path / "s").manifest()
    assert manifest["params"]["model"] == backend.describe()
    assert manifest["params"]["model"]["endpoint"] == f"http://127.0.0.1:{server.port}/v1"


def test_429_and_5xx_are_retried_then_succeed(clip_items, tmp_path, api_key):
    attempts = Counter()
    lock = threading.Lock()
    fast = {"retry-after-ms": "20"}  # the client honours it; keeps the test quick

    def responder(body, n):
        item = item_of(body)
        with lock:
            attempts[item] += 1
            k = attempts[item]
        if item == "q1" and k <= 2:
            return Status(429, "slow down", headers=fast)
        if item == "q2" and k == 1:
            return Status(500, "boom", headers=fast)
        if item == "q3" and k == 1:
            return Status(503, "overloaded", headers=fast)
        return answer(body, n)

    with AudioChatServer(responder) as server:
        backend = backend_for(server, max_retries=3)
        summary = runners.run_method(backend, clip_items[:5], "baseline", tmp_path / "s", settings=GREEDY,
                                     progress=False)
        backend.close()
    assert summary.errors == 0
    assert {k: r["model_output"] for k, r in ResultStore(tmp_path / "s").by_item().items()} == {
        f"q{i}": f"answer q{i}" for i in range(5)}
    assert attempts == Counter({"q0": 1, "q1": 3, "q2": 2, "q3": 2, "q4": 1})


def test_429_streak_beyond_the_retries_is_an_item_error(clip_items, tmp_path, api_key):
    def responder(body, n):
        return Status(429, "slow down", headers={"retry-after-ms": "10"}) if item_of(body) == "q0" else answer(body, n)

    with AudioChatServer(responder) as server:
        backend = backend_for(server, max_retries=2)
        summary = runners.run_method(backend, clip_items[:3], "baseline", tmp_path / "s", settings=GREEDY,
                                     progress=False)
        backend.close()
    records = ResultStore(tmp_path / "s").by_item()
    assert summary.errors == 1 and records["q0"]["model_output"] is None
    assert "429" in records["q0"]["error"] and records["q0"]["error"].startswith("generation failed")
    assert records["q1"]["model_output"] == "answer q1"


def test_malformed_body_is_retried(clip_items, tmp_path, api_key):
    seen = Counter()

    def responder(body, n):
        seen[item_of(body)] += 1
        if item_of(body) == "q0" and seen["q0"] == 1:
            return Raw(b'{"choices": [')  # a truncated body with status 200
        if item_of(body) == "q1" and seen["q1"] == 1:
            return Raw(json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": []}).encode())
        return answer(body, n)

    with AudioChatServer(responder) as server:
        backend = backend_for(server)
        summary = runners.run_method(backend, clip_items[:3], "baseline", tmp_path / "s", settings=GREEDY,
                                     progress=False)
        backend.close()
    assert summary.errors == 0 and backend.stats["malformed_retries"] == 2
    assert ResultStore(tmp_path / "s").by_item()["q0"]["model_output"] == "answer q0"


def test_timeout_is_an_item_error_the_run_goes_on_and_retry_errors_fills_it(clip_items, tmp_path, api_key):
    hang = {"on": True}

    def responder(body, n):
        if item_of(body) == "q1" and hang["on"]:
            return Hang(10.0)
        return answer(body, n)

    with AudioChatServer(responder) as server:
        backend = backend_for(server, timeout=0.5, max_retries=1)
        summary = runners.run_method(backend, clip_items[:4], "baseline", tmp_path / "s", settings=GREEDY,
                                     progress=False)
        records = ResultStore(tmp_path / "s").by_item()
        assert summary.errors == 1 and set(summary.error_items) == {"q1"}
        assert "timed out" in records["q1"]["error"] and records["q1"]["model_output"] is None
        assert all(records[f"q{i}"]["model_output"] == f"answer q{i}" for i in (0, 2, 3))
        assert len([b for b in server.requests if item_of(b) == "q1"]) == 2  # max_retries=1: two attempts
        # A rerun skips the error record; retry_errors asks again and fills it.
        again = runners.run_method(backend, clip_items[:4], "baseline", tmp_path / "s", settings=GREEDY,
                                   progress=False)
        assert again.processed == 0
        hang["on"] = False
        retried = runners.run_method(backend, clip_items[:4], "baseline", tmp_path / "s", settings=GREEDY,
                                     progress=False, retry_errors=True)
        backend.close()
    assert retried.processed == 1 and retried.errors == 0
    assert ResultStore(tmp_path / "s").by_item()["q1"]["model_output"] == "answer q1"


def test_401_stops_the_run_with_one_line_and_no_key(clip_items, tmp_path, api_key):
    with AudioChatServer(lambda body, n: Status(401, f"Incorrect API key provided: {SECRET}")) as server:
        backend = backend_for(server, max_concurrency=2)
        with pytest.raises(BackendFatalError) as info:
            runners.run_method(backend, clip_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
        backend.close()
    message = str(info.value)
    assert "401" in message and "\n" not in message and SECRET not in message and "<redacted>" in message
    assert server.count < len(clip_items)  # queued requests were not sent after the refusal
    assert ResultStore(tmp_path / "s").records() == []  # no error records: the run stopped
    assert SECRET not in files_text(tmp_path / "s")


def test_item_error_texts_are_scrubbed_of_the_key(clip_items, tmp_path, api_key):
    def responder(body, n):
        if item_of(body) == "q0":
            return Status(400, f"audio too long for key {SECRET}")
        return answer(body, n)

    with AudioChatServer(responder) as server:
        backend = backend_for(server)
        runners.run_method(backend, clip_items[:2], "baseline", tmp_path / "s", settings=GREEDY, progress=False)
        backend.close()
    record = ResultStore(tmp_path / "s").by_item()["q0"]
    assert "HTTP 400" in record["error"] and "<redacted>" in record["error"]
    assert SECRET not in files_text(tmp_path / "s")
    assert server.count == 2  # a 400 is not retried


@pytest.mark.parametrize("bound", [1, 3])
def test_concurrency_bound(clip_items, tmp_path, api_key, bound):
    with AudioChatServer(lambda body, n: Reply(f"answer {item_of(body)}", delay=0.15)) as server:
        backend = backend_for(server, max_concurrency=bound)
        runners.run_method(backend, clip_items, "baseline", tmp_path / "s", settings=GREEDY, progress=False)
        backend.close()
    assert server.max_in_flight == bound
    assert len(ResultStore(tmp_path / "s").records()) == len(clip_items)


def seeded(body, n):
    count = int(body.get("n") or 1)
    return Reply("", texts=[f"{item_of(body)} seed={body['seed']} choice={i}" for i in range(count)])


def test_k_at_n_with_n(clip_items, tmp_path, api_key):
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.7, top_p=0.9, top_k=20, seed=5)
    with AudioChatServer(seeded) as server:
        backend = backend_for(server, samples_via="n")
        summary = runners.sample_k_at_n(backend, clip_items[:3], tmp_path / "s", n_samples=3, settings=settings,
                                     progress=False)
        backend.close()
    assert summary.errors == 0 and server.count == 3  # one request per item
    for body in server.requests:
        item = item_of(body)
        assert body["n"] == 3 and body["seed"] == _row_seed(5, item, 0)
        assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["top_k"] == 20
    records = ResultStore(tmp_path / "s").by_item(sample_index=None)
    for it in clip_items[:3]:
        texts = {r["sample_index"]: r["model_output"] for r in records[it.id]}
        assert texts == {j: f"{it.id} seed={_row_seed(5, it.id, 0)} choice={j}" for j in range(3)}


def test_k_at_n_with_repeated_requests_on_a_server_without_n(clip_items, tmp_path, api_key):
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.0, seed=2)
    with AudioChatServer(seeded, supports_n=False) as server:
        backend = backend_for(server, samples_via="requests")
        summary = runners.sample_k_at_n(backend, clip_items[:3], tmp_path / "s", n_samples=4, settings=settings,
                                     progress=False)
        backend.close()
    assert summary.errors == 0 and server.count == 12 and server.bad_audio == 0
    assert all(body["n"] == 1 for body in server.requests)
    records = ResultStore(tmp_path / "s").by_item(sample_index=None)
    for it in clip_items[:3]:
        texts = {r["sample_index"]: r["model_output"] for r in records[it.id]}
        assert texts == {j: f"{it.id} seed={_row_seed(2, it.id, j)} choice=0" for j in range(4)}
    # The same backend with n= against this server: every item fails with the server's reason.
    with AudioChatServer(seeded, supports_n=False) as server:
        backend = backend_for(server, samples_via="n")
        failed = runners.sample_k_at_n(backend, clip_items[:2], tmp_path / "n", n_samples=4, settings=settings,
                                    progress=False)
        backend.close()
    assert failed.errors == 2 and "n > 1 is not supported" in failed.error_items["q0"]


RESUME_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    from reliable_lalm.core.items import BenchmarkItem
    from reliable_lalm.methods import execution as runners
    from reliable_lalm.models.base import GenerationSettings
    from reliable_lalm.models.registry import resolve_model

    items = [BenchmarkItem(**d) for d in json.load(open({items!r}))]
    backend = resolve_model({spec!r}).load(max_concurrency=2, timeout=10.0)
    kill_after = int(sys.argv[1])

    def on_batch(n, records):
        with open({log!r}, "a") as fh:
            fh.write(json.dumps([r["item_id"] for r in records]) + "\\n")
        if n == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    runners.run_method(backend, items, "baseline", {store!r}, settings=GenerationSettings(max_new_tokens=6),
                       progress=False, on_batch=on_batch)
""")


def test_resume_after_kill_minus_9(clip_items, tmp_path, api_key):
    store, log, items_json = tmp_path / "store", tmp_path / "batches.log", tmp_path / "items.json"
    items_json.write_text(json.dumps([{"id": it.id, "audio_path": it.audio_path, "question": it.question,
                                       "choices": list(it.choices), "answer": it.answer, "task": it.task}
                                      for it in clip_items]))
    with AudioChatServer(lambda body, n: Reply(f"answer {item_of(body)}", delay=0.1)) as server:
        script = tmp_path / "run.py"
        spec = f"openai:test-audio-lm@{server.base_url}"
        script.write_text(RESUME_SCRIPT.format(items=str(items_json), spec=spec, log=str(log), store=str(store)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        killed = subprocess.run([sys.executable, str(script), "3"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        done_first = {i for line in log.read_text().splitlines() for i in json.loads(line)}
        assert 0 < len(done_first) < len(clip_items)
        lines_before = (store / "records.jsonl").read_text().splitlines()
        asked_before = server.count
        log.unlink()
        finished = subprocess.run([sys.executable, str(script), "0"], env=env, capture_output=True, text=True,
                                  timeout=120)
        assert finished.returncode == 0, finished.stderr[-2000:]
        asked_second = {item_of(b) for b in server.requests[asked_before:]}
    assert not asked_second & done_first  # stored items were not asked again
    lines = (store / "records.jsonl").read_text().splitlines()
    assert lines[:len(lines_before)] == lines_before
    keys = Counter((json.loads(x)["item_id"], json.loads(x)["sample_index"]) for x in lines)
    assert set(keys) == {(it.id, 0) for it in clip_items} and set(keys.values()) == {1}
    assert all(json.loads(x)["model_output"] == f"answer {json.loads(x)['item_id']}" for x in lines)
    assert SECRET not in files_text(store)


def test_spec_and_registry(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert parse_spec("openai:qwen2-audio@http://127.0.0.1:8000/v1") == ("qwen2-audio", "http://127.0.0.1:8000/v1")
    assert parse_spec("openai:gpt-4o-audio-preview") == ("gpt-4o-audio-preview", None)
    for bad in ("openai:", "openai:m@", "openai:m@ftp://x", "qwen2-audio"):
        with pytest.raises(ValueError):
            parse_spec(bad)
    entry = resolve_model("openai:qwen2-audio@http://user:pw@127.0.0.1:8000/v1")
    assert entry.name == "openai:qwen2-audio@http://127.0.0.1:8000/v1"  # credentials not in the name
    assert entry == model_entry("openai:qwen2-audio@http://user:pw@127.0.0.1:8000/v1")
    backend = entry.load(audio_format="audio_url", window_seconds=10)  # key-less local server: no key needed
    assert backend.describe() == {"backend": "OpenAIAudioBackend", "model": "qwen2-audio",
                                  "endpoint": "http://127.0.0.1:8000/v1", "audio_format": "audio_url", "samples_via": "n",
                                  "window_seconds": 10.0, "system_prompt": None, "extra_body": {}}
    assert backend.window_seconds == 10.0
    backend.close()
    # Two deployments behind one host and port are two endpoints: two store keys, credentials in neither.
    a, b = (resolve_model(f"openai:m@http://u:pw@h:9/{path}/v1").load() for path in ("a", "b"))
    assert a.describe()["endpoint"] == "http://h:9/a/v1" and b.describe()["endpoint"] == "http://h:9/b/v1"
    a.close(), b.close()
    with pytest.raises(BackendFatalError, match="no API key"):
        OpenAIAudioBackend("m")  # neither a key nor a base URL
    with pytest.raises(TypeError, match="environment"):
        entry.load(api_key="sk-nope")


def test_infer_cli_with_an_endpoint_spec(clip_items, tmp_path, api_key, capsys):
    from reliable_lalm.cli import main

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"id": it.id, "audio_id": it.audio_path, "question": it.question,
                                  "choices": list(it.choices), "answer": it.answer, "task": it.task}
                                 for it in clip_items[:4]]))
    with AudioChatServer(answer) as server:
        args = ["infer", "--model", f"openai:test-audio-lm@{server.base_url}", "--benchmark", str(bench),
                "--method", "idk", "--out", str(tmp_path / "out"), "--max-new-tokens", "5", "--no-progress",
                "--backend-option", "max_concurrency=2", "--backend-option", "audio_format=audio_url"]
        assert main(args) == 0
        assert server.max_in_flight <= 2 and set(server.audio_types) == {"audio_url"}
    records = ResultStore(tmp_path / "out").by_item()
    assert {k: r["model_output"] for k, r in records.items()} == {it.id: f"answer {it.id}" for it in clip_items[:4]}
    with AudioChatServer(lambda body, n: Status(403, "forbidden")) as server:
        args[args.index("--model") + 1] = f"openai:test-audio-lm@{server.base_url}"
        args[args.index("--out") + 1] = str(tmp_path / "refused")
        capsys.readouterr()
        assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rlalm infer: stopped: ") and "HTTP 403" in err[-1]
