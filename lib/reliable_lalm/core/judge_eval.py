"""Measure an answer normalizer (a *judge*) against labelled model outputs.

The labelled judge set (``assets/judge/judge_set.jsonl``, :data:`reliable_lalm.paths.JUDGE_SET_PATH`)
holds outputs written in the styles real LALMs produce, each with its item's choices and answer, a
category, a language and its *acceptable* outcomes: option texts, ``"IDK"`` (a refusal) and/or
``"invalid"`` (nothing may be credited). Two splits: ``dev``, which the rule normalizer was designed
on, and ``eval``, which it is only measured on. The policy behind the labels is docs/judging.md.

:func:`evaluate_splits` runs one normalizer over the cases (one ``normalize_many`` call) and returns,
per split and over all of them, agreement (the decision is one of the acceptable outcomes), the
outcome confusion matrix (what the metrics see: correct / refused / wrong-or-invalid, labels against
decisions), and every *harmful* error:

* ``credited_unasserted``: an option was decided that the output does not assert;
* ``refusal_missed``: a clear refusal (only ``IDK`` acceptable) was not decided IDK;
* ``answer_called_refusal``: a clear answer (exactly one option acceptable) was decided IDK.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from reliable_lalm import paths
from reliable_lalm.core.metrics import CORRECT, REJECTED, WRONG, outcome_of
from reliable_lalm.core.normalize_types import IDK_LABEL, INVALID_LABEL, Normalized, Normalizer

SPLITS = ("dev", "eval")
OUTCOME_NAMES = {CORRECT: "correct", REJECTED: "refused", WRONG: "wrong-or-invalid"}
HARM_KINDS = ("credited_unasserted", "refusal_missed", "answer_called_refusal")


class JudgeSetError(ValueError):
    """A judge-set file whose record is malformed (names the line and the cause)."""


@dataclass(frozen=True)
class JudgeCase:
    id: str
    split: str
    category: str
    language: str
    choices: tuple[str, ...]
    answer: str
    output: str
    acceptable: tuple[str, ...]  # option texts, "IDK" and/or "invalid"


def _case(record: Mapping[str, Any], where: str) -> JudgeCase:
    try:
        case = JudgeCase(id=str(record["id"]), split=str(record["split"]), category=str(record["category"]),
                         language=str(record["language"]), choices=tuple(str(c) for c in record["choices"]),
                         answer=str(record["answer"]), output=str(record["output"]),
                         acceptable=tuple(str(a) for a in record["acceptable"]))
    except (KeyError, TypeError) as err:
        raise JudgeSetError(f"{where}: missing or malformed field ({err})") from None
    if case.split not in SPLITS:
        raise JudgeSetError(f"{where} ({case.id}): split {case.split!r} is not one of {SPLITS}")
    if case.answer not in case.choices:
        raise JudgeSetError(f"{where} ({case.id}): answer {case.answer!r} is not a choice")
    strange = [a for a in case.acceptable if a not in case.choices and a not in (IDK_LABEL, INVALID_LABEL)]
    if not case.acceptable or strange:
        raise JudgeSetError(f"{where} ({case.id}): acceptable outcomes must be choices, {IDK_LABEL!r} or "
                            f"{INVALID_LABEL!r}, got {list(case.acceptable)}")
    return case


def load_judge_set(path: str | Path | None = None, split: str | None = None) -> list[JudgeCase]:
    """The labelled cases (the packaged set by default), optionally one split."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    source = Path(path) if path is not None else paths.JUDGE_SET_PATH
    cases, seen = [], set()
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise JudgeSetError(f"{source.name} line {number}: not JSON ({err})") from None
        case = _case(record, f"{source.name} line {number}")
        if case.id in seen:
            raise JudgeSetError(f"{source.name} line {number}: duplicate id {case.id!r}")
        seen.add(case.id)
        if split is None or case.split == split:
            cases.append(case)
    return cases


def decision_label(decision: Normalized) -> str:
    """The decision in the judge set's vocabulary: an option text, ``IDK`` or ``invalid``."""
    return decision.decision


def _label_outcome(label: str, answer: str) -> str:
    if label == IDK_LABEL:
        return REJECTED
    return CORRECT if label == answer else WRONG


def harm_of(case: JudgeCase, decision: Normalized) -> str | None:
    """Which harmful error ``decision`` is for ``case`` (see the module docstring), or None."""
    label = decision_label(decision)
    if decision.kind == "choice" and label not in case.acceptable:
        return "credited_unasserted"
    if case.acceptable == (IDK_LABEL,) and decision.kind != "idk":
        return "refusal_missed"
    clear_answer = len(case.acceptable) == 1 and case.acceptable[0] in case.choices
    if clear_answer and decision.kind == "idk":
        return "answer_called_refusal"
    return None


def judge_decisions(normalizer: Normalizer, cases: Sequence[JudgeCase]) -> tuple[list[Normalized], list[Any]]:
    """The normalizer's decision on every case (one ``normalize_many`` call) and its per-case
    details (an LLM judge's replies; None where it has none)."""
    if not cases:
        raise ValueError("no judge cases to evaluate")
    decisions = normalizer.normalize_many([c.output for c in cases], [list(c.choices) for c in cases])
    if len(decisions) != len(cases):
        raise RuntimeError(f"normalizer returned {len(decisions)} decisions for {len(cases)} cases")
    details = list(getattr(normalizer, "last_details", None) or [None] * len(cases))
    return decisions, details


def summarize_decisions(name: str, cases: Sequence[JudgeCase], decisions: Sequence[Normalized],
                        details: Sequence[Any]) -> dict[str, Any]:
    """Agreement, confusion matrices and harmful errors of the decisions already made on ``cases``."""
    outcome_matrix = {OUTCOME_NAMES[r]: {OUTCOME_NAMES[c]: 0 for c in OUTCOME_NAMES} for r in OUTCOME_NAMES}
    kinds = ("option", IDK_LABEL, INVALID_LABEL)
    decision_matrix = {r: {c: 0 for c in ("labelled option", "other option", IDK_LABEL, INVALID_LABEL)} for r in kinds}
    by_category: dict[str, Counter] = {}
    agreed, harmful, disagreements = 0, [], []
    for case, decision, detail in zip(cases, decisions, details):
        label = decision_label(decision)
        agree = label in case.acceptable
        agreed += agree
        decided = outcome_of(decision, case.answer)
        label_outcomes = [_label_outcome(a, case.answer) for a in case.acceptable]
        row = decided if agree else label_outcomes[0]
        outcome_matrix[OUTCOME_NAMES[row]][OUTCOME_NAMES[decided]] += 1
        first = label if agree else case.acceptable[0]
        label_kind = first if first in (IDK_LABEL, INVALID_LABEL) else "option"
        if decision.kind == "choice":
            column = "labelled option" if label == first else "other option"
        else:
            column = label
        decision_matrix[label_kind][column] += 1
        counts = by_category.setdefault(case.category, Counter())
        counts["n"] += 1
        counts["agree"] += agree
        harm = harm_of(case, decision)
        if not agree or harm:
            entry = {"id": case.id, "category": case.category, "output": case.output,
                     "acceptable": list(case.acceptable), "decided": label, "method": decision.method,
                     "harm": harm}
            if isinstance(detail, Mapping) and detail.get("reply") is not None:
                entry["reply"] = detail["reply"]
            disagreements.append(entry)
            if harm:
                harmful.append(entry)
    return {
        "normalizer": name,
        "n": len(cases),
        "agreement": agreed / len(cases),
        "n_agree": agreed,
        "n_harmful": len(harmful),
        "harmful_by_kind": {k: sum(e["harm"] == k for e in harmful) for k in HARM_KINDS},
        "outcome_confusion": outcome_matrix,
        "decision_confusion": decision_matrix,
        "by_category": {k: {"n": v["n"], "agreement": v["agree"] / v["n"]} for k, v in sorted(by_category.items())},
        "harmful": harmful,
        "disagreements": disagreements,
    }


def evaluate_splits(normalizer: Normalizer, cases: Sequence[JudgeCase]) -> dict[str, dict[str, Any]]:
    """:func:`summarize_decisions` of ``normalizer`` per split present in ``cases`` (``dev``, ``eval``) and, with
    both present, over all of them (``all``)."""
    decisions, details = judge_decisions(normalizer, cases)  # one call: an LLM judge asks once
    name = getattr(normalizer, "name", type(normalizer).__name__)
    out = {}
    for split in SPLITS:
        keep = [k for k, case in enumerate(cases) if case.split == split]
        if keep:
            out[split] = summarize_decisions(name, [cases[k] for k in keep], [decisions[k] for k in keep],
                                             [details[k] for k in keep])
    if len(out) > 1:
        out["all"] = summarize_decisions(name, cases, decisions, details)
    return out


def _matrix_lines(matrix: Mapping[str, Mapping[str, int]], corner: str) -> list[str]:
    columns = list(next(iter(matrix.values())))
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    lines += [f"| {row} | " + " | ".join(str(values[c]) for c in columns) + " |" for row, values in matrix.items()]
    return lines


def format_report(results: Mapping[str, Mapping[str, Any]], *, show: int = 20) -> str:
    """Markdown: per split, agreement, harmful errors, both confusion matrices and the first
    ``show`` disagreements (every harmful error is listed whatever ``show`` says)."""
    lines: list[str] = []
    for split, result in results.items():
        lines.append(f"## {result['normalizer']} on {split}: {result['n_agree']}/{result['n']} agree "
                     f"({result['agreement']:.1%}), {result['n_harmful']} harmful")
        lines.append("")
        lines += _matrix_lines(result["outcome_confusion"], "label \\ judge")
        lines.append("")
        lines += _matrix_lines(result["decision_confusion"], "label \\ decision")
        lines.append("")
        for entry in result["harmful"]:
            lines.append(f"- HARMFUL {entry['harm']}: {entry['id']} {entry['output']!r} -> {entry['decided']!r} "
                         f"({entry['method']}); acceptable {entry['acceptable']}")
        others = [e for e in result["disagreements"] if not e["harm"]]
        for entry in others[:show]:
            reply = f"; reply {entry['reply']!r}" if "reply" in entry else ""
            lines.append(f"- {entry['id']} [{entry['category']}] {entry['output']!r} -> {entry['decided']!r} "
                         f"({entry['method']}{reply}); acceptable {entry['acceptable']}")
        if len(others) > show:
            lines.append(f"- ... {len(others) - show} more disagreement(s)")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
