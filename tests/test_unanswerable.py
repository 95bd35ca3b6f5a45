"""Unanswerable variants and circular (option-order) evaluation, on small benchmarks counted by hand."""
from __future__ import annotations

import random

import pytest

from reliable_lalm.benchmarks.circular import (build_circular, circular_items, circular_summary, circular_variants,
                                    parse_rotation_id, rotate_choices)
from reliable_lalm.core.items import BenchmarkItem, validate_record
from reliable_lalm.core.normalize_types import Normalized
from reliable_lalm.benchmarks.unanswerable import (ANSWER_REMAINS, FOREIGN_AUDIO, FOREIGN_OPTIONS, HAS_CATCH_ALL, NO_ANSWER,
                                        NO_AUDIO_DONOR, NO_OPTION_DONOR, TOO_FEW_CHOICES, build_unanswerable,
                                        is_catch_all, summary_rows, unanswerable_outcome_of, unanswerable_summary)


def item(id_: str, task: str, choices: tuple[str, ...], answer: str) -> BenchmarkItem:
    return BenchmarkItem(id=id_, audio_path=f"/audio/{id_}.wav", question=f"Question of {id_}?", choices=choices,
                         answer=answer, task=task, category="cat")


ITEMS = [
    item("s1", "sound", ("dog", "cat", "bird"), "dog"),
    item("s2", "sound", ("car", "train"), "car"),  # 2 choices: no no-answer variant
    item("s3", "sound", ("rain", "wind", "None of the above"), "rain"),  # catch-all option
    item("m1", "music", ("piano", "guitar", "drums", "violin"), "piano"),
    item("m2", "music", ("Piano", "flute", "harp"), "flute"),  # contains m1's answer up to case
    item("p1", "speech", ("happy", "sad", "angry"), "sad"),
]


def by_id(result):
    return {it.id: it for it in result.items}


def test_no_answer_variants_counted_by_hand():
    # s1, m1, m2, p1 have >= 3 choices and no catch-all -> 4 built; s2 (2 choices) and s3 (catch-all) skipped.
    out = build_unanswerable(ITEMS, kinds=[NO_ANSWER])
    got = by_id(out)
    assert sorted(got) == ["m1::no-answer", "m2::no-answer", "p1::no-answer", "s1::no-answer"]
    assert got["s1::no-answer"].choices == ("cat", "bird")  # order of the remaining options kept
    assert got["m1::no-answer"].choices == ("guitar", "drums", "violin")
    assert {(s.item_id, s.reason) for s in out.skipped} == {("s2", TOO_FEW_CHOICES), ("s3", HAS_CATCH_ALL)}
    v = got["p1::no-answer"]
    assert (v.answer, v.answerable, v.source_answer, v.kind, v.source_ids) == ("", False, "sad", NO_ANSWER, ("p1",))
    assert v.answer not in v.choices and v.audio_path == "/audio/p1.wav" and v.audio_task == v.task == "speech"
    # An option equal to the answer up to case keeps the item answerable.
    dup = build_unanswerable([item("d", "sound", ("Dog", "dog ", "cat"), "Dog")], kinds=[NO_ANSWER])
    assert dup.items == [] and dup.skipped[0].reason == ANSWER_REMAINS
    assert is_catch_all("All of these") and is_catch_all("none of the above") and not is_catch_all("nonetheless")
    assert is_catch_all("Not sure") and is_catch_all("Cannot be determined.") and is_catch_all("unknown")
    assert not is_catch_all("No, it is not present.") and not is_catch_all("none of the speakers")
    assert not is_catch_all("Unknown instrument played loudly")
    # Only the *remaining* options matter: when the catch-all is the answer, removing it is fine.
    own = build_unanswerable([item("n", "sound", ("dog", "cat", "None of the above"), "None of the above")],
                             kinds=[NO_ANSWER])
    assert [v.choices for v in own.items] == [("dog", "cat")]


def test_foreign_options_variants_counted_by_hand():
    # Same-task donors whose options exclude the answer (case-insensitive) and have no catch-all:
    # s1 <- {s2}; s2 <- {s1}; s3 <- {s1, s2}; m1 <- {} (m2 has "Piano"); m2 <- {m1}; p1 <- {} (alone).
    out = build_unanswerable(ITEMS, kinds=[FOREIGN_OPTIONS])
    got = by_id(out)
    assert sorted(got) == ["m2::foreign-options", "s1::foreign-options", "s2::foreign-options",
                           "s3::foreign-options"]
    assert got["s1::foreign-options"].choices == ("car", "train") and got["s1::foreign-options"].donor_id == "s2"
    assert got["s2::foreign-options"].donor_id == "s1"
    assert got["m2::foreign-options"].choices == ITEMS[3].choices
    assert got["s3::foreign-options"].donor_id in {"s1", "s2"}
    assert {(s.item_id, s.reason) for s in out.skipped} == {("m1", NO_OPTION_DONOR), ("p1", NO_OPTION_DONOR)}
    for v in out.items:  # the source answer is never among the new options
        assert v.source_answer.casefold() not in {c.casefold() for c in v.choices}
        assert v.source_ids == (v.source_id, v.donor_id) and v.question == f"Question of {v.source_id}?"
    # Across tasks, m1 and p1 find donors too (p1 <- any non-speech item without "sad").
    wide = build_unanswerable(ITEMS, kinds=[FOREIGN_OPTIONS], same_task_options=False)
    assert len(wide.items) == 6 and not wide.skipped


def test_foreign_audio_variants():
    out = build_unanswerable(ITEMS, kinds=[FOREIGN_AUDIO])
    assert len(out.items) == 6 and not out.skipped
    tasks = {it.id: it.task for it in ITEMS}
    for v in out.items:
        assert v.audio_task != v.task and tasks[v.donor_id] == v.audio_task
        assert v.audio_path == f"/audio/{v.donor_id}.wav"
        assert v.choices == next(it.choices for it in ITEMS if it.id == v.source_id)
    lone = build_unanswerable([ITEMS[0], ITEMS[1]], kinds=[FOREIGN_AUDIO])  # only sound items
    assert lone.items == [] and {s.reason for s in lone.skipped} == {NO_AUDIO_DONOR}


def test_all_kinds_counts_and_summary():
    out = build_unanswerable(ITEMS)
    # 4 no-answer + 4 foreign-options + 6 foreign-audio = 14 built; 2 + 2 skipped.
    s = out.summary()
    assert (s["n_source"], s["n_built"], s["n_skipped"]) == (6, 14, 4)
    assert (s["n_no-answer"], s["n_foreign-options"], s["n_foreign-audio"]) == (4, 4, 6)
    assert s["skipped"] == {NO_ANSWER: {TOO_FEW_CHOICES: 1, HAS_CATCH_ALL: 1}, FOREIGN_OPTIONS: {NO_OPTION_DONOR: 2}}
    rows = {(r["kind"], r["task"]): r for r in out.counts()}
    assert rows[(NO_ANSWER, "sound")] == {"kind": NO_ANSWER, "task": "sound", "n_source": 3, "n_built": 1,
                                          "n_skipped": 2}
    assert rows[(FOREIGN_OPTIONS, "music")]["n_built"] == 1
    assert all(r["n_built"] + r["n_skipped"] == r["n_source"] for r in rows.values())
    # Variants come per source item in input order, kinds in KINDS order.
    assert [v.id for v in out.items][:3] == ["s1::no-answer", "s1::foreign-options", "s1::foreign-audio"]


def test_generation_is_deterministic_and_order_independent():
    # A bigger benchmark so that donors are actually chosen among many.
    big = [item(f"{t}{i}", t, tuple(f"{t}-opt{i}-{j}" for j in range(3 + i % 2)), f"{t}-opt{i}-0")
           for t in ("sound", "music", "speech") for i in range(8)]
    a = build_unanswerable(big, seed=3)
    b = build_unanswerable(list(reversed(big)), seed=3)
    shuffled = big[:]
    random.Random(1).shuffle(shuffled)
    c = build_unanswerable(shuffled, seed=3)
    key = lambda res: sorted((v.id, v.donor_id, v.choices, v.audio_path) for v in res.items)
    assert key(a) == key(b) == key(c)
    assert key(build_unanswerable(big, seed=3)) == key(a)
    assert key(build_unanswerable(big, seed=4)) != key(a)  # the seed matters
    assert len(a.items) == 24 * 3  # every item has >= 3 distinct options, donors exist everywhere


def test_records_keep_validation_of_answerable_items_intact():
    v = build_unanswerable(ITEMS, kinds=[NO_ANSWER]).items[0]
    rec = v.to_record()
    assert (rec["id"], rec["answer"], rec["answerable"], rec["unanswerable_kind"]) == ("s1::no-answer", "", False,
                                                                                        NO_ANSWER)
    assert rec["source_ids"] == ["s1"] and rec["choices"] == ["cat", "bird"] and "audio_id" not in rec
    # The loader still refuses a record whose answer is not a choice: unanswerable items never
    # pass as BenchmarkItems.
    with pytest.raises(ValueError, match="not among the choices"):
        validate_record(rec, None, check_audio=False)


def test_unanswerable_scoring_by_hand():
    assert unanswerable_outcome_of(Normalized("idk")) == "refused"
    assert unanswerable_outcome_of(Normalized("choice", "cat")) == "hallucinated"
    assert unanswerable_outcome_of(Normalized("invalid")) == "invalid"
    answerable = ["correct", "rejected", "wrong", "rejected"]
    a_tasks = ["sound", "sound", "music", "music"]
    unanswerable = ["refused", "refused", "hallucinated", "invalid", "refused"]
    u_tasks = ["sound", "sound", "sound", "music", "music"]
    kinds = [NO_ANSWER, FOREIGN_OPTIONS, FOREIGN_AUDIO, NO_ANSWER, FOREIGN_AUDIO]
    out = unanswerable_summary(answerable, a_tasks, unanswerable, u_tasks, kinds)
    t = out["total"]
    # Answerable refusals 2/4 = .5; unanswerable refused 3/5 = .6, hallucinated 1/5, invalid 1/5; gap .1.
    assert t["refusal_rate_answerable"] == 0.5 and t["refusal_rate_unanswerable"] == pytest.approx(0.6)
    assert t["hallucination_rate"] == pytest.approx(0.2) and t["invalid_rate_unanswerable"] == pytest.approx(0.2)
    assert t["refusal_gap"] == pytest.approx(0.1)
    # Sound: answerable 1/2, unanswerable 2/3 -> gap 1/6. Music: 1/2 and 1/2 -> gap 0.
    assert out["by_task"]["sound"]["refusal_gap"] == pytest.approx(2 / 3 - 1 / 2)
    assert out["by_task"]["music"]["refusal_gap"] == pytest.approx(0.0)
    speech = out["by_task"]["speech"]
    assert speech["refusal_gap"] is None and "no answerable items" in speech["refusal_gap_reason"]
    # By kind (against all answerable items, .5): no-answer 1/2, foreign-options 1/1, foreign-audio 1/2.
    assert out["by_kind"][NO_ANSWER]["refusal_rate_unanswerable"] == 0.5
    assert out["by_kind"][FOREIGN_OPTIONS]["refusal_gap"] == pytest.approx(0.5)
    assert out["by_kind"][FOREIGN_AUDIO]["hallucination_rate"] == 0.5
    assert [r["group"] for r in summary_rows(out)][:2] == ["total", "sound"]
    with pytest.raises(ValueError):
        unanswerable_summary(answerable, a_tasks, ["rejected"], ["sound"])


# ------------------------------------------------------------------------------------------------
# Circular evaluation
# ------------------------------------------------------------------------------------------------

def test_rotations_counted_by_hand():
    x = item("x", "sound", ("A", "B", "C"), "B")
    assert rotate_choices(x.choices, 1) == ("B", "C", "A")
    rots = circular_variants(x)
    assert [r.id for r in rots] == ["x::rot0", "x::rot1", "x::rot2"]
    assert [r.choices for r in rots] == [("A", "B", "C"), ("B", "C", "A"), ("C", "A", "B")]
    assert [r.choices.index(r.answer) for r in rots] == [1, 0, 2]  # the answer moves through every position
    # 3 + 4 + 2 choices -> 9 presentations.
    assert len(build_circular([x, ITEMS[3], ITEMS[1]])) == 9
    assert parse_rotation_id("a::b::rot12") == ("a::b", 12)
    with pytest.raises(ValueError):
        parse_rotation_id("x")
    rec_item = validate_record({"id": "r", "question": "q?", "choices": ["a", "b"], "answer": "b", "task": "music",
                                "audio_id": "/a.wav"}, None, check_audio=False)
    assert circular_variants(rec_item)[1].to_record()["choices"] == ["b", "a"]


def test_circular_summary_by_hand():
    x = item("x", "sound", ("A", "B", "C"), "B")  # always B: consistent and correct
    y = item("y", "sound", ("P", "Q"), "P")  # always the first option: P then Q
    z = item("z", "music", ("K", "L", "M"), "M")  # always IDK
    w = item("w", "music", ("R", "S"), "R")  # R then invalid
    rotated = build_circular([x, y, z, w])
    c, idk, bad = (lambda t: Normalized("choice", t)), Normalized("idk"), Normalized("invalid")
    normalized = [c("B"), c("B"), c("B"), c("P"), c("Q"), idk, idk, idk, c("R"), bad]
    out = circular_summary(rotated, normalized)
    t = out["total"]
    # 4 items, 10 presentations. Consistent: x -> 1/4; with refusal: x, z -> 2/4; correct all: x -> 1/4;
    # correct presentations 3 + 1 + 0 + 1 = 5 -> 5/10; rot0 correct: x, y, w -> 3/4.
    assert (t["n_items"], t["n_presentations"]) == (4, 10)
    assert t["consistency_rate"] == 0.25 and t["consistency_rate_with_refusal"] == 0.5
    assert t["circular_accuracy"] == 0.25 and t["mean_accuracy"] == 0.5 and t["rot0_accuracy"] == 0.75
    s, m = out["by_task"]["sound"], out["by_task"]["music"]
    # Sound: x, y -> consistency 1/2, circular acc 1/2, mean acc 4/5, rot0 1.
    assert (s["consistency_rate"], s["circular_accuracy"], s["mean_accuracy"], s["rot0_accuracy"]) == (0.5, 0.5, 0.8, 1.0)
    # Music: z, w -> consistency 0, with refusal 1/2, circular acc 0, mean acc 1/5, rot0 1/2.
    assert (m["consistency_rate"], m["consistency_rate_with_refusal"], m["circular_accuracy"]) == (0.0, 0.5, 0.0)
    assert m["mean_accuracy"] == pytest.approx(0.2) and m["rot0_accuracy"] == 0.5
    assert out["by_task"]["speech"]["consistency_rate"] is None
    assert out["excluded"] == {}


def test_circular_incomplete_rotations_are_excluded():
    x = item("x", "sound", ("A", "B", "C"), "B")
    y = item("y", "sound", ("P", "Q"), "P")
    rotated = build_circular([x, y])
    del rotated[1]  # x::rot1 missing
    verdicts, excluded = circular_items(rotated, [Normalized("choice", "B")] * 2 + [Normalized("choice", "P")] * 2)
    assert [v.source_id for v in verdicts] == ["y"]
    assert "rotations [0, 2]" in excluded["x"]
    with pytest.raises(ValueError):
        circular_items(rotated, [])
