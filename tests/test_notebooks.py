"""Executes all seven notebooks with the ci profile through papermill (the product's main job,
at tiny settings) and checks every table and figure they regenerate."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from reliable_lalm import paths
from reliable_lalm.reporting.tables import read_table

pytestmark = pytest.mark.notebooks
PROFILE = "ci"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    from reliable_lalm.runner.reproduce import reproduce

    runs = tmp_path_factory.mktemp("runs")
    summary = reproduce(PROFILE, runs_root=runs)
    return runs, summary


def test_every_notebook_ran(ci_run):
    runs, report = ci_run
    assert report["status"] == "ok"
    entries = report["notebooks"]
    assert [e["status"] for e in entries] == ["ok"] * len(entries)
    stems = [e["notebook"] for e in entries]
    assert stems == ["01_baselines", "02_idk_prompting", "03_mcot_and_agent", "04_sft", "04_sft", "04_sft",
                     "05_cross_modal", "06_idk_threshold", "07_lora_alpha_ablation",
                     "08_abstention_beyond_the_paper", "09_uncertainty_and_guarantees"]
    outputs = sorted(p.name for p in runs.rglob("*.ipynb"))
    assert "04_sft__modality-music.ipynb" in outputs and len(outputs) == 11


def _percent_cells(df: pd.DataFrame):
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float).ravel()
    return values[~pd.isna(values)]


@pytest.mark.parametrize("name, rows", [
    ("table1", ["Ours (Normalized)", "IDK Prompting", "MCoT Prompting", "Task Agent", "LoRA Fine-tuning"]),
    ("table3", None),
    ("01_baselines__table1_rows", ["MMAU (Unnormalized)", "Ours (Normalized)", "Random Guess", "Most Frequent Choice"]),
])
def test_metric_tables(ci_run, name, rows):
    df = read_table(paths.tables_dir(PROFILE) / f"{name}.csv", index_levels=2 if name == "table3" else 1)
    assert df.shape[1] == 12  # (sound, music, speech, total) x (Acc, Tru, Rel)
    if rows:
        assert [str(r) for r in df.index] == rows
    values = _percent_cells(df)
    assert len(values) and ((values >= 0) & (values <= 100)).all()
    for ext in ("md", "tex"):
        assert (paths.tables_dir(PROFILE) / f"{name}.{ext}").stat().st_size > 0


@pytest.mark.parametrize("name", ["table2", "table2_class", "table11"])
def test_gain_tables(ci_run, name):
    df = read_table(paths.tables_dir(PROFILE) / f"{name}.csv")
    assert df.shape[1] in (6, 9, 12)
    assert len(df) >= 3


@pytest.mark.parametrize("name", ["table10", "table12"])
def test_crossmodal_tables(ci_run, name):
    df = read_table(paths.tables_dir(PROFILE) / f"{name}.csv")
    assert [str(i).lower() for i in df.index] == ["sound", "music", "speech"]
    values = _percent_cells(df)
    assert len(values) and ((values >= 0) & (values <= 100)).all()


def test_figure5_is_monotone(ci_run):
    df = pd.read_csv(paths.tables_dir(PROFILE) / "figure5.csv", index_col=0)
    idk = df["all"].astype(float).to_numpy()
    assert len(idk) == 5 and all(a <= b for a, b in zip(idk, idk[1:]))


@pytest.mark.parametrize("name", ["figure3", "figure4", "figure5"])
def test_figures(ci_run, name):
    for ext in ("png", "pdf"):
        path = paths.figures_dir(PROFILE) / f"{name}.{ext}"
        assert path.stat().st_size > 1000
