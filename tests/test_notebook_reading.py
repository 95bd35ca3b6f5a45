"""Notebooks as a reader meets them: a heading and a sentence before every table and figure, and
notebook 02 executed with *plain* papermill (no ``rlalm reproduce``, no progress setting) at the ci
profile: no progress widget (saved frozen at 0 %), every text bar finished, every table rounded to
the paper's 2 decimals, no library warning in the outputs."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from reliable_lalm import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
SHOWS_TABLE_OR_FIGURE = re.compile(r"reporting\.(styled|interval_table|transition_table|save_figure|show_items)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_table_and_figure_is_introduced(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or not SHOWS_TABLE_OR_FIGURE.search(source):
            continue
        before = cells[i - 1]
        text = "".join(before["source"])
        assert before["cell_type"] == "markdown" and text.startswith("#"), (path.stem, i, source[:80])
        assert len(text.split("\n\n", 1)[-1].split()) >= 8, (path.stem, i, "a heading without a sentence")


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
ROUNDED = re.compile(r"-?\d+(?:\.\d{2})?")  # an integer count, or 2 decimals
BAR = re.compile(r"([^\r\n:]+): +(\d+)%\|")


@pytest.mark.notebooks
def test_notebook_02_under_plain_papermill_reads_clean(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.delenv("RLALM_PROGRESS", raising=False)
    monkeypatch.setenv("RLALM_CACHE_DIR", str(tmp_path / "cache"))  # computed afresh: the bars really run
    out = tmp_path / "02.ipynb"
    pm.execute_notebook(str(paths.NOTEBOOKS_DIR / "02_idk_prompting.ipynb"), str(out),
                        parameters={"profile": "ci"}, cwd=str(paths.REPO_ROOT), progress_bar=False)
    cells = json.loads(out.read_text(encoding="utf-8"))["cells"]
    tables = bars = 0
    for i, cell in enumerate(cells):
        streamed = "".join("".join(o["text"]) for o in cell.get("outputs", []) if o["output_type"] == "stream")
        assert "Warning" not in streamed, (i, streamed[:300])
        last = {desc.strip(): int(pct) for desc, pct in BAR.findall(streamed)}  # each bar's last frame
        bars += len(last)
        assert all(pct == 100 for pct in last.values()), (i, last)  # every bar ended, none frozen
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, (i, data.get("text/plain"))
            if output["output_type"] == "execute_result" and "text/html" in data:
                parser = _Cells()
                parser.feed("".join(data["text/html"]))
                tables += 1
                for cell_text in parser.cells:
                    for number in NUMBER.findall(cell_text):
                        assert ROUNDED.fullmatch(number), (i, cell_text)
    assert tables >= 7  # Tables 1, 2 (both conventions), 3, random rejection, transitions, intervals
    assert bars >= 2  # the baseline and the IDK prompt ran here, with text bars
