"""``--by`` breakdowns (core/breakdowns.py, rlalm score --by) against hand-counted fixtures."""
from __future__ import annotations

import json
import math

import pytest

from reliable_lalm.cli import main
from reliable_lalm.core.breakdowns import NO_VALUE, breakdown, parse_by
from reliable_lalm.core.scoring import score_records

C = ["a x", "b y", "c z"]
#        id  task      difficulty category     sub    answer  output          baseline
ROWS = [("1", "sound", "easy", "A", "a1", "a x", "a x", "a x"),  # correct   (base correct)
        ("2", "sound", "easy", "A", "a2", "a x", "b y", "a x"),  # wrong     (base correct)
        ("3", "sound", "hard", "B", "b1", "a x", "IDK", "a x"),  # rejected  (base correct)
        ("4", "music", "easy", "A", "a1", "b y", "b y", "a x"),  # correct   (base wrong)
        ("5", "music", "hard", "B", "b1", "b y", "zzz", "a x"),  # invalid=wrong (base wrong)
        ("6", "music", "hard", "B", "b2", "c z", "c z", "a x"),  # correct   (base wrong)
        ("7", "speech", "medium", "A", "a2", "c z", "I don't know.", "a x"),  # rejected (base wrong)
        ("8", "speech", None, ["A", "B"], None, "a x", "a x", "a x")]  # correct (base correct)


def records(column):
    out = []
    for row in ROWS:
        rid, task, diff, cat, sub, answer = row[:6]
        rec = {"id": rid, "task": task, "choices": C, "answer": answer, "category": cat,
               "model_output": row[6 if column == "pred" else 7]}
        if diff is not None:
            rec["difficulty"] = diff
        if sub is not None:
            rec["sub-category"] = sub
        out.append(rec)
    return out


def counts(g):
    return g["n"], g["n_correct"], g["n_rejected"], g["n_wrong"], g["n_invalid"]


def test_parse_by():
    assert parse_by("task,difficulty,category,sub-category") == [("task",), ("difficulty",), ("category",),
                                                                  ("sub-category",)]
    assert parse_by("category+sub_category, task,task") == [("category", "sub-category"), ("task",)]
    assert parse_by(None) == [] and parse_by("") == []
    with pytest.raises(ValueError, match="unknown key 'speaker'"):
        parse_by("task,speaker")


def test_hand_counted_groups():
    r = score_records(records("pred"), by="task,difficulty,category,sub-category,task+difficulty")
    by = r["by"]
    assert list(by) == ["task", "difficulty", "category", "sub-category", "task+difficulty"]
    # (n, correct, rejected, wrong, invalid), counted by hand from ROWS
    assert {k: counts(g) for k, g in by["task"].items()} == {
        "sound": (3, 1, 1, 1, 0), "music": (3, 2, 0, 1, 1), "speech": (2, 1, 1, 0, 0)}
    assert list(by["difficulty"]) == ["easy", "medium", "hard", NO_VALUE]  # MMAU's order, then missing
    assert {k: counts(g) for k, g in by["difficulty"].items()} == {
        "easy": (3, 2, 0, 1, 0), "medium": (1, 0, 1, 0, 0), "hard": (3, 1, 1, 1, 1), NO_VALUE: (1, 1, 0, 0, 0)}
    assert {k: counts(g) for k, g in by["category"].items()} == {
        "A": (4, 2, 1, 1, 0), "B": (3, 1, 1, 1, 1), "A; B": (1, 1, 0, 0, 0)}  # a category list is joined
    assert {k: counts(g) for k, g in by["sub-category"].items()} == {
        "a1": (2, 2, 0, 0, 0), "a2": (2, 0, 1, 1, 0), "b1": (2, 0, 1, 1, 1), "b2": (1, 1, 0, 0, 0),
        NO_VALUE: (1, 1, 0, 0, 0)}
    assert {k: counts(g) for k, g in by["task+difficulty"].items()} == {
        "music | easy": (1, 1, 0, 0, 0), "music | hard": (2, 1, 0, 1, 1), "sound | easy": (2, 1, 0, 1, 0),
        "sound | hard": (1, 0, 1, 0, 0), "speech | (none)": (1, 1, 0, 0, 0), "speech | medium": (1, 0, 1, 0, 0)}
    s = by["task"]["sound"]  # Acc, Tru, Rej, Rel by hand: 1/3, 1 - 1/3, 1/3, 1/3*1/3 + 2/3*2/3
    assert (s["acc"], s["tru"], s["rej"]) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    assert s["rel"] == pytest.approx(5 / 9)
    sp = by["task"]["speech"]
    assert (sp["acc"], sp["tru"], sp["rej"], sp["rel"]) == pytest.approx((0.5, 1.0, 0.5, 0.75))
    # The task breakdown is the per-task summary.
    for task, g in by["task"].items():
        assert g == r["by_task"][task]
    assert "by" not in score_records(records("pred"))


def test_hand_counted_gains_per_group():
    r = score_records(records("pred"), records("base"), by="task,category")
    sound, music, speech = (r["by"]["task"][t] for t in ("sound", "music", "speech"))
    assert (sound["ncc"], sound["ncw"], sound["ncr"]) == (1, 1, 1)
    assert sound["d_con"] == pytest.approx(2 / 3) and sound["d_hum"] is None and sound["d_hum_reason"]
    assert music["d_hum"] == pytest.approx(2 / 3) and music["d_con"] is None
    assert speech["d_con"] == 0 and speech["d_hum"] == 1 and speech["rgi"] is None and speech["rgi_reason"]
    a, b = r["by"]["category"]["A"], r["by"]["category"]["B"]
    # A: 1 cc, 2 cw, 4 wc, 7 wr -> Nc=2, Ncc=1, Nw=2, Nww=0
    assert (a["d_con"], a["d_hum"], a["rgi"]) == pytest.approx((0.5, 1.0, math.log10(2)))
    assert (a["d_con_subset"], a["d_hum_subset"], a["rgi_subset"]) == pytest.approx((0.25, 0.5, math.log10(2)))
    # B: 3 cr, 5 ww, 6 wc -> Nc=1, Ncc=0, Nw=2, Nww=1
    assert (b["d_con"], b["d_hum"], b["rgi"]) == pytest.approx((1.0, 0.5, math.log10(0.5)))
    assert b["baseline"]["n_correct"] == 1 and b["baseline"]["n_wrong"] == 2


def test_bootstrap_per_group_is_seeded():
    r1 = score_records(records("pred"), records("base"), by="category", n_boot=200, seed=3)
    r2 = score_records(records("pred"), records("base"), by="category", n_boot=200, seed=3)
    assert r1["by"] == r2["by"]
    single = r1["by"]["category"]["A; B"]["ci"]  # one correct item: every resample is all correct
    assert (single["acc"]["low"], single["acc"]["high"]) == (1.0, 1.0)
    a = r1["by"]["category"]["A"]["ci"]
    assert a["acc"]["low"] <= 0.5 <= a["acc"]["high"] and "rgi_subset" in a


def test_breakdown_direct_and_lengths():
    fields = [{"task": "sound", "category": "x"}, {"task": "sound"}, {"task": "music", "category": " x "}]
    out = breakdown(fields, ["correct", "wrong", "rejected"], [("category",)])
    assert {k: counts(g) for k, g in out["category"].items()} == {"x": (2, 1, 1, 0, 0), NO_VALUE: (1, 0, 0, 1, 0)}
    with pytest.raises(ValueError):
        breakdown(fields, ["correct"], [("task",)])


def test_cli_by_json_and_table(tmp_path, capsys):
    pred, base = tmp_path / "pred.json", tmp_path / "base.json"
    pred.write_text(json.dumps(records("pred")))
    base.write_text(json.dumps(records("base")))
    assert main(["score", str(pred), "--by", "difficulty,category"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert counts(out["by"]["difficulty"]["hard"]) == (3, 1, 1, 1, 1)
    assert main(["score", str(pred), "--baseline", str(base), "--by", "category", "--format", "table"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("category=A "))
    assert row.split()[1:5] == ["4", "2", "1", "1"]  # n, correct, rejected, wrong
    assert "  category=B: ncc=0 ncr=1 ncw=0 nwc=1 nwr=0 nww=1" in table  # transitions listed per group too
    assert main(["score", str(pred), "--by", "speaker"]) == 2
    assert "unknown key 'speaker'" in capsys.readouterr().err
