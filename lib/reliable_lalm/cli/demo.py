"""``rlalm demo``: the embedded default (synthetic benchmark + demo model).

- ``rlalm demo benchmark [--split test|train]``: generate (or reuse) the synthetic benchmark.
- ``rlalm demo train [--out DIR] [--steps N] [--expect CARD_METRICS]``: train the demo model
  (resumable), evaluate it greedily on the synthetic test split and write its model card; with
  ``--expect``, compare the accuracies with a card's (e.g. the shipped one) and fail beyond
  :data:`reliable_lalm.demo.card.RETRAIN_TOLERANCE_POINTS`.
- ``rlalm demo evaluate [--model DIR]``: greedy baseline accuracy per modality on the test split.

The one command module that imports the demo package: the rest of the library reaches the demo
model and benchmark only through the registries.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reliable_lalm import paths
from reliable_lalm.models.hf_loading import UnsafeCheckpointError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo_command", required=True)
    b = sub.add_parser("benchmark", help="generate (or reuse) the synthetic benchmark")
    b.add_argument("--split", default="test", choices=["test", "train"])
    t = sub.add_parser("train", help="train the demo model, evaluate it and write its card")
    t.add_argument("--out", type=Path, default=paths.DEMO_MODEL_DIR)
    t.add_argument("--work-dir", type=Path, default=None, help="resumable checkpoints (default: beside --out)")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--expect", type=Path, default=None,
                   help="card_metrics.json to compare with; exit 1 beyond the retrain tolerance (points per modality)")
    e = sub.add_parser("evaluate", help="greedy accuracy per modality on the synthetic test split")
    e.add_argument("--model", type=Path, default=paths.DEMO_MODEL_DIR)
    e.add_argument("--split", default="test", choices=["test", "train"])


def run(args: argparse.Namespace) -> int:
    # local import: the generator (scipy) loads only when `rlalm demo` runs, not for `rlalm --help`
    from reliable_lalm.demo import synthetic
    # local import: the card (the model stack) loads only when `rlalm demo` runs, not for `rlalm --help`
    from reliable_lalm.demo.card import RETRAIN_TOLERANCE_POINTS, compare_to_card, evaluate_demo, write_card

    if args.demo_command == "benchmark":
        print(synthetic.default_benchmark(args.split))
        return 0
    if args.demo_command == "train":
        # local import: the trainer loads torch, only for `rlalm demo train`
        from reliable_lalm.demo.train import DemoTrainConfig, train_demo

        cfg = DemoTrainConfig()
        if args.steps is not None:
            cfg.steps = args.steps
        if args.seed is not None:
            cfg.seed = args.seed
        expected = json.loads(args.expect.read_text()) if args.expect else None  # read before --out is written
        try:
            out = train_demo(args.out, cfg, work_dir=args.work_dir)
        except UnsafeCheckpointError as err:  # a planted checkpoint file: refused, in one line
            print(f"rlalm demo train: error: {err}", file=sys.stderr)
            return 2
        metrics = evaluate_demo(out)
        write_card(out, metrics, json.loads((out / "training.json").read_text()))
        print(json.dumps(metrics, indent=2))
        if expected is not None:
            lines, problems = compare_to_card(metrics, expected)
            print(f"retrain vs {args.expect} (tolerance {RETRAIN_TOLERANCE_POINTS:g} points):")
            print("\n".join(lines))
            if problems:
                print(f"{len(problems)} value(s) outside the tolerance")
                return 1
            print("all within the tolerance")
        return 0
    metrics = evaluate_demo(args.model, split=args.split)
    print(json.dumps(metrics, indent=2))
    return 0
