"""Published executed notebooks (docs/notebooks/<profile>/): the stable form leaves out what differs
between two identical runs, and ``rlalm reproduce --check`` compares them like the tables."""
from __future__ import annotations

import json
import subprocess

from reliable_lalm import paths
from reliable_lalm.runner.check import check_outputs
from reliable_lalm.runner.publish import publish, stable_notebook


def _executed(address: str, cell_id: str) -> dict:
    root = str(paths.REPO_ROOT.resolve())
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"papermill": {"duration": 12.3, "start_time": "2026-01-01"},
                         "language_info": {"name": "python", "version": "3.11.9"}, "kernelspec": {"name": "python3"}},
            "cells": [
                {"cell_type": "code", "id": cell_id, "metadata": {"tags": ["injected-parameters"], "papermill": {"duration": 0.1}},
                 "source": "profile = 'demo'", "execution_count": 1, "outputs": []},
                {"cell_type": "code", "id": "02-03", "metadata": {"execution": {"iopub.status.idle": "2026"}},
                 "source": "x", "execution_count": 2, "outputs": [
                     {"output_type": "stream", "name": "stderr", "text": "idk: 100%|####| 36/36 [00:05<00:00, 6.96item/s]"},
                     {"output_type": "stream", "name": "stdout", "text": f"store {root}/cache/results/demo/x\n"},
                     {"output_type": "execute_result", "execution_count": 2, "metadata": {},
                      "data": {"text/plain": f"<pandas.io.formats.style.Styler at {address}>",
                               "text/html": "<table><td>81.90</td></table>"}}]}]}


def test_stable_form_is_the_same_for_two_runs():
    first, second = stable_notebook(_executed("0x7efd5c432090", "a7e7a380")), stable_notebook(_executed("0x7f52", "66df19b2"))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    outputs = first["cells"][1]["outputs"]
    assert [o.get("name") for o in outputs] == ["stdout", None]  # stderr (bars, timings) left out
    assert outputs[0]["text"] == "store <cache>/results/demo/x\n"
    assert outputs[1]["data"]["text/plain"] == "<pandas.io.formats.style.Styler>"
    assert outputs[1]["data"]["text/html"] == "<table><td>81.90</td></table>"  # tables kept as executed
    assert "papermill" not in first["metadata"] and first["metadata"]["language_info"] == {"name": "python"}
    assert first["cells"][0]["id"] == "injected-parameters" and first["cells"][1]["metadata"] == {}


def test_check_compares_published_notebooks(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    executed = tmp_path / "run" / "02_idk_prompting.ipynb"
    executed.parent.mkdir()
    executed.write_text(json.dumps(_executed("0x1", "abc")))
    published = publish(executed, "demo", root=tmp_path)
    assert published == tmp_path / "docs" / "notebooks" / "demo" / "02_idk_prompting.ipynb"
    (tmp_path / "tables" / "demo").mkdir(parents=True)
    (tmp_path / "tables" / "demo" / "t.csv").write_text("a,b\n1,2\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert check_outputs("demo", root=tmp_path).ok
    nb = json.loads(published.read_text())
    nb["cells"][1]["outputs"][1]["data"]["text/html"] = "<table><td>82.00</td></table>"
    published.write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    result = check_outputs("demo", root=tmp_path)
    assert not result.ok
    (difference,) = result.differences
    assert difference.path == "docs/notebooks/demo/02_idk_prompting.ipynb"
    assert any("82.00" in line for line in difference.details)


def test_a_newly_published_notebook_is_a_difference_until_committed(tmp_path):
    (tmp_path / "tables" / "demo").mkdir(parents=True)
    (tmp_path / "tables" / "demo" / "t.csv").write_text("a,b\n1,2\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    assert check_outputs("demo", root=tmp_path).ok  # nothing published: tables and figures only
    executed = tmp_path / "02_idk_prompting.ipynb"
    executed.write_text(json.dumps(_executed("0x1", "abc")))
    publish(executed, "demo", root=tmp_path)
    (difference,) = check_outputs("demo", root=tmp_path).differences
    assert difference.kind == "not committed (new output)"
