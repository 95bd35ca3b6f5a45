"""Abstention from the model's own confidence: risk–coverage, AURC, calibration, confidence targets.

Beyond the paper. The paper measures reliability only through what the model *says*
(IDK or an option). This module measures abstention from a *confidence score* per item and makes
the two comparable:

* **Risk–coverage.** Items are answered in order of decreasing confidence; after the first ``k``
  of ``N`` the coverage is ``k / N`` and the selective risk is ``wrong among them / k``.
  Tied confidences cannot be ordered by any threshold, so a *tie group enters together*: the
  curve has one point per distinct confidence value. Quantities defined per ``k`` inside a tie
  group (AURC, accuracy at a coverage) use the *expected* number of errors among the first ``j``
  of the group's ``n_g`` items under a uniformly random order of the group, ``j * e_g / n_g``
  (``e_g``: wrong items in the group). Results therefore never depend on the input order.
* **AURC** (Geifman et al., 2018, "Bias-reduced uncertainty estimation for deep neural
  classifiers"): ``AURC = (1/N) * sum_{k=1..N} risk(k)``, the mean selective risk over the N
  coverage points ``k/N`` (with the tie rule above, this is the expectation of the usual AURC over
  random tie-breaking). The *oracle* ranks every correct item first:
  ``risk*(k) = max(0, k - (N - E)) / k`` with ``E`` wrong items; ``E-AURC = AURC - AURC*`` (0 for
  a perfect ranking). Both are exact discrete sums, not the continuous ``r + (1-r) ln(1-r)``.
* **Abstention by threshold** turns a confidence into the paper's outcomes: an answered item
  keeps ``"correct"`` / ``"wrong"``, an item under the threshold becomes ``"rejected"``; an item
  the model itself refused stays ``"rejected"``. :func:`threshold_for_rejection_rate` picks the
  threshold that reproduces another method's rejection rate, so "IDK prompting" and "threshold
  on confidence" are compared at equal coverage with :func:`reliable_lalm.core.metrics.summarize`
  (Acc/Tru/Rej/Rel, transitions, ΔCon/ΔHum/RGI against the baseline).
* **Calibration**: ECE with stated binning, Brier score, reliability-diagram data and figure.
* **Confidence-target scoring** (text-LLM practice): answer only if confidence > t; a correct
  answer scores +1, a wrong one ``-t/(1-t)``, an abstention 0. Under this rule answering pays off
  exactly when P(correct) > t, so a calibrated model maximizes its score by abstaining below t.
* **Confidence estimators** from what a backend offers: softmax over per-option
  log-likelihoods, the probability of an IDK continuation, agreement among K@N samples, and the
  normalized entropy of the sampled answers.

Conventions follow :mod:`reliable_lalm.core.metrics`: outcome names ``"correct"``, ``"rejected"``,
``"wrong"``; an undefined value (empty item set, 0/0) is ``None`` with a reason string, never an
exception. Bad *input* (confidence outside [0, 1] where a probability is required, NaN for an
answered item, mismatched lengths) raises ``ValueError``. numpy and pandas; the figures are drawn
by :mod:`reliable_lalm.reporting.abstention`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from reliable_lalm.core.metrics import CORRECT, REJECTED, WRONG, Counts, outcome_codes, summarize
from reliable_lalm.core.normalize import normalize_answer
from reliable_lalm.core.normalize_types import IDK_LABEL, Normalized

CONFIDENCE_TARGETS: tuple[float, ...] = (0.5, 0.75, 0.9)
DEFAULT_COVERAGES: tuple[float, ...] = (0.5, 0.8, 0.9)
BINNINGS: tuple[str, ...] = ("equal-width", "equal-mass")
TIE_BREAKS: tuple[str, ...] = ("none", "index")


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------

def _confidence_array(confidence: Iterable[float], *, probability: bool = False) -> np.ndarray:
    conf = np.asarray(list(confidence) if not isinstance(confidence, np.ndarray) else confidence, dtype=float)
    if conf.ndim != 1:
        raise ValueError(f"confidence must be one value per item, got shape {conf.shape}")
    if np.any(np.isnan(conf)):
        raise ValueError("confidence contains NaN")
    if probability and conf.size and (conf.min() < 0.0 or conf.max() > 1.0):
        raise ValueError(f"confidence must lie in [0, 1] here, got min {conf.min()} and max {conf.max()}")
    return conf


def _correct_array(correct: Iterable[Any]) -> np.ndarray:
    """Booleans (or 0/1) or outcome names ``correct``/``wrong``; a refusal has no answer to rank."""
    values = list(correct) if not isinstance(correct, np.ndarray) else correct.tolist()
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, str):
            if v == REJECTED:
                raise ValueError(
                    "item {i} is 'rejected': risk-coverage and calibration rank *answers*, and the model gave "
                    "none for this item; leave refused items out (coverage is then relative to the answered "
                    "items) or use abstain_by_threshold, which keeps them rejected".format(i=i))
            if v not in (CORRECT, WRONG):
                raise ValueError(f"unknown outcome {v!r} at item {i}; expected 'correct' or 'wrong'")
            out[i] = v == CORRECT
        elif isinstance(v, (bool, np.bool_)) or v in (0, 1):
            out[i] = bool(v)
        else:
            raise ValueError(f"correctness must be a bool, 0/1 or 'correct'/'wrong', got {v!r} at item {i}")
    return out


def _paired(confidence: Iterable[float], correct: Iterable[Any], *, probability: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    conf, ok = _confidence_array(confidence, probability=probability), _correct_array(correct)
    if len(conf) != len(ok):
        raise ValueError(f"{len(conf)} confidences but {len(ok)} correctness values")
    return conf, ok


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ------------------------------------------------------------------------------------------------
# Risk–coverage and AURC
# ------------------------------------------------------------------------------------------------

def _tie_groups(conf: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct confidences in decreasing order, with each group's size and number of wrong items."""
    values, inverse, sizes = np.unique(conf, return_inverse=True, return_counts=True)
    wrong = np.bincount(inverse, weights=(~ok).astype(float), minlength=len(values))
    return values[::-1], sizes[::-1].astype(np.int64), wrong[::-1].astype(np.int64)


def _expected_errors_per_k(sizes: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Expected wrong items among the first k = 1..N (ties: ``j * e_g / n_g`` inside group g)."""
    before = np.concatenate([[0], np.cumsum(wrong)[:-1]]).astype(float)
    group = np.repeat(np.arange(len(sizes)), sizes)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    j = np.arange(1, int(sizes.sum()) + 1) - start[group]  # position inside the group, 1-based
    return before[group] + j * wrong[group] / sizes[group]


def oracle_aurc(n: int, n_wrong: int) -> float | None:
    """AURC of the ranking that answers every correct item first: ``(1/N) sum max(0, k-(N-E))/k``."""
    if n <= 0:
        return None
    if not 0 <= n_wrong <= n:
        raise ValueError(f"n_wrong={n_wrong} outside [0, {n}]")
    k = np.arange(1, n + 1, dtype=float)
    return float(np.mean(np.maximum(0.0, k - (n - n_wrong)) / k))


@dataclass(frozen=True)
class RiskCoverage:
    """A risk–coverage curve (one point per distinct confidence, highest first) and its areas.

    At point ``i`` every item with confidence ``>= threshold[i]`` is answered: ``n_answered[i]``
    items, ``n_wrong[i]`` of them wrong, coverage ``n_answered / n``, selective risk
    ``n_wrong / n_answered`` and the paper's ``Rel`` of that policy (answered items keep correct /
    wrong, the others are rejected; eq. 5). ``aurc``/``oracle_aurc``/``e_aurc`` are defined in
    the module docstring; ``None`` with ``reason`` for an empty item set.
    """

    n: int
    threshold: tuple[float, ...]
    n_answered: tuple[int, ...]
    n_wrong: tuple[int, ...]
    coverage: tuple[float, ...]
    risk: tuple[float, ...]
    reliability: tuple[float, ...]
    aurc: float | None
    oracle_aurc: float | None
    e_aurc: float | None
    reason: str | None = None

    def to_frame(self):
        return pd.DataFrame({"threshold": self.threshold, "n_answered": self.n_answered, "n_wrong": self.n_wrong,
                             "coverage": self.coverage, "risk": self.risk, "accuracy": [1 - r for r in self.risk],
                             "rel": self.reliability})

    def summary(self) -> dict[str, Any]:
        out = {"n": self.n, "aurc": self.aurc, "oracle_aurc": self.oracle_aurc, "e_aurc": self.e_aurc}
        if self.reason:
            out["reason"] = self.reason
        return out


def risk_coverage(confidence: Iterable[float], correct: Iterable[Any]) -> RiskCoverage:
    """Risk–coverage curve, AURC, oracle AURC and E-AURC of ranking answers by ``confidence``.

    ``correct``: per item a bool (or 0/1, or the outcome names ``"correct"``/``"wrong"``);
    ``"rejected"`` is an error (see :func:`_correct_array`). Higher confidence = answered first.
    Any real-valued score works (it need not be a probability).
    """
    conf, ok = _paired(confidence, correct)
    n = len(conf)
    if n == 0:
        return RiskCoverage(0, (), (), (), (), (), (), None, None, None, "no items")
    values, sizes, wrong = _tie_groups(conf, ok)
    n_ans, n_wr = np.cumsum(sizes), np.cumsum(wrong)
    n_cor = n_ans - n_wr
    rel = [Counts(int(c), n - int(a), int(w)).rel for c, a, w in zip(n_cor, n_ans, n_wr)]
    errors = _expected_errors_per_k(sizes, wrong)
    aurc = float(np.mean(errors / np.arange(1, n + 1)))
    oracle = oracle_aurc(n, int((~ok).sum()))
    return RiskCoverage(n=n, threshold=tuple(float(v) for v in values), n_answered=tuple(int(a) for a in n_ans),
                        n_wrong=tuple(int(w) for w in n_wr), coverage=tuple(float(a / n) for a in n_ans),
                        risk=tuple(float(w / a) for w, a in zip(n_wr, n_ans)), reliability=tuple(rel),
                        aurc=aurc, oracle_aurc=oracle, e_aurc=aurc - oracle)


def aurc(confidence: Iterable[float], correct: Iterable[Any]) -> float | None:
    """``(1/N) sum_k risk(k)`` (module docstring); ``None`` for no items."""
    return risk_coverage(confidence, correct).aurc


def accuracy_at_coverage(confidence: Iterable[float], correct: Iterable[Any],
                         coverages: Sequence[float] = DEFAULT_COVERAGES) -> dict[float, dict[str, Any]]:
    """Selective accuracy when the ``m = ceil(c * N)`` most confident items are answered.

    For each target coverage ``c`` in (0, 1]: ``n_answered = m`` (so the achieved coverage
    ``m / N`` is the smallest one ``>= c``), ``accuracy = 1 - E(m) / m`` with ``E(m)`` the
    expected errors among the first ``m`` (a tie group straddling the cut contributes
    proportionally, see the module docstring), ``risk = 1 - accuracy`` and ``rel``, the paper's
    Rel when the other ``N - m`` items are rejected (expected value under the same tie rule).
    Empty item set: values ``None`` with ``reason``.
    """
    conf, ok = _paired(confidence, correct)
    n = len(conf)
    errors = None
    if n:
        _, sizes, wrong = _tie_groups(conf, ok)
        errors = _expected_errors_per_k(sizes, wrong)
    out: dict[float, dict[str, Any]] = {}
    for c in coverages:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        if n == 0:
            out[c] = {"coverage": c, "n": 0, "n_answered": 0, "achieved_coverage": None, "accuracy": None,
                      "risk": None, "rel": None, "reason": "no items"}
            continue
        m = max(1, math.ceil(c * n - 1e-9))  # 1e-9: 0.7 * 10 is 7.000000000000001 in floating point
        e = float(errors[m - 1])
        nc, nw, nr = (m - e) / n, e / n, (n - m) / n
        out[c] = {"coverage": c, "n": n, "n_answered": m, "achieved_coverage": m / n, "accuracy": 1 - e / m,
                  "risk": e / m, "rel": nr * nc + (1 - nr) * (1 - nw)}
    return out


# ------------------------------------------------------------------------------------------------
# Abstention by threshold -> the paper's outcomes
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Abstention:
    """Outcomes after abstaining below a confidence threshold, ready for :mod:`reliable_lalm.core.metrics`.

    ``outcomes[i]`` is the base outcome, or ``"rejected"`` where the threshold rejected item i.
    ``answered_if`` is ``"confidence >= threshold"`` (default) or ``"confidence > threshold"``
    (``strict``). ``n_rejected`` counts every rejected item, ``n_rejected_by_threshold`` only the
    ones the threshold turned into refusals (not the model's own). ``invalid`` (when the base run
    had invalid flags) keeps an item invalid only while it is still ``"wrong"``. ``ties_split``:
    items with the same confidence were treated differently (``tie_break="index"`` only).
    """

    threshold: float
    strict: bool
    outcomes: tuple[str, ...]
    invalid: tuple[bool, ...] | None
    n: int
    n_rejected: int
    n_rejected_by_threshold: int
    rejection_rate: float | None
    target_rejection_rate: float | None = None
    tie_break: str | None = None
    ties_split: bool = False

    @property
    def answered_if(self) -> str:
        return "confidence > threshold" if self.strict else "confidence >= threshold"

    def counts(self) -> Counts:
        return Counts.from_outcomes(self.outcomes, self.invalid)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("outcomes", "invalid")}
        out["answered_if"] = self.answered_if
        return out


def _base(confidence: Iterable[float], outcomes: Sequence[str], invalid: Sequence[bool] | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Confidence (NaN allowed only where the model refused), outcome codes and invalid flags."""
    conf = np.asarray(list(confidence) if not isinstance(confidence, np.ndarray) else confidence, dtype=float)
    codes = outcome_codes(outcomes)
    if conf.ndim != 1 or len(conf) != len(codes):
        raise ValueError(f"{conf.size} confidences but {len(codes)} outcomes")
    answered = codes != 1
    if np.any(np.isnan(conf) & answered):
        raise ValueError("confidence is NaN for an answered item (only items the model refused may lack one)")
    inv = None
    if invalid is not None:
        inv = np.asarray(list(invalid), dtype=bool)
        if len(inv) != len(codes):
            raise ValueError(f"{len(codes)} outcomes but {len(inv)} invalid flags")
        if np.any(inv & (codes != 2)):
            raise ValueError("an invalid item must have the outcome 'wrong'")
    return conf, codes, inv


def _abstention(codes: np.ndarray, reject: np.ndarray, inv: np.ndarray | None, threshold: float, strict: bool,
                target: float | None = None, tie_break: str | None = None, ties_split: bool = False) -> Abstention:
    names = np.array([CORRECT, REJECTED, WRONG], dtype=object)
    new = np.where(reject, 1, codes)
    n = len(codes)
    n_rej = int((new == 1).sum())
    return Abstention(threshold=float(threshold), strict=strict, outcomes=tuple(names[new].tolist()),
                      invalid=None if inv is None else tuple(bool(x) for x in (inv & (new == 2))),
                      n=n, n_rejected=n_rej, n_rejected_by_threshold=int((reject & (codes != 1)).sum()),
                      rejection_rate=n_rej / n if n else None, target_rejection_rate=target,
                      tie_break=tie_break, ties_split=ties_split)


def abstain_by_threshold(confidence: Iterable[float], outcomes: Sequence[str], threshold: float, *,
                         strict: bool = False, invalid: Sequence[bool] | None = None) -> Abstention:
    """Reject every answered item whose confidence is below ``threshold`` (``<=`` with ``strict``).

    ``outcomes`` are the base run's outcomes (``"correct"``/``"rejected"``/``"wrong"``); items the
    model refused stay rejected and may have a NaN confidence.
    """
    conf, codes, inv = _base(confidence, outcomes, invalid)
    with np.errstate(invalid="ignore"):
        below = (conf <= threshold) if strict else (conf < threshold)
    reject = np.where(codes == 1, False, below)
    return _abstention(codes, reject, inv, threshold, strict)


def threshold_for_rejection_rate(confidence: Iterable[float], outcomes: Sequence[str], target_rate: float, *,
                                 tie_break: str = "none", invalid: Sequence[bool] | None = None) -> Abstention:
    """The confidence threshold whose abstention rejects (about) ``target_rate`` of the items.

    Used to compare a prompting / SFT method with "threshold on confidence" at the same rejection
    rate: pass the method's ``Rej`` as ``target_rate`` and the *baseline* run's confidences and
    outcomes. The model's own refusals (base outcome ``"rejected"``) count as rejected and can
    never be answered, so a target below their share cannot be reached.

    * ``tie_break="none"``: a threshold answers or rejects a whole tie group. Candidates are each
      distinct confidence ``v`` of an answered item (answer iff confidence >= v) and "reject all"
      (threshold +inf); the one whose rejected count is closest to ``target_rate * N`` wins, the
      one rejecting fewer items on an exact tie. The achieved rate is in ``rejection_rate``.
    * ``tie_break="index"``: exactly ``round_half_up(target_rate * N)`` items are rejected
      (at least the model's own refusals): lowest confidence first and, among equal
      confidences, the item *later in the input order* first. ``threshold`` is then the lowest
      confidence still answered (+inf if none); ``ties_split`` says whether a tie group was split.
    """
    if not 0.0 <= target_rate <= 1.0:
        raise ValueError(f"target_rate must be in [0, 1], got {target_rate}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, not {tie_break!r}")
    conf, codes, inv = _base(confidence, outcomes, invalid)
    n = len(codes)
    eff = np.where(codes == 1, -np.inf, conf)  # the model's own refusals are always rejected
    target_count = target_rate * n
    if tie_break == "none":
        candidates = [(float(v), int((eff < v).sum())) for v in np.unique(eff[np.isfinite(eff)])]
        candidates.append((math.inf, n))
        threshold, _ = min(candidates, key=lambda tc: (abs(tc[1] - target_count), tc[1]))
        reject = eff < threshold
        return _abstention(codes, reject, inv, threshold, False, target_rate, tie_break)
    n_pre = int((codes == 1).sum())
    k = min(n, max(n_pre, _round_half_up(target_count)))
    order = np.lexsort((-np.arange(n), eff))  # ascending confidence; later index first among ties
    reject = np.zeros(n, dtype=bool)
    reject[order[:k]] = True
    answered = ~reject
    threshold = float(eff[answered].min()) if answered.any() else math.inf
    ties_split = bool(np.any(reject & (eff == threshold)))
    return _abstention(codes, reject, inv, threshold, False, target_rate, tie_break, ties_split)


def compare_at_equal_rejection(confidence: Iterable[float], baseline_outcomes: Sequence[str],
                               method_outcomes: Sequence[str], tasks: Sequence[str], *,
                               tie_break: str = "index", baseline_invalid: Sequence[bool] | None = None,
                               method_invalid: Sequence[bool] | None = None, n_boot: int = 0, seed: int = 0
                               ) -> dict[str, Any]:
    """A method (e.g. IDK prompting) against "threshold on the baseline's confidence" at its Rej.

    The threshold is matched to the method's *total* rejection rate (all tasks together, one
    threshold), then both outcome lists are summarized with :func:`reliable_lalm.core.metrics.summarize`
    against the baseline outcomes (transitions, ΔCon, ΔHum, RGI in both conventions). Returns
    ``{"threshold": Abstention.to_dict(), "method": summary, "confidence_threshold": summary}``.
    """
    method_codes = outcome_codes(method_outcomes)
    if len(method_codes) != len(outcome_codes(baseline_outcomes)):
        raise ValueError("baseline and method outcomes differ in length")
    rate = float((method_codes == 1).mean()) if len(method_codes) else 0.0
    abst = threshold_for_rejection_rate(confidence, baseline_outcomes, rate, tie_break=tie_break,
                                        invalid=baseline_invalid)
    kw = dict(baseline=list(baseline_outcomes), n_boot=n_boot, seed=seed)
    return {"threshold": abst.to_dict(),
            "method": summarize(list(method_outcomes), tasks, invalid=method_invalid, **kw),
            "confidence_threshold": summarize(list(abst.outcomes), tasks, invalid=abst.invalid, **kw)}


# ------------------------------------------------------------------------------------------------
# Confidence-target scoring
# ------------------------------------------------------------------------------------------------

def wrong_answer_penalty(target: float) -> float:
    """``t / (1 - t)``: the cost of a wrong answer that makes answering worth it iff P(correct) > t."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"confidence target must be in (0, 1), got {target}")
    return target / (1.0 - target)


def confidence_target_score(outcomes: Sequence[str], target: float) -> dict[str, Any]:
    """Score of explicit decisions (e.g. IDK prompting): correct +1, wrong ``-t/(1-t)``, rejected 0.

    Returns ``total`` (sum over items), ``mean`` (``total / N``; ``None`` with ``reason`` for no
    items), the penalty and the counts.
    """
    counts = Counts.from_outcomes(outcomes)
    penalty = wrong_answer_penalty(target)
    total = counts.n_correct - penalty * counts.n_wrong
    out = {"target": target, "penalty": penalty, "n": counts.n, "n_correct": counts.n_correct,
           "n_rejected": counts.n_rejected, "n_wrong": counts.n_wrong, "total": total,
           "mean": total / counts.n if counts.n else None}
    if not counts.n:
        out["reason"] = "no items"
    return out


def confidence_target_score_thresholded(confidence: Iterable[float], outcomes: Sequence[str],
                                        target: float) -> dict[str, Any]:
    """The same score when the model answers only where its ``confidence > target`` (strict).

    The model's own refusals stay refusals (score 0).
    """
    abst = abstain_by_threshold(confidence, outcomes, target, strict=True)
    return confidence_target_score(abst.outcomes, target)


def confidence_target_table(outcomes: Sequence[str], confidence: Iterable[float] | None = None,
                            targets: Sequence[float] = CONFIDENCE_TARGETS) -> list[dict[str, Any]]:
    """Rows ``{target, decision, ...score}`` for each t: ``decision="explicit"`` (the outcomes as
    they are) and, with ``confidence``, ``decision="confidence > t"``."""
    conf = None if confidence is None else np.asarray(list(confidence), dtype=float)
    rows = []
    for t in targets:
        rows.append({"decision": "explicit", **confidence_target_score(outcomes, t)})
        if conf is not None:
            rows.append({"decision": "confidence > t", **confidence_target_score_thresholded(conf, outcomes, t)})
    return rows


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationBin:
    """One bin: ``low``/``high`` are the bin edges (equal-width) or its members' min/max (equal-mass);
    ``mean_confidence``, ``accuracy`` and ``gap = accuracy - mean_confidence`` are ``None`` when
    the bin is empty."""

    index: int
    low: float
    high: float
    count: int
    mean_confidence: float | None
    accuracy: float | None
    gap: float | None


@dataclass(frozen=True)
class Calibration:
    """ECE, maximum calibration error (MCE), Brier score and the bins of one set of items.

    ``ece = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|`` over non-empty bins;
    ``mce = max_b |accuracy_b - mean_confidence_b|``; ``brier = mean (confidence - correct)^2``.
    """

    n: int
    n_bins: int
    binning: str
    ece: float | None
    mce: float | None
    brier: float | None
    bins: tuple[CalibrationBin, ...]
    reason: str | None = None

    def to_frame(self):
        """Reliability-diagram data: one row per bin (count, mean confidence, accuracy, gap)."""
        return pd.DataFrame([asdict(b) for b in self.bins])

    def summary(self) -> dict[str, Any]:
        out = {"n": self.n, "n_bins": self.n_bins, "binning": self.binning, "ece": self.ece, "mce": self.mce,
               "brier": self.brier}
        if self.reason:
            out["reason"] = self.reason
        return out


def equal_width_bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``k`` (0-based) holds ``(k/B, (k+1)/B]``; the first bin is closed at 0: ``[0, 1/B]``.

    Edges are ``k / B`` computed in floating point, so 0.3 lands in (0.2, 0.3] with B = 10.
    """
    edges = np.arange(1, n_bins + 1) / n_bins
    return np.minimum(np.searchsorted(edges, confidence, side="left"), n_bins - 1)


def calibration(confidence: Iterable[float], correct: Iterable[Any], *, n_bins: int = 10,
                binning: str = "equal-width") -> Calibration:
    """Calibration of a confidence in [0, 1] against per-item correctness.

    ``binning="equal-width"``: bins ``(k/B, (k+1)/B]``, first bin ``[0, 1/B]``
    (:func:`equal_width_bin_index`); all B bins are listed, empty ones with ``count = 0``.
    ``binning="equal-mass"``: items sorted by confidence (stable: input order breaks ties) are
    cut into B contiguous groups whose sizes differ by at most one, the first ``N mod B`` one item
    larger (as ``numpy.array_split``); tied confidences may fall in two neighbouring bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, not {binning!r}")
    conf, ok = _paired(confidence, correct, probability=True)
    n = len(conf)
    if n == 0:
        return Calibration(0, n_bins, binning, None, None, None, (), "no items")
    if binning == "equal-width":
        index = equal_width_bin_index(conf, n_bins)
        members = [np.flatnonzero(index == b) for b in range(n_bins)]
        edges = [(b / n_bins, (b + 1) / n_bins) for b in range(n_bins)]
    else:
        members = np.array_split(np.argsort(conf, kind="stable"), n_bins)
        edges = [(float(conf[m].min()), float(conf[m].max())) if len(m) else (math.nan, math.nan) for m in members]
    bins, ece, mce = [], 0.0, 0.0
    for b, (idx, (low, high)) in enumerate(zip(members, edges)):
        if len(idx) == 0:
            bins.append(CalibrationBin(b, low, high, 0, None, None, None))
            continue
        mean_conf, acc = float(conf[idx].mean()), float(ok[idx].mean())
        gap = acc - mean_conf
        ece += len(idx) / n * abs(gap)
        mce = max(mce, abs(gap))
        bins.append(CalibrationBin(b, low, high, int(len(idx)), mean_conf, acc, gap))
    brier = float(np.mean((conf - ok.astype(float)) ** 2))
    return Calibration(n, n_bins, binning, float(ece), float(mce), brier, tuple(bins))


# ------------------------------------------------------------------------------------------------
# Confidence estimators
# ------------------------------------------------------------------------------------------------

def option_probabilities(log_likelihoods: Sequence[float], *, token_counts: Sequence[int] | None = None) -> np.ndarray:
    """Softmax over the options' log-likelihoods ``log P(option text | prompt)``.

    With ``token_counts`` each log-likelihood is first divided by its option's number of tokens
    (length normalization: the mean per-token log-probability), so long options are not
    penalized for their length. ``-inf`` (impossible option) gives probability 0; at least one
    value must be finite. Computed stably (max subtracted before ``exp``).
    """
    ll = np.asarray(log_likelihoods, dtype=float)
    if ll.ndim != 1 or len(ll) < 1:
        raise ValueError("need one log-likelihood per option")
    if np.any(np.isnan(ll)) or np.any(ll == np.inf):
        raise ValueError(f"log-likelihoods must be finite or -inf, got {ll.tolist()}")
    if token_counts is not None:
        lengths = np.asarray(token_counts, dtype=float)
        if lengths.shape != ll.shape or np.any(lengths <= 0):
            raise ValueError("token_counts must be one positive count per option")
        ll = ll / lengths
    if not np.any(np.isfinite(ll)):
        raise ValueError("every option has log-likelihood -inf")
    z = np.exp(ll - ll[np.isfinite(ll)].max())
    return z / z.sum()


def idk_probability(idk_log_likelihood: float, option_log_likelihoods: Sequence[float] | None = None) -> float:
    """Probability of the IDK continuation.

    Without ``option_log_likelihoods``: ``exp(log P(IDK | prompt))``, the model's own absolute
    probability of starting its answer with the refusal word. With them: the IDK continuation's
    share among the candidate continuations (the options and IDK),
    ``exp(l_idk) / (exp(l_idk) + sum_j exp(l_j))``. A confidence to threshold is ``1 - P(IDK)``.
    """
    if option_log_likelihoods is None:
        if not (math.isfinite(idk_log_likelihood) or idk_log_likelihood == -math.inf) or idk_log_likelihood > 0:
            raise ValueError(f"a log-probability must be <= 0, got {idk_log_likelihood}")
        return math.exp(idk_log_likelihood)
    p = option_probabilities([*option_log_likelihoods, idk_log_likelihood])
    return float(p[-1])


@dataclass(frozen=True)
class SampleAgreement:
    """What K sampled answers of one item say about the model's confidence.

    ``agreement`` (self-consistency) = share of the K samples equal to the modal option; the
    modal option is the most frequent *option* among the samples (an exact tie goes to the option
    listed first in ``choices``). Refusals (IDK) and invalid samples count in K but are never the
    mode: a model that refuses 3 of 5 times and answers "A" twice has agreement 2/5 in "A"; with
    no option sampled at all, ``modal_answer`` is ``None`` and ``agreement`` 0.

    ``entropy`` (natural log) is that of the samples' distribution over ``len(choices) + 1``
    categories: each option, plus one "no option" category holding refusals and invalid samples.
    ``normalized_entropy = entropy / log(len(choices) + 1)`` lies in [0, 1] (0: all samples
    agree; 1 only reachable when K >= len(choices) + 1 samples spread evenly);
    ``1 - normalized_entropy`` can serve as a confidence. ``None`` with ``reason`` when K = 0.
    """

    n_samples: int
    n_choice: int
    n_idk: int
    n_invalid: int
    modal_answer: str | None
    agreement: float | None
    entropy: float | None
    normalized_entropy: float | None
    reason: str | None = None

    @property
    def entropy_confidence(self) -> float | None:
        return None if self.normalized_entropy is None else 1.0 - self.normalized_entropy


def _sample_kind(sample: Normalized | str | None, choices: Sequence[str]) -> tuple[str, str | None]:
    if isinstance(sample, Normalized):
        if sample.kind == "choice":
            if sample.choice not in choices:
                raise ValueError(f"normalized choice {sample.choice!r} is not among {list(choices)}")
            return "choice", sample.choice
        return sample.kind, None
    if sample is None or (isinstance(sample, str) and not sample.strip()):
        return "invalid", None
    if isinstance(sample, str):
        text = sample.strip()
        if text in choices:
            return "choice", text
        if text == IDK_LABEL:
            return "idk", None
        raise ValueError(f"sample label {sample!r} is neither an option of {list(choices)} nor {IDK_LABEL!r}; "
                         "normalize raw outputs first (sample_agreement_from_outputs)")
    raise ValueError(f"a sample must be a Normalized, an option text, {IDK_LABEL!r} or None, not {sample!r}")


def sample_agreement(samples: Sequence[Normalized | str | None], choices: Sequence[str]) -> SampleAgreement:
    """Self-consistency and normalized entropy of K normalized samples of one item.

    A sample is a :class:`~reliable_lalm.core.normalize_types.Normalized`, or a label: an option text,
    ``"IDK"`` (a refusal), ``""``/``None`` (invalid).
    """
    choices = [str(c) for c in choices]
    if not choices:
        raise ValueError("an item needs at least one choice")
    kinds = [_sample_kind(s, choices) for s in samples]
    k = len(kinds)
    n_idk = sum(kind == "idk" for kind, _ in kinds)
    n_invalid = sum(kind == "invalid" for kind, _ in kinds)
    counts = Counter(c for kind, c in kinds if kind == "choice")
    n_choice = sum(counts.values())
    if k == 0:
        return SampleAgreement(0, 0, 0, 0, None, None, None, None, "no samples")
    modal = None
    if counts:
        best = max(counts.values())
        modal = next(c for c in choices if counts.get(c, 0) == best)
    freq = np.array([counts.get(c, 0) for c in choices] + [n_idk + n_invalid], dtype=float) / k
    nz = freq[freq > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return SampleAgreement(k, n_choice, n_idk, n_invalid, modal, counts.get(modal, 0) / k if modal else 0.0,
                           entropy, entropy / math.log(len(choices) + 1))


def sample_agreement_from_outputs(outputs: Sequence[str], choices: Sequence[str]) -> SampleAgreement:
    """:func:`sample_agreement` of raw model outputs, normalized with the rule-based normalizer."""
    return sample_agreement([normalize_answer(o, choices) for o in outputs], choices)
