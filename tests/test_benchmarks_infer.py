"""``rlalm infer`` on registered benchmarks other than MMAU, end to end with the tiny demo model:
an MMAR-schema file (infer -> export in MMAR's format -> score with --by) and an answerless
MMAU test-split file (infer -> submission export; scoring refused). The records are written in
the benchmarks' schemas around synthetic audio (tests/inference_fixtures.py)."""
from __future__ import annotations

import json

import pytest

from inference_fixtures import items_dir, make_items, tiny_demo_dir  # noqa: F401
from mmar_evaluation import mmar_evaluate
from reliable_lalm.benchmarks import mmar
from reliable_lalm.cli import main
from reliable_lalm.core.results import ResultStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GROUPS = ("sound", "mix-sound-speech", "mix-sound-music-speech")


def infer(model, spec, out):
    return main(["infer", "--model", str(model), "--benchmark", spec, "--method", "idk", "--out", str(out),
                 "--batch-size", "2", "--device", "cpu", "--max-new-tokens", "4", "--no-progress"])


def test_mmar_infer_export_score(tiny_demo_dir, items_dir, tmp_path, capsys):  # noqa: F811
    items = make_items(items_dir / "mmar", 4, prefix="m")
    meta = tmp_path / "MMAR-meta.jsonl"
    meta.write_text("\n".join(json.dumps({
        "id": it.id, "audio_path": it.audio_path, "question": it.question, "choices": list(it.choices),
        "answer": it.answer, "modality": GROUPS[k % 3], "category": "Signal Layer" if k % 2 else "Semantic Layer",
        "sub-category": "Counting and Statistics", "language": None, "rubric": [{"name": "kept"}]})
        for k, it in enumerate(items)) + "\n")
    assert infer(tiny_demo_dir, f"mmar:{meta}", tmp_path / "store") == 0
    capsys.readouterr()
    records = ResultStore(tmp_path / "store").records()
    assert sorted(r["item_id"] for r in records) == ["m0", "m1", "m2", "m3"]
    assert [r["task"] for r in sorted(records, key=lambda r: r["item_id"])] == [GROUPS[k % 3] for k in range(4)]
    out = tmp_path / "mmar-pred.json"
    assert main(["export", str(tmp_path / "store"), "--benchmark", f"mmar:{meta}", "--out", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())
    assert all("answer_prediction" in r and r["rubric"] == [{"name": "kept"}] for r in exported)
    official = mmar_evaluate(exported)
    assert official["total"] == 4
    assert main(["score", str(tmp_path / "store"), "--benchmark", f"mmar:{meta}", "--by", "task,category"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 4 and scored["n_errors"] == 0
    assert list(scored["by"]["task"]) == list(GROUPS)  # the benchmark's own group order
    assert {g: scored["by_task"][g]["n"] for g in GROUPS} == {"sound": 2, "mix-sound-speech": 1,
                                                             "mix-sound-music-speech": 1}
    assert scored["n_correct"] == official["correct"]  # distinct option texts: no ambiguous item


def test_hidden_split_infer_and_submission(tiny_demo_dir, items_dir, tmp_path, capsys):  # noqa: F811
    items = make_items(items_dir / "hidden", 3, prefix="h")
    meta = tmp_path / "mmau-test.json"
    meta.write_text(json.dumps([{"id": it.id, "audio_id": it.audio_path, "question": it.question,
                                 "choices": list(it.choices), "task": it.task, "difficulty": "easy"} for it in items]))
    assert infer(tiny_demo_dir, f"mmau-test:{meta}", tmp_path / "store") == 0
    assert len(ResultStore(tmp_path / "store").records()) == 3
    out = tmp_path / "submission.json"
    assert main(["export", str(tmp_path / "store"), "--benchmark", f"mmau-test:{meta}", "--out", str(out)]) == 0
    submission = json.loads(out.read_text())
    assert [r["id"] for r in submission] == ["h0", "h1", "h2"]
    assert all(isinstance(r["model_output"], str) and "answer" not in r for r in submission)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "store"), "--benchmark", f"mmau-test:{meta}"]) == 2
    assert "has no answers" in capsys.readouterr().err


@pytest.mark.parametrize("embedded", [False, True], ids=["audio-paths", "audio-bytes"])
def test_mmau_pro_parquet_infer_score_export(tiny_demo_dir, tmp_path, capsys, monkeypatch, embedded):  # noqa: F811
    """MMAU-Pro's test.parquet (columns as documented with the release; built here around synthetic
    audio, as paths relative to the file or embedded as bytes) through infer, score --by and the
    parquet export its scorer reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reliable_lalm import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")  # where embedded clips are written
    items = make_items(tmp_path / "data", 3, prefix="pro")
    rows = [{"id": it.id, "audio_path": [{"bytes": open(it.audio_path, "rb").read(), "path": f"data/{it.id}.wav"}
                                         if embedded else f"data/{it.id}.wav"],
             "question": it.question, "answer": it.answer, "choices": list(it.choices), "category": it.task,
             "sub-cat": f"sub{k % 2}", "length_type": "short", "perceptual_skills": ["p"], "reasoning_skills": ["r"],
             "transcription": None, "task_classification": None, "task_identifier": None, "kwargs": None}
            for k, it in enumerate(items)]
    rows.append({**rows[0], "id": "pro-open", "category": "open", "choices": None})
    parquet = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(parquet))
    spec = f"mmau-pro:{parquet}"
    assert main(["benchmark", "validate", str(parquet), "--kind", "mmau-pro", "--check-audio"]) == 0
    assert "accepted=3 rejected=1" in capsys.readouterr().out
    assert infer(tiny_demo_dir, spec, tmp_path / "store") == 0
    capsys.readouterr()
    assert sorted(r["item_id"] for r in ResultStore(tmp_path / "store").records()) == ["pro0", "pro1", "pro2"]
    assert main(["score", str(tmp_path / "store"), "--benchmark", spec, "--by", "sub-cat,length_type"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert {g: v["n"] for g, v in scored["by"]["sub-category"].items()} == {"sub0": 2, "sub1": 1}
    out = tmp_path / "test_with_outputs.parquet"
    assert main(["export", str(tmp_path / "store"), "--benchmark", spec, "--out", str(out)]) == 0
    table = pq.read_table(str(out))
    assert table.num_rows == 3 and {"model_output", "sub-cat", "kwargs", "transcription"} <= set(table.column_names)
    raw = {r["id"]: r for r in table.to_pylist()}
    assert all(r["model_output"] in r["choices"] or r["normalization"]["kind"] != "choice" for r in raw.values())
