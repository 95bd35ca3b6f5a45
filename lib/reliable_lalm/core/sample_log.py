"""Per-output judge log: for every scored output, what was decided, by which rule or judge, and why.

One JSON object per line (``rlalm score --log-samples FILE``; the notebooks write the same under
``runs/<profile>/samples/``):

* ``id``, ``side`` (``pred`` or ``baseline``), ``task``, ``answer``, ``output`` (the raw output);
* ``decision``: the option text, ``IDK`` or ``invalid``; ``outcome``: correct / rejected / wrong;
* ``decided_by``: ``rule`` or ``llm`` (an LLM judge's reply, fresh or cached); ``method``: the rule
  that decided (``answer_statement:exact``, ``refusal``, ``doubt``, ``hedge``, ``no_match`` ... see
  :mod:`reliable_lalm.core.normalize`) or the judge's method (``llm``, ``llm-cache``,
  ``llm-unparsed``, ``llm-failed``: the LLM failed and the rules' decision was kept);
* where an LLM judge ran: ``llm_reply`` (or ``llm_error``), ``rule_decision`` and ``rule_method``
  (what the rules alone decided) and ``judges_disagree`` (the two decisions differ).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.normalize_types import Normalized

LLM_METHODS = ("llm", "llm-cache", "llm-unparsed")


def sample_rows(records: Sequence[Any], normalized: Sequence[Normalized], outcomes: Sequence[str],
                details: Sequence[Mapping[str, Any] | None], side: str) -> list[dict[str, Any]]:
    """One log row per output. ``records``: objects with ``id``, ``task``, ``answer``, ``output``;
    ``details``: the normalizer's per-output details (an LLM judge's reply and the rules' decision)."""
    rows = []
    for record, x, outcome, detail in zip(records, normalized, outcomes, details):
        row: dict[str, Any] = {"id": record.id, "side": side, "task": record.task, "answer": record.answer,
                               "output": record.output, "decision": x.decision, "outcome": outcome,
                               "decided_by": "llm" if x.method in LLM_METHODS else "rule", "method": x.method}
        if detail:
            if detail.get("reply") is not None:
                row["llm_reply"] = detail["reply"]
            if detail.get("error"):
                row["llm_error"] = detail["error"]
            if "rule_decision" in detail:
                row["rule_decision"] = detail["rule_decision"]
                row["rule_method"] = detail.get("rule_method")
                if x.method in LLM_METHODS:
                    row["judges_disagree"] = row["rule_decision"] != row["decision"]
        rows.append(row)
    return rows


def disagreement_summary(rows: Sequence[Mapping[str, Any]], max_ids: int = 100) -> dict[str, Any]:
    """How often the LLM judge and the rules both decided an output and differed (per side)."""
    compared = [r for r in rows if "judges_disagree" in r]
    differ = [r for r in compared if r["judges_disagree"]]
    return {"n_compared": len(compared), "n_disagree": len(differ),
            "by_side": {side: sum(r["side"] == side for r in differ) for side in sorted({r["side"] for r in compared})},
            "ids": [f"{r['side']}:{r['id']}" for r in differ[:max_ids]]}


def write_sample_log(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the rows as JSONL (atomically); returns the path."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
    return Path(path)
