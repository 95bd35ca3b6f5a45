"""reliable_lalm.core.abstention against small examples worked by hand (arithmetic in the comments)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from reliable_lalm.core.abstention import (Abstention, abstain_by_threshold, accuracy_at_coverage, aurc, calibration,
                                      compare_at_equal_rejection, confidence_target_score,
                                      confidence_target_score_thresholded, confidence_target_table,
                                      equal_width_bin_index, idk_probability, option_probabilities, oracle_aurc,
                                      risk_coverage, sample_agreement, sample_agreement_from_outputs,
                                      threshold_for_rejection_rate, wrong_answer_penalty)
from reliable_lalm.core.metrics import Counts, summarize
from reliable_lalm.core.normalize_types import Normalized

NAN = float("nan")


# ------------------------------------------------------------------------------------------------
# Risk–coverage, AURC, E-AURC
# ------------------------------------------------------------------------------------------------

def test_aurc_five_items_no_ties():
    # Sorted by confidence: 0.9 c, 0.8 w, 0.7 c, 0.6 c, 0.5 w.
    # risk(k) = wrong among top k / k: 0/1, 1/2, 1/3, 1/4, 2/5.
    # AURC = (0 + .5 + .3333 + .25 + .4) / 5 = 1.48333 / 5 = 0.296667.
    # Oracle: 3 correct first -> 0, 0, 0, 1/4, 2/5 -> 0.65 / 5 = 0.13. E-AURC = 0.166667.
    conf = [0.6, 0.9, 0.5, 0.8, 0.7]  # shuffled input order: only the confidence order matters
    correct = [True, True, False, False, True]
    rc = risk_coverage(conf, correct)
    assert rc.aurc == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    assert rc.aurc == pytest.approx(0.296667, abs=1e-6)
    assert rc.oracle_aurc == pytest.approx(0.13)
    assert rc.e_aurc == pytest.approx(0.166667, abs=1e-6)
    assert rc.threshold == (0.9, 0.8, 0.7, 0.6, 0.5)
    assert rc.coverage == pytest.approx((0.2, 0.4, 0.6, 0.8, 1.0))
    assert rc.risk == pytest.approx((0.0, 0.5, 1 / 3, 0.25, 0.4))
    # Rel when only the top 2 are answered (1 c, 1 w, 3 rejected of 5):
    # Rej .6, Acc .2, Tru .8 -> .6 * .2 + .4 * .8 = 0.44.
    assert rc.reliability[1] == pytest.approx(0.44)
    assert aurc(conf, correct) == rc.aurc
    frame = rc.to_frame()
    assert list(frame["n_answered"]) == [1, 2, 3, 4, 5]


def test_aurc_ties_enter_as_a_group_and_use_expected_errors():
    # Group 0.9: 2 items, 1 wrong; group 0.5: 2 items, 0 wrong.
    # k=1 (inside the 0.9 group): expected errors 1 * 1/2 -> risk 0.5; k=2: 1/2; k=3: 1/3; k=4: 1/4.
    # AURC = (.5 + .5 + .3333 + .25) / 4 = 0.395833. Oracle: 3 correct, 1 wrong -> (0+0+0+1/4)/4 = 0.0625.
    conf, correct = [0.9, 0.9, 0.5, 0.5], ["correct", "wrong", "correct", "correct"]
    rc = risk_coverage(conf, correct)
    assert rc.coverage == (0.5, 1.0)  # one point per distinct confidence
    assert rc.risk == (0.5, 0.25)
    assert rc.aurc == pytest.approx(0.395833, abs=1e-6)
    assert rc.oracle_aurc == pytest.approx(0.0625)
    # Swapping the tied items does not change anything (a plain sort would give 0 or 1 at k=1).
    swapped = risk_coverage([0.9, 0.9, 0.5, 0.5], ["wrong", "correct", "correct", "correct"])
    assert swapped.aurc == rc.aurc


def test_aurc_perfect_and_worst_ranking():
    # Perfect: correct items most confident -> AURC = oracle, E-AURC = 0.
    rc = risk_coverage([0.9, 0.8, 0.1], [1, 1, 0])
    assert rc.e_aurc == pytest.approx(0.0)
    # Worst: the wrong item first: risk 1/1, 1/2, 1/3 -> (1 + .5 + .3333)/3 = 0.611111.
    worst = risk_coverage([0.1, 0.8, 0.9], [1, 1, 0])
    assert worst.aurc == pytest.approx(0.611111, abs=1e-6)
    assert oracle_aurc(3, 1) == pytest.approx((0 + 0 + 1 / 3) / 3)


def test_risk_coverage_rejects_refusals_and_handles_empty():
    with pytest.raises(ValueError, match="rejected"):
        risk_coverage([0.5, 0.4], ["correct", "rejected"])
    with pytest.raises(ValueError):
        risk_coverage([0.5], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        risk_coverage([NAN], [1])
    empty = risk_coverage([], [])
    assert empty.aurc is None and empty.reason == "no items"


def test_accuracy_at_coverage():
    # Items by confidence: 0.9 c, 0.8 w, 0.7 c, 0.6 c, 0.5 w (as above), N = 5.
    conf, correct = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 1, 0]
    out = accuracy_at_coverage(conf, correct, coverages=(0.5, 0.8, 1.0))
    # 0.5: m = ceil(2.5) = 3 answered: 2 c, 1 w -> accuracy 2/3; Rel: Rej .4, Acc .4, Tru .8
    #      -> .4 * .4 + .6 * .8 = 0.64.
    assert out[0.5]["n_answered"] == 3 and out[0.5]["achieved_coverage"] == 0.6
    assert out[0.5]["accuracy"] == pytest.approx(2 / 3)
    assert out[0.5]["rel"] == pytest.approx(0.64)
    # 0.8: m = 4: 3 c, 1 w -> 0.75.  1.0: m = 5 -> 3/5.
    assert out[0.8]["accuracy"] == pytest.approx(0.75)
    assert out[1.0]["accuracy"] == pytest.approx(0.6)
    # Floating point: 0.7 * 10 = 7.000000000000001 must still answer 7 items, not 8.
    assert accuracy_at_coverage(np.linspace(1, 0.1, 10), [1] * 10, (0.7,))[0.7]["n_answered"] == 7
    # A tie group straddling the cut counts proportionally: [0.9 c, 0.9 w] at coverage 0.25 of 4
    # -> m = 1, expected errors 1/2 -> accuracy 0.5.
    tied = accuracy_at_coverage([0.9, 0.9, 0.5, 0.5], [1, 0, 1, 1], (0.25,))
    assert tied[0.25]["accuracy"] == pytest.approx(0.5)
    assert accuracy_at_coverage([], [], (0.5,))[0.5]["accuracy"] is None
    with pytest.raises(ValueError):
        accuracy_at_coverage(conf, correct, (0.0,))


# ------------------------------------------------------------------------------------------------
# Abstention by threshold, matched rejection rate
# ------------------------------------------------------------------------------------------------

OUTCOMES = ["correct", "wrong", "correct", "wrong", "rejected", "correct"]
CONF = [0.9, 0.8, 0.8, 0.3, NAN, 0.6]


def test_abstain_by_threshold_keeps_answers_and_own_refusals():
    # Threshold 0.7: 0.3 (wrong) and 0.6 (correct) rejected; the model's own refusal stays rejected.
    a = abstain_by_threshold(CONF, OUTCOMES, 0.7)
    assert a.outcomes == ("correct", "wrong", "correct", "rejected", "rejected", "rejected")
    assert (a.n_rejected, a.n_rejected_by_threshold) == (3, 2)
    assert a.rejection_rate == pytest.approx(0.5)
    # >= keeps a confidence equal to the threshold; strict (>) rejects it.
    assert abstain_by_threshold(CONF, OUTCOMES, 0.8).outcomes[1] == "wrong"
    assert abstain_by_threshold(CONF, OUTCOMES, 0.8, strict=True).outcomes[1] == "rejected"
    assert a.counts() == Counts(2, 3, 1)
    with pytest.raises(ValueError, match="NaN"):
        abstain_by_threshold([NAN], ["correct"], 0.5)


def test_abstain_invalid_flags_follow_the_outcome():
    a = abstain_by_threshold([0.2, 0.9], ["wrong", "wrong"], 0.5, invalid=[True, True])
    assert a.invalid == (False, True)  # the rejected item is no longer an invalid *wrong* answer
    summarize(list(a.outcomes), ["sound", "sound"], invalid=list(a.invalid))  # accepted by metrics


def test_threshold_for_rejection_rate_whole_tie_groups():
    # N = 6, target 0.5 -> 3 items. The refusal (NaN) is always rejected.
    # Candidates (answer iff conf >= v): v=0.3 rejects 1, v=0.6 rejects 2, v=0.8 rejects 3,
    # v=0.9 rejects 5, +inf rejects 6. Closest to 3: v = 0.8 (exact).
    a = threshold_for_rejection_rate(CONF, OUTCOMES, 0.5)
    assert a.threshold == 0.8 and a.n_rejected == 3 and a.rejection_rate == 0.5
    assert a.outcomes == ("correct", "wrong", "correct", "rejected", "rejected", "rejected")
    # Target 4/6: candidates give 3 (v=0.8) or 5 (v=0.9), both 1 away -> the one rejecting fewer.
    b = threshold_for_rejection_rate(CONF, OUTCOMES, 4 / 6)
    assert b.threshold == 0.8 and b.n_rejected == 3 and not b.ties_split
    # Target 0: only the model's own refusal can be rejected.
    assert threshold_for_rejection_rate(CONF, OUTCOMES, 0.0).n_rejected == 1
    # Target 1: all rejected, threshold +inf.
    c = threshold_for_rejection_rate(CONF, OUTCOMES, 1.0)
    assert c.n_rejected == 6 and math.isinf(c.threshold)


def test_threshold_for_rejection_rate_index_tie_break_hits_the_count():
    # Target 4/6 -> exactly 4 rejected: NaN refusal, 0.3, 0.6, then one of the two 0.8 items:
    # the later one in input order (index 2) is rejected first.
    a = threshold_for_rejection_rate(CONF, OUTCOMES, 4 / 6, tie_break="index")
    assert a.n_rejected == 4 and a.ties_split
    assert a.outcomes == ("correct", "wrong", "rejected", "rejected", "rejected", "rejected")
    assert a.threshold == 0.8
    # round_half_up(0.25 * 6 = 1.5) = 2 rejected: the refusal and the 0.3 item.
    b = threshold_for_rejection_rate(CONF, OUTCOMES, 0.25, tie_break="index")
    assert b.n_rejected == 2 and not b.ties_split and b.threshold == 0.6
    with pytest.raises(ValueError):
        threshold_for_rejection_rate(CONF, OUTCOMES, 1.5)
    with pytest.raises(ValueError):
        threshold_for_rejection_rate(CONF, OUTCOMES, 0.5, tie_break="random")


def test_compare_at_equal_rejection_feeds_the_paper_metrics():
    # Baseline: c c w w (confidences .9 .4 .8 .2); the IDK method rejects 2 of 4 (items 1 and 3).
    # The matching threshold rejects the 2 least confident: items 3 (w, .2) and 1 (c, .4).
    # Transitions vs baseline: ncc 1 (item 0), ncr 1 (item 1), nwr 1 (item 3), nww 1 (item 2).
    # Subset convention: ΔCon = 1/4, ΔHum = 1/4 -> RGI = log10(1) = 0.
    baseline = ["correct", "correct", "wrong", "wrong"]
    method = ["correct", "rejected", "wrong", "rejected"]
    out = compare_at_equal_rejection([0.9, 0.4, 0.8, 0.2], baseline, method, ["sound"] * 4)
    thr = out["confidence_threshold"]["total"]
    assert (thr["ncc"], thr["ncr"], thr["nwr"], thr["nww"]) == (1, 1, 1, 1)
    assert thr["rej"] == out["method"]["total"]["rej"] == 0.5
    assert thr["rgi_subset"] == pytest.approx(0.0)
    assert out["threshold"]["n_rejected"] == 2 and out["threshold"]["threshold"] == 0.8


# ------------------------------------------------------------------------------------------------
# Confidence-target scoring
# ------------------------------------------------------------------------------------------------

def test_confidence_target_scores():
    outcomes = ["correct", "correct", "wrong", "rejected"]
    # Penalties t/(1-t): 0.5 -> 1, 0.75 -> 3, 0.9 -> 9.
    assert wrong_answer_penalty(0.75) == pytest.approx(3.0)
    # t = .5: 1 + 1 - 1 + 0 = 1 -> mean 1/4. t = .75: 2 - 3 = -1 -> -0.25. t = .9: 2 - 9 = -7 -> -1.75.
    assert confidence_target_score(outcomes, 0.5)["mean"] == pytest.approx(0.25)
    assert confidence_target_score(outcomes, 0.75)["total"] == pytest.approx(-1.0)
    assert confidence_target_score(outcomes, 0.9)["mean"] == pytest.approx(-1.75)
    # Thresholded: confidences .95 c, .8 w, .7 c, (refusal). t = .75: answer .95 (+1) and .8 (-3),
    # abstain on .7 -> total -2, mean -0.5. t = .9: only .95 answered -> 1/4.
    conf, base = [0.95, 0.8, 0.7, NAN], ["correct", "wrong", "correct", "rejected"]
    assert confidence_target_score_thresholded(conf, base, 0.75)["mean"] == pytest.approx(-0.5)
    assert confidence_target_score_thresholded(conf, base, 0.9)["mean"] == pytest.approx(0.25)
    # Strict ">": a confidence equal to t abstains: [.75 wrong] at t = .75 scores 0, not -3.
    assert confidence_target_score_thresholded([0.75], ["wrong"], 0.75)["total"] == 0
    rows = confidence_target_table(base, conf)
    assert [(r["target"], r["decision"]) for r in rows][:2] == [(0.5, "explicit"), (0.5, "confidence > t")]
    assert len(rows) == 6
    assert confidence_target_score([], 0.5)["mean"] is None
    with pytest.raises(ValueError):
        wrong_answer_penalty(1.0)


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------

CAL_CONF = [0.2, 0.4, 0.6, 0.8, 0.9]
CAL_OK = [0, 1, 0, 1, 1]


def test_ece_two_equal_width_bins():
    # Bins [0, .5] and (.5, 1]. Bin 0: .2, .4 -> mean conf .3, acc 1/2, |gap| .2.
    # Bin 1: .6, .8, .9 -> mean conf .766667, acc 2/3, |gap| .1.  ECE = 2/5*.2 + 3/5*.1 = 0.14.
    cal = calibration(CAL_CONF, CAL_OK, n_bins=2)
    assert cal.ece == pytest.approx(0.14)
    assert cal.mce == pytest.approx(0.2)
    assert [b.count for b in cal.bins] == [2, 3]
    assert cal.bins[1].mean_confidence == pytest.approx(2.3 / 3)
    assert cal.bins[1].gap == pytest.approx(2 / 3 - 2.3 / 3)


def test_ece_three_bins_with_an_empty_bin_and_edges():
    # Bins [0, 1/3], (1/3, 2/3], (2/3, 1]. Confidences .1 (c), .3 (w), .9 (c), .95 (w):
    # bin 0: .1, .3 -> conf .2, acc .5, |gap| .3; bin 1 empty; bin 2: .9, .95 -> conf .925, acc .5, |gap| .425.
    # ECE = 2/4 * .3 + 2/4 * .425 = 0.3625.
    cal = calibration([0.1, 0.3, 0.9, 0.95], [1, 0, 1, 0], n_bins=3)
    assert [b.count for b in cal.bins] == [2, 0, 2]
    assert cal.bins[1].accuracy is None and cal.bins[1].mean_confidence is None
    assert cal.ece == pytest.approx(0.3625)
    # Edges: bin k holds (k/B, (k+1)/B], the first closed at 0.
    assert equal_width_bin_index(np.array([0.0, 0.1, 0.1000001, 0.3, 1.0]), 10).tolist() == [0, 0, 1, 2, 9]
    assert equal_width_bin_index(np.array([0.5]), 2).tolist() == [0]


def test_ece_equal_mass():
    # 5 items, 2 bins: sizes 3 and 2 (array_split). Bin 0: .2 .4 .6 -> conf .4, acc 1/3, |gap| .066667;
    # bin 1: .8 .9 -> conf .85, acc 1, |gap| .15.  ECE = 3/5 * .066667 + 2/5 * .15 = 0.04 + 0.06 = 0.10.
    cal = calibration(CAL_CONF, CAL_OK, n_bins=2, binning="equal-mass")
    assert [b.count for b in cal.bins] == [3, 2]
    assert cal.ece == pytest.approx(0.10)
    assert (cal.bins[1].low, cal.bins[1].high) == (0.8, 0.9)


def test_brier_score():
    # (.2-0)^2 + (.4-1)^2 + (.6-0)^2 + (.8-1)^2 + (.9-1)^2 = .04 + .36 + .36 + .04 + .01 = .81 -> /5 = 0.162.
    assert calibration(CAL_CONF, CAL_OK).brier == pytest.approx(0.162)
    assert calibration([], []).brier is None
    with pytest.raises(ValueError):
        calibration([1.2], [1])


def test_calibration_frame_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    cal = calibration(CAL_CONF, CAL_OK, n_bins=2)
    frame = cal.to_frame()
    assert list(frame.columns) == ["index", "low", "high", "count", "mean_confidence", "accuracy", "gap"]
    from reliable_lalm.reporting.abstention import plot_reliability_diagram, plot_risk_coverage

    fig = plot_reliability_diagram(cal)
    assert fig.axes[0].get_xlabel() == "confidence"
    fig2 = plot_risk_coverage({"softmax": risk_coverage(CAL_CONF, CAL_OK)})
    assert "AURC" in fig2.axes[0].get_legend().get_texts()[0].get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)


# ------------------------------------------------------------------------------------------------
# Confidence estimators
# ------------------------------------------------------------------------------------------------

def test_option_softmax():
    # log-likelihoods 0 and -ln 3: exp -> 1 and 1/3 -> probabilities 3/4, 1/4.
    p = option_probabilities([0.0, -math.log(3)])
    assert p.tolist() == pytest.approx([0.75, 0.25])
    # Length normalization: -2 over 2 tokens = -1 per token = the -1 of a one-token option -> 1/2 each.
    assert option_probabilities([-1.0, -2.0], token_counts=[1, 2]).tolist() == pytest.approx([0.5, 0.5])
    assert option_probabilities([-1.0, -2.0]).tolist() != pytest.approx([0.5, 0.5])
    # -inf: impossible option; large magnitudes stay finite.
    assert option_probabilities([-1000.0, -math.inf, -1000.0]).tolist() == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(ValueError):
        option_probabilities([-math.inf, -math.inf])


def test_idk_probability():
    # Options .3 and .1, IDK .1 -> IDK share .1 / (.3 + .1 + .1) = 0.2.
    assert idk_probability(math.log(0.1), [math.log(0.3), math.log(0.1)]) == pytest.approx(0.2)
    assert idk_probability(math.log(0.1)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        idk_probability(0.5)


def test_sample_agreement_and_entropy():
    # Samples A A B IDK invalid over 3 choices: modal A, agreement 2/5.
    # Categories (A, B, C, no-option) frequencies .4 .2 0 .4:
    # H = -(2 * .4 ln .4 + .2 ln .2) = .733033 + .321888 = 1.054920; / ln 4 (1.386294) = 0.760964.
    s = sample_agreement(["A", "A", "B", "IDK", None], ["A", "B", "C"])
    assert (s.modal_answer, s.agreement, s.n_idk, s.n_invalid, s.n_choice) == ("A", 0.4, 1, 1, 3)
    assert s.entropy == pytest.approx(1.054920, abs=1e-6)
    assert s.normalized_entropy == pytest.approx(0.760964, abs=1e-6)
    assert s.entropy_confidence == pytest.approx(1 - 0.760964, abs=1e-6)
    # All agree: entropy 0, agreement 1.
    same = sample_agreement([Normalized("choice", "B")] * 4, ["A", "B"])
    assert same.agreement == 1.0 and same.normalized_entropy == 0.0
    # Tie B/A 2-2: the option listed first in choices wins (A), agreement 1/2.
    tie = sample_agreement(["B", "A", "B", "A"], ["A", "B"])
    assert tie.modal_answer == "A" and tie.agreement == 0.5
    # Only refusals: no modal option, agreement 0, entropy 0 (all in one category).
    refusals = sample_agreement([Normalized("idk")] * 3, ["A", "B"])
    assert refusals.modal_answer is None and refusals.agreement == 0.0 and refusals.entropy == 0.0
    assert sample_agreement([], ["A", "B"]).agreement is None
    with pytest.raises(ValueError):
        sample_agreement(["maybe A"], ["A", "B"])


def test_sample_agreement_from_raw_outputs():
    s = sample_agreement_from_outputs(["Dog", "The answer is Dog.", "I don't know", "Cat"], ["Dog", "Cat"])
    assert s.modal_answer == "Dog" and s.agreement == 0.5 and s.n_idk == 1


def test_no_torch_at_import():
    import subprocess

    code = "import sys, reliable_lalm.core.abstention, reliable_lalm.benchmarks.unanswerable, reliable_lalm.benchmarks.circular; " \
           "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_abstention_dataclass_to_dict():
    a = threshold_for_rejection_rate(CONF, OUTCOMES, 0.5)
    assert isinstance(a, Abstention)
    d = a.to_dict()
    assert "outcomes" not in d and d["answered_if"] == "confidence >= threshold"
