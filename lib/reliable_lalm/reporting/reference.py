"""The paper's published numbers (``tables/reference/*.csv``) and paper-style rounding.

Values are percentages exactly as printed (RGI a plain number); see ``tables/reference/README.md``
for what each file holds and what the paper text lost (check marks, the diagonal of Tables 10-11).
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from reliable_lalm import paths

REFERENCE_NAMES: tuple[str, ...] = ("table1", "table2", "table3", "table10", "table11", "table12",
                                    "figure5", "mmau_test_mini")
MODALITIES: tuple[str, ...] = ("sound", "music", "speech")


def reference_path(name: str, directory: str | Path | None = None) -> Path:
    stem = name[:-4] if name.endswith(".csv") else name
    if stem not in REFERENCE_NAMES:
        raise KeyError(f"unknown reference table {name!r}; known: {', '.join(REFERENCE_NAMES)}")
    return Path(directory or paths.REFERENCE_TABLES_DIR) / f"{stem}.csv"


def load_reference(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """One reference table as a DataFrame (``"table1"`` or ``"table1.csv"``).

    Text columns stay strings (empty notes are ``""``, not NaN) so filters like
    ``df[df.method == "IDK Prompting"]`` behave.
    """
    path = reference_path(name, directory)
    if not path.is_file():
        raise FileNotFoundError(f"reference table missing: {path}")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].fillna("")
    return df


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
