"""The result store: append-only, crash-safe, resumable, parameters never mixed, secrets redacted."""
from __future__ import annotations

import json

import pytest

from reliable_lalm.core.results import ParamsMismatch, ResultStore, params_fingerprint


def test_resume_skips_done_keys_and_keeps_first_record(tmp_path):
    store = ResultStore.open(tmp_path / "s", {"method": "baseline"})
    store.extend([{"item_id": "a", "model_output": "x"}, {"item_id": "b", "sample_index": 1, "model_output": "y"}])
    store.append({"item_id": "a", "model_output": "duplicate"})
    reopened = ResultStore.open(tmp_path / "s", {"method": "baseline"})
    assert reopened.done_keys() == {("a", 0), ("b", 1)}
    assert reopened.by_item(0)["a"]["model_output"] == "x"


def test_torn_last_line_is_cut_and_earlier_records_survive(tmp_path):
    store = ResultStore.open(tmp_path / "s", {})
    store.append({"item_id": "a", "model_output": "x"})
    with open(store.records_path, "a") as fh:
        fh.write('{"item_id": "b", "model_out')  # a writer killed mid-line
    assert [r["item_id"] for r in store.records()] == ["a"]
    reopened = ResultStore.open(tmp_path / "s", {})
    reopened.append({"item_id": "b", "model_output": "y"})
    assert [r["item_id"] for r in reopened.records()] == ["a", "b"]
    assert all(json.loads(line) for line in reopened.records_path.read_text().splitlines())


def test_other_parameters_are_refused(tmp_path):
    ResultStore.open(tmp_path / "s", {"settings": {"max_new_tokens": 16}})
    with pytest.raises(ParamsMismatch):
        ResultStore.open(tmp_path / "s", {"settings": {"max_new_tokens": 32}})


def test_secrets_are_redacted_but_token_counts_are_not(tmp_path):
    store = ResultStore.open(tmp_path / "s", {"api_key": "sk-secret-value", "hf_token": "hf_x", "max_new_tokens": 8})
    manifest = store.manifest_path.read_text()
    assert "sk-secret-value" not in manifest and "hf_x" not in manifest
    params = json.loads(manifest)["params"]
    assert params["max_new_tokens"] == 8 and params["api_key"] == "<redacted>"
    assert params_fingerprint({"max_new_tokens": 8}) != params_fingerprint({"max_new_tokens": 16})
    for key in ("git_sha", "versions", "device", "created"):
        assert key in json.loads(manifest)


def _open_and_write(directory: str, max_new_tokens: int, barrier) -> None:
    from reliable_lalm.core.results import StoreLocked

    barrier.wait()
    try:
        store = ResultStore.open(directory, {"settings": {"max_new_tokens": max_new_tokens}})
        with store.writer_lock():
            store.append({"item_id": "a", "made_with": max_new_tokens})
    except (ParamsMismatch, StoreLocked):
        pass  # refused in one line: what a second `rlalm infer` on the folder should get


def test_two_writers_starting_together_never_leave_a_manifest_that_lies(tmp_path):
    """Two processes on one fresh folder with other settings (two `rlalm infer` with --max-new-tokens
    3 and 64): the manifest must be the one the records were made with, every time."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(12):
        directory = tmp_path / f"s{attempt}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_open_and_write, args=(str(directory), n, barrier)) for n in (3, 64)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        manifest = json.loads((directory / "manifest.json").read_text())
        made_with = {json.loads(line)["made_with"] for line in (directory / "records.jsonl").read_text().splitlines()}
        assert made_with == {manifest["params"]["settings"]["max_new_tokens"]}, attempt


def test_records_made_with_other_settings_than_the_manifest_are_not_reused(tmp_path):
    """Whatever left them there, records carrying another settings fingerprint are refused on reading."""
    made = ResultStore.open(tmp_path / "s", {"settings": {"max_new_tokens": 3}})
    made.append({"item_id": "a", "model_output": "xyz"})
    assert json.loads(made.records_path.read_text())["params_fingerprint"] == params_fingerprint(
        {"settings": {"max_new_tokens": 3}})
    manifest = json.loads(made.manifest_path.read_text())
    manifest["params"] = {"settings": {"max_new_tokens": 64}}
    manifest["params_fingerprint"] = params_fingerprint(manifest["params"])
    made.manifest_path.write_text(json.dumps(manifest))
    reopened = ResultStore.open(tmp_path / "s", {"settings": {"max_new_tokens": 64}})
    with pytest.raises(ParamsMismatch, match="other parameters"):
        reopened.done_keys()
    with pytest.raises(ParamsMismatch):
        ResultStore(tmp_path / "s").records()
