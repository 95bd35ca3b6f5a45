"""Oracles for comparing our counts with the paper's printed numbers (``tables/reference/*.csv``):
paper-style rounding, the MMAU test-mini subset sizes, and a transition table's method-run counts."""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from reliable_lalm.core.metrics import Counts, Transitions
from reliable_lalm.reporting.reference import load_reference


def subset_sizes(directory: str | Path | None = None) -> dict[str, int]:
    """MMAU test-mini items per modality (and ``total``): sound 333, music 334, speech 333."""
    df = load_reference("mmau_test_mini", directory)
    return {str(row.modality): int(row.n) for row in df.itertuples()}


def round_half_up(value: float, digits: int = 2) -> float:
    """Round like a person (and the paper's tables): 0.355 -> 0.36, where ``round`` gives 0.35.

    The decimal text of the float (its shortest repr) is rounded, so a value that *prints* as
    ...5 rounds up.
    """
    if value is None or not math.isfinite(value):
        raise ValueError(f"cannot round {value!r}")
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))


def as_percent(fraction: float | None, digits: int = 2) -> float | None:
    """A fraction in [0, 1] as a percentage rounded like the paper's tables (``None`` stays ``None``)."""
    return None if fraction is None else round_half_up(100.0 * fraction, digits)


def method_run_counts(t: Transitions) -> Counts:
    """The method run's counts in a transition table (every baseline outcome, the rejected included)."""
    return Counts(t.ncc + t.nwc + t.nrc, t.ncr + t.nwr + t.nrr, t.ncw + t.nww + t.nrw)
