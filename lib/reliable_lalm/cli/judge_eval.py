"""``rlalm judge-eval``: measure an answer normalizer against the labelled judge set.

Prints, per split, agreement with the labels, the outcome and decision confusion matrices and
every harmful error (docs/judging.md). ``--check`` exits 1 when the evaluation split has a harmful
error or agrees below ``--min-agreement``. ``rlalm judge-eval`` with the rule normalizer imports no
torch.
"""
from __future__ import annotations

import argparse
import json
import sys

from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.judge_eval import JudgeSetError, evaluate_splits, format_report, load_judge_set
from reliable_lalm.core.normalize_types import LLMConfigError, LLMRefusedError
from reliable_lalm.methods.llm_judge import JUDGE_PROMPTS, build_normalizer, normalizer_kind_error

DEFAULT_MIN_AGREEMENT = 0.97


def normalizer_kind(text: str) -> str:
    """argparse type: rule, openai, auto, all or hf:<model>."""
    error = normalizer_kind_error(text)
    if error:
        raise argparse.ArgumentTypeError(error)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--normalizer", default="rule", type=normalizer_kind, metavar="KIND",
                        help="the judge to measure: rule (default), openai, auto, all (LLM on every output), "
                             "or hf:<model> (a local transformers chat model, batched greedy)")
    parser.add_argument("--judge-prompt", choices=JUDGE_PROMPTS, default=None,
                        help="LLM judge prompt: 'paper' (Table 8) or 'toolkit' (explicit refusal and negation "
                             "rules); default: paper for 'all', toolkit otherwise")
    parser.add_argument("--openai-base-url", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)")
    parser.add_argument("--openai-model", default=None, metavar="M", help="LLM judge model (default gpt-4o-mini)")
    parser.add_argument("--split", choices=("dev", "eval", "all"), default="all",
                        help="which labelled split: dev (the rules were designed on it), eval (held out), or all")
    parser.add_argument("--file", default=None, metavar="JSONL", help="another labelled judge set (same format)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument("--show", type=int, default=20, metavar="N",
                        help="list at most N non-harmful disagreements per split (harmful ones are always listed)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the report here instead of stdout")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the eval split has a harmful error or agrees below --min-agreement")
    parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, metavar="F",
                        help=f"agreement --check asks of the eval split (default {DEFAULT_MIN_AGREEMENT})")


def run(args: argparse.Namespace) -> int:
    try:
        cases = load_judge_set(args.file, None if args.split == "all" else args.split)
        if not cases:
            raise ValueError(f"the judge set has no {args.split!r} cases")
        kw = {"prompt": args.judge_prompt} if args.judge_prompt else {}
        normalizer = build_normalizer(args.normalizer, base_url=args.openai_base_url, model=args.openai_model,
                                      **kw)
        results = evaluate_splits(normalizer, cases)
    except (OSError, JudgeSetError, ValueError, LLMConfigError, LLMRefusedError) as err:
        print(f"rlalm judge-eval: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    summary = getattr(normalizer, "summary", None)
    if callable(summary) and summary().get("fatal_error"):
        print(f"rlalm judge-eval: error: the LLM judge refused the requests: {summary()['fatal_error']}",
              file=sys.stderr)
        return 2
    text = (json.dumps(results, indent=2, ensure_ascii=False) if args.format == "json"
            else format_report(results, show=args.show))
    if args.output:
        atomic_write_text(args.output, text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.check:
        checked = results.get("eval")
        if checked is None:
            print("rlalm judge-eval: --check needs the eval split (--split eval or all)", file=sys.stderr)
            return 2
        if checked["n_harmful"] or checked["agreement"] < args.min_agreement:
            print(f"rlalm judge-eval: --check: {checked['n_harmful']} harmful error(s), agreement "
                  f"{checked['agreement']:.1%} on eval (needs 0 and >= {args.min_agreement:.0%})", file=sys.stderr)
            return 1
    return 0
