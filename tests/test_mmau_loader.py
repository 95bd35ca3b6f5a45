"""data.py's loader on the real MMAU test-mini metadata and on small synthetic records."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from reliable_lalm import paths
from reliable_lalm.core.items import ItemError, load_benchmark, load_records, validate_record

MMAU_DIR = paths.SHARED_DIR / "mmau"
FILES = ("mmau-test-mini.2025-03-25.json", "mmau-test-mini.v05.15.25.json")


@pytest.fixture(params=FILES)
def mmau(request):
    path = MMAU_DIR / request.param
    if not path.is_file():
        pytest.skip(f"MMAU metadata not available ({path})")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return path, raw, load_benchmark(path, check_audio=False)


def test_every_record_accepted_or_rejected(mmau):
    path, raw, bench = mmau
    assert len(raw) == 1000
    assert len(bench.items) + len(bench.rejected) == len(raw)
    for rejected in bench.rejected:  # a rejection always names the record and the cause
        assert rejected.item_id and rejected.cause
    assert bench.rejected == []  # both releases are clean apart from what the loader repairs
    assert len({item.id for item in bench.items}) == 1000


def test_counts_per_task(mmau):
    _, _, bench = mmau
    assert Counter(item.task for item in bench.items) == {"sound": 333, "music": 334, "speech": 333}
    assert bench.summary()["accepted"] == 1000 and bench.summary()["music"] == 334


def test_category_lists_are_joined(mmau):
    _, raw, bench = mmau
    by_id = {item.id: item for item in bench.items}
    listed = [r for r in raw if isinstance(r["category"], list)]
    assert listed, "MMAU stores some categories as lists"
    for r in listed:
        item = by_id[r["id"]]
        assert item.category == "; ".join(r["category"])
        assert item.record["category"] == r["category"]  # the original record is kept as is
    assert all(isinstance(item.category, str) for item in bench.items)


def test_duplicated_choices_deduplicated_with_a_note(mmau):
    _, raw, bench = mmau
    by_id = {item.id: item for item in bench.items}
    duplicated = [r for r in raw if len(set(c.strip() for c in r["choices"])) < len(r["choices"])]
    assert duplicated, "MMAU has questions with a repeated option"
    for r in duplicated:
        item = by_id[r["id"]]
        assert list(item.choices) == list(dict.fromkeys(c.strip() for c in r["choices"]))
        assert len(set(item.choices)) == len(item.choices)
        assert item.answer in item.choices
        assert any("duplicated choices removed" in note for note in item.notes)
    clean = [item for item in bench.items if item.id not in {r["id"] for r in duplicated}]
    assert all(not item.notes for item in clean)
    # Without de-duplication those records are rejected, each with the reason.
    strict = load_benchmark(MMAU_DIR / bench.source.split("/")[-1], check_audio=False, dedupe_choices=False)
    assert {r.item_id for r in strict.rejected} == {r["id"] for r in duplicated}
    assert all("duplicated choices" in r.cause for r in strict.rejected)


def test_audio_paths_resolve_beside_the_json(mmau):
    path, _, bench = mmau
    item = bench.items[0]
    assert item.audio_path == str((path.parent / "test-mini-audios" / f"{item.id}.wav").resolve())


# ------------------------------------------------------------------------------------------------
# Synthetic records
# ------------------------------------------------------------------------------------------------

def good(**changes):
    r = {"id": "q1", "audio_id": "./audio/q1.wav", "question": "What is heard?", "choices": ["Dog", "Cat"],
         "answer": "Dog", "task": "sound", "category": "Perception", "sub-category": "x", "difficulty": "easy"}
    r.update(changes)
    return r


@pytest.mark.parametrize("changes,cause", [
    ({"answer": "Bird"}, "is not among the choices"),
    ({"question": "   "}, "empty question"),
    ({"question": None}, "empty question"),
    ({"choices": ["Dog"], "answer": "Dog"}, "1 distinct choices"),
    ({"choices": [f"c{i}" for i in range(9)], "answer": "c0"}, "9 distinct choices"),
    ({"choices": ["Dog", "Dog"], "answer": "Dog"}, "1 distinct choices"),  # dedupe leaves one
    ({"choices": "Dog, Cat"}, "choices must be a list"),
    ({"choices": ["Dog", " "]}, "a choice is empty"),
    ({"task": "video"}, "is not one of"),
    ({"audio_id": ""}, "no audio_id"),
])
def test_per_item_errors(changes, cause, tmp_path):
    with pytest.raises(ItemError) as err:
        validate_record(good(**changes), tmp_path, check_audio=False)
    assert cause in err.value.cause and err.value.item_id == "q1"


def test_missing_audio_only_with_check_audio(tmp_path):
    with pytest.raises(ItemError) as err:
        validate_record(good(), tmp_path, check_audio=True)
    assert "audio file missing" in err.value.cause
    assert validate_record(good(), tmp_path, check_audio=False).audio_path.endswith("q1.wav")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "q1.wav").write_bytes(b"RIFF")
    assert validate_record(good(), tmp_path, check_audio=True).id == "q1"


def test_eight_choices_and_padding_are_accepted(tmp_path):
    item = validate_record(good(choices=[f" c{i} " for i in range(8)], answer="c3 ", task=" Music"),
                           tmp_path, check_audio=False)
    assert item.choices == tuple(f"c{i}" for i in range(8)) and item.answer == "c3" and item.task == "music"
    assert item.choices.index(item.answer) == 3


def test_load_records_keeps_going(tmp_path):
    records = [good(id="a"), good(id="b", answer="Bird"), "junk", good(id="a"), good(id="c", question=""),
               good(id="d", choices=["Dog", "Cat", "Dog"])]
    bench = load_records(records, tmp_path, check_audio=False)
    assert [i.id for i in bench.items] == ["a", "d"]
    causes = {(r.index, r.item_id): r.cause for r in bench.rejected}
    assert "not among the choices" in causes[(1, "b")]
    assert "not an object" in causes[(2, "#2")]
    assert causes[(3, "a")] == "duplicated id"
    assert causes[(4, "c")] == "empty question"
    assert bench.items[1].notes and bench.items[1].choices == ("Dog", "Cat")


def test_jsonl_and_items_wrapper(tmp_path):
    jl = tmp_path / "b.jsonl"
    jl.write_text("\n".join(json.dumps(good(id=f"q{i}")) for i in range(3)) + "\n")
    assert len(load_benchmark(jl, check_audio=False)) == 3
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"items": [good()]}))
    assert load_benchmark(wrapped, check_audio=False).items[0].id == "q1"
    with pytest.raises(FileNotFoundError):
        load_benchmark(tmp_path / "missing.json")
