"""Uncertainty estimators of one item's answer, each a confidence in [0, 1] (higher = surer).

Beyond the paper. Uncertainty estimation for audio LLMs is compared method against method in
Kuan, Huang & Lee, "Walking Through Uncertainty" (arXiv 2604.25591); which one ranks answers best
depends on the model and the benchmark, so they are computed side by side. Each function here
is the pure maths of one estimator, from numbers a backend returns; every result is usable by the
measures of :mod:`reliable_lalm.core.abstention` (AURC, E-AURC, ECE, Rel at equal rejection).

* **Sequence probability** of the greedy answer: ``P(answer) = exp(sum_t log p_t)`` over the
  answer's tokens (end-of-turn included), and its **length-normalised** form, the geometric mean
  per-token probability ``exp((1/T) sum_t log p_t)``.
* **Predictive entropy** over K sampled answers (Monte-Carlo estimate, Kuan et al.'s PE):
  ``PE = -(1/K) sum_k log P(s_k)``; length-normalised ``-(1/K) sum_k log P(s_k) / T_k``. As a
  confidence: ``exp(-PE)`` (the geometric mean of the samples' probabilities).
* **Discrete semantic entropy** (Farquhar et al., Nature 2024, the discrete variant): the samples
  are clustered by *meaning* — here the option the judge (normalizer) decided, or the refusal —
  and ``SE = -sum_c p_c log p_c`` with ``p_c`` the share of the clustered samples in cluster
  ``c``. Samples the judge could not read (invalid) join no cluster and are counted. As a
  confidence: ``exp(-SE)`` (1 when every sample means the same).
* **P(True)** (Kadavath et al., 2022): the model is shown its own answer and asked whether it is
  true; ``P(True) = e^{l_T} / (e^{l_T} + e^{l_F})`` from the log-likelihoods of ``"True"`` and
  ``"False"`` as the complete reply.
* **Verbalised confidence**: the model is asked for a number from 0 to 100;
  :func:`parse_verbalized_confidence` accepts only a reply that *is* such a number (optionally
  with ``%``); anything else is missing (``None``), never guessed.

Log-probabilities are natural logarithms. Bad input (a positive log-probability, NaN, a
non-positive token count) raises ``ValueError``; an estimator that is undefined for an item (no
usable samples) returns ``None``.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np


def _logprob(value: float, what: str) -> float:
    value = float(value)
    if math.isnan(value) or value > 1e-9:
        raise ValueError(f"{what} must be a log-probability (<= 0), got {value}")
    return min(value, 0.0)


def _token_count(value: int, what: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{what} must be a positive token count, got {value}")
    return int(value)


def sequence_probability(logprob: float) -> float:
    """``exp(log P(answer))``: the probability of the whole answer (its tokens' product)."""
    return math.exp(_logprob(logprob, "the answer's log-probability"))


def length_normalized_probability(logprob: float, n_tokens: int) -> float:
    """``exp(log P(answer) / T)``: the geometric mean of the answer's ``T`` token probabilities."""
    return math.exp(_logprob(logprob, "the answer's log-probability") / _token_count(n_tokens, "n_tokens"))


def predictive_entropy(logprobs: Sequence[float], token_counts: Sequence[int] | None = None) -> float | None:
    """``-(1/K) sum_k log P(s_k)`` over K sampled answers; with ``token_counts`` each
    log-probability is first divided by its sample's token count (length-normalised PE).
    ``None`` for no samples."""
    lp = [_logprob(v, f"sample {k}'s log-probability") for k, v in enumerate(logprobs)]
    if token_counts is not None:
        if len(token_counts) != len(lp):
            raise ValueError(f"{len(lp)} log-probabilities but {len(token_counts)} token counts")
        lp = [v / _token_count(n, f"sample {k}'s token count") for k, (v, n) in enumerate(zip(lp, token_counts))]
    if not lp:
        return None
    return float(-np.mean(lp))


def entropy_confidence(entropy: float | None) -> float | None:
    """``exp(-entropy)`` in (0, 1]: 1 for zero entropy, lower for more spread."""
    if entropy is None:
        return None
    if math.isnan(entropy) or entropy < -1e-12:
        raise ValueError(f"an entropy is >= 0, got {entropy}")
    return math.exp(-max(entropy, 0.0))


@dataclass(frozen=True)
class DiscreteSemanticEntropy:
    """Discrete semantic entropy of K judged samples (module docstring).

    ``n_samples`` = K, ``n_clustered`` = samples with a meaning (an option or a refusal),
    ``n_unclustered`` = invalid samples (left out of the distribution), ``clusters`` = size of each
    cluster, largest first (ties in first-seen order). ``entropy`` (natural log) and
    ``confidence = exp(-entropy)`` are ``None`` with ``reason`` when no sample was clustered.
    """

    n_samples: int
    n_clustered: int
    n_unclustered: int
    clusters: tuple[tuple[Hashable, int], ...]
    entropy: float | None
    confidence: float | None
    reason: str | None = None


def discrete_semantic_entropy(labels: Sequence[Hashable | None]) -> DiscreteSemanticEntropy:
    """Discrete semantic entropy of samples given by their cluster label (``None`` = unclustered).

    A label is what the judge decided a sample means: an option text, or the refusal label.
    """
    k = len(labels)
    counts = Counter(label for label in labels if label is not None)
    n = sum(counts.values())
    clusters = tuple(sorted(counts.items(), key=lambda kv: -kv[1]))  # stable: first-seen order on ties
    if n == 0:
        return DiscreteSemanticEntropy(k, 0, k, (), None, None, "no sample has a judged meaning" if k else "no samples")
    p = np.array([c for _, c in clusters], dtype=float) / n
    entropy = float(-(p * np.log(p)).sum())
    return DiscreteSemanticEntropy(k, n, k - n, clusters, entropy, math.exp(-entropy))


def p_true(logprob_true: float, logprob_false: float) -> float:
    """``P(True)`` among {True, False}: ``1 / (1 + exp(l_F - l_T))`` (computed stably)."""
    lt, lf = _logprob(logprob_true, "log P(True)"), _logprob(logprob_false, "log P(False)")
    if lt == -math.inf and lf == -math.inf:
        raise ValueError("both 'True' and 'False' have probability 0")
    d = lf - lt
    return 1.0 / (1.0 + math.exp(d)) if d < 700 else 0.0


# A reply that *is* a number from 0 to 100: optional sign-free integer or decimal, optional "%",
# optional final full stop, surrounding whitespace. "85", "85%", " 85.5 % ", "100." pass;
# "about 85", "85/100", "8 5", "0x55", "-5", "101" do not.
_VERBALIZED = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*\.?\s*$")


def parse_verbalized_confidence(text: str | None) -> float | None:
    """A verbalised confidence reply as a probability (``value / 100``), or ``None`` (missing) when
    the reply is not exactly a number in [0, 100] (see the pattern above)."""
    if not isinstance(text, str):
        return None
    m = _VERBALIZED.match(text)
    if not m:
        return None
    value = float(m.group(1))
    return value / 100.0 if 0.0 <= value <= 100.0 else None


def aurc_chance_pvalue(confidence: Sequence[float], correct: Sequence[bool], observed_aurc: float, *,
                       n_permutations: int = 1000, seed: int = 0) -> float | None:
    """One-sided permutation p-value of "this score ranks answers no better than chance".

    Under the null the score carries no information, so every order of the items is equally
    likely: ``p = (1 + #{permutations with AURC <= observed}) / (1 + n_permutations)`` with the
    AURC of a uniformly random order, ``(1/N) sum_k errors_among_first_k / k``. Small p: the
    score ranks better than chance. ``None`` for no items or when all answers are right or all
    wrong (every order has the same AURC). Seeded, vectorised.
    """
    ok = np.asarray(correct, dtype=bool)
    n = len(ok)
    if len(confidence) != n:
        raise ValueError(f"{len(confidence)} confidences but {n} correctness values")
    if n == 0 or ok.all() or not ok.any():
        return None
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_permutations, n)), axis=1)
    wrong = (~ok)[order].astype(float)
    aurcs = (np.cumsum(wrong, axis=1) / np.arange(1, n + 1)).mean(axis=1)
    return float((1 + np.sum(aurcs <= observed_aurc + 1e-12)) / (1 + n_permutations))
