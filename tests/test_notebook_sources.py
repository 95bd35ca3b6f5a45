"""The notebooks' source is ``tools/make_notebooks.py``: shared cells (parameters, setup, table
saving) are written once there. A notebook edited by hand, or a generator change not regenerated,
fails here (run ``python tools/make_notebooks.py`` and commit both)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_file_equals_its_committed_copy():
    rendered = _generator().rendered()
    stale = [str(path.relative_to(ROOT)) for path, text in rendered.items()
             if not path.is_file() or path.read_text(encoding="utf-8") != text]
    assert not stale, f"out of date with tools/make_notebooks.py (run it): {stale}"


def test_no_notebook_without_a_source():
    generated = {p.name for p in _generator().rendered() if p.suffix == ".ipynb"}
    committed = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert committed == generated


def test_the_check_sees_a_hand_edit(tmp_path):
    """The comparison is by exact text: a one-character edit of a cell is caught."""
    path = ROOT / "notebooks" / "02_idk_prompting.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += " "
    edited = nbformat.writes(nb) + "\n"
    assert edited != _generator().rendered()[path]
    json.loads(edited)  # still a valid notebook: only the source check can tell


def test_every_saved_table_and_figure_goes_to_the_output_tag_with_its_data():
    """Saving under ``profile`` would write a run with other parameters into the committed
    ``tables/demo``/``figures/demo``; a figure without ``data=`` could only be checked by bytes."""
    import ast

    calls = 0
    for path, text in _generator().rendered().items():
        if path.suffix != ".ipynb":
            continue
        for cell in nbformat.reads(text, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in ("save_table", "save_figure"):
                    calls += 1
                    where = f"{path.name}: {ast.unparse(node)[:90]}"
                    assert ast.unparse(node.args[2]) == "output.tag", where
                    if node.func.attr == "save_figure":
                        assert "data" in {k.arg for k in node.keywords}, where
    assert calls > 20
