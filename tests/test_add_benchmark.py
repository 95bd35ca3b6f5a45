"""Adding a benchmark as README's "How to add a benchmark" says: from outside the package, two files.

1. one module (``quiz_bench.py``): the schema's ``translate`` to the MMAU view, ``load`` through
   ``reliable_lalm.benchmarks.loading.load_translated``, and its ``BenchmarkEntry``;
2. one entry point in the plugin's ``pyproject.toml``
   (``[project.entry-points."reliable_lalm.benchmarks"] quiz = "quiz_bench:ENTRY"``).

``pip install`` turns the second file into the distribution's ``entry_points.txt``; the test writes
that installed form (a ``.dist-info`` folder on ``sys.path``), which is what the registry reads.
Then ``rlalm benchmark list`` shows the benchmark, ``rlalm benchmark validate --kind quiz`` loads
it (and rejects a bad record with its reason), and ``rlalm score STORE --benchmark quiz:FILE``
scores a result store on it, in the benchmark's own modality groups.
"""
from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from reliable_lalm.cli import main
from reliable_lalm.core.results import ResultStore

PLUGIN_MODULE = textwrap.dedent('''
    """A quiz benchmark: ``qid``, ``clip``, ``prompt``, ``options`` (a list), ``correct`` (the
    option's index) and ``kind`` (``birdsong`` or ``traffic``, its modality group)."""
    from reliable_lalm.benchmarks.loading import load_translated, record_id
    from reliable_lalm.benchmarks.registry import BenchmarkEntry
    from reliable_lalm.core.items import ItemError

    MODALITIES = ("birdsong", "traffic")


    def translate(record, index):
        item_id = record_id({"id": record.get("qid")}, index)
        options = record.get("options")
        correct = record.get("correct")
        if not isinstance(options, list) or not isinstance(correct, int) or not 0 <= correct < len(options):
            raise ItemError(item_id, f"correct {correct!r} is not an index into the options")
        return {"id": item_id, "question": record.get("prompt"), "choices": options, "answer": options[correct],
                "task": record.get("kind"), "audio_id": record.get("clip")}


    def load(path, audio_dir=None, *, modalities=MODALITIES, check_audio=True, **kwargs):
        return load_translated(path, audio_dir, translate, modalities=modalities, check_audio=check_audio)


    ENTRY = BenchmarkEntry("quiz", "quiz_bench:load", modalities=MODALITIES,
                           description="a test plugin: birdsong and traffic quizzes")
''')

ENTRY_POINTS = '[reliable_lalm.benchmarks]\nquiz = quiz_bench:ENTRY\n'


@pytest.fixture
def quiz_plugin(tmp_path, monkeypatch):
    """The plugin's two files, installed: its module and its entry point (as pip writes it)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "quiz_bench.py").write_text(PLUGIN_MODULE)
    dist = site / "quiz_bench-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: quiz-bench\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("quiz_bench", None)


def _quiz_file(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "clips").mkdir()
    records = []
    for k in range(6):
        clip = f"clips/q{k}.wav"
        sf.write(str(tmp_path / clip), (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        records.append({"qid": f"q{k}", "clip": clip, "prompt": "Which sound is it?",
                        "options": ["robin", "wren", "horn", "tram"], "correct": k % 4,
                        "kind": ("birdsong", "traffic")[k % 2]})
    records.append({"qid": "bad", "clip": "clips/q0.wav", "prompt": "?", "options": ["a", "b"], "correct": 5,
                    "kind": "birdsong"})
    path = tmp_path / "quiz.json"
    path.write_text(json.dumps(records))
    return path, records[:6]


def test_a_benchmark_added_by_two_files_is_listed_validated_and_scored(quiz_plugin, tmp_path, capsys):
    path, good = _quiz_file(tmp_path)

    assert main(["benchmark", "list"]) == 0
    assert "birdsong,traffic" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quiz"))

    assert main(["benchmark", "validate", str(path), "--kind", "quiz", "--check-audio"]) == 1  # one bad record
    out = capsys.readouterr().out
    assert "accepted=6 rejected=1" in out and "bad (record 6): correct 5 is not an index into the options" in out
    assert "per modality: birdsong=3, traffic=3" in out

    store = ResultStore.open(tmp_path / "store", {"method": "baseline"})
    answers = [r["options"][r["correct"]] for r in good]
    outputs = [answers[0], answers[1], "I don't know.", "tram" if answers[3] != "tram" else "robin", answers[4],
               answers[5]]
    store.extend([{"item_id": r["qid"], "model_output": o} for r, o in zip(good, outputs)])
    assert main(["score", str(tmp_path / "store"), "--benchmark", f"quiz:{path}"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert (scored["n"], scored["n_correct"], scored["n_rejected"], scored["n_wrong"]) == (6, 4, 1, 1)
    assert list(scored["by_task"]) == ["birdsong", "traffic"]  # the benchmark's own groups, in its order
    assert scored["rejected"]["n"] == 1 and scored["rejected"]["records"][0]["id"] == "bad"
