"""``rlalm export STORE --benchmark SPEC --out FILE``: predictions in a benchmark's official format.

MMAU's format through :mod:`reliable_lalm.core.export`; a registered benchmark whose scorer reads
another field, has its own rule, or has no answers (``mmar:FILE``, ``mmau-test:FILE``) through
:mod:`reliable_lalm.benchmarks.official`. Like ``rlalm score``, exits 2 with a one-line reason,
writing nothing, when nothing can be exported, when the output field or sample index is absent
from every record, or when the LLM endpoint refuses the requests; ``--strict`` makes any reported
error exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reliable_lalm.benchmarks.official import export_store_for_benchmark, needs_own_export
from reliable_lalm.benchmarks.registry import resolve_benchmark
from reliable_lalm.cli.score import add_normalizer_arguments, normalizer_from_args, strict_problems
from reliable_lalm.core.export import export_records, export_store, write_json
from reliable_lalm.core.normalize_types import LLMConfigError, LLMRefusedError
from reliable_lalm.core.records import NothingScoredError, join_items, prediction_records, rejected_summary
from reliable_lalm.core.scoring import nothing_scored_reason


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
    try:
        path = Path(args.store)
        if path.is_dir() and needs_own_export(args.benchmark):
            summary = export_store_for_benchmark(path, args.benchmark, args.out, normalizer_from_args(args),
                                                 sample_index=args.sample_index, output_field=args.output_field)
        elif path.is_dir():
            if args.benchmark is None:
                print("rlalm export: note: no --benchmark; the store records must carry choices, answer and task",
                      file=sys.stderr)
            summary = export_store(path, resolve_benchmark(args.benchmark), args.out, normalizer_from_args(args),
                                   sample_index=args.sample_index, output_field=args.output_field)
        else:
            records, read_errors = prediction_records(str(path), None, args.sample_index, "pred", args.output_field)
            exported, summary = export_records(records, normalizer_from_args(args))
            summary["errors"] = [e.to_dict() for e in read_errors] + summary["errors"]
            summary["n_errors"] = len(summary["errors"])
            if not exported:
                raise NothingScoredError(nothing_scored_reason(summary, "exported"))
            write_json(exported, args.out)
            summary["out"] = str(args.out)
            if args.benchmark is not None:
                summary["rejected"] = rejected_summary(join_items(resolve_benchmark(args.benchmark))[1])
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
