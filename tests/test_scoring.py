"""``rlalm score`` and the scoring library: counts, baselines, per-record errors, stores, CLI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # chat_server lives beside this file

from chat_server import ChatServer, Reply, user_prompt  # noqa: E402

from reliable_lalm.benchmarks.registry import resolve_benchmark  # noqa: E402
from reliable_lalm.cli import main  # noqa: E402
from reliable_lalm.core.metrics import Transitions  # noqa: E402
from reliable_lalm.core.results import ResultStore  # noqa: E402
from reliable_lalm.core.records import IdMismatchError, read_records, records_from_store  # noqa: E402
from reliable_lalm.core.score_table import format_table  # noqa: E402
from reliable_lalm.core.scoring import score_records  # noqa: E402
from scoring_helpers import score_store  # noqa: E402

ANIMALS = ["Dog barking", "Cat meowing", "Car horn", "Rain"]


def rec(item_id, output, answer="Dog barking", task="sound", choices=ANIMALS, **extra):
    r = {"id": item_id, "task": task, "choices": list(choices), "answer": answer, "model_output": output}
    r.update(extra)
    return r


@pytest.fixture(autouse=True)
def clean_env(no_credentials):
    """Every test here runs without real credentials, endpoints or proxies, with a private cache."""


def predictions():
    return [
        rec("s1", "Dog barking"),                       # correct
        rec("s2", "The answer is (B)."),                # letter -> Cat meowing: wrong
        rec("s3", "IDK"),                               # rejected
        rec("m1", "Jazz", answer="Jazz", task="music", choices=["Jazz", "Rock", "Pop"]),
        rec("m2", "I'm not sure, it could be anything.", answer="Rock", task="music", choices=["Jazz", "Rock", "Pop"]),
        rec("p1", "zzz qqq", answer="Man", task="speech", choices=["Man", "Woman"]),  # invalid -> wrong
        rec("p2", "Woman", answer="Man", task="Speech ", choices=["Man", "Woman"]),   # task normalized
    ]


def test_counts_total_and_by_task():
    r = score_records(predictions())
    assert (r["n"], r["n_correct"], r["n_rejected"], r["n_wrong"], r["n_invalid"]) == (7, 2, 2, 3, 1)
    assert r["acc"] == pytest.approx(2 / 7) and r["tru"] == pytest.approx(4 / 7) and r["rej"] == pytest.approx(2 / 7)
    assert r["rel"] == pytest.approx(2 / 7 * 2 / 7 + 5 / 7 * 4 / 7)
    assert list(r["by_task"]) == ["sound", "music", "speech"]
    assert r["by_task"]["sound"]["n_correct"] == 1 and r["by_task"]["sound"]["n_wrong"] == 1
    assert r["by_task"]["speech"]["n_invalid"] == 1 and r["by_task"]["speech"]["n"] == 2
    assert r["errors"] == [] and "d_con" not in r and "ci" not in r
    assert r["normalizer"]["name"] == "rule" and r["normalizer"]["kinds"] == {"choice": 4, "idk": 2, "invalid": 1}


def test_bad_records_are_errors_not_crashes():
    records = predictions() + [
        rec("e1", None),
        {"id": "e2", "task": "sound", "choices": ANIMALS, "answer": "Dog barking"},  # no model_output
        rec("e3", "Dog barking", answer="Horse"),
        rec("e4", "A", choices=[f"c{i}" for i in range(9)], answer="c0"),
        rec("e5", "A", choices=["only"], answer="only"),
        rec("e6", 42),
        rec("e7", "Dog barking", task=""),
        {"task": "sound", "choices": ANIMALS, "answer": "Dog barking", "model_output": "x"},  # no id
        "not a record",
        rec("s1", "Rain"),  # duplicated id: the first s1 is kept
        rec("e8", "x", choices=["a", ""], answer="a"),
    ]
    r = score_records(records)
    assert r["n"] == 7 and r["n_correct"] == 2  # the good records only, s1 still the first one
    reasons = {e["id"]: e["reason"] for e in r["errors"]}
    assert reasons["e1"] == "no model_output" and reasons["e2"] == "no model_output"
    assert "'Horse' is not among the choices" in reasons["e3"]
    assert "9 distinct choices" in reasons["e4"] and "1 distinct choices" in reasons["e5"]
    assert "not a string" in reasons["e6"] and reasons["e7"] == "no task"
    assert reasons["#14"] == "no id" and "not an object" in reasons["#15"]  # position in the list
    assert "duplicated id" in reasons["s1"] and "empty" in reasons["e8"]
    assert r["n_errors"] == len(r["errors"]) == 11


def test_duplicated_choices_are_deduplicated():
    r = score_records([rec("d", "fourteen", answer="fourteen", choices=["four", "nine", "fourteen", "fourteen"])])
    assert r["n_correct"] == 1 and r["errors"] == []


def test_baseline_transitions_and_gains():
    base = [rec("a", "Dog barking"), rec("b", "Dog barking"), rec("c", "Rain"), rec("d", "Rain"),
            rec("e", "IDK"), rec("f", "Rain", task="music")]
    meth = [rec("a", "Dog barking"), rec("b", "IDK"), rec("c", "IDK"), rec("d", "Rain"),
            rec("e", "Dog barking"), rec("f", "I don't know", task="music")]
    r = score_records(meth, base, keep_items=True)
    expected = Transitions(ncc=1, ncr=1, nwr=2, nww=1, nrc=1)
    assert {k: r[k] for k in expected.to_dict()} == expected.to_dict()
    assert r["baseline"]["n_rejected"] == 1
    for suffix, convention in (("", "class"), ("_subset", "subset")):
        g = expected.gain(convention)
        assert r["d_con" + suffix] == pytest.approx(g.d_con) and r["rgi" + suffix] == pytest.approx(g.rgi)
    assert r["d_con"] == pytest.approx(1 / 2) and r["d_hum"] == pytest.approx(2 / 3)
    assert r["d_con_subset"] == pytest.approx(1 / 5) and r["d_hum_subset"] == pytest.approx(2 / 5)
    music = r["by_task"]["music"]
    assert music["nwr"] == 1 and music["d_con"] is None and "Nc = 0" in music["d_con_reason"]
    assert music["rgi_subset"] is None and "ΔCon = 0" in music["rgi_subset_reason"]
    items = {i["id"]: i for i in r["items"]}
    assert items["e"]["baseline_outcome"] == "rejected" and items["e"]["outcome"] == "correct"
    assert "conventions" in r and "subset" in r["conventions"]


def test_baseline_id_mismatch_names_the_ids():
    base = [rec("a", "x"), rec("b", "x"), rec("only-base", "x")]
    meth = [rec("a", "x"), rec("b", "x"), rec("only-pred", "x"), rec("only-pred-2", None)]
    with pytest.raises(IdMismatchError) as err:
        score_records(meth, base)
    msg = str(err.value)
    assert "only-pred" in msg and "only-pred-2" in msg and "only-base" in msg
    assert err.value.only_base == ["only-base"] and err.value.only_pred == ["only-pred", "only-pred-2"]


def test_baseline_bad_side_is_left_out_of_both():
    base = [rec("a", "Dog barking"), rec("b", None), rec("c", "Rain", answer="Rain")]
    meth = [rec("a", "IDK"), rec("b", "Dog barking"), rec("c", "Rain")]  # c: answer differs from base
    r = score_records(meth, base)
    assert r["n"] == 1 and r["ncr"] == 1
    reasons = {(e["source"], e["id"]): e["reason"] for e in r["errors"]}
    assert reasons[("baseline", "b")] == "no model_output"
    assert "another answer" in reasons[("baseline", "c")]


def test_bootstrap_intervals_in_output():
    recs = [rec(f"i{k}", ["Dog barking", "Rain", "IDK"][k % 3]) for k in range(90)]
    base = [rec(f"i{k}", ["Dog barking", "Rain"][k % 2]) for k in range(90)]
    r = score_records(recs, base, n_boot=200, seed=5)
    assert r["bootstrap"] == {"n_boot": 200, "seed": 5, "level": 0.95, "method": "percentile", "paired": True}
    for group in (r, r["by_task"]["sound"]):
        assert set(group["ci"]) == {"acc", "tru", "rej", "rel", "d_con", "d_hum", "rgi",
                                    "d_con_subset", "d_hum_subset", "rgi_subset"}
        assert group["ci"]["acc"]["low"] <= group["acc"] <= group["ci"]["acc"]["high"]
    assert r["by_task"]["music"]["ci"]["acc"]["low"] is None  # no music items
    assert score_records(recs, base, n_boot=200, seed=5)["ci"] == r["ci"]


def score_file(path):
    """A prediction file scored as ``rlalm score`` reads it: its unreadable lines reported as errors."""
    records, errors = read_records(path)
    return score_records(records, errors=errors)


def test_files_and_jsonl_with_a_broken_line(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [json.dumps(r) for r in predictions()]
    lines.insert(2, '{"id": "torn", "model_out')
    path.write_text("\n".join(lines) + "\n")
    records, errors = read_records(path)
    assert len(records) == 7 and errors[0].id == "#line 3" and "invalid JSON" in errors[0].reason
    r = score_file(path)
    assert r["n"] == 7 and r["errors"][0]["id"] == "#line 3"
    as_items = tmp_path / "p.json"
    as_items.write_text(json.dumps({"items": predictions()}))
    assert score_file(as_items)["n"] == 7
    broken = tmp_path / "b.json"
    broken.write_text("[{")
    with pytest.raises(ValueError):
        read_records(broken)
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "none.json")


def _benchmark(tmp_path, n=4):
    records = [{"id": f"q{k}", "audio_id": f"./a/q{k}.wav", "question": "What is it?", "choices": ANIMALS,
                "answer": ANIMALS[k % 4], "task": ("sound", "music", "speech")[k % 3], "category": ["Reasoning"]}
               for k in range(n)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(records))
    return path, records


def test_score_store(tmp_path):
    bench = resolve_benchmark(_benchmark(tmp_path, 5)[0])
    store = ResultStore.open(tmp_path / "store", {"method": "baseline"})
    store.extend([{"item_id": "q0", "model_output": "Dog barking"},
                  {"item_id": "q1", "model_output": "IDK"},
                  {"item_id": "q2", "model_output": "Rain"},
                  {"item_id": "q9", "model_output": "Rain"},  # not in the benchmark
                  {"item_id": "q4", "model_output": None, "error": "audio file unreadable"},
                  {"item_id": "q0", "sample_index": 1, "model_output": "Rain"}])
    recs = records_from_store(store, bench)
    assert [r["id"] for r in recs] == ["q0", "q1", "q2", "q9", "q4"]
    assert recs[0]["question"] == "What is it?" and recs[0]["model_output"] == "Dog barking"
    r = score_store(tmp_path / "store", bench)
    assert (r["n"], r["n_correct"], r["n_rejected"], r["n_wrong"]) == (3, 1, 1, 1)
    assert r["missing"] == {"n": 1, "ids": ["q3"]}
    reasons = {e["id"]: e["reason"] for e in r["errors"]}
    assert "not among the choices" in reasons["q9"] or "choices must be a list" in reasons["q9"]
    assert reasons["q4"] == "no model_output (inference error: audio file unreadable)"
    assert score_store(store, bench, sample_index=1)["n_wrong"] == 1
    # A store whose records carry the item fields needs no benchmark.
    own = ResultStore.open(tmp_path / "own", {})
    own.append({"item_id": "x", "output": "Rain", "choices": ANIMALS, "answer": "Rain", "task": "sound"})
    assert score_store(own)["n_correct"] == 1
    with pytest.raises(FileNotFoundError):
        records_from_store(tmp_path / "nothing-here")


def test_cli_json_table_and_output(tmp_path, capsys):
    pred, base = tmp_path / "pred.json", tmp_path / "base.jsonl"
    pred.write_text(json.dumps(predictions()))
    base.write_text("\n".join(json.dumps(r | {"model_output": r["answer"]}) for r in predictions()) + "\n")
    assert main(["score", str(pred), "--baseline", str(base), "--bootstrap", "50", "--seed", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 7 and out["ncc"] == 2 and out["baseline"]["acc"] == 1.0
    assert out["d_hum"] is None and "Nw = 0" in out["d_hum_reason"]
    assert out["ci"]["rel"]["n_boot"] == 50
    assert main(["score", str(pred), "--baseline", str(base), "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "Acc%" in table and "RGI(N)" in table and "ncc=2" in table and table.splitlines()[2].startswith("total")
    dest = tmp_path / "out" / "score.json"
    assert main(["score", str(pred), "--output", str(dest)]) == 0
    assert capsys.readouterr().out == "" and json.loads(dest.read_text())["n"] == 7


def test_cli_errors(tmp_path, capsys):
    pred, base = tmp_path / "pred.json", tmp_path / "base.json"
    pred.write_text(json.dumps([rec("a", "x"), rec("b", "x")]))
    base.write_text(json.dumps([rec("a", "x"), rec("zz-missing", "x")]))
    assert main(["score", str(pred), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert "'b'" not in err and "b" in err and "zz-missing" in err
    assert main(["score", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err
    # --normalizer openai without a key or a base URL: a clear error, no traceback.
    assert main(["score", str(pred), "--normalizer", "openai"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def test_cli_store_with_benchmark(tmp_path, capsys):
    bench, _ = _benchmark(tmp_path, 3)
    store = ResultStore.open(tmp_path / "store", {})
    store.extend([{"item_id": "q0", "model_output": "Dog barking"}, {"item_id": "q1", "model_output": "Rain"}])
    assert main(["score", str(tmp_path / "store"), "--benchmark", str(bench)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and out["missing"]["ids"] == ["q2"]


def test_cli_openai_normalizer_against_a_local_server(tmp_path, capsys):
    """Outputs the rules cannot map go to the LLM (fallback mode); its answers are scored."""
    def responder(body, n):
        return "Rain" if "mystery" in user_prompt(body) else "IDK"

    records = [rec("a", "Dog barking"), rec("b", "a mystery sound", answer="Rain"), rec("c", "hmm, hard to say?")]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(records))
    with ChatServer(responder) as server:
        rc = main(["score", str(pred), "--normalizer", "openai", "--openai-base-url", server.base_url,
                   "--openai-model", "test-model"])
        assert rc == 0
        asked = [b["model"] for b in server.requests]
    out = json.loads(capsys.readouterr().out)
    assert asked and set(asked) == {"test-model"}
    assert (out["n_correct"], out["n_rejected"], out["n_wrong"]) == (2, 1, 0)
    assert out["normalizer"]["name"] == "openai" and out["normalizer"]["calls"] == len(asked)


def test_format_table_without_baseline():
    text = format_table(score_records(predictions()))
    assert "ΔCon" not in text and "normalizer: rule" in text


def test_reference_rows_on_a_benchmark_with_other_modality_groups():
    """MMAR's groups (e.g. mix-sound-music) get reference rows too, not a KeyError."""
    from reliable_lalm.core.items import BenchmarkItem
    from reliable_lalm.core.scoring import score_reference_baselines

    items = [BenchmarkItem(id=f"x{i}", audio_path="a.wav", question="q?", choices=("a", "b"),
                           answer="a" if i < 3 else "b", task="mix-sound-music") for i in range(4)]
    rows = score_reference_baselines(items)
    frequent = rows["Most Frequent Choice"]["by_task"]["mix-sound-music"]
    assert frequent["n"] == 4 and frequent["n_correct"] == 3  # "a" is the answer 3 times of 4
