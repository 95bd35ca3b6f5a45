"""``rlalm score PRED [--baseline BASE]``: score predictions (:mod:`reliable_lalm.core.scoring`).

PRED is an MMAU-style JSON/JSONL with ``model_output`` or a result store folder (joined with
``--benchmark``). Exit status: 0 when something was scored; 2 with a one-line reason when nothing
was, when the output field (``--output-field``, default ``model_output``) or the
``--sample-index`` is absent from every record, or when the LLM endpoint refused the requests
(401/403, unknown model, no quota: rule-based numbers are never reported under the LLM's name);
with ``--strict``, 1 when any record error, load rejection or LLM failure was reported. With
``--benchmark``, ``rejected`` lists the benchmark records rejected at load time (id, index, line,
reason), which therefore have no result at all. Imports no torch (a test checks).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from reliable_lalm.benchmarks.registry import parse_benchmark, resolve_benchmark
from reliable_lalm.cli.argtypes import real
from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.normalize_types import LLMConfigError, LLMRefusedError, Normalizer
from reliable_lalm.core.records import NothingScoredError, join_items, prediction_records, rejected_summary
from reliable_lalm.core.score_table import format_table
from reliable_lalm.core.scoring import invalid_outputs_warning, nothing_scored_reason, score_records
from reliable_lalm.core.submission import refuse_answerless_benchmark
from reliable_lalm.methods.llm_judge import normalizer_kind_error, resolve_normalizer


def add_normalizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--normalizer", type=_normalizer_kind, default="rule", metavar="KIND",
                        help="answer normalization: rule (default), openai (an OpenAI-compatible LLM for the "
                             "outputs the rules cannot map; key from $OPENAI_API_KEY), auto (the LLM when "
                             "configured), all (the LLM on every output, the paper's setting), or hf:<model> "
                             "(a local transformers chat model as the judge; needs torch)")
    parser.add_argument("--judge-prompt", choices=("paper", "toolkit"), default=None,
                        help="LLM judge prompt: paper (Table 8) or toolkit; default paper for 'all', else toolkit")
    parser.add_argument("--openai-base-url", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)")
    parser.add_argument("--openai-model", default=None, metavar="M", help="LLM for normalization (default gpt-4o-mini)")
    parser.add_argument("--refresh-cache", action="store_true",
                        help="ask the LLM again instead of reading its cached replies (the cache is rewritten)")
    parser.add_argument("--output-field", default=None, metavar="NAME",
                        help="field holding the raw model output (default: model_output; in a result store "
                             "the first of model_output, output, raw_output, response, text)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any record error, load rejection or LLM failure is reported")


def _normalizer_kind(text: str) -> str:
    error = normalizer_kind_error(text)
    if error:
        raise argparse.ArgumentTypeError(error)
    return text


def normalizer_from_args(args: argparse.Namespace) -> Normalizer:
    kw: dict[str, Any] = {"refresh_cache": True} if getattr(args, "refresh_cache", False) else {}
    if getattr(args, "judge_prompt", None):
        kw["prompt"] = args.judge_prompt
    return resolve_normalizer(args.normalizer, base_url=args.openai_base_url, model=args.openai_model, **kw)


def strict_problems(result: Mapping[str, Any]) -> str | None:
    """What ``--strict`` refuses, in one line (None when the run is clean)."""
    parts = []
    if result.get("n_errors"):
        parts.append(f"{result['n_errors']} record error(s)")
    if result.get("rejected", {}).get("n"):
        parts.append(f"{result['rejected']['n']} record(s) rejected at load time")
    failed = (result.get("normalizer") or {}).get("failed_items") or []
    if failed:
        parts.append(f"{len(failed)} LLM normalization failure(s)")
    return "; ".join(parts) or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", metavar="PRED", help="predictions: MMAU-style JSON/JSONL with model_output, "
                                                     "or a result store folder")
    parser.add_argument("--baseline", metavar="BASE", default=None,
                        help="baseline predictions on the same items (adds transitions, ΔCon, ΔHum, RGI)")
    parser.add_argument("--benchmark", metavar="JSON", default=None,
                        help="benchmark whose records a result store is joined with: a JSON file or a "
                             "registry spec such as mmar:FILE")
    parser.add_argument("--format", choices=("json", "table"), default="json")
    add_normalizer_arguments(parser)
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for 95%% intervals (0: none; 1000 is a good choice)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")
    parser.add_argument("--level", type=real(0.0, 1.0, low_open=True, high_open=True), default=0.95,
                        help="interval level (default 0.95)")
    parser.add_argument("--sample-index", type=int, default=0, help="which sample of a result store to score")
    parser.add_argument("--output", metavar="FILE", default=None, help="write the output here instead of stdout")
    parser.add_argument("--log-samples", metavar="FILE", default=None,
                        help="write one JSON line per scored output: the decision, the rule or judge that made "
                             "it and why, the LLM reply, the outcome (docs/judging.md)")
    parser.add_argument("--by", metavar="KEYS", default=None,
                        help="breakdowns: any of task,difficulty,category,sub-category (MMAU-Pro: also sub-cat, "
                             "length_type, perceptual_skills, reasoning_skills), comma-separated "
                             "('+' crosses keys, e.g. task+difficulty); JSON under 'by', extra table rows")


def _write_text(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


def run(args: argparse.Namespace) -> int:
    try:
        if args.bootstrap < 0:
            raise ValueError("--bootstrap must be >= 0")
        modalities: Sequence[str] = ()
        if args.benchmark is not None:  # a hidden test split is refused before anything is read
            entry, _ = parse_benchmark(args.benchmark)
            if not entry.has_answers:
                refuse_answerless_benchmark(entry.name)
            modalities = entry.modalities
        bench_items, rejected = join_items(resolve_benchmark(args.benchmark))
        join = list(bench_items.values()) if bench_items is not None else None
        pred, pred_errors = prediction_records(args.pred, join, args.sample_index, "pred", args.output_field)
        base, base_errors = (None, [])
        if args.baseline is not None:
            base, base_errors = prediction_records(args.baseline, join, args.sample_index, "baseline", args.output_field)
        result = score_records(pred, base, normalizer_from_args(args), n_boot=args.bootstrap, seed=args.seed,
                               level=args.level, errors=pred_errors, baseline_errors=base_errors,
                               by=args.by, modalities=modalities, log_samples=args.log_samples)
        if bench_items is not None:
            if Path(args.pred).is_dir():
                have = {r.get("id") for r in pred if isinstance(r, dict)}
                missing = [i for i in bench_items if i not in have]
                result["missing"] = {"n": len(missing), "ids": missing[:100]}
            result["rejected"] = rejected_summary(rejected)
        if result["n"] == 0:
            raise NothingScoredError(nothing_scored_reason(result))
        norm = result.get("normalizer") or {}
        failed = norm.get("failed_items") or []
        if failed and len(failed) >= (norm.get("llm_items") or 0):  # not one LLM answer: the rules' scores
            raise ValueError(f"every LLM normalization request failed ({len(failed)} of {norm.get('llm_items')} "
                             f"outputs; first: {(norm.get('errors') or ['?'])[0]}); no score is printed under "
                             f"the LLM normalizer's name")
    except (FileNotFoundError, ValueError, LLMConfigError, LLMRefusedError) as err:
        print(f"rlalm score: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    text = format_table(result) if args.format == "table" else json.dumps(result, indent=2, ensure_ascii=False)
    _write_text(text, args.output)
    mostly_invalid = invalid_outputs_warning(result["n_invalid"], result["n"])
    if mostly_invalid:
        print(f"rlalm score: {mostly_invalid}", file=sys.stderr)
    problems = strict_problems(result) if args.strict else None
    if problems:
        print(f"rlalm score: --strict: {problems}", file=sys.stderr)
        return 1
    return 0

