"""MMAR: the shared release loads with every record accounted for, and the file our export writes
is scored by MMAR's own rule (re-implemented in ``benchmarks/mmar.py``) exactly as we score it,
except for the items the export lists, on realistic outputs for every shared record."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from mmar_evaluation import mmar_evaluate

from reliable_lalm import paths
from reliable_lalm.benchmarks import mmar
from reliable_lalm.benchmarks.official import export_store_for_benchmark
from reliable_lalm.benchmarks.registry import load, parse_benchmark, resolve_benchmark
from reliable_lalm.cli import main
from reliable_lalm.core.normalize import mmau_string_match
from reliable_lalm.core.results import ResultStore
from scoring_helpers import score_store

MMAR_FILE = paths.SHARED_DIR / "mmar" / "MMAR-meta.jsonl"


@pytest.fixture(scope="module")
def raw():
    if not MMAR_FILE.is_file():
        pytest.skip(f"MMAR metadata not available ({MMAR_FILE})")
    return [json.loads(line) for line in MMAR_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bench(raw):
    return load(f"mmar:{MMAR_FILE}", check_audio=False)


def test_every_shared_record_accepted_or_rejected(raw, bench):
    assert len(raw) == 1000
    assert len(bench.items) + len(bench.rejected) == 1000
    reasons = Counter(r.cause for r in bench.rejected)
    assert all(r.item_id and r.cause for r in bench.rejected)
    assert reasons == Counter()  # the release is clean apart from what the loader repairs (below)
    repaired = {item.id: item.notes for item in bench.items if item.notes}
    assert len(repaired) == 4 and all("empty choice removed" in n[0] for n in repaired.values())
    by_id = {r["id"]: r for r in raw}
    for item_id in repaired:
        assert "" in by_id[item_id]["choices"] and "" not in bench_item(bench, item_id).choices


def bench_item(bench, item_id):
    return next(i for i in bench.items if i.id == item_id)


def test_modalities_categories_and_mapping(raw, bench):
    assert bench.kind == "mmar" and bench.modalities == mmar.MODALITIES
    assert Counter(i.task for i in bench.items) == Counter(r["modality"] for r in raw)
    assert Counter(i.task for i in bench.items) == {"speech": 294, "mix-sound-speech": 218, "music": 206,
                                                    "sound": 165, "mix-music-speech": 82,
                                                    "mix-sound-music-speech": 24, "mix-sound-music": 11}
    assert set(i.category for i in bench.items) == set(mmar.CATEGORIES)
    # The three 5-option records and one 3-option record end with an empty option, dropped on loading.
    assert Counter(len(i.choices) for i in bench.items) == {4: 815 + 3, 2: 171 + 1, 3: 10 - 1, 6: 1}
    first = bench.items[0]
    assert first.id == raw[0]["id"] and first.sub_category == raw[0]["sub-category"] and first.difficulty == ""
    assert first.audio_path == str((MMAR_FILE.parent / raw[0]["audio_path"]).resolve())
    assert first.record == raw[0]  # rubric fields, url, language ... kept as released
    entry, _ = parse_benchmark("mmar:x")
    assert entry.output_field == "answer_prediction" and not entry.paper_reference


def test_bad_records_rejected_with_reasons(tmp_path, raw):
    good = dict(raw[0])
    bad = [
        {**good, "id": "m1", "modality": "mix-speech-sound"},  # not a real group spelling
        {**good, "id": "m2", "answer": "Desert"},
        {**good, "id": "m3", "choices": [f"c{k}" for k in range(7)], "answer": "c0"},
        {**good, "id": "m4", "question": " "},
        {**good, "id": "m5", "audio_path": None},
        dict(good),  # duplicated id
        ["not", "an", "object"],
        {**good, "id": "m6", "choices": ["Open Grassland", ""]},  # one option left after the repair
    ]
    path = tmp_path / "mmar.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good] + bad))
    b = mmar.load(path, check_audio=False)
    assert [i.id for i in b.items] == [good["id"]]
    causes = {r.item_id: r.cause for r in b.rejected}
    assert len(b.rejected) == len(bad)
    assert "mix-speech-sound" in causes["m1"] and "MMAR groups" in causes["m1"]
    assert "not among the choices" in causes["m2"]
    assert causes["m3"] == "7 choices; MMAR has 2-6"
    assert causes["m4"] == "empty question" and causes["m5"] == "no audio_id"
    assert causes[good["id"]] == "duplicated id" and causes["#7"].startswith("record is a list")
    assert causes["m6"] == "1 choices; MMAR has 2-6"


# ------------------------------------------------------------------------------------------------
# MMAR's rule
# ------------------------------------------------------------------------------------------------

def test_rule_on_hand_cases():
    c = ["Dog barking", "Dog growling", "Cat meowing"]
    assert mmar.mmar_string_match("Dog barking", "dog barking!", c)
    assert mmar.mmar_string_match("Dog barking", "It is: DOG, barking", c)
    assert not mmar.mmar_string_match("Dog barking", "dog", c)  # 'barking' missing
    assert not mmar.mmar_string_match("Dog barking", "dog barking or growling", c)  # a wrong choice's token
    assert not mmar.mmar_string_match("Dog barking", "", c) and not mmar.mmar_string_match("Dog barking", "?!", c)
    same = ["first: a, second: b", "first: b, second: a"]  # token sets equal: the rule cannot tell them apart
    assert mmar.mmar_string_match(same[0], same[1], same)
    assert not mmar.mmar_string_match("Dog barking", "IDK", c)


def test_rule_agrees_with_mmau_rule_on_shared_records(raw):
    # MMAR's scorer is MMAU's rule; both re-implementations must agree on every record and output.
    for r in raw:
        for output in [*r["choices"], r["answer"] + " indeed", "IDK", r["choices"][0] + " " + r["choices"][-1]]:
            assert mmar.mmar_string_match(r["answer"], output, r["choices"]) == \
                mmau_string_match(r["answer"], output, r["choices"]), (r["id"], output)


def _tokens(text):
    return set(re.findall(r"\b\w+\b", text.lower()))


def ambiguous_ids(raw):
    """Items where token sets cannot separate the answer from another option: another option with
    the answer's token set, or an answer with no tokens at all (computed independently of the rule)."""
    out = set()
    for r in raw:
        answer = _tokens(r["answer"])
        if not answer or any(_tokens(c) == answer and c.strip() != r["answer"].strip() for c in r["choices"]):
            out.add(r["id"])
    return out


LETTERS = "ABCDEF"


def outputs_for(style, bench):
    out = {}
    for k, item in enumerate(bench.items):
        wrong = next(c for c in item.choices if c != item.answer)
        pick = item.choices[k % len(item.choices)]
        out[item.id] = {
            "answer": item.answer,
            "wrong": wrong,
            "letter": LETTERS[item.choices.index(item.answer)],
            "letter-wrong": f"({LETTERS[item.choices.index(wrong)]})",
            "sentence": f"The answer is {pick}.",
            "idk": "I don't know.",
            "mixed": [item.answer, f"Answer: {LETTERS[k % len(item.choices)]}", "I cannot tell from the audio.",
                      "hmm", pick.upper()][k % 5],
        }[style]
    return out


@pytest.mark.parametrize("style", ["answer", "wrong", "letter", "letter-wrong", "sentence", "idk", "mixed"])
def test_official_rule_counts_what_we_count(style, raw, bench, tmp_path):
    store = ResultStore.open(tmp_path / "store", {"style": style})
    outputs = outputs_for(style, bench)
    store.extend([{"item_id": i, "model_output": o} for i, o in outputs.items()])
    spec = f"mmar:{MMAR_FILE}"
    out = tmp_path / "mmar-export.json"
    summary = export_store_for_benchmark(store, spec, out)
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert summary["n_exported"] == 1000 and summary["n_errors"] == 0 and summary["missing"]["n"] == 0
    # The file is MMAR's format: the released records, unchanged, plus answer_prediction.
    by_id = {r["id"]: r for r in raw}
    for rec in exported:
        assert {k: v for k, v in rec.items() if k not in ("answer_prediction", "model_output_raw",
                                                         "normalization")} == by_id[rec["id"]]
        assert "model_output" not in rec
    official = mmar_evaluate(exported)
    assert official["total"] == 1000  # MMAR's script skips records without the key: none is skipped
    ours = score_store(store, resolve_benchmark(spec), keep_items=True)
    assert ours["n"] == 1000 and ours["n_errors"] == 0
    ours_correct = {it["id"] for it in ours["items"] if it["outcome"] == "correct"}
    official_correct = set(official["matched_ids"])
    listed = {d["id"] for d in summary["official_rule_disagreements"]}
    assert ours_correct ^ official_correct == listed  # every difference is listed, nothing else is
    assert listed <= ambiguous_ids(raw)  # and only where token sets cannot tell options apart
    assert official["correct"] == ours["n_correct"] - len(listed & ours_correct) + len(listed - ours_correct)
    # Per-modality counts of the official script equal ours outside the listed items.
    for modality, (n_correct, n_total) in official["by_modality"].items():
        assert n_total == ours["by_task"][modality]["n"]
        if not any(by_id[i]["modality"] == modality for i in listed):
            assert n_correct == ours["by_task"][modality]["n_correct"]
    if style == "answer":
        assert ours["n_correct"] == 1000
    if style in ("idk",):
        assert ours["n_rejected"] == 1000 and official["correct"] == 0
    if style == "wrong":
        assert ours["n_correct"] == 0


def test_export_cli_writes_answer_prediction(raw, bench, tmp_path, capsys):
    store = ResultStore.open(tmp_path / "store", {"m": 1})
    store.extend([{"item_id": item.id, "model_output": "B"} for item in bench.items[:10]])
    out = tmp_path / "out.json"
    assert main(["export", str(tmp_path / "store"), "--benchmark", f"mmar:{MMAR_FILE}", "--out", str(out)]) == 0
    exported = json.loads(out.read_text())
    assert len(exported) == 10 and all(r["answer_prediction"] == bench_item(bench, r["id"]).choices[1]
                                       for r in exported)
    summary = json.loads(capsys.readouterr().out)
    assert summary["benchmark"] == "mmar" and summary["missing"]["n"] == 990
    assert summary["official_rule"].endswith("mmar_string_match")
