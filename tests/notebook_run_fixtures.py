"""Running one notebook at the ci profile for its tests, and reading the tables it wrote."""
from __future__ import annotations

import pandas as pd

from reliable_lalm import paths
from reliable_lalm.reporting.tables import read_table
from reliable_lalm.runner.reproduce import reproduce

PROFILE = "ci"


def run_notebook(number: str, runs_root) -> dict:
    """rlalm reproduce --profile ci --only NUMBER into ``runs_root``; the report, asserted ok."""
    report = reproduce(PROFILE, only=number, runs_root=runs_root)
    assert report["status"] == "ok", report
    return report


def read_ci_table(prefix: str, name: str, levels: int = 1) -> pd.DataFrame:
    return read_table(paths.tables_dir(PROFILE) / f"{prefix}{name}.csv", index_levels=levels)
