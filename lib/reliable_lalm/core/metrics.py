"""Reliability metrics of the paper (section 4, equations 1-10) with bootstrap intervals.

Per item an answer is ``"correct"``, ``"rejected"`` (IDK) or ``"wrong"``. A normalization that
maps the output onto nothing (``kind == "invalid"``) is *wrong* (it is not a refusal and not the
answer) and is also counted in ``n_invalid`` so that unparseable outputs stay visible.

Equations 1-5 (fractions in [0, 1])::

    Acc = Nc / N      Tru = 1 - Nw / N      Rej = Nr / N      Rel = Rej * Acc + (1 - Rej) * Tru

Reliability gain (equations 6-10) compares a *baseline* run and a *method* run on the same items.
A baseline item that was correct (c) or wrong (w) moves to correct / rejected / wrong under the
method: ``Ncc, Ncr, Ncw, Nwc, Nwr, Nww``. The paper assumes the baseline never rejects (eq. 6,
``N = Nc + Nw``); when it does, those items are counted separately as ``Nrc, Nrr, Nrw``, reported,
and *excluded* from ``Nc``, ``Nw`` and from the subset size ``N = Nc + Nw`` used below.

Two conventions for the deltas:

* ``"class"`` (equations 8-9 as written): ``ΔCon = (Nc - Ncc) / Nc``, ``ΔHum = (Nw - Nww) / Nw``.
* ``"subset"`` (what Tables 2 and 11 of the paper print): both divided by ``N = Nc + Nw``.
  Only this convention reproduces the printed numbers (e.g. IDK prompting on sound:
  36/333 = 10.81 % and 67/333 = 20.12 %; the class convention gives 36/203 = 17.73 % and
  67/130 = 51.54 %), see ``tests/test_reference.py``.

``RGI = log10(ΔHum / ΔCon)``: base 10, because log10(67/36) = 0.27 is what Table 2 prints
(the natural log would give 0.62). In the subset convention RGI = log10((Nw - Nww) / (Nc - Ncc)).
On every training-free cell of Table 2 and every cell of Table 11, RGI from the integer counts and
RGI from the printed (rounded) percentages round to the same printed value; the cross-validated
LoRA row of Table 2 is the mean of the printed per-fold values, rounded half up
(``tests/test_reference.py``).

Undefined values never raise: a zero denominator, ``log(0)`` (ΔHum = 0) or ``log(x/0)``
(ΔCon = 0) give ``None`` (``NaN`` inside bootstrap arrays) together with a reason string
(``d_con_reason``, ``d_hum_reason``, ``rgi_reason``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from reliable_lalm.core.normalize_types import Normalized

CORRECT, REJECTED, WRONG = "correct", "rejected", "wrong"
OUTCOMES: tuple[str, ...] = (CORRECT, REJECTED, WRONG)
_CODE = {name: i for i, name in enumerate(OUTCOMES)}  # 0 correct, 1 rejected, 2 wrong
CONVENTIONS: tuple[str, ...] = ("class", "subset")
RATE_NAMES: tuple[str, ...] = ("acc", "tru", "rej", "rel")
GAIN_NAMES: tuple[str, ...] = ("d_con", "d_hum", "rgi")
TRANSITION_NAMES: tuple[str, ...] = ("ncc", "ncr", "ncw", "nwc", "nwr", "nww", "nrc", "nrr", "nrw")


def outcome_of(normalized: Normalized, answer: str) -> str:
    """``"correct"`` / ``"rejected"`` / ``"wrong"`` for one normalized output (invalid is wrong)."""
    if normalized.kind == "idk":
        return REJECTED
    if normalized.kind == "choice" and normalized.choice is not None \
            and normalized.choice.strip() == str(answer).strip():
        return CORRECT
    return WRONG


def outcome_codes(outcomes: Iterable[str] | np.ndarray) -> np.ndarray:
    """Outcome names -> int8 codes (0 correct, 1 rejected, 2 wrong); integer arrays pass through."""
    if isinstance(outcomes, np.ndarray) and np.issubdtype(outcomes.dtype, np.integer):
        if outcomes.size and (outcomes.min() < 0 or outcomes.max() > 2):
            raise ValueError("outcome codes must be 0 (correct), 1 (rejected) or 2 (wrong)")
        return outcomes.astype(np.int8, copy=False)
    try:
        return np.fromiter((_CODE[o] for o in outcomes), dtype=np.int8)
    except KeyError as err:
        raise ValueError(f"unknown outcome {err.args[0]!r}; expected one of {OUTCOMES}") from None


# ------------------------------------------------------------------------------------------------
# Equations 1-5
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Counts:
    """Outcome counts of one run on one set of items; ``n_invalid`` is included in ``n_wrong``."""

    n_correct: int
    n_rejected: int
    n_wrong: int
    n_invalid: int = 0

    def __post_init__(self) -> None:
        if min(self.n_correct, self.n_rejected, self.n_wrong, self.n_invalid) < 0:
            raise ValueError(f"negative count in {self}")
        if self.n_invalid > self.n_wrong:
            raise ValueError(f"n_invalid ({self.n_invalid}) > n_wrong ({self.n_wrong}): invalid items are wrong items")

    @property
    def n(self) -> int:
        return self.n_correct + self.n_rejected + self.n_wrong

    # Rates are None for an empty set (0/0), not an error.
    @property
    def acc(self) -> float | None:
        return self.n_correct / self.n if self.n else None

    @property
    def tru(self) -> float | None:
        return 1.0 - self.n_wrong / self.n if self.n else None

    @property
    def rej(self) -> float | None:
        return self.n_rejected / self.n if self.n else None

    @property
    def rel(self) -> float | None:
        if not self.n:
            return None
        rej, acc, tru = self.rej, self.acc, self.tru
        return rej * acc + (1.0 - rej) * tru

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.n_correct + other.n_correct, self.n_rejected + other.n_rejected,
                      self.n_wrong + other.n_wrong, self.n_invalid + other.n_invalid)

    @classmethod
    def from_outcomes(cls, outcomes: Iterable[str], invalid: Iterable[bool] | None = None) -> "Counts":
        codes = outcome_codes(outcomes)
        bins = np.bincount(codes, minlength=3)
        n_invalid = int(np.sum(np.fromiter(invalid, dtype=bool))) if invalid is not None else 0
        return cls(int(bins[0]), int(bins[1]), int(bins[2]), n_invalid)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_correct": self.n_correct, "n_rejected": self.n_rejected,
                "n_wrong": self.n_wrong, "n_invalid": self.n_invalid,
                "acc": self.acc, "tru": self.tru, "rej": self.rej, "rel": self.rel}


# ------------------------------------------------------------------------------------------------
# Equations 6-10
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gain:
    """ΔCon, ΔHum and RGI under one convention; a ``None`` value comes with its reason."""

    convention: str
    d_con: float | None
    d_hum: float | None
    rgi: float | None
    d_con_reason: str | None = None
    d_hum_reason: str | None = None
    rgi_reason: str | None = None

    def to_dict(self, suffix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in GAIN_NAMES:
            out[name + suffix] = getattr(self, name)
            reason = getattr(self, name + "_reason")
            if reason is not None:
                out[name + suffix + "_reason"] = reason
        return out


def rgi_from_deltas(d_con: float | None, d_hum: float | None) -> tuple[float | None, str | None]:
    """``log10(d_hum / d_con)`` or ``(None, reason)`` when it is undefined or infinite."""
    if d_con is None or d_hum is None:
        return None, "ΔCon or ΔHum is undefined"
    if d_con < 0 or d_hum < 0:
        return None, f"negative delta (ΔCon={d_con}, ΔHum={d_hum})"
    if d_con == 0 and d_hum == 0:
        return None, "ΔHum = ΔCon = 0: log(0/0) is undefined"
    if d_con == 0:
        return None, "ΔCon = 0: log(ΔHum/0) is +infinity"
    if d_hum == 0:
        return None, "ΔHum = 0: log(0) is -infinity"
    return math.log10(d_hum / d_con), None


def gain_from_counts(nc: int, ncc: int, nw: int, nww: int, convention: str = "class") -> Gain:
    """Equations 8-10 from the four counts they need (``nc``/``nw``: baseline correct/wrong)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    if not (0 <= ncc <= nc and 0 <= nww <= nw):
        raise ValueError(f"inconsistent counts: ncc={ncc} of nc={nc}, nww={nww} of nw={nw}")
    if convention == "class":
        d_con_den, d_hum_den = nc, nw
        con_zero, hum_zero = "Nc = 0: the baseline has no correct answer", "Nw = 0: the baseline has no wrong answer"
    else:
        d_con_den = d_hum_den = nc + nw
        con_zero = hum_zero = "N = Nc + Nw = 0: no item the baseline answered"
    d_con = (nc - ncc) / d_con_den if d_con_den else None
    d_hum = (nw - nww) / d_hum_den if d_hum_den else None
    rgi, rgi_reason = rgi_from_deltas(d_con, d_hum)
    if d_con is None or d_hum is None:  # name the missing delta, not just "undefined"
        rgi_reason = "; ".join(f"{label} undefined ({why})" for label, value, why in
                               (("ΔCon", d_con, con_zero), ("ΔHum", d_hum, hum_zero)) if value is None)
    return Gain(convention, d_con, d_hum, rgi,
                None if d_con is not None else con_zero,
                None if d_hum is not None else hum_zero,
                rgi_reason)


@dataclass(frozen=True)
class Transitions:
    """Baseline outcome (first letter) -> method outcome (second letter) counts on paired items."""

    ncc: int = 0
    ncr: int = 0
    ncw: int = 0
    nwc: int = 0
    nwr: int = 0
    nww: int = 0
    nrc: int = 0  # baseline rejected: outside eq. 6, reported only
    nrr: int = 0
    nrw: int = 0

    @property
    def nc(self) -> int:
        return self.ncc + self.ncr + self.ncw

    @property
    def nw(self) -> int:
        return self.nwc + self.nwr + self.nww

    @property
    def nr(self) -> int:
        return self.nrc + self.nrr + self.nrw

    @property
    def n_answered(self) -> int:
        """``N = Nc + Nw`` of eq. 6 (baseline-rejected items excluded)."""
        return self.nc + self.nw

    @property
    def n(self) -> int:
        return self.n_answered + self.nr

    def baseline_counts(self) -> Counts:
        return Counts(self.nc, self.nr, self.nw)

    def gain(self, convention: str = "class") -> Gain:
        return gain_from_counts(self.nc, self.ncc, self.nw, self.nww, convention)

    @classmethod
    def from_outcomes(cls, baseline: Iterable[str], method: Iterable[str]) -> "Transitions":
        b, m = outcome_codes(baseline), outcome_codes(method)
        if len(b) != len(m):
            raise ValueError(f"{len(b)} baseline outcomes but {len(m)} method outcomes")
        # Pair code: 3 * baseline + method, in the order of TRANSITION_NAMES after the mapping below.
        table = np.bincount(3 * b.astype(np.int64) + m, minlength=9).reshape(3, 3)
        return cls.from_matrix(table)

    @classmethod
    def from_matrix(cls, table: np.ndarray) -> "Transitions":
        """From a 3x3 array indexed [baseline, method] in OUTCOMES order (correct, rejected, wrong)."""
        t = np.asarray(table, dtype=np.int64)
        return cls(ncc=int(t[0, 0]), ncr=int(t[0, 1]), ncw=int(t[0, 2]),
                   nwc=int(t[2, 0]), nwr=int(t[2, 1]), nww=int(t[2, 2]),
                   nrc=int(t[1, 0]), nrr=int(t[1, 1]), nrw=int(t[1, 2]))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TRANSITION_NAMES}


# ------------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------------

def _resample_bins(keys: np.ndarray, n_bins: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Counts of each key value in ``n_boot`` item resamples, shape (n_boot, n_bins).

    One index matrix and one bincount with a per-row offset: 1000 items x 1000 resamples takes a
    few milliseconds.
    """
    n = len(keys)
    idx = rng.integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot, dtype=np.int64) * n_bins)[:, None]
    flat = (keys.astype(np.int64)[idx] + offsets).ravel()
    return np.bincount(flat, minlength=n_boot * n_bins).reshape(n_boot, n_bins)


def _rates(bins: np.ndarray) -> dict[str, np.ndarray]:
    nc, nr, nw = (bins[:, k].astype(float) for k in range(3))
    n = nc + nr + nw
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, tru, rej = nc / n, 1.0 - nw / n, nr / n
    return {"acc": acc, "tru": tru, "rej": rej, "rel": rej * acc + (1.0 - rej) * tru}


def _gains(bins: np.ndarray) -> dict[str, np.ndarray]:
    """ΔCon/ΔHum/RGI arrays in both conventions from (n_boot, 9) pair counts (NaN when undefined)."""
    t = bins.reshape(-1, 3, 3).astype(float)  # [boot, baseline, method]
    nc, nw = t[:, 0, :].sum(axis=1), t[:, 2, :].sum(axis=1)
    lost_c, lost_w = nc - t[:, 0, 0], nw - t[:, 2, 2]  # Nc - Ncc, Nw - Nww
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for suffix, (den_c, den_w) in (("", (nc, nw)), ("_subset", (nc + nw, nc + nw))):
            d_con = np.where(den_c > 0, lost_c / den_c, np.nan)
            d_hum = np.where(den_w > 0, lost_w / den_w, np.nan)
            ok = (d_con > 0) & (d_hum > 0)  # log(0) and x/0 are undefined, as in rgi_from_deltas
            rgi = np.where(ok, np.log10(np.where(ok, d_hum, 1.0) / np.where(ok, d_con, 1.0)), np.nan)
            out["d_con" + suffix], out["d_hum" + suffix], out["rgi" + suffix] = d_con, d_hum, rgi
    return out


def _interval(values: np.ndarray, level: float) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    alpha = (1.0 - level) / 2.0
    out: dict[str, Any] = {"low": None, "high": None, "level": level, "n_boot": int(len(values)),
                           "n_undefined": int(len(values) - len(finite))}
    if len(finite):
        low, high = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
        out["low"], out["high"] = float(low), float(high)
    return out


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_rates(outcomes: Sequence[str] | np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap intervals of acc/tru/rej/rel (items resampled with replacement).

    Returns ``{name: {"low", "high", "level", "n_boot", "n_undefined"}}``; an empty item set
    gives ``None`` bounds.
    """
    _check_boot(n_boot, level)
    codes = outcome_codes(outcomes)
    if len(codes) == 0:
        return {name: _interval(np.full(n_boot, np.nan), level) for name in RATE_NAMES}
    rates = _rates(_resample_bins(codes, 3, n_boot, np.random.default_rng(seed)))
    return {name: _interval(rates[name], level) for name in RATE_NAMES}


def bootstrap_gain(baseline: Sequence[str] | np.ndarray, method: Sequence[str] | np.ndarray, *,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Paired percentile bootstrap of ΔCon/ΔHum/RGI in both conventions.

    Items are resampled jointly, so each resample keeps an item's baseline and method outcomes
    together. Keys: ``d_con, d_hum, rgi`` (class) and ``d_con_subset, d_hum_subset, rgi_subset``.
    Resamples where a value is undefined (e.g. ΔCon = 0 for RGI) are left out of the percentiles
    and counted in ``n_undefined``.
    """
    _check_boot(n_boot, level)
    b, m = outcome_codes(baseline), outcome_codes(method)
    if len(b) != len(m):
        raise ValueError(f"{len(b)} baseline outcomes but {len(m)} method outcomes")
    names = [g + s for s in ("", "_subset") for g in GAIN_NAMES]
    if len(b) == 0:
        return {name: _interval(np.full(n_boot, np.nan), level) for name in names}
    pairs = 3 * b.astype(np.int64) + m
    gains = _gains(_resample_bins(pairs, 9, n_boot, np.random.default_rng(seed)))
    return {name: _interval(gains[name], level) for name in names}


# ------------------------------------------------------------------------------------------------
# Per task and total
# ------------------------------------------------------------------------------------------------

def group_indices(tasks: Sequence[str], order: Sequence[str] = ("sound", "music", "speech")) -> dict[str, np.ndarray]:
    """Item positions per task: the tasks of ``order`` first (present or not), then any others."""
    tasks = list(tasks)
    names = list(order) + sorted({t for t in tasks} - set(order))
    arr = np.asarray(tasks, dtype=object)
    return {name: np.flatnonzero(arr == name) if len(arr) else np.zeros(0, dtype=np.int64) for name in names}


def summarize(outcomes: Sequence[str], tasks: Sequence[str], *, invalid: Sequence[bool] | None = None,
              baseline: Sequence[str] | None = None, n_boot: int = 0, seed: int = 0, level: float = 0.95,
              task_order: Sequence[str] = ("sound", "music", "speech")) -> dict[str, Any]:
    """Counts, rates and (with ``baseline``) transitions and gains for the total and per task.

    Returns ``{"total": {...}, "by_task": {task: {...}}}``; each group holds
    :meth:`Counts.to_dict`, and with a baseline the transition counts, ``baseline`` (its counts),
    the class-convention ``d_con, d_hum, rgi`` and the subset-convention ``*_subset`` values.
    With ``n_boot > 0`` each group gets ``ci`` (bootstrap intervals; seeded per group).
    """
    codes = outcome_codes(outcomes)
    n = len(codes)
    if len(tasks) != n:
        raise ValueError(f"{n} outcomes but {len(tasks)} tasks")
    inv = np.zeros(n, dtype=bool) if invalid is None else np.asarray(list(invalid), dtype=bool)
    if len(inv) != n:
        raise ValueError(f"{n} outcomes but {len(inv)} invalid flags")
    if np.any(inv & (codes != _CODE[WRONG])):
        raise ValueError("an invalid item must have the outcome 'wrong'")
    base = None
    if baseline is not None:
        base = outcome_codes(baseline)
        if len(base) != n:
            raise ValueError(f"{n} outcomes but {len(base)} baseline outcomes")

    def group(idx: np.ndarray, stream: int) -> dict[str, Any]:
        c = codes[idx]
        bins = np.bincount(c, minlength=3)
        counts = Counts(int(bins[0]), int(bins[1]), int(bins[2]), int(inv[idx].sum()))
        out = counts.to_dict()
        if base is not None:
            trans = Transitions.from_matrix(np.bincount(3 * base[idx].astype(np.int64) + c, minlength=9).reshape(3, 3))
            out.update(trans.to_dict())
            out["baseline"] = trans.baseline_counts().to_dict()
            out.update(trans.gain("class").to_dict())
            out.update(trans.gain("subset").to_dict("_subset"))
        if n_boot > 0:
            # Independent, reproducible streams per group: seed and group number.
            ci = bootstrap_rates(c, n_boot=n_boot, seed=_stream_seed(seed, stream, 0), level=level)
            if base is not None:
                ci.update(bootstrap_gain(base[idx], c, n_boot=n_boot, seed=_stream_seed(seed, stream, 1), level=level))
            out["ci"] = ci
        return out

    groups = group_indices(tasks, task_order)
    return {"total": group(np.arange(n), 0),
            "by_task": {name: group(idx, i + 1) for i, (name, idx) in enumerate(groups.items())}}


def _stream_seed(seed: int, group: int, kind: int) -> int:
    return int(np.random.SeedSequence([int(seed), group, kind]).generate_state(1)[0])


def random_rejection_gains(nc: int, nw: int, rate: float = 0.2) -> dict[str, Gain]:
    """ΔCon, ΔHum and RGI of a method that rejects a random ``rate`` of the items, in both conventions.

    In expectation such a method rejects ``rate * nc`` of the baseline's correct answers and
    ``rate * nw`` of its wrong ones (the expected counts are used, so the values are exact). It
    knows nothing, so a gain index should give it 0: the *class* convention (equations 8-9, divided
    by Nc and Nw) does (ΔCon = ΔHum = rate); the *subset* convention (divided by N = Nc + Nw, what
    the paper's Tables 2 and 11 print) gives log10(Nw / Nc), positive wherever the baseline is
    wrong more often than right (README, "Which RGI?").
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    kept_correct, kept_wrong = (1 - rate) * nc, (1 - rate) * nw
    return {convention: gain_from_counts(nc, kept_correct, nw, kept_wrong, convention) for convention in CONVENTIONS}
