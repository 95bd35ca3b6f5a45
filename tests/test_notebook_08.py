"""Notebook 08 (abstention beyond the paper) executes at the ci profile on its own, and its tables
hold what their definitions imply (rates in [0, 100], AURC >= oracle AURC, matched rejection rates,
built + skipped = source items)."""
from __future__ import annotations

import pandas as pd
import pytest

from notebook_run_fixtures import PROFILE, read_ci_table, run_notebook  # noqa: E402
from reliable_lalm import paths

pytestmark = pytest.mark.notebooks
STEM = "08_abstention_beyond_the_paper"
PREFIX = "08_abstention__"


@pytest.fixture(scope="module")
def run08(tmp_path_factory):
    return run_notebook("08", tmp_path_factory.mktemp("runs"))


def _table(name, levels=1):
    return read_ci_table(PREFIX, name, levels)


def test_notebook_ran(run08):
    assert [e["notebook"] for e in run08["notebooks"]] == [STEM]
    for name in ("risk_coverage", "reliability"):
        for ext in ("png", "pdf"):
            assert (paths.figures_dir(PROFILE) / f"{PREFIX}{name}.{ext}").stat().st_size > 1000


def test_risk_coverage_and_calibration(run08):
    rc = _table("risk_coverage").apply(pd.to_numeric)
    assert list(rc.index) == ["option prob", "option prob (len-norm)", "1 - P(IDK)", "K@N agreement", "1 - entropy"]
    assert (rc["AURC"] >= rc["oracle AURC"] - 1e-12).all() and (rc["E-AURC"] >= -1e-12).all()
    acc = rc[[c for c in rc.columns if c.startswith("Acc%")]]
    assert ((acc >= 0) & (acc <= 100)).all().all()
    cal = _table("calibration").apply(pd.to_numeric)
    ece = [c for c in cal.columns if c.startswith("ECE")]
    assert len(ece) == 2 and "5 bins" in ece[0]  # the ci profile's ece_bins, stated in the column
    assert ((cal[ece] >= 0) & (cal[ece] <= 1)).all().all() and ((cal["Brier"] >= 0) & (cal["Brier"] <= 1)).all()


def test_equal_rejection_rates_match(run08):
    table = _table("equal_rejection", 2)
    for method, group in table.groupby(level=0):
        rej = pd.to_numeric(group["Rej%"])
        n = int(pd.to_numeric(group["n"]).iloc[0])
        # tie_break="index" rejects exactly round(rate * n) items: the same count as the method
        assert (rej - rej.iloc[0]).abs().max() <= 100.0 / n / 2 + 1e-9, method
    assert {"IDK prompting", "LoRA (sound)", "LoRA (music)", "LoRA (speech)"} <= set(table.index.get_level_values(0))


def test_unanswerable_tables(run08):
    counts = _table("unanswerable_counts", 2).apply(pd.to_numeric)
    assert (counts["n_built"] + counts["n_skipped"] == counts["n_source"]).all()
    table = _table("unanswerable", 2)
    rates = table[["refusal% answerable", "refusal% unanswerable", "hallucination%"]].apply(pd.to_numeric)
    assert ((rates >= 0) & (rates <= 100)).all().all()
    total = table.xs("total", level=1)
    assert {"baseline", "IDK prompting"} <= set(total.index)
    parts = total[["refusal% unanswerable", "hallucination%", "invalid% unanswerable"]].apply(pd.to_numeric)
    # refused + hallucinated + invalid = all (each cell is rounded: 1e-4 of slack per sum)
    assert ((parts.sum(axis=1) - 100).abs() < 1e-3).all()


def test_circular_table(run08):
    table = _table("circular", 2)
    total = table.xs("total", level=1).apply(pd.to_numeric)
    assert (total["circular Acc%"] <= total["rot0 Acc%"] + 1e-9).all()  # correct in all rotations => in rot 0
    assert (total["consistency%"] <= total["consistency% (IDK counts)"] + 1e-9).all()


def _status(*folders):
    import subprocess

    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *folders],
                          cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True).stdout


def test_other_parameters_leave_the_committed_outputs_alone(tmp_path):
    """Notebook 08 run by papermill with other parameters than the demo profile's writes its tables
    and both figures under ``demo+<hash>/`` (ignored by git), never into ``tables/demo`` or
    ``figures/demo``."""
    import shutil

    import papermill as pm

    from reliable_lalm.runner import outputs
    from reliable_lalm.runner.schema import SCHEMAS, declarations

    before = _status("tables", "figures", "docs")
    params = {"limit_per_task": 2, "bootstrap": 0, "k_at_n_samples": 2, "ece_bins": 3, "with_lora": False}
    defaults = {k: p.default for k, p in declarations(SCHEMAS[STEM]).items()}
    loc = outputs.output_location("demo", STEM, {**defaults, **params})
    assert loc.tag.startswith("demo+")
    try:
        pm.execute_notebook(str(paths.NOTEBOOKS_DIR / f"{STEM}.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters=params, cwd=str(paths.REPO_ROOT), progress_bar=False)
        for name in ("risk_coverage", "reliability"):
            assert (loc.figures / f"{PREFIX}{name}.png").is_file() and (loc.figures / f"{PREFIX}{name}.csv").is_file()
        assert (loc.tables / f"{PREFIX}circular.csv").is_file()
        assert _status("tables", "figures", "docs") == before
    finally:
        shutil.rmtree(loc.tables, ignore_errors=True)
        shutil.rmtree(loc.figures, ignore_errors=True)
