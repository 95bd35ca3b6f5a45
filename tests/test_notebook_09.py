"""Notebook 09 (uncertainty estimators, audio reliance, risk-controlled abstention) executes at the
ci profile on its own, and its tables hold what their definitions imply."""
from __future__ import annotations

import pandas as pd
import pytest

from notebook_run_fixtures import PROFILE, read_ci_table, run_notebook  # noqa: E402
from reliable_lalm import paths
from reliable_lalm.experiments.uncertainty import ALL_SCORES

pytestmark = pytest.mark.notebooks
STEM = "09_uncertainty_and_guarantees"
PREFIX = "09_uncertainty__"


@pytest.fixture(scope="module")
def run09(tmp_path_factory):
    return run_notebook("09", tmp_path_factory.mktemp("runs"))


def _table(name, levels=1):
    return read_ci_table(PREFIX, name, levels)


def test_notebook_ran(run09):
    assert [e["notebook"] for e in run09["notebooks"]] == [STEM]
    for ext in ("png", "pdf", "csv"):
        assert (paths.figures_dir(PROFILE) / f"{PREFIX}estimators_aurc.{ext}").stat().st_size > 200


def test_estimator_table(run09):
    table = _table("estimators", 2)
    assert list(table.index.get_level_values(0).unique()) == ["sound", "music", "speech", "total"]
    assert list(table.xs("total", level=0).index) == list(ALL_SCORES)
    num = table.apply(pd.to_numeric, errors="coerce")
    total = num.xs("total", level=0)
    n_items = int((total["n"] + total["missing"]).iloc[0])
    assert ((total["n"] + total["missing"]) == n_items).all()
    scored = total[total["n"] > 0]
    assert ((scored["AURC"] >= 0) & (scored["AURC"] <= 1)).all() and (scored["E-AURC"] >= -1e-12).all()
    p = scored["p (no better than chance)"].dropna()
    assert ((p > 0) & (p <= 1)).all()
    # one IDK rejection rate per modality, matched by every threshold
    assert num.groupby(level=0)["IDK Rej%"].nunique().eq(1).all()


def test_audio_reliance(run09):
    table = _table("audio_reliance").apply(pd.to_numeric)
    rates = table[[c for c in table.columns if "%" in c]]
    assert ((rates >= 0) & (rates <= 100)).all().all()
    assert table.loc["total", "n"] == table.drop(index="total")["n"].sum()
    items = read_ci_table(PREFIX, "audio_reliance_items")
    right = int(table.loc["total", "right with audio and silence (n)"])
    assert (items["right with silence"].astype(str) == "True").sum() == right


def test_risk_control_table(run09):
    table = _table("risk_control", 3)
    num = table.apply(pd.to_numeric, errors="coerce")
    answered = num[num["threshold"].notna()]
    # a threshold that passed the test has calibration risk within the bound's reach (<= alpha)
    assert (answered["calibration risk%"] <= 10 + 1e-9).all()  # the notebook's risk_alpha
    assert set(table.index.get_level_values(2)) == {"all (other half)", "music", "speech"}
