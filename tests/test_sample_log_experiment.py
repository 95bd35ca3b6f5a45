"""Experiment.score (the notebooks' library call) writes the per-output judge log under runs/."""
from __future__ import annotations

import json
import shutil

import pytest

from inference_fixtures import make_items, tiny_demo_dir, write_benchmark_json  # noqa: F401
from reliable_lalm import paths


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


def test_experiment_score_logs_every_output(tmp_path, tiny_demo_dir, monkeypatch):
    from reliable_lalm.experiments import Experiment

    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    model = tmp_path / "model"
    shutil.copytree(tiny_demo_dir, model)
    bench = write_benchmark_json(tmp_path / "bench.json", make_items(tmp_path / "audio", 4, prefix="s"))
    exp = Experiment(profile="logs", model=str(model), benchmark=str(bench), device="cpu", bootstrap=0,
                     max_new_tokens=3, results_root=tmp_path / "results")
    result = exp.score("idk")
    log = exp.sample_log_path("idk")
    assert log.parent == tmp_path / "runs" / "logs" / "samples" and log.name.endswith("-idk-vs-baseline.jsonl")
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["side"] for r in rows] == ["pred"] * 4 + ["baseline"] * 4
    pred = rows[:4]
    assert sum(r["outcome"] == "correct" for r in pred) == result["n_correct"]
    assert sum(r["outcome"] == "rejected" for r in pred) == result["n_rejected"]
    assert all(r["decided_by"] == "rule" and r["method"] and "output" in r for r in rows)
