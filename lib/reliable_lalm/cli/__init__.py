"""The ``rlalm`` command line. Each sub-command lives in its own module, imported lazily so that
``rlalm score`` does not import torch.

A module registered here defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from reliable_lalm.core.quiet import silence_known_warnings

# A bound on --max-new-tokens before any model is loaded (8192 is Qwen2-Audio's context); the engine
# also checks it against the loaded model's positions.
MAX_NEW_TOKENS_LIMIT = 8192


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 and negatives used to mean "all" or "default" silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def max_new_tokens(text: str) -> int:
    """argparse type for --max-new-tokens: 1 .. :data:`MAX_NEW_TOKENS_LIMIT`."""
    value = positive_int(text)
    if value > MAX_NEW_TOKENS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_NEW_TOKENS_LIMIT} (a model's whole context), got {value}")
    return value


# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("reliable_lalm.cli.score", "score predictions (MMAU-style JSON/JSONL with model_output)"),
    "judge-eval": ("reliable_lalm.cli.judge_eval", "measure an answer normalizer (judge) against labelled outputs"),
    "export": ("reliable_lalm.cli.export", "export a result store to MMAU's official JSON format"),
    "demo": ("reliable_lalm.cli.demo", "embedded demo: build the synthetic benchmark, train the demo model"),
    "bench": ("reliable_lalm.cli.bench", "benchmarks (inference engine against the per-question loop)"),
    "infer": ("reliable_lalm.cli.infer", "run a prompting method over a benchmark into a result store"),
    "merge-shards": ("reliable_lalm.cli.merge_shards", "merge the shard stores of 'rlalm infer --shard i/n' into one"),
    "train": ("reliable_lalm.cli.train", "K@N IDK dataset and LoRA SFT (single process or DeepSpeed)"),
    "report": ("reliable_lalm.cli.report", "one self-contained HTML page of every item of a run: listen, read, filter"),
    "benchmark": ("reliable_lalm.cli.benchmark", "list registered benchmarks; validate a benchmark file"),
    "models": ("reliable_lalm.cli.models", "list registered models; --check runs a tiny instance of each native one"),
    "reproduce": ("reliable_lalm.cli.reproduce", "execute the notebooks of a profile with papermill"),
    "retrain": ("reliable_lalm.cli.retrain", "retrain the LoRA adapters over seeds; check the shipped ones statistically"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlalm", description="reliable-lalm: score, infer, train and reproduce "
                                     "the experiments of 'Towards Reliable Large Audio Language Model'.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            p.set_defaults(_unavailable=f"'rlalm {name}' is not available in this version ({module_name} missing)")
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    silence_known_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(args._unavailable)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
