"""A prompting method added from outside the package, as the README's "How to add a method" says:
one module of the user's own package (a ``MethodEntry``) and one entry-point line in that package's
``pyproject.toml`` (group ``reliable_lalm.methods``); no file of reliable_lalm changes.

The user's package is installed here the way pip installs it: its module and a ``.dist-info`` with
the ``entry_points.txt`` pip writes from the ``pyproject.toml`` line, on ``sys.path``. The methods
then run through ``rlalm infer`` (the CLI's ``main`` in-process) and through an ``Experiment`` on the
demo model.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from reliable_lalm import paths
from reliable_lalm.cli import main
from reliable_lalm.core.results import ResultStore
from reliable_lalm.experiments import Experiment
from reliable_lalm.methods import registry

PLUGIN_MODULE = '''
"""A user's own prompting methods (not part of reliable_lalm)."""
from reliable_lalm.core.prompts import baseline_prompt
from reliable_lalm.methods.generation import run_prompts
from reliable_lalm.methods.registry import SINGLE, MULTI_STEP, MethodEntry

SHORT_INSTRUCTION = "Answer with the option text only."


def short_answer_prompt(question, choices):
    return baseline_prompt(question, choices) + "\\n" + SHORT_INSTRUCTION


def run_twice_asked(backend, items, store, *, entry, settings, few_shot, progress, retry_errors, on_batch, chunk):
    """A multi-step method's own runner: here one call whose records say which runner wrote them."""
    run_prompts(backend, items, store, method=entry.name, settings=settings,
                make_prompt=lambda it: short_answer_prompt(it.question, it.choices) + "\\nThink twice.",
                make_record=lambda item, g, j: {"model_output": g.texts[j], "written_by": "plugin runner"},
                progress=progress, on_batch=on_batch, chunk=chunk)


SHORT_ANSWER = MethodEntry("short-answer", SINGLE, 16, short_answer_prompt,
                           description="the baseline prompt, then: answer with the option text only")
TWICE_ASKED = MethodEntry("twice-asked", MULTI_STEP, 16, runner=run_twice_asked,
                          key_prompt=lambda it: short_answer_prompt(it.question, it.choices) + "\\nThink twice.",
                          description="a multi-step method with its own runner")
'''

# What pip writes into the .dist-info from the package's pyproject.toml:
#   [project.entry-points."reliable_lalm.methods"]
#   short-answer = "my_lalm_methods:SHORT_ANSWER"
#   twice-asked = "my_lalm_methods:TWICE_ASKED"
ENTRY_POINTS = """\
[reliable_lalm.methods]
short-answer = my_lalm_methods:SHORT_ANSWER
twice-asked = my_lalm_methods:TWICE_ASKED
"""


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "my_lalm_methods-0.1.dist-info").mkdir(parents=True)
    (site / "my_lalm_methods.py").write_text(textwrap.dedent(PLUGIN_MODULE), encoding="utf-8")
    (site / "my_lalm_methods-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-lalm-methods\nVersion: 0.1\n", encoding="utf-8")
    (site / "my_lalm_methods-0.1.dist-info" / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    registry.all_methods.cache_clear()
    yield site
    registry.all_methods.cache_clear()


def test_a_method_from_another_package_is_registered(installed_plugin):
    assert {"short-answer", "twice-asked"} <= set(registry.runnable_methods())
    assert "short-answer" in registry.single_call_methods()
    entry = registry.get_method("short-answer")
    assert entry.default_max_new_tokens == 16 and not entry.uses_few_shot
    assert registry.build_prompt("short-answer", "What is it?", ["Dog", "Rain"]) == (
        "What is it?\nSelect one option from the provided choices:\nDog\nRain\nAnswer with the option text only.")


def test_rlalm_infer_runs_a_method_from_another_package(installed_plugin, tmp_path, capsys):
    for method in ("short-answer", "twice-asked"):
        out = tmp_path / method
        assert main(["infer", "--model", "demo", "--benchmark", "synthetic", "--method", method, "--out", str(out),
                     "--limit", "3", "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["method"] == method and summary["generated_records"] == 3
        records = ResultStore(out).records()
        assert [r["method"] for r in records] == [method] * 3
        assert all(r["prompt"].endswith("Answer with the option text only." if method == "short-answer"
                                         else "Think twice.") for r in records)
        assert all(r.get("written_by") == "plugin runner" for r in records) == (method == "twice-asked")
    # --samples > 1 (K@N) accepts a registered single-call method and refuses a multi-step one.
    assert main(["infer", "--model", "demo", "--benchmark", "synthetic", "--method", "twice-asked", "--samples", "2",
                 "--out", str(tmp_path / "k"), "--limit", "1", "--no-progress"]) == 2
    assert "single-call method" in capsys.readouterr().err


def test_an_experiment_runs_and_scores_a_method_from_another_package(installed_plugin, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUNS_DIR", tmp_path / "runs")
    exp = Experiment(profile="plugin", model="demo", benchmark="synthetic", limit_per_task=1, device="cpu",
                     bootstrap=0, max_new_tokens=4, results_root=tmp_path / "results")
    store_dir = exp.run("short-answer", progress=False)
    records = ResultStore(store_dir).records()
    assert len(records) == len(exp.items) == 3
    assert all(r["method"] == "short-answer" and r["error"] is None for r in records)
    assert exp.run("short-answer", progress=False) == store_dir  # cached by content, like a built-in method
    scores = exp.score("short-answer", baseline=None)
    log = [json.loads(line) for line in exp.sample_log_path("short-answer", baseline=None).read_text().splitlines()]
    outcomes = [r["outcome"] for r in log if r.get("side", "pred") == "pred"]
    assert len(outcomes) == 3
    assert (scores["n_correct"], scores["n_rejected"]) == (outcomes.count("correct"), outcomes.count("rejected"))


def test_an_entry_point_that_is_not_a_method_entry_is_refused(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "bad_methods-0.1.dist-info").mkdir(parents=True)
    (site / "bad_methods.py").write_text("NOT_AN_ENTRY = 'baseline'\n", encoding="utf-8")
    (site / "bad_methods-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bad-methods\nVersion: 0.1\n", encoding="utf-8")
    (site / "bad_methods-0.1.dist-info" / "entry_points.txt").write_text(
        "[reliable_lalm.methods]\nbroken = bad_methods:NOT_AN_ENTRY\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    registry.all_methods.cache_clear()
    try:
        with pytest.raises(TypeError, match="'broken' .* not a MethodEntry"):
            registry.get_method("baseline")
    finally:
        registry.all_methods.cache_clear()
