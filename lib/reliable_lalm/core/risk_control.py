"""Abstention with a finite-sample guarantee: Learn-then-Test with a binomial tail bound.

Beyond the paper. A threshold chosen on the test set promises nothing. Given a confidence score,
a *calibration* set of answered items (correct or wrong) and a risk level ``alpha`` with error
rate ``delta``, :func:`ltt_threshold` returns a threshold ``lambda`` such that, over the draw of an
i.i.d. (exchangeable) calibration set,

    P( R(lambda) > alpha ) <= delta,   R(lambda) = P(wrong | answered, confidence >= lambda),

the *selective risk* on new items from the same distribution ("at most alpha wrong among the
answered questions, with probability 1 - delta").

Method: **Learn-then-Test** (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test:
Calibrating Predictive Algorithms to Achieve Risk Control", arXiv 2110.01052). For each
threshold ``lambda`` of a grid fixed before seeing data, the null hypothesis
``H_lambda: R(lambda) > alpha`` is tested with the **binomial tail p-value** (Bates et al.,
"Distribution-free, risk-controlling prediction sets", JACM 2021, arXiv 2101.02703; the exact
binomial test): conditional on the ``n`` calibration items answered at ``lambda``, their
number of errors ``k`` is Binomial(n, R(lambda)), so ``p = P(Binomial(n, alpha) <= k)`` is a
valid p-value under ``H_lambda`` (``n = 0`` gives ``p = 1``). The family-wise error rate is
controlled by

* ``"bonferroni"`` (default): reject every ``H_lambda`` with ``p <= delta / m`` over the ``m``
  grid points; any rejected threshold is valid, and the smallest one (largest coverage) is
  returned. Robust: a single threshold with few answered items cannot stop the search.
* ``"fixed-sequence"``: test from the highest threshold down at level ``delta`` and stop at the
  first failure; return the last rejected threshold. More powerful when the top of the grid
  already answers enough items, powerless when it does not (few items answered at the top
  give p-values above ``delta`` and end the sequence at once).

When no hypothesis is rejected the guarantee is kept by answering nothing (``threshold`` is
``None``, coverage 0). The guarantee is checked by simulation in the tests (over many random
calibration sets the violation rate stays below ``delta``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from reliable_lalm.core.abstention import _paired

PROCEDURES: tuple[str, ...] = ("bonferroni", "fixed-sequence")
DEFAULT_GRID: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(21))  # 0.00, 0.05, ..., 1.00


def binomial_cdf_table(n_max: int, p: float) -> np.ndarray:
    """``T[n, k] = P(Binomial(n, p) <= k)`` for ``0 <= k <= n <= n_max`` (``T[n, k] = 1`` for k > n).

    Computed in log space (log-sum-exp along k), so tails far below 1e-300 stay exact enough to
    compare with any practical delta.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if n_max < 0:
        raise ValueError("n_max must be >= 0")
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n_max + 1)))])
    n = np.arange(n_max + 1)[:, None]
    k = np.arange(n_max + 1)[None, :]
    with np.errstate(invalid="ignore"):
        log_pmf = log_fact[n] - log_fact[k] - log_fact[np.maximum(n - k, 0)] + k * math.log(p) + (n - k) * math.log1p(-p)
    log_pmf = np.where(k <= n, log_pmf, -np.inf)
    cdf = np.exp(np.logaddexp.accumulate(log_pmf, axis=1))
    return np.where(k <= n, np.minimum(cdf, 1.0), 1.0)


def _grid(thresholds: Sequence[float] | None) -> np.ndarray:
    grid = np.asarray(DEFAULT_GRID if thresholds is None else thresholds, dtype=float)
    if grid.ndim != 1 or not len(grid) or np.any(np.isnan(grid)):
        raise ValueError("thresholds must be a non-empty list of numbers")
    return np.unique(grid)[::-1]  # highest first: the most conservative threshold first


def _check_levels(alpha: float, delta: float, procedure: str) -> None:
    if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"alpha and delta must lie in (0, 1), got alpha={alpha}, delta={delta}")
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, not {procedure!r}")


def ltt_select(n_answered: np.ndarray, n_wrong: np.ndarray, alpha: float, delta: float,
               procedure: str = "bonferroni", table: np.ndarray | None = None) -> np.ndarray:
    """Learn-then-Test on counts, vectorised over calibration sets.

    ``n_answered``, ``n_wrong``: arrays ``(..., m)`` of counts per grid threshold, highest
    threshold first. Returns per calibration set the index of the selected threshold, or ``-1``
    when no hypothesis is rejected (answer nothing). ``table``: :func:`binomial_cdf_table` for
    ``alpha`` up to the largest count (computed when not given).
    """
    _check_levels(alpha, delta, procedure)
    n_answered, n_wrong = np.asarray(n_answered, dtype=np.int64), np.asarray(n_wrong, dtype=np.int64)
    if table is None:
        table = binomial_cdf_table(int(n_answered.max(initial=0)), alpha)
    pvalues = np.where(n_answered > 0, table[n_answered, np.minimum(n_wrong, n_answered)], 1.0)
    m = n_answered.shape[-1]
    if procedure == "bonferroni":
        rejected = pvalues <= delta / m
        last = m - 1 - np.argmax(rejected[..., ::-1], axis=-1)  # the lowest rejected threshold
        return np.where(rejected.any(axis=-1), last, -1)
    failed = pvalues > delta
    first_fail = np.where(failed.any(axis=-1), np.argmax(failed, axis=-1), m)
    return first_fail - 1  # the last threshold before the first failure (-1: none rejected)


@dataclass(frozen=True)
class RiskControlledThreshold:
    """A threshold chosen by Learn-then-Test on a calibration set (module docstring).

    ``threshold``: answer an item iff its confidence ``>= threshold``; ``None`` = answer nothing
    (no threshold passed the test). ``calibration_*``: what that threshold does on the
    calibration items; ``p_value`` its binomial tail p-value; ``n_hypotheses`` the grid size.
    """

    alpha: float
    delta: float
    procedure: str
    n_hypotheses: int
    n_calibration: int
    threshold: float | None
    calibration_answered: int
    calibration_wrong: int
    calibration_coverage: float | None
    calibration_risk: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts_at(conf: np.ndarray, ok: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    answered = conf[None, :] >= grid[:, None]
    return answered.sum(axis=1), (answered & ~ok[None, :]).sum(axis=1)


def ltt_threshold(confidence: Iterable[float], correct: Iterable[Any], *, alpha: float, delta: float,
                  thresholds: Sequence[float] | None = None, procedure: str = "bonferroni") -> RiskControlledThreshold:
    """The Learn-then-Test threshold of ``confidence`` on calibration items (module docstring).

    ``correct``: per answered calibration item a bool (or ``"correct"``/``"wrong"``).
    ``thresholds``: the grid, fixed before seeing the data (default: 0.00, 0.05, ..., 1.00, for
    confidences in [0, 1]; a finer grid costs power under Bonferroni, delta / m per threshold).
    """
    _check_levels(alpha, delta, procedure)
    conf, ok = _paired(confidence, correct)
    grid = _grid(thresholds)
    n_ans, n_wr = _counts_at(conf, ok, grid)
    table = binomial_cdf_table(len(conf), alpha)
    i = int(ltt_select(n_ans, n_wr, alpha, delta, procedure, table))
    n = len(conf)
    if i < 0:
        return RiskControlledThreshold(alpha, delta, procedure, len(grid), n, None, 0, 0, 0.0 if n else None, None, None)
    a, w = int(n_ans[i]), int(n_wr[i])
    return RiskControlledThreshold(alpha, delta, procedure, len(grid), n, float(grid[i]), a, w, a / n if n else None,
                                   w / a if a else None, float(table[a, w]))


def selective_risk(confidence: Iterable[float], correct: Iterable[Any], threshold: float | None) -> dict[str, Any]:
    """Coverage and selective risk of answering where ``confidence >= threshold`` (``None``: nothing).

    ``risk`` is ``None`` when nothing is answered (no answered item can be wrong).
    """
    conf, ok = _paired(confidence, correct)
    answered = np.zeros(len(conf), bool) if threshold is None else conf >= threshold
    a, w = int(answered.sum()), int((answered & ~ok).sum())
    return {"n": len(conf), "n_answered": a, "n_wrong": w, "coverage": a / len(conf) if len(conf) else None,
            "risk": w / a if a else None}
