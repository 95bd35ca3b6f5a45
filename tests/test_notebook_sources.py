"""The committed notebooks are the source (edited in JupyterLab); what they must keep is checked here:
each parameters cell states its model (``reliable_lalm.runner.schema``), no outputs are committed,
every section has a heading and a sentence, and tables and figures go to the output tag."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reliable_lalm.runner.profiles import discover_notebooks, notebook_parameters, parameters_cell_index, read_notebook_cells
from reliable_lalm.runner.schema import SCHEMAS, declarations, parameters_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")


def _cells(path: Path) -> list[dict]:
    return read_notebook_cells(path)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def test_every_notebook_has_a_model_and_every_model_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == set(SCHEMAS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_parameters_cell_states_its_model(path):
    """Names, order, types, defaults and help text: a parameter added to the model and not to the
    cell, or edited in the cell and not in the model, fails here
    (``python tools/check_notebooks.py --fix`` rewrites the cell from the model)."""
    assert list(notebook_parameters(path).items()) == list(declarations(SCHEMAS[path.stem]).items())


def test_a_cell_that_drifts_from_its_model_is_seen(tmp_path):
    nb = json.loads((ROOT / "notebooks" / "06_idk_threshold.ipynb").read_text(encoding="utf-8"))
    index = parameters_cell_index(nb["cells"])[0]
    nb["cells"][index]["source"] = parameters_cell(SCHEMAS["06_idk_threshold"]).replace("k_at_n_samples: int = 5",
                                                                                       "k_at_n_samples: int = 6")
    edited = tmp_path / "06_idk_threshold.ipynb"
    edited.write_text(json.dumps(nb), encoding="utf-8")
    assert notebook_parameters(edited)["k_at_n_samples"].default == 6 != declarations(SCHEMAS["06_idk_threshold"])["k_at_n_samples"].default
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "check_notebooks.py"), str(edited)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "k_at_n_samples" in result.stdout + result.stderr
    fixed = subprocess.run([sys.executable, str(ROOT / "tools" / "check_notebooks.py"), "--fix", str(edited)],
                           capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert list(notebook_parameters(edited).items()) == list(declarations(SCHEMAS["06_idk_threshold"]).items())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_outputs_are_committed(path):
    for i, cell in enumerate(_cells(path)):
        if cell.get("cell_type") == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name}: cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_section_has_a_heading_and_a_sentence(path):
    """Every code cell but the parameters cell follows a markdown cell with a heading and some text."""
    cells = _cells(path)
    assert cells[0].get("cell_type") == "markdown" and _source(cells[0]).startswith("# ")
    parameters = parameters_cell_index(cells)
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or i in parameters:
            continue
        before = cells[i - 1]
        lines = [ln for ln in _source(before).splitlines() if ln.strip()]
        assert before.get("cell_type") == "markdown", f"{path.name}: code cell {i} has no markdown before it"
        assert lines[0].startswith("#"), f"{path.name}: the markdown before cell {i} has no heading"
        assert any(not ln.startswith("#") for ln in lines), f"{path.name}: the markdown before cell {i} has no sentence"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_setup_is_one_library_call(path):
    calls = [c for c in _cells(path) if "start_notebook(" in _source(c)]
    assert len(calls) == 1 and f'start_notebook("{path.stem}", globals())' in _source(calls[0])


def test_every_saved_table_and_figure_goes_to_the_output_tag_with_its_data():
    """Saving under ``profile`` would write a run with other parameters into the committed
    ``tables/demo``/``figures/demo``; a figure without ``data=`` could only be checked by bytes."""
    calls = 0
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell.get("cell_type") != "code":
                continue
            for node in ast.walk(ast.parse(_source(cell))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in ("save_table", "save_figure"):
                    calls += 1
                    where = f"{path.name}: {ast.unparse(node)[:90]}"
                    assert ast.unparse(node.args[2]) == "output.tag", where
                    if node.func.attr == "save_figure":
                        assert "data" in {k.arg for k in node.keywords}, where
    assert calls > 20
