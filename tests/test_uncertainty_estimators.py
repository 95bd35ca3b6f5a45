"""Uncertainty estimators (core.uncertainty): hand-worked values."""
from __future__ import annotations

import math

import pytest

from reliable_lalm.core import uncertainty as un


def test_sequence_probabilities():
    assert un.sequence_probability(math.log(0.5)) == pytest.approx(0.5)
    # two tokens of probability 0.5 each: P = 0.25, geometric mean per token 0.5
    assert un.length_normalized_probability(math.log(0.25), 2) == pytest.approx(0.5)
    assert un.sequence_probability(0.0) == 1.0
    with pytest.raises(ValueError, match="log-probability"):
        un.sequence_probability(0.3)
    with pytest.raises(ValueError, match="token count"):
        un.length_normalized_probability(-1.0, 0)


def test_predictive_entropy():
    # samples of probability 1/2 and 1/4: PE = (log 2 + log 4) / 2 = 1.5 log 2
    assert un.predictive_entropy([math.log(0.5), math.log(0.25)]) == pytest.approx(1.5 * math.log(2))
    # length-normalised with 1 and 2 tokens: (log 2 + log 4 / 2) / 2 = log 2
    assert un.predictive_entropy([math.log(0.5), math.log(0.25)], [1, 2]) == pytest.approx(math.log(2))
    assert un.predictive_entropy([]) is None
    assert un.entropy_confidence(1.5 * math.log(2)) == pytest.approx(2 ** -1.5)
    with pytest.raises(ValueError):
        un.predictive_entropy([-1.0], [1, 2])


def test_discrete_semantic_entropy():
    # A, A, B, a refusal, one unreadable sample: clusters A (2), B (1), IDK (1) over 4 clustered
    se = un.discrete_semantic_entropy(["A", "A", "B", "IDK", None])
    assert (se.n_samples, se.n_clustered, se.n_unclustered) == (5, 4, 1)
    assert se.clusters == (("A", 2), ("B", 1), ("IDK", 1))
    assert se.entropy == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))  # 1.5 log 2
    assert se.confidence == pytest.approx(2 ** -1.5)
    same = un.discrete_semantic_entropy(["IDK"] * 5)
    assert same.entropy == 0.0 and same.confidence == 1.0
    none = un.discrete_semantic_entropy([None, None])
    assert none.entropy is None and none.confidence is None and none.reason


def test_p_true():
    assert un.p_true(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert un.p_true(-math.inf, math.log(0.2)) == 0.0
    assert un.p_true(-1000.0, -1.0) == pytest.approx(0.0, abs=1e-300)
    with pytest.raises(ValueError):
        un.p_true(-math.inf, -math.inf)


@pytest.mark.parametrize("text, value", [
    ("85", 0.85), ("85%", 0.85), (" 85.5 % ", 0.855), ("100.", 1.0), ("0", 0.0), ("7\n", 0.07),
    ("101", None), ("about 85", None), ("85/100", None), ("8 5", None), ("-5", None), ("", None),
    ("Confidence: 90", None), ("90 percent", None), ("1e2", None), (None, None),
])
def test_verbalized_confidence_is_parsed_strictly(text, value):
    got = un.parse_verbalized_confidence(text)
    assert got == (None if value is None else pytest.approx(value))


def test_aurc_chance_pvalue():
    # two items, one wrong: a random order puts the right one first (AURC (0 + 1/2) / 2 = 0.25)
    # or the wrong one first (AURC (1 + 1/2) / 2 = 0.75), each with probability 1/2
    p = un.aurc_chance_pvalue([0.9, 0.1], [True, False], 0.25, n_permutations=4000)
    assert p == pytest.approx(0.5, abs=0.03)
    assert un.aurc_chance_pvalue([0.9, 0.1], [True, False], 0.75, n_permutations=200) == 1.0
    # a perfect ranking of 20 right and 20 wrong answers is far better than chance
    from reliable_lalm.core.abstention import aurc
    conf, ok = list(range(40)), [False] * 20 + [True] * 20
    assert un.aurc_chance_pvalue(conf, ok, aurc(conf, ok), n_permutations=500) == pytest.approx(1 / 501)
    assert un.aurc_chance_pvalue([0.5, 0.5], [True, True], 0.0) is None
