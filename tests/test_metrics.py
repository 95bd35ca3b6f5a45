"""Unit tests of reliable_lalm.core.metrics: equations 1-10, edge cases and the bootstrap."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from reliable_lalm.core.metrics import (Counts, Transitions, bootstrap_gain, bootstrap_rates,
                                   gain_from_counts, outcome_codes, outcome_of, rgi_from_deltas, summarize)
from reliable_lalm.core.normalize_types import Normalized


def test_outcome_of():
    assert outcome_of(Normalized("choice", "Dog"), "Dog") == "correct"
    assert outcome_of(Normalized("choice", " Dog "), "Dog") == "correct"
    assert outcome_of(Normalized("choice", "Cat"), "Dog") == "wrong"
    assert outcome_of(Normalized("idk"), "Dog") == "rejected"
    assert outcome_of(Normalized("invalid"), "Dog") == "wrong"
    assert outcome_of(Normalized("choice", "dog"), "Dog") == "wrong"  # exact option text only


def test_counts_equations_1_to_5():
    c = Counts(n_correct=194, n_rejected=60, n_wrong=79)
    assert c.n == 333
    assert c.acc == pytest.approx(194 / 333)
    assert c.tru == pytest.approx(1 - 79 / 333)
    assert c.rej == pytest.approx(60 / 333)
    assert c.rel == pytest.approx(c.rej * c.acc + (1 - c.rej) * c.tru)
    # Appendix E's example: 40 % correct, 20 % rejected, 40 % wrong -> Rel 56 %.
    assert Counts(40, 20, 40).rel == pytest.approx(0.56)
    # No rejection: Acc = Tru = Rel.
    d = Counts(5, 0, 5)
    assert d.acc == d.tru == d.rel == 0.5


def test_counts_invalid_and_empty():
    decisions = [Normalized("choice", "a"), Normalized("invalid"), Normalized("idk"), Normalized("choice", "b")]
    c = Counts.from_outcomes([outcome_of(x, "a") for x in decisions], [x.kind == "invalid" for x in decisions])
    assert (c.n_correct, c.n_rejected, c.n_wrong, c.n_invalid) == (1, 1, 2, 1)
    empty = Counts(0, 0, 0)
    assert empty.acc is None and empty.rel is None and empty.to_dict()["n"] == 0
    with pytest.raises(ValueError):
        Counts(1, 0, 0, n_invalid=1)  # an invalid item is a wrong item
    with pytest.raises(ValueError):
        outcome_codes(["correct", "maybe"])


def test_transitions_and_both_conventions():
    base = ["correct"] * 5 + ["wrong"] * 4 + ["rejected"]
    meth = ["correct", "correct", "correct", "rejected", "wrong",
            "correct", "rejected", "rejected", "wrong", "correct"]
    t = Transitions.from_outcomes(base, meth)
    assert t.to_dict() == {"ncc": 3, "ncr": 1, "ncw": 1, "nwc": 1, "nwr": 2, "nww": 1,
                           "nrc": 1, "nrr": 0, "nrw": 0}
    assert (t.nc, t.nw, t.nr, t.n_answered, t.n) == (5, 4, 1, 9, 10)
    # The baseline-rejected item is outside Nc and Nw but its method outcome is counted (nrc above).
    cls, sub = t.gain("class"), t.gain("subset")
    assert cls.d_con == pytest.approx(2 / 5) and cls.d_hum == pytest.approx(3 / 4)
    assert cls.rgi == pytest.approx(math.log10((3 / 4) / (2 / 5)))
    assert sub.d_con == pytest.approx(2 / 9) and sub.d_hum == pytest.approx(3 / 9)
    assert sub.rgi == pytest.approx(math.log10(3 / 2))
    assert cls.to_dict() == {"d_con": cls.d_con, "d_hum": cls.d_hum, "rgi": cls.rgi}
    with pytest.raises(ValueError):
        t.gain("other")


@pytest.mark.parametrize("nc,ncc,nw,nww,convention,none,reason_part", [
    (0, 0, 10, 5, "class", ("d_con", "rgi"), "Nc = 0"),
    (10, 5, 0, 0, "class", ("d_hum", "rgi"), "Nw = 0"),
    (0, 0, 0, 0, "subset", ("d_con", "d_hum", "rgi"), "N = Nc + Nw = 0"),
    (10, 10, 10, 5, "class", ("rgi",), "ΔCon = 0"),
    (10, 5, 10, 10, "subset", ("rgi",), "ΔHum = 0"),
    (10, 10, 10, 10, "subset", ("rgi",), "0/0"),
])
def test_undefined_values_have_reasons(nc, ncc, nw, nww, convention, none, reason_part):
    g = gain_from_counts(nc, ncc, nw, nww, convention)
    for name in ("d_con", "d_hum", "rgi"):
        value, reason = getattr(g, name), getattr(g, name + "_reason")
        if name in none:
            assert value is None and reason
        else:
            assert value is not None and reason is None
    reasons = " ".join(filter(None, (g.d_con_reason, g.d_hum_reason, g.rgi_reason)))
    assert reason_part in reasons
    assert "rgi_reason" in g.to_dict()


def test_rgi_from_deltas():
    assert rgi_from_deltas(0.1, 0.1)[0] == 0.0
    assert rgi_from_deltas(0.1, 1.0)[0] == pytest.approx(1.0)  # log base 10
    assert rgi_from_deltas(None, 0.1) == (None, "ΔCon or ΔHum is undefined")
    with pytest.raises(ValueError):
        gain_from_counts(5, 6, 5, 1)


def test_summarize_per_task_and_total():
    outcomes = ["correct", "wrong", "rejected", "wrong", "correct", "correct"]
    tasks = ["sound", "sound", "music", "music", "speech", "other"]
    invalid = [False, True, False, False, False, False]
    s = summarize(outcomes, tasks, invalid=invalid)
    assert list(s["by_task"]) == ["sound", "music", "speech", "other"]
    assert s["total"]["n"] == 6 and s["total"]["n_invalid"] == 1 and s["total"]["n_correct"] == 3
    assert s["by_task"]["music"]["rej"] == 0.5
    assert "d_con" not in s["total"] and "ci" not in s["total"]
    s2 = summarize(outcomes, ["sound"] * 6)
    assert s2["by_task"]["music"]["n"] == 0 and s2["by_task"]["music"]["acc"] is None
    with pytest.raises(ValueError):
        summarize(outcomes, tasks, invalid=[True] + [False] * 5)  # a 'correct' item flagged invalid


def test_summarize_with_baseline_and_ci():
    rng = np.random.default_rng(1)
    n = 300
    base = rng.choice(["correct", "wrong"], n, p=[0.6, 0.4])
    meth = np.where(rng.random(n) < 0.2, "rejected", base)
    tasks = rng.choice(["sound", "music", "speech"], n)
    s = summarize(list(meth), list(tasks), baseline=list(base), n_boot=200, seed=3)
    tot = s["total"]
    t = Transitions.from_outcomes(base, meth)
    assert {k: tot[k] for k in t.to_dict()} == t.to_dict()
    assert tot["d_con"] == pytest.approx(t.gain("class").d_con)
    assert tot["rgi_subset"] == pytest.approx(t.gain("subset").rgi)
    assert tot["baseline"]["n_correct"] == int((base == "correct").sum())
    for name in ("acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi", "d_con_subset", "d_hum_subset", "rgi_subset"):
        ci = tot["ci"][name]
        assert ci["low"] <= tot[name] <= ci["high"], name
    # Same seed, same intervals; the per-task streams differ from the total's.
    again = summarize(list(meth), list(tasks), baseline=list(base), n_boot=200, seed=3)
    assert again["total"]["ci"] == tot["ci"]
    assert summarize(list(meth), list(tasks), baseline=list(base), n_boot=200, seed=4)["total"]["ci"] != tot["ci"]


def _slow_rates(codes, idx):
    """Reference implementation: one Counts object per resample."""
    rows = []
    for r in idx:
        c = Counts.from_outcomes([("correct", "rejected", "wrong")[k] for k in codes[r]])
        rows.append((c.acc, c.tru, c.rej, c.rel))
    return np.array(rows)


def test_bootstrap_matches_a_loop_over_resamples():
    rng = np.random.default_rng(7)
    outcomes = list(rng.choice(["correct", "rejected", "wrong"], 57))
    base = list(rng.choice(["correct", "wrong", "rejected"], 57, p=[0.5, 0.45, 0.05]))
    n_boot, seed = 300, 11
    fast = bootstrap_rates(outcomes, n_boot=n_boot, seed=seed)
    idx = np.random.default_rng(seed).integers(0, 57, size=(n_boot, 57))  # the same draws
    slow = _slow_rates(outcome_codes(outcomes), idx)
    for j, name in enumerate(("acc", "tru", "rej", "rel")):
        low, high = np.percentile(slow[:, j], [2.5, 97.5])
        assert fast[name]["low"] == pytest.approx(low) and fast[name]["high"] == pytest.approx(high), name

    fast_gain = bootstrap_gain(base, outcomes, n_boot=n_boot, seed=seed)
    b, m = np.array(base), np.array(outcomes)
    for suffix, convention in (("", "class"), ("_subset", "subset")):
        vals = {"d_con": [], "d_hum": [], "rgi": []}
        for r in idx:
            g = Transitions.from_outcomes(b[r], m[r]).gain(convention)
            for k in vals:
                v = getattr(g, k)
                vals[k].append(np.nan if v is None else v)
        for k, v in vals.items():
            arr = np.array(v)
            finite = arr[np.isfinite(arr)]
            ci = fast_gain[k + suffix]
            assert ci["n_undefined"] == int(np.sum(~np.isfinite(arr)))
            assert ci["low"] == pytest.approx(np.percentile(finite, 2.5)), k + suffix
            assert ci["high"] == pytest.approx(np.percentile(finite, 97.5)), k + suffix


def test_paired_bootstrap_is_paired():
    """A method that rejects exactly the baseline's wrong items: ΔCon = 0 in every paired
    resample (so RGI is undefined in all of them); an unpaired resample would not give that."""
    base = ["correct"] * 60 + ["wrong"] * 40
    meth = ["correct"] * 60 + ["rejected"] * 40
    ci = bootstrap_gain(base, meth, n_boot=500, seed=0)
    assert ci["d_con"]["low"] == ci["d_con"]["high"] == 0.0
    assert ci["d_hum"]["low"] == ci["d_hum"]["high"] == 1.0
    assert ci["rgi"]["n_undefined"] == 500 and ci["rgi"]["low"] is None


def test_bootstrap_edge_cases():
    assert bootstrap_rates([], n_boot=10)["acc"]["low"] is None
    assert bootstrap_gain([], [], n_boot=10)["rgi_subset"]["n_undefined"] == 10
    single = bootstrap_rates(["correct"], n_boot=20)
    assert single["acc"]["low"] == single["acc"]["high"] == 1.0
    with pytest.raises(ValueError):
        bootstrap_rates(["correct"], n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_rates(["correct"], level=1.0)
    with pytest.raises(ValueError):
        bootstrap_gain(["correct"], ["correct", "wrong"])
    narrow = bootstrap_rates(["correct", "wrong"] * 50, n_boot=300, level=0.5)
    wide = bootstrap_rates(["correct", "wrong"] * 50, n_boot=300, level=0.99)
    assert wide["acc"]["high"] - wide["acc"]["low"] > narrow["acc"]["high"] - narrow["acc"]["low"]


def test_bootstrap_speed():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, 1000).astype(np.int8)
    meth = rng.integers(0, 3, 1000).astype(np.int8)
    start = time.perf_counter()
    bootstrap_rates(meth, n_boot=1000)
    bootstrap_gain(base, meth, n_boot=1000)
    assert time.perf_counter() - start < 1.0
