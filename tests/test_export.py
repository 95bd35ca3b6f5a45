"""Export to MMAU's format: MMAU's own rule on the exported file agrees with ``score_records``."""
from __future__ import annotations

import json

import pytest

from reliable_lalm import paths
from reliable_lalm.benchmarks.registry import resolve_benchmark
from reliable_lalm.cli import main
from reliable_lalm.core.items import load_benchmark
from reliable_lalm.core.export import export_records, export_store
from reliable_lalm.core.normalize import mmau_string_match
from reliable_lalm.core.results import ResultStore
from reliable_lalm.core.scoring import score_records

C = ["Dog barking", "Dog growling", "Cat meowing", "Car horn"]  # shared word "dog"
LONG = ("The recording starts with traffic noise. Then a car horn honks twice, quite loudly, while people talk "
        "in the background; there is no animal in it at all, so the answer must be the car horn.")
# (raw output, answer): refusals, letters, long texts, repeated words, shared words, invalid outputs.
CASES = [
    ("Dog barking", "Dog barking"),
    ("B", "Dog growling"),
    ("B", "Dog barking"),
    ("(C) Cat meowing", "Cat meowing"),
    ("The answer is C.", "Dog barking"),
    ("Answer: D", "Car horn"),
    ("It is not a dog barking, it is a cat meowing.", "Cat meowing"),
    ("It is not a dog barking, it is a cat meowing.", "Dog barking"),
    ("dog barking dog barking dog barking", "Dog barking"),
    ("cat meowing. cat meowing.", "Car horn"),
    (LONG, "Car horn"),
    ("Dog Dog Dog", "Dog barking"),
    ("Dog barking or dog growling", "Dog growling"),
    ("IDK", "Dog barking"),
    ("I don't know.", "Car horn"),
    ("Sorry, I cannot determine this from the audio.", "Cat meowing"),
    ("None of the above", "Dog growling"),
    ("", "Dog barking"),
    ("E", "Car horn"),
    ("barking", "Dog barking"),
]


def records():
    return [{"id": f"r{k}", "audio_id": f"./a/r{k}.wav", "question": "Which sound?", "choices": list(C),
             "answer": answer, "task": ("sound", "music", "speech")[k % 3], "category": ["Reasoning"],
             "model_output": output} for k, (output, answer) in enumerate(CASES)]


def mmau_correct_ids(exported):
    return {r["id"] for r in exported if mmau_string_match(r["answer"], r["model_output"], r["choices"])}


def test_mmau_rule_on_export_counts_what_we_count(tmp_path, capsys):
    src = tmp_path / "pred.json"
    src.write_text(json.dumps(records()))
    out = tmp_path / "mmau" / "export.json"
    assert main(["export", str(src), "--out", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())  # the file as MMAU's evaluation.py would read it
    scored = score_records(records(), keep_items=True)
    ours = {i["id"] for i in scored["items"] if i["outcome"] == "correct"}
    assert mmau_correct_ids(exported) == ours
    assert len(ours) == scored["n_correct"] >= 6  # the stress set has both correct and wrong answers
    assert scored["n_rejected"] >= 3 and scored["n_invalid"] >= 3
    # Refusals export as "IDK", invalid outputs as "", and the raw output stays beside the label.
    by_id = {r["id"]: r for r in exported}
    assert by_id["r13"]["model_output"] == "IDK" and by_id["r17"]["model_output"] == ""
    assert by_id["r10"]["model_output_raw"] == LONG and by_id["r10"]["model_output"] == "Car horn"
    # Original fields are kept as they were (category stays a list).
    assert by_id["r0"]["category"] == ["Reasoning"] and by_id["r0"]["question"] == "Which sound?"
    assert by_id["r1"]["normalization"]["method"] == "letter"
    # Applied to the raw outputs MMAU's rule would disagree with us (letters, long texts): the
    # normalized export is what makes the two counts equal.
    raw = {r["id"] for r in records() if mmau_string_match(r["answer"], r["model_output"], r["choices"])}
    assert raw != ours


def test_indistinguishable_options_are_reported():
    """Options with the same words in another order: MMAU's token rule scores the wrong one as
    correct; the export lists it under mmau_rule_disagreements."""
    choices = ["first: neutral, second: frustration", "first: frustration, second: neutral", "both neutral"]
    recs = [{"id": "x", "task": "speech", "choices": choices, "answer": choices[0], "model_output": choices[1]},
            {"id": "y", "task": "speech", "choices": choices, "answer": choices[0], "model_output": choices[0]}]
    exported, summary = export_records(recs)
    scored = score_records(recs, keep_items=True)
    assert scored["n_correct"] == 1
    assert mmau_correct_ids(exported) == {"x", "y"}
    assert summary["mmau_rule_disagreements"] == [
        {"id": "x", "model_output": choices[1], "answer": choices[0], "ours": False, "mmau_rule": True}]


def test_export_store_with_benchmark(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    recs = records()[:5]
    bench.write_text(json.dumps([{k: v for k, v in r.items() if k != "model_output"} for r in recs]))
    store = ResultStore.open(tmp_path / "store", {"method": "idk"})
    store.extend([{"item_id": r["id"], "model_output": r["model_output"]} for r in recs[:4]])
    store.append({"item_id": "ghost", "model_output": "A"})
    out = tmp_path / "out.json"
    summary = export_store(store, resolve_benchmark(bench), out)
    exported = json.loads(out.read_text())
    assert [r["id"] for r in exported] == ["r0", "r1", "r2", "r3"]
    assert summary["missing"] == {"n": 1, "ids": ["r4"]} and summary["errors"][0]["id"] == "ghost"
    assert exported[1]["model_output"] == "Dog growling" and exported[1]["model_output_raw"] == "B"
    assert set(exported[0]) >= {"id", "audio_id", "question", "choices", "answer", "task", "category",
                                "model_output", "model_output_raw"}
    # The CLI does the same and prints the summary as JSON.
    out2 = tmp_path / "out2.json"
    assert main(["export", str(tmp_path / "store"), "--benchmark", str(bench), "--out", str(out2)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_exported"] == 4 and json.loads(out2.read_text()) == exported
    assert main(["export", str(tmp_path / "nothing"), "--out", str(out2)]) == 2


MMAU_FILES = ("mmau-test-mini.2025-03-25.json", "mmau-test-mini.v05.15.25.json")
# Items whose options MMAU's token rule cannot tell apart (same words, other order or one extra
# word the answer also has): exporting the wrong option scores it as correct there.
INDISTINGUISHABLE = {
    "mmau-test-mini.2025-03-25.json": {"bbabe360-0573-43d4-b2e6-6892150cbdcd", "004fd9c5-1f2b-4c16-939b-4c75e39c84ba",
                                       "40c9c875-1922-4e1e-adc9-076432418a02", "8cbc0f29-4cf5-41e6-83ff-abcd70fbd96d"},
    "mmau-test-mini.v05.15.25.json": {"bbabe360-0573-43d4-b2e6-6892150cbdcd", "004fd9c5-1f2b-4c16-939b-4c75e39c84ba",
                                      "40c9c875-1922-4e1e-adc9-076432418a02", "8cbc0f29-4cf5-41e6-83ff-abcd70fbd96d",
                                      "4e96cbe1-bf9a-4b47-b5eb-63ff69cd97c2", "35330c05-c50f-4f30-80b1-263c61357866",
                                      "42e35733-9630-4960-9ce0-75325e5906f6", "e6e02fec-0241-40d6-a0f5-7d79d60b9649",
                                      "7fa63d67-5d84-4f56-b5c4-9b26c4cf9d26"},
}


@pytest.mark.parametrize("name", MMAU_FILES)
def test_every_mmau_option_exported(name):
    """Answer every MMAU test-mini question with each of its options in turn: MMAU's rule on the
    export agrees with our scoring everywhere except the known indistinguishable options."""
    path = paths.SHARED_DIR / "mmau" / name
    if not path.is_file():
        pytest.skip(f"MMAU metadata not available ({path})")
    bench = load_benchmark(path, check_audio=False)
    preds = [{**item.to_record(), "id": f"{item.id}#{k}", "model_output": choice}
             for item in bench.items for k, choice in enumerate(item.choices)]
    exported, summary = export_records(preds)
    assert summary["n_errors"] == 0 and len(exported) == len(preds)
    scored = score_records(preds, keep_items=True)
    ours = {i["id"] for i in scored["items"] if i["outcome"] == "correct"}
    assert len(ours) == len(bench.items)  # each question answered correctly exactly once
    official = mmau_correct_ids(exported)
    assert ours <= official  # MMAU's rule never rejects the right option
    extra = official - ours
    assert {i.split("#")[0] for i in extra} == INDISTINGUISHABLE[name]
    assert {d["id"] for d in summary["mmau_rule_disagreements"]} == extra
