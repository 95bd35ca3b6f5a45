"""The benchmark registry's benchmarks: MMSU and MMAU-Pro (on fixtures written by hand from their
published schemas, tests/fixtures/), MMAU's hidden test split (answerless: load, export, scoring
refused), and ``rlalm benchmark list / validate``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliable_lalm import paths
from reliable_lalm.benchmarks import mmau_pro, mmsu
from reliable_lalm.benchmarks.official import export_for_benchmark, export_store_for_benchmark
from reliable_lalm.benchmarks.registry import load, parse_benchmark, registered_benchmarks, resolve_benchmark
from reliable_lalm.cli import main
from reliable_lalm.core.results import ResultStore
from reliable_lalm.core.scoring import score_records
from reliable_lalm.core.submission import NoAnswersError
from scoring_helpers import score_store

FIXTURES = Path(__file__).parent / "fixtures"
MMSU_FIXTURE = FIXTURES / "mmsu_schema.json"
PRO_FIXTURE = FIXTURES / "mmau_pro_schema.json"
MMAU_MINI = paths.SHARED_DIR / "mmau" / "mmau-test-mini.v05.15.25.json"
MMAR_FILE = paths.SHARED_DIR / "mmar" / "MMAR-meta.jsonl"


def test_registry_entries():
    entries = registered_benchmarks()
    assert {"mmar", "mmsu", "mmau-pro", "mmau-test", "mmau", "mmau-test-mini"} <= set(entries)
    # the paper-dryrun stand-in (the real metadata with generated audio) runs the paper-comparable path too
    assert sorted(name for name, e in entries.items() if e.paper_reference) == ["mmau-test-mini", "mmau-test-mini-standin"]
    assert entries["mmar"].output_field == "answer_prediction" and len(entries["mmar"].modalities) == 7
    assert entries["mmsu"].modalities == ("speech",)
    assert not entries["mmau-test"].has_answers and all(e.has_answers for n, e in entries.items() if n != "mmau-test")
    assert parse_benchmark(f"mmsu:{MMSU_FIXTURE}") == (entries["mmsu"], str(MMSU_FIXTURE))


# ------------------------------------------------------------------------------------------------
# MMSU (fixture written from the schema)
# ------------------------------------------------------------------------------------------------

def test_mmsu_fixture():
    raw = json.loads(MMSU_FIXTURE.read_text())
    b = load(f"mmsu:{MMSU_FIXTURE}", check_audio=False)
    assert b.kind == "mmsu" and b.modalities == ("speech",)
    assert len(b.items) + len(b.rejected) == len(raw) == 5
    assert [i.id for i in b.items] == ["gender_recognition_0001", "intonation_perception_0002", "sarcasm_detection_0003"]
    g, i, s = b.items
    assert g.choices == ("male", "female") and g.answer == "female" and g.task == "speech"  # null options dropped
    assert s.choices == ("Yes", "No")  # empty options dropped
    assert i.choices == ("rising", "falling", "rising-falling", "level") and i.choices.index(i.answer) == 1
    assert (i.category, i.sub_category, i.dataset) == ("perception", "linguistics", "intonation_perception")
    assert i.record["sub-sub-category"] == "phonology" and i.record["linguistics_sub_discipline"] == "prosody"
    assert g.audio_path == str((FIXTURES / "audio" / "gender_recognition_0001.wav").resolve())
    causes = {r.item_id: r.cause for r in b.rejected}
    assert "'surprised' is not among the choices" in causes["emotion_0004"]
    assert causes["no_choices_0005"].startswith("no choice fields")
    # Scoring view: the MMAU fields the scorer reads are added, the original record is kept.
    view = i.scoring_record()
    assert view["choices"] == list(i.choices) and view["answer"] == "falling" and view["task"] == "speech"
    assert view["choice_a"] == "rising"


def test_mmsu_audio_checked_when_asked(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "gender_recognition_0001.wav").write_bytes(b"RIFF")
    meta = tmp_path / "mmsu.json"
    meta.write_text(MMSU_FIXTURE.read_text())
    b = mmsu.load(meta)
    assert [i.id for i in b.items] == ["gender_recognition_0001"]
    assert any("audio file missing" in r.cause for r in b.rejected if r.item_id == "sarcasm_detection_0003")


# ------------------------------------------------------------------------------------------------
# MMAU-Pro (fixture written from the schema)
# ------------------------------------------------------------------------------------------------

def test_mmau_pro_fixture():
    raw = json.loads(PRO_FIXTURE.read_text())
    b = load(f"mmau-pro:{PRO_FIXTURE}", check_audio=False)
    assert len(b.items) + len(b.rejected) == len(raw) == 9
    assert [i.id for i in b.items] == ["pro-sound-1", "pro-music-2", "pro-spatial-3", "pro-voice-8", "pro-new-9"]
    by_id = {i.id: i for i in b.items}
    assert by_id["pro-sound-1"].audio_path == str((FIXTURES / "data" / "sound_1.wav").resolve())  # 1-element list
    assert by_id["pro-voice-8"].task == "voice"  # category lower-cased
    assert b.modalities[: len(mmau_pro.MODALITIES)] == mmau_pro.MODALITIES
    assert b.modalities[len(mmau_pro.MODALITIES):] == ("sound-music-speech-spatial",)  # unlisted group appended
    causes = {r.item_id: r.cause for r in b.rejected}
    assert causes["pro-multi-4"] == "multi-audio item skipped (2 clips; the backends take one)"
    assert causes["pro-open-5"].startswith("open-ended item skipped")
    assert causes["pro-open-7"].startswith("open-ended item skipped")
    assert causes["pro-if-6"].startswith("instruction-following item skipped")
    assert by_id["pro-sound-1"].record == raw[0]


# ------------------------------------------------------------------------------------------------
# MMAU's hidden test split (answers removed from the real test-mini file)
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def test_split(tmp_path):
    if not MMAU_MINI.is_file():
        pytest.skip(f"MMAU metadata not available ({MMAU_MINI})")
    raw = json.loads(MMAU_MINI.read_text(encoding="utf-8"))[:30]
    for k, r in enumerate(raw):  # the hidden split has no answer; spell the absence three ways
        if k % 3 == 0:
            r.pop("answer")
        else:
            r["answer"] = None if k % 3 == 1 else ""
    path = tmp_path / "mmau-test.json"
    path.write_text(json.dumps(raw))
    return path, raw


def test_test_split_loads_without_answers(test_split):
    path, raw = test_split
    b = load(f"mmau-test:{path}", check_audio=False)
    assert len(b.items) == 30 and b.rejected == [] and all(i.answer == "" for i in b.items)
    # The same file as a split with answers rejects every record: that is why the kind exists.
    assert len(load(str(path), check_audio=False).rejected) == 30


def test_test_split_answer_given_must_still_be_a_choice(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"id": "x", "audio_id": "a.wav", "question": "q?", "choices": ["a", "b"],
                                 "answer": "c", "task": "sound"}]))
    b = load(f"mmau-test:{path}", check_audio=False)
    assert b.items == [] and "not among the choices" in b.rejected[0].cause


def test_test_split_export_is_the_submission_format(test_split, tmp_path, capsys):
    path, raw = test_split
    store = ResultStore.open(tmp_path / "store", {"m": "idk"})
    outputs = ["B", "I don't know", "zzz"]
    store.extend([{"item_id": r["id"], "model_output": outputs[k % 3]} for k, r in enumerate(raw[:29])])
    out = tmp_path / "submission.json"
    summary = export_store_for_benchmark(store, f"mmau-test:{path}", out)
    exported = json.loads(out.read_text())
    assert summary["submission"] and summary["n_exported"] == 29 and summary["missing"] == {"n": 1, "ids": [raw[29]["id"]]}
    for k, rec in enumerate(exported):
        original = raw[k]
        assert {key: v for key, v in rec.items() if key not in ("model_output", "model_output_raw",
                                                               "normalization")} == original
        want = list(dict.fromkeys(c.strip() for c in original["choices"]))[1] if k % 3 == 0 else \
            ("IDK" if k % 3 == 1 else "")
        assert rec["model_output"] == want, (k, rec)
    # The CLI routes the hidden split to the same export.
    out2 = tmp_path / "sub2.json"
    assert main(["export", str(tmp_path / "store"), "--benchmark", f"mmau-test:{path}", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text()) == exported


def test_test_split_scoring_refused_in_one_line(test_split, tmp_path, capsys):
    path, raw = test_split
    store = ResultStore.open(tmp_path / "store", {"m": "idk"})
    store.extend([{"item_id": r["id"], "model_output": "A"} for r in raw])
    with pytest.raises(NoAnswersError, match="carry no answers"):
        score_store(store, resolve_benchmark(f"mmau-test:{path}"))
    with pytest.raises(NoAnswersError):
        score_records([{**r, "model_output": "A"} for r in raw])
    assert main(["score", str(tmp_path / "store"), "--benchmark", f"mmau-test:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'mmau-test' has no answers" in err and "rlalm export" in err
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{**r, "model_output": "A"} for r in raw]))
    assert main(["score", str(preds)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "carry no answers" in err


def test_submission_errors_named(tmp_path):
    from reliable_lalm.benchmarks.registry import registered_benchmarks

    entry = registered_benchmarks()["mmau-test"]
    recs = [{"id": "a", "choices": ["x", "y"], "model_output": "x"}, {"id": "b", "choices": ["x", "y"],
            "model_output": None, "error": "audio file missing"}, {"choices": ["x"]}, {"id": "a"}]
    exported, summary = export_for_benchmark(recs, entry)
    assert [r["id"] for r in exported] == ["a"] and exported[0]["model_output"] == "x"
    assert [(e["id"], e["reason"]) for e in summary["errors"]] == [
        ("b", "no model_output (inference error: audio file missing)"), ("#2", "no id"),
        ("a", "duplicated id (the first record is kept)")]


# ------------------------------------------------------------------------------------------------
# rlalm benchmark list / validate
# ------------------------------------------------------------------------------------------------

def test_cli_list(capsys):
    assert main(["benchmark", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "modalities", "output"]
    row = next(line for line in lines if line.startswith("mmar "))
    assert "mix-sound-music-speech" in row and "answer_prediction" in row
    assert next(line for line in lines if line.startswith("mmau-test ")).split()[3:5] == ["no", "(hidden)"]
    mini = next(line for line in lines if line.startswith("mmau-test-mini "))
    assert mini.split()[3:5] == ["yes", "yes"]


def test_cli_validate_fixtures(capsys):
    # records skipped by the benchmark's design are listed and counted but are not errors (exit 0);
    # any other rejected record makes the exit status 1: it would not be evaluated
    assert main(["benchmark", "validate", str(PRO_FIXTURE), "--kind", "mmau-pro"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "accepted=5 rejected=4"
    assert "skipped by the benchmark's design: 4 (not errors)" in out
    assert any(line.split()[0] == "2" and "open-ended item skipped" in line for line in out)
    assert any(line.split()[0] == "1" and "multi-audio item skipped" in line and "pro-multi-4" in line for line in out)
    assert main(["benchmark", "validate", str(MMSU_FIXTURE), "--kind", "mmsu"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "accepted=3 rejected=2"
    assert "2 record(s) rejected" in captured.err


def test_cli_validate_nothing_accepted_and_errors(tmp_path, capsys):
    # MMSU records read as MMAU: every record rejected (exit 1), the reasons counted.
    assert main(["benchmark", "validate", str(MMSU_FIXTURE)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "accepted=0 rejected=5"
    assert out[1].split()[0] == "5" and "choices must be a list" in out[1]
    assert main(["benchmark", "validate", str(tmp_path / "nope.json"), "--kind", "mmar"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["benchmark", "validate", str(MMSU_FIXTURE), "--kind", "nope"]) == 2
    assert "unknown kind 'nope'" in capsys.readouterr().err


def test_cli_validate_shared_mmar(capsys):
    if not MMAR_FILE.is_file():
        pytest.skip(f"MMAR metadata not available ({MMAR_FILE})")
    assert main(["benchmark", "validate", str(MMAR_FILE), "--kind", "mmar"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "accepted=1000 rejected=0"
    assert "repaired 4 item(s): empty choice removed" in out[1]
    assert out[-1].startswith("per modality: sound=165, music=206, speech=294, mix-sound-music=11")
