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
