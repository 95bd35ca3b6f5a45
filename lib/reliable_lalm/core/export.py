"""Export predictions to MMAU's official format: ``rlalm export STORE --benchmark JSON --out FILE``.

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

``--benchmark mmar:FILE`` (any registered benchmark whose scorer reads another field, has its own
rule, or has no answers, such as ``mmau-test:FILE``) exports through
:mod:`reliable_lalm.benchmarks.official` instead: that benchmark's original records and output
field, disagreements with its own rule under ``official_rule_disagreements``.

The summary also lists the benchmark records rejected at load time (``rejected``, not exported)
and the items whose LLM normalization failed (``normalizer.failed_items``). Like ``rlalm score``,
``rlalm export`` exits 2 with a one-line reason, writing nothing, when nothing can be exported,
when the output field or sample index is absent from every record, or when the LLM endpoint
refuses the requests; ``--strict`` makes any reported error exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from reliable_lalm.core.atomic import atomic_write_json
from reliable_lalm.core.metrics import outcome_of
from reliable_lalm.core.normalize_types import Normalizer
from reliable_lalm.core.scoring import (OUTPUT_FIELD, join_summary, NothingScoredError, _load_join_benchmark, _load_side, add_normalizer_arguments,
                      check_llm_refusal, check_records, llm_failures, normalizer_from_args, normalizer_summary,
                      nothing_scored_reason, records_from_store, rejected_summary, resolve_normalizer,
                      strict_problems)

RAW_FIELD = "model_output_raw"


def export_records(records: Iterable[Any], normalizer: Normalizer | str | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """MMAU-format records for prediction records carrying the raw output in ``model_output``.

    Returns ``(exported, summary)``; bad records are left out and listed in ``summary["errors"]``.
    """
    from reliable_lalm.core.normalize import mmau_string_match

    good, errors, _ = check_records(records, "pred")
    items = list(good.values())
    norm = resolve_normalizer(normalizer)
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


def export_store(store: Any, benchmark: Any, out: str | Path, normalizer: Normalizer | str | None = None, *,
                 sample_index: int = 0, output_field: str | None = None) -> dict[str, Any]:
    """Export a result store joined with its benchmark to ``out``; returns the summary.

    ``missing`` lists benchmark items without a record in the store (not exported); ``rejected``
    the benchmark records rejected at load time.
    """
    items, rejected = _load_join_benchmark(benchmark)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE",
                        help="result store folder (or an MMAU-style JSON/JSONL with model_output)")
    parser.add_argument("--benchmark", metavar="JSON", default=None,
                        help="the benchmark the store was run on: a JSON file or a registry spec such as "
                             "mmar:FILE or mmau-test:FILE (its records are what is exported)")
    parser.add_argument("--out", metavar="FILE", required=True, help="the MMAU-format JSON to write (with a registered benchmark's "
                        "--benchmark: FILE.parquet writes parquet, e.g. for MMAU-Pro's scorer)")
    add_normalizer_arguments(parser)  # also --output-field, --refresh-cache, --strict
    parser.add_argument("--sample-index", type=int, default=0, help="which sample of the store to export")


def run(args: argparse.Namespace) -> int:
    from reliable_lalm.core.llm_normalizer import LLMConfigError, LLMRefusedError

    try:
        path = Path(args.store)
        from reliable_lalm.benchmarks.official import export_store_for_benchmark, needs_own_export

        if path.is_dir() and needs_own_export(args.benchmark):
            summary = export_store_for_benchmark(path, args.benchmark, args.out, normalizer_from_args(args),
                                                 sample_index=args.sample_index, output_field=args.output_field)
        elif path.is_dir():
            if args.benchmark is None:
                print("rlalm export: note: no --benchmark; the store records must carry choices, answer and task",
                      file=sys.stderr)
            summary = export_store(path, args.benchmark, args.out, normalizer_from_args(args),
                                   sample_index=args.sample_index, output_field=args.output_field)
        else:
            records, read_errors = _load_side(str(path), None, args.sample_index, "pred", args.output_field)
            exported, summary = export_records(records, normalizer_from_args(args))
            summary["errors"] = [e.to_dict() for e in read_errors] + summary["errors"]
            summary["n_errors"] = len(summary["errors"])
            if not exported:
                raise NothingScoredError(nothing_scored_reason(summary, "exported"))
            write_json(exported, args.out)
            summary["out"] = str(args.out)
            if args.benchmark is not None:
                summary["rejected"] = rejected_summary(_load_join_benchmark(args.benchmark)[1])
    except (FileNotFoundError, ValueError, LLMConfigError, LLMRefusedError) as err:
        print(f"rlalm export: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    dis = summary.get("mmau_rule_disagreements", [])
    print(f"exported {summary['n_exported']} record(s) to {summary['out']}; {summary['n_errors']} error(s)"
          + (f"; {summary['missing']['n']} benchmark item(s) missing from the store" if summary.get("missing", {}).get("n") else ""),
          file=sys.stderr)
    for e in summary["errors"][:20]:
        print(f"  error [{e['source']}] {e['id']}: {e['reason']}", file=sys.stderr)
    rejected = summary.get("rejected", {})
    if rejected.get("n"):
        print(f"  {rejected['n']} benchmark record(s) rejected at load time (not exported):", file=sys.stderr)
        for r in rejected["records"][:20]:
            where = f"line {r['line']}" if r.get("line") else f"index {r['index']}"
            print(f"    {r['id']} ({where}): {r['reason']}", file=sys.stderr)
    failed = (summary.get("normalizer") or {}).get("failed_items") or []
    if failed:
        print(f"  LLM normalization failed for {len(failed)} item(s) (rule-based label kept): "
              + ", ".join(f["id"] for f in failed[:20]), file=sys.stderr)
    if dis:
        print(f"  {len(dis)} item(s) where MMAU's token rule judges the exported answer differently "
              f"(options it cannot tell apart): {', '.join(d['id'] for d in dis[:10])}", file=sys.stderr)
    official = summary.get("official_rule_disagreements", [])
    if official:
        print(f"  {len(official)} item(s) where {summary['benchmark']}'s own rule judges the exported answer "
              f"differently: {', '.join(d['id'] for d in official[:10])}", file=sys.stderr)
    print(json.dumps({k: v for k, v in summary.items() if k != "errors"}, indent=2, ensure_ascii=False))
    problems = strict_problems(summary) if args.strict else None
    if problems:
        print(f"rlalm export: --strict: {problems}", file=sys.stderr)
        return 1
    return 0
