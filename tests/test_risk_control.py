"""Learn-then-Test risk control (core.risk_control): hand-worked cases and the guarantee by simulation."""
from __future__ import annotations

import numpy as np
import pytest

from reliable_lalm.core import risk_control as rc


def test_binomial_tail_pvalue_by_hand():
    # The p-value of H: risk > alpha with k wrong among n answered is P(Binomial(n, alpha) <= k) = T[n, k].
    assert rc.binomial_cdf_table(10, 0.2)[10, 0] == pytest.approx(0.8 ** 10)
    assert rc.binomial_cdf_table(3, 0.5)[3, 1] == pytest.approx(0.5)  # (1 + 3) / 8
    assert rc.binomial_cdf_table(10, 0.5)[10, 4] == pytest.approx(386 / 1024)  # sum C(10, k), k <= 4
    assert rc.binomial_cdf_table(3, 0.3)[3, 3] == pytest.approx(1.0)
    assert rc.binomial_cdf_table(0, 0.3)[0, 0] == 1.0
    assert rc.binomial_cdf_table(3, 0.3)[2, 3] == 1.0  # k > n
    with pytest.raises(ValueError):
        rc.binomial_cdf_table(3, 1.0)


def _calibration():
    # 6 items at confidence 0.95, all correct; 4 at 0.6, all wrong
    return [0.95] * 6 + [0.6] * 4, [True] * 6 + [False] * 4


def test_ltt_threshold_by_hand():
    conf, ok = _calibration()
    # grid {0.9, 0.5}: at 0.9, 6 answered, 0 wrong: p = 0.5^6 = 0.0156 <= 0.1 / 2; at 0.5, 10 answered,
    # 4 wrong: p = 386/1024 = 0.377 > 0.05. Bonferroni selects 0.9.
    got = rc.ltt_threshold(conf, ok, alpha=0.5, delta=0.1, thresholds=[0.5, 0.9])
    assert got.threshold == 0.9 and got.n_hypotheses == 2
    assert (got.calibration_answered, got.calibration_wrong, got.calibration_coverage) == (6, 0, 0.6)
    assert got.p_value == pytest.approx(0.5 ** 6)
    # fixed sequence (level 0.1, from 0.9 down): 0.9 rejected, 0.5 not: the same threshold
    assert rc.ltt_threshold(conf, ok, alpha=0.5, delta=0.1, thresholds=[0.5, 0.9],
                            procedure="fixed-sequence").threshold == 0.9
    # at alpha = 0.01 nothing passes: answer nothing
    none = rc.ltt_threshold(conf, ok, alpha=0.01, delta=0.1, thresholds=[0.5, 0.9])
    assert none.threshold is None and none.calibration_coverage == 0.0
    assert rc.selective_risk(conf, ok, none.threshold) == {"n": 10, "n_answered": 0, "n_wrong": 0,
                                                             "coverage": 0.0, "risk": None}


def test_fixed_sequence_stops_at_an_empty_top_threshold():
    conf, ok = _calibration()
    # grid {0.99, 0.9}: nothing is answered at 0.99 (p = 1): the fixed sequence stops there,
    # Bonferroni (0.05 each) still rejects at 0.9
    assert rc.ltt_threshold(conf, ok, alpha=0.5, delta=0.1, thresholds=[0.9, 0.99],
                            procedure="fixed-sequence").threshold is None
    assert rc.ltt_threshold(conf, ok, alpha=0.5, delta=0.1, thresholds=[0.9, 0.99]).threshold == 0.9


def test_selective_risk():
    conf, ok = _calibration()
    assert rc.selective_risk(conf, ok, 0.5) == {"n": 10, "n_answered": 10, "n_wrong": 4, "coverage": 1.0, "risk": 0.4}


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="alpha and delta"):
        rc.ltt_threshold([0.5], [True], alpha=0.0, delta=0.1)
    with pytest.raises(ValueError, match="procedure"):
        rc.ltt_threshold([0.5], [True], alpha=0.1, delta=0.1, procedure="holm")


# ------------------------------------------------------------------------ simulation of the guarantee
LEVELS = (np.arange(20) + 0.5) / 20  # confidences 0.025 ... 0.975, equally likely
P_CORRECT = LEVELS  # a calibrated score: P(correct | confidence s) = s


def _true_risk(threshold_index: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Population selective risk at each selected grid threshold (0 when answering nothing)."""
    risk = np.array([np.mean(1 - P_CORRECT[LEVELS >= g]) if np.any(LEVELS >= g) else 0.0 for g in grid])
    return np.where(threshold_index >= 0, risk[np.maximum(threshold_index, 0)], 0.0)


def _simulate(n_sets: int, n: int, alpha: float, delta: float, procedure: str, grid=rc.DEFAULT_GRID, seed: int = 0):
    """Selected threshold of ``n_sets`` random calibration sets of ``n`` items (vectorised)."""
    rng = np.random.default_rng(seed)
    grid = np.unique(np.asarray(grid, dtype=float))[::-1]
    level = rng.integers(0, len(LEVELS), size=(n_sets, n))
    wrong = rng.random((n_sets, n)) >= P_CORRECT[level]
    rows = np.arange(n_sets)[:, None] * len(LEVELS)
    per_level = np.bincount((rows + level).ravel(), minlength=n_sets * len(LEVELS)).reshape(n_sets, -1)
    wrong_per_level = np.bincount((rows + level).ravel(), weights=wrong.ravel(),
                                  minlength=n_sets * len(LEVELS)).reshape(n_sets, -1)
    # answered at grid threshold g: every level >= g (suffix sums over levels)
    first = np.searchsorted(LEVELS, grid, side="left")  # first level index >= g
    suffix = np.concatenate([np.cumsum(per_level[:, ::-1], axis=1)[:, ::-1], np.zeros((n_sets, 1))], axis=1)
    suffix_w = np.concatenate([np.cumsum(wrong_per_level[:, ::-1], axis=1)[:, ::-1], np.zeros((n_sets, 1))], axis=1)
    n_answered, n_wrong = suffix[:, first].astype(int), suffix_w[:, first].astype(int)
    index = rc.ltt_select(n_answered, n_wrong, alpha, delta, procedure, rc.binomial_cdf_table(n, alpha))
    # the naive plug-in rule: the lowest threshold whose calibration risk is <= alpha
    ok = (n_answered > 0) & (n_wrong <= alpha * n_answered)
    naive = np.where(ok.any(axis=1), len(grid) - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
    return _true_risk(index, grid), _true_risk(naive, grid), index


GRID_FROM_090 = tuple(round(0.9 - i / 100, 2) for i in range(41))  # 0.90, 0.89, ..., 0.50


@pytest.mark.parametrize("procedure, grid", [("bonferroni", rc.DEFAULT_GRID), ("fixed-sequence", GRID_FROM_090)])
def test_guarantee_holds_by_simulation(procedure, grid):
    n_sets, alpha, delta = 4000, 0.2, 0.1
    slack = 3 * np.sqrt(delta * (1 - delta) / n_sets)
    for n in (400, 1000):
        risk, naive_risk, index = _simulate(n_sets, n, alpha, delta, procedure, grid)
        assert float(np.mean(risk > alpha + 1e-12)) <= delta + slack, (procedure, n)
    # the guarantee is not bought by answering nothing
    assert np.mean(index >= 0) > 0.9
    # the check can fail: the threshold chosen by the calibration risk alone violates it far more
    # often with 400 calibration items
    _, naive_risk, _ = _simulate(n_sets, 400, alpha, delta, procedure, grid)
    assert float(np.mean(naive_risk > alpha + 1e-12)) > 2 * delta


def test_guarantee_is_nearly_tight_for_one_hypothesis():
    # one threshold, 0.5, whose true selective risk is 0.25 (levels 0.525 ... 0.975): for alpha = 0.249
    # the null hypothesis is true and every rejection is a violation; the binomial test rejects it
    # with probability just under delta, so the simulated rate must land near delta, not far below it
    n_sets, alpha, delta = 4000, 0.249, 0.1
    risk, _, index = _simulate(n_sets, 1000, alpha, delta, "bonferroni", grid=(0.5,))
    rate = float(np.mean(risk > alpha))
    slack = 3 * np.sqrt(delta * (1 - delta) / n_sets)
    assert rate == float(np.mean(index >= 0))
    assert delta / 2 < rate <= delta + slack


def test_core_modules_import_without_torch_or_matplotlib():
    import subprocess
    import sys

    code = ("import sys, reliable_lalm.core.risk_control, reliable_lalm.core.uncertainty, "
            "reliable_lalm.benchmarks.audio_controls; print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
