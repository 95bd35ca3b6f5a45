"""Export predictions to MMAU's official format (``rlalm export``: :mod:`reliable_lalm.cli.export`).

Each exported record is the original benchmark record (all its fields, original choices included)
plus

* ``model_output``: the *normalized* answer: the option text, ``"IDK"`` for a refusal, ``""``
  when nothing could be mapped (what MMAU's ``evaluation.py`` should read);
* ``model_output_raw``: the raw model output;
* ``normalization``: ``{"kind", "method", "normalizer"}`` for auditing.

Writing the option text makes MMAU's token rule (``string_match``) agree with our scoring on
every item *except* where two options of one question have token sets that MMAU's rule cannot
tell apart (e.g. "first: neutral, second: frustration" vs "first: frustration, second: neutral":
the same words). The export summary lists those items under ``mmau_rule_disagreements`` so the
difference between the official scorer and ours is explicit, never silent.

A registered benchmark whose scorer reads another field, has its own rule, or has no answers
(``mmar:FILE``, ``mmau-test:FILE``) is exported through :mod:`reliable_lalm.benchmarks.official`
instead: that benchmark's original records and output
field, disagreements with its own rule under ``official_rule_disagreements``.

The summary also lists the benchmark records rejected at load time (``rejected``, not exported)
and the items whose LLM normalization failed (``normalizer.failed_items``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from reliable_lalm.core.atomic import atomic_write_json
from reliable_lalm.core.metrics import outcome_of
from reliable_lalm.core.normalize import RuleBasedNormalizer, mmau_string_match
from reliable_lalm.core.normalize_types import Normalizer
from reliable_lalm.core.records import (OUTPUT_FIELD, RAW_FIELD, JoinBenchmark, NothingScoredError, check_records,
                                        join_items, join_summary, records_from_store)
from reliable_lalm.core.scoring import check_llm_refusal, llm_failures, normalizer_summary, nothing_scored_reason


def export_records(records: Iterable[Any], normalizer: Normalizer | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """MMAU-format records for prediction records carrying the raw output in ``model_output``.

    Returns ``(exported, summary)``; bad records are left out and listed in ``summary["errors"]``.
    """
    good, errors, _ = check_records(records, "pred")
    items = list(good.values())
    norm = normalizer or RuleBasedNormalizer()
    normalized = norm.normalize_many([r.output for r in items], [list(r.choices) for r in items]) if items else []
    check_llm_refusal(norm)  # rule-based labels must not be exported as the LLM's
    failed = llm_failures(norm, [(r.id, "pred") for r in items])
    exported: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    for r, x in zip(items, normalized):
        rec = {k: v for k, v in r.record.items() if k not in (OUTPUT_FIELD, RAW_FIELD)}
        rec[OUTPUT_FIELD] = x.label
        rec[RAW_FIELD] = r.output
        rec["normalization"] = {"kind": x.kind, "method": x.method, "normalizer": getattr(norm, "name", "")}
        exported.append(rec)
        ours = outcome_of(x, r.answer) == "correct"
        # MMAU's scorer sees the record's own (possibly duplicated) choices, as it would in MMAU.
        official = mmau_string_match(str(r.record.get("answer", r.answer)), x.label,
                                     [str(c) for c in r.record.get("choices", r.choices)])
        if official != ours:
            disagreements.append({"id": r.id, "model_output": x.label, "answer": r.answer,
                                  "ours": ours, "mmau_rule": official})
    summary = {"n_exported": len(exported), "n_errors": len(errors), "errors": [e.to_dict() for e in errors],
               "mmau_rule_disagreements": disagreements, "normalizer": normalizer_summary(norm, normalized)}
    if failed or hasattr(norm, "last_details"):
        summary["normalizer"]["failed_items"] = failed
    return exported, summary


def write_json(records: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Write a JSON list atomically (temporary file + rename), like MMAU's own JSON files."""
    return atomic_write_json(out, list(records))


def export_store(store: Any, benchmark: JoinBenchmark, out: str | Path, normalizer: Normalizer | None = None, *,
                 sample_index: int = 0, output_field: str | None = None) -> dict[str, Any]:
    """Export a result store joined with its benchmark to ``out``; returns the summary.

    ``missing`` lists benchmark items without a record in the store (not exported); ``rejected``
    the benchmark records rejected at load time.
    """
    items, rejected = join_items(benchmark)
    records = records_from_store(store, list(items.values()) if items is not None else None,
                                 sample_index=sample_index, output_field=output_field)
    exported, summary = export_records(records, normalizer)
    if not exported and records:
        raise NothingScoredError(nothing_scored_reason(summary, "exported"))
    write_json(exported, out)
    summary["out"] = str(out)
    if items is not None:
        summary.update(join_summary(items, records, rejected))
    return summary
