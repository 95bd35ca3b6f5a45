"""The README's numbers against the committed demo outputs (tables/demo): the worked RGI example of
"Which RGI?" and the copies of Tables 1 and 2 (rewritten by tools/readme_tables.py)."""
from __future__ import annotations

import re
import sys


from reliable_lalm import paths
from reliable_lalm.core import metrics
from reliable_lalm.demo.synthetic import DEFAULT_N_PER_TASK
from reliable_lalm.reporting.tables import format_number, read_table

sys.path.insert(0, str(paths.REPO_ROOT / "tools"))
import readme_tables  # noqa: E402

README = (paths.REPO_ROOT / "README.md").read_text(encoding="utf-8")
DEMO_TABLES = paths.REPO_ROOT / "tables" / "demo"
WORKED = re.compile(r"On the demo's (\w+) split \(Nc = (\d+), Nw = (\d+)\) random rejection scores ([−+-]?\d+\.\d\d) "
                    r"in the subset\s+convention")


def baseline_counts(modality: str) -> tuple[int, int]:
    """(Nc, Nw) of the demo baseline ("Ours (Normalized)") in one modality, from its committed Acc% and Tru%."""
    table = read_table(DEMO_TABLES / "01_baselines__table1_rows.csv", index_levels=1)
    row = table.loc["Ours (Normalized)"]
    label = modality.capitalize()
    acc, tru = float(row[(label, "Acc%")]), float(row[(label, "Tru%")])
    n = DEFAULT_N_PER_TASK  # the demo's test split: 200 items per modality (README, Table 1)
    nc, nw = round(acc * n / 100), round((100 - tru) * n / 100)
    assert abs(100 * nc / n - acc) < 1e-3 and abs(100 * (n - nw) / n - tru) < 1e-3  # whole counts
    return nc, nw


def test_worked_rgi_example_matches_the_committed_demo_counts():
    match = WORKED.search(README)
    assert match, "the worked example of 'Which RGI?' is not where the test looks for it"
    modality, nc, nw, rgi = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
    assert (nc, nw) == baseline_counts(modality)
    gains = metrics.random_rejection_gains(nc, nw, rate=0.2)
    assert format_number(gains["subset"].rgi) == rgi.replace("−", "-")
    assert format_number(gains["class"].rgi) in ("0.00", "-0.00")
    assert f"{100 * nc / DEFAULT_N_PER_TASK:.1f}" in README  # the modality's accuracy is the one quoted


def test_readme_tables_are_the_committed_demo_tables():
    assert readme_tables.readme_with_demo_tables(README, DEMO_TABLES) == README, \
        "README's Table 1/2 differ from tables/demo: run python tools/readme_tables.py"


def test_readme_table_copy_replaces_exactly_one_block():
    lines = ["| a | b |", "| :--- | ---: |", "| x | 1.00 |"]
    text = "intro\n\n| a | b |\n| :--- | ---: |\n| x | 9.99 |\n| y | 8.88 |\n\nafter\n"
    assert readme_tables.replace_table(text, lines) == "intro\n\n| a | b |\n| :--- | ---: |\n| x | 1.00 |\n\nafter\n"
