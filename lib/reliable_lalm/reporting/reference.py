"""The paper's published numbers (``tables/reference/*.csv``).

Values are percentages exactly as printed (RGI a plain number); see ``tables/reference/README.md``
for what each file holds and what the paper text lost (check marks, the diagonal of Tables 10-11).
"""
from __future__ import annotations

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
