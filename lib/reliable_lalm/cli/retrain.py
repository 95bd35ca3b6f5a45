"""``rlalm retrain`` (``make retrain``): retrain the LoRA adapters over seeds and check the shipped
ones statistically; the work is :mod:`reliable_lalm.runner.retrain`."""
from __future__ import annotations

import argparse
import sys

from reliable_lalm.runner.retrain import retrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="demo", help="profile whose 04_sft adapters are retrained (default: demo)")
    parser.add_argument("--seeds", type=int, default=5, help="number of SFT seeds, 0..N-1 (default 5; at least 2)")
    parser.add_argument("--alpha-sweep", action="store_true", help="also retrain the alpha sweep of notebook 07")
    parser.add_argument("--out-dir", default=None, help="report folder (default: runs/<profile>/)")


def run(args: argparse.Namespace) -> int:
    try:
        report = retrain(args.profile, seeds=list(range(args.seeds)), alpha_sweep=args.alpha_sweep,
                         out_dir=args.out_dir)
    except ValueError as err:
        print(f"rlalm retrain: {err}", file=sys.stderr)
        return 2
    return 0 if report["status"] == "ok" else 1
