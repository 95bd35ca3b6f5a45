"""The labelled judge set and judge-eval: the rule normalizer's agreement on the held-out split, the
reply parser on labelled judge replies, and both LLM judge prompts end to end against a scripted
local server (plumbing: the server answers what the labels say, in the forms judges reply in)."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from chat_server import ChatServer, Reply, user_prompt
from reliable_lalm import paths
from reliable_lalm.cli import main
from reliable_lalm.core.judge_eval import (
    HARM_KINDS,
    JudgeCase,
    JudgeSetError,
    decision_label,
    evaluate_splits,
    harm_of,
    judge_decisions,
    load_judge_set,
)
from reliable_lalm.methods.llm_judge import parse_reply
from reliable_lalm.core.normalize import RULE_DESCRIPTIONS, SCOPE_DESCRIPTIONS, RuleBasedNormalizer
from reliable_lalm.core.normalize_types import Normalized
from reliable_lalm.reporting.item_report import describe_rule

REPLIES_PATH = paths.JUDGE_SET_PATH.with_name("judge_replies.jsonl")
POLICY_CATEGORIES = {"negation", "hedge", "doubt", "echo_instruction", "echo_choices", "multi_option",
                     "refusal_word_option", "letter", "empty", "refusal", "refusal_zh", "answer_zh", "mcot"}


@pytest.fixture(autouse=True)
def clean_env(no_credentials):
    """Every test here runs without real credentials, endpoints or proxies, with a private cache."""


def test_judge_set_is_large_varied_and_split():
    cases = load_judge_set()
    assert len(cases) >= 300
    splits = Counter(c.split for c in cases)
    assert splits["dev"] >= 100 and splits["eval"] >= 100
    assert {c.language for c in cases} >= {"en", "zh"}
    assert len({c.choices for c in cases}) >= 15
    assert {len(c.choices) for c in cases} >= {2, 3, 4, 5}
    for split in ("dev", "eval"):  # every policy point is in both splits
        assert POLICY_CATEGORIES <= {c.category for c in cases if c.split == split}, split
    assert len({(c.output, c.choices) for c in cases}) == len(cases)  # no case twice


def test_malformed_judge_set_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "set.jsonl"
    good = {"id": "x", "split": "eval", "category": "short", "language": "en", "choices": ["A1", "B1"],
            "answer": "A1", "output": "A1", "acceptable": ["A1"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "y", "acceptable": ["C1"]}) + "\n")
    with pytest.raises(JudgeSetError, match="line 2 .*y"):
        load_judge_set(path)


def test_rule_normalizer_on_the_held_out_split():
    result = evaluate_splits(RuleBasedNormalizer(), load_judge_set(split="eval"))["eval"]
    assert result["harmful"] == [] and result["n_harmful"] == 0
    assert result["agreement"] >= 0.97, result["disagreements"]
    matrix = result["outcome_confusion"]
    assert sum(sum(row.values()) for row in matrix.values()) == result["n"]


class Always:
    """A judge that decides the same for every output."""

    name = "always"

    def __init__(self, decide):
        self.decide = decide

    def normalize_many(self, outputs, choices):
        return [self.decide(c) for c in choices]


def test_harmful_errors_are_found():
    cases = load_judge_set()
    first = evaluate_splits(Always(lambda c: Normalized("choice", c[0], "x")), cases)["all"]
    idk = evaluate_splits(Always(lambda c: Normalized("idk", None, "x")), cases)["all"]
    invalid = evaluate_splits(Always(lambda c: Normalized("invalid", None, "x")), cases)["all"]
    clear_refusals = sum(c.acceptable == ("IDK",) for c in cases)
    clear_answers = sum(len(c.acceptable) == 1 and c.acceptable[0] in c.choices for c in cases)
    assert first["harmful_by_kind"]["credited_unasserted"] > len(cases) // 2
    assert idk["harmful_by_kind"] == {"credited_unasserted": 0, "refusal_missed": 0,
                                      "answer_called_refusal": clear_answers}
    assert invalid["harmful_by_kind"] == {"credited_unasserted": 0, "refusal_missed": clear_refusals,
                                          "answer_called_refusal": 0}
    assert set(first["harmful_by_kind"]) == set(HARM_KINDS)


def test_harm_kinds():
    case = JudgeCase("c", "eval", "refusal", "en", ("Dog", "Cat"), "Dog", "I don't know", ("IDK",))
    assert harm_of(case, Normalized("choice", "Dog")) == "credited_unasserted"
    assert harm_of(case, Normalized("invalid")) == "refusal_missed"
    assert harm_of(case, Normalized("idk")) is None
    answer = JudgeCase("d", "eval", "short", "en", ("Dog", "Cat"), "Dog", "Cat", ("Cat",))
    assert harm_of(answer, Normalized("idk")) == "answer_called_refusal"
    assert harm_of(answer, Normalized("invalid")) is None  # a disagreement, not a harmful one
    doubt = JudgeCase("e", "eval", "doubt", "en", ("Dog", "Cat"), "Dog", "Cat?", ("Cat", "IDK"))
    assert harm_of(doubt, Normalized("idk")) is None


def test_judge_eval_command(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["judge-eval", "--split", "eval", "--format", "json", "--output", str(out), "--check"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) == {"eval"} and report["eval"]["n_harmful"] == 0
    assert main(["judge-eval", "--show", "0"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"## rule on eval: \d+/\d+ agree", text) and "| label \\ judge |" in text
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["judge-eval", "--file", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    assert main(["judge-eval", "--normalizer", "openai"]) == 2  # no key, no base URL: one-line error


def test_reply_parser_on_labelled_replies():
    rows = [json.loads(line) for line in REPLIES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 40
    wrong = [(r["reply"], decision_label(parse_reply(r["reply"], r["choices"], letters=r["letters_shown"])),
              r["expected"]) for r in rows
             if decision_label(parse_reply(r["reply"], r["choices"], letters=r["letters_shown"])) != r["expected"]]
    assert wrong == []


def _oracle(cases, style):
    """A scripted judge that replies each case's first acceptable outcome, in the forms judges use."""
    by_output: dict[str, list[JudgeCase]] = {}
    for case in cases:
        by_output.setdefault(" ".join(case.output.split()), []).append(case)

    def respond(body, n):
        prompt = user_prompt(body)
        if style == "paper":
            answer = re.search(r"^The answer is:(.*)$", prompt, re.MULTILINE).group(1).strip()
        else:
            answer = " ".join(re.search(r"<<<\n(.*)\n>>>", prompt, re.DOTALL).group(1).split())
        [case] = [c for c in by_output[answer] if all(f"\n{ch}\n" in prompt or f". {ch}\n" in prompt
                                                     for ch in c.choices)]
        label = case.acceptable[0]
        if label == "IDK":
            return Reply("IDK." if n % 2 else "IDK")
        if label == "invalid":
            return Reply("INVALID" if style == "toolkit" else "None of them.")
        letter = chr(ord("A") + case.choices.index(label))
        return Reply(f"{letter}. {label}" if style == "toolkit" else f"'{label}.'")

    return respond


@pytest.mark.parametrize("style", ["paper", "toolkit"])
def test_llm_judge_prompts_against_a_scripted_server(style, tmp_path):
    cases = load_judge_set()
    with ChatServer(_oracle(cases, style)) as server:
        out = tmp_path / "llm.json"
        assert main(["judge-eval", "--normalizer", "all", "--judge-prompt", style, "--openai-base-url",
                     server.base_url, "--format", "json", "--output", str(out)]) == 0
        sent = [user_prompt(b) for b in server.requests]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["all"]["n_agree"] == len(cases) and report["all"]["n_harmful"] == 0
    assert len(sent) == len(set(sent)) == len({(" ".join(c.output.split()), c.choices) for c in cases})  # mode all
    if style == "paper":
        assert all(p.startswith("According to the answer, select one option") for p in sent)
    else:
        assert all("Reply with exactly one line" in p and "\nA. " in p for p in sent)


def test_splits_are_reported_separately():
    results = evaluate_splits(RuleBasedNormalizer(), load_judge_set())
    assert set(results) == {"dev", "eval", "all"}
    assert results["all"]["n"] == results["dev"]["n"] + results["eval"]["n"]


SOUNDS = ["Dog barking", "Cat meowing", "Car horn", "Bird chirping"]


def _predictions(tmp_path, outputs, name="pred.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": f"q{i}", "task": "sound", "choices": SOUNDS, "answer": "Dog barking",
                                        "model_output": out}) + "\n" for i, out in enumerate(outputs)))
    return path


def test_score_log_samples_with_the_rules(tmp_path):
    pred = _predictions(tmp_path, ["Dog barking", "I don't think it's a dog barking.", "Hard to say.",
                                   "Cat meowing, but I'm not sure."])
    base = _predictions(tmp_path, ["Dog barking", "Cat meowing", "Dog barking", "IDK"], "base.jsonl")
    log = tmp_path / "samples.jsonl"
    assert main(["score", str(pred), "--baseline", str(base), "--log-samples", str(log),
                 "--output", str(tmp_path / "score.json")]) == 0
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(r["side"], r["id"]) for r in rows] == [("pred", f"q{i}") for i in range(4)] + [
        ("baseline", f"q{i}") for i in range(4)]
    pred_rows = rows[:4]
    assert [r["decision"] for r in pred_rows] == ["Dog barking", "invalid", "IDK", "Cat meowing"]
    assert [r["outcome"] for r in pred_rows] == ["correct", "wrong", "rejected", "wrong"]
    assert [r["method"] for r in pred_rows] == ["exact", "no_match", "refusal", "doubt"]
    assert all(r["decided_by"] == "rule" and "llm_reply" not in r for r in rows)
    assert pred_rows[1]["output"] == "I don't think it's a dog barking."
    assert "disagreements" not in json.loads((tmp_path / "score.json").read_text())["normalizer"]


def test_score_log_samples_counts_judge_disagreements(tmp_path):
    outputs = ["Dog barking", "woof woof, a dog", "Hard to say.", "Cat meowing"]
    replies = {"Dog barking": "A. Dog barking", "woof woof, a dog": "Dog barking", "Hard to say.": "Car horn",
               "Cat meowing": "IDK"}

    def respond(body, n):
        answer = re.search(r"<<<\n(.*)\n>>>", user_prompt(body), re.DOTALL).group(1)
        return Reply(replies[answer])

    pred = _predictions(tmp_path, outputs)
    log = tmp_path / "samples.jsonl"
    with ChatServer(respond) as server:
        assert main(["score", str(pred), "--normalizer", "all", "--judge-prompt", "toolkit", "--openai-base-url",
                     server.base_url, "--log-samples", str(log), "--output", str(tmp_path / "s.json")]) == 0
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["decision"] for r in rows] == ["Dog barking", "Dog barking", "Car horn", "IDK"]
    assert [r["rule_decision"] for r in rows] == ["Dog barking", "invalid", "IDK", "Cat meowing"]
    assert [r["judges_disagree"] for r in rows] == [False, True, True, True]
    assert all(r["decided_by"] == "llm" and r["method"] == "llm" for r in rows)
    assert rows[2]["llm_reply"] == "Car horn" and rows[2]["rule_method"] == "refusal"
    with ChatServer(respond) as server:
        assert main(["score", str(pred), "--normalizer", "all", "--judge-prompt", "toolkit", "--openai-base-url",
                     server.base_url, "--format", "table", "--output", str(tmp_path / "s.txt")]) == 0
    assert "LLM judge and rules disagree on 3 of 4 output(s)" in (tmp_path / "s.txt").read_text()
    summary = json.loads((tmp_path / "s.json").read_text())["normalizer"]["disagreements"]
    assert summary == {"n_compared": 4, "n_disagree": 3, "by_side": {"pred": 3},
                       "ids": ["pred:q1", "pred:q2", "pred:q3"]}


def test_judge_eval_with_the_rules_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom reliable_lalm.cli import main\n"
            "assert main(['judge-eval', '--split', 'eval', '--show', '0', '--check']) == 0\n"
            "print('torch' in sys.modules, 'openai' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_the_paper_setting_keeps_table8_and_the_toolkit_gets_its_own_prompt():
    from reliable_lalm.methods.llm_judge import build_normalizer, describe_normalizer

    base = "http://127.0.0.1:9/v1"  # never contacted: only the settings are read
    paper = build_normalizer("all", base_url=base, progress=False)
    toolkit = build_normalizer("openai", base_url=base, progress=False)
    assert (paper.prompt, paper.mode, paper.params()["prompt"]) == ("paper", "all", "paper-table-8")
    assert (toolkit.prompt, toolkit.mode, toolkit.params()["prompt"]) == ("toolkit", "fallback", "toolkit-judge-v1")
    assert "Table 8 prompt" in describe_normalizer("all", paper)
    assert "toolkit judge prompt" in describe_normalizer("openai", toolkit)
    assert build_normalizer("all", base_url=base, prompt="toolkit", progress=False).prompt == "toolkit"
    with pytest.raises(ValueError, match="hf:<model>"):
        build_normalizer("banana")


def test_every_rule_a_decision_carries_is_described():
    """Reports and sample logs give each decision's rule in words (``RULE_DESCRIPTIONS``): every rule
    name the rule judge emits on the labelled set, with its scope, has a description."""
    decisions, _ = judge_decisions(RuleBasedNormalizer(), load_judge_set())
    seen = {d.method for d in decisions}
    assert {"exact", "refusal", "doubt", "echo_choices"} <= {m.rpartition(":")[2] for m in seen}
    for method in seen:
        scope, _, name = method.rpartition(":")
        assert name in RULE_DESCRIPTIONS, method
        assert not scope or scope in SCOPE_DESCRIPTIONS, method
        assert describe_rule(method).startswith(RULE_DESCRIPTIONS[name]), method
