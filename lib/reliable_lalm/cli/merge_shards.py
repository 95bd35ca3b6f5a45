"""``rlalm merge-shards``: merge the shard stores of a ``rlalm infer --shard i/n`` run into one store.

    rlalm merge-shards OUT [--allow-incomplete]

Reads ``OUT/shards/*-of-n`` and writes the merged store ``OUT`` (records sorted by item id and
sample index; the parameters of the shards, which must be identical). It refuses missing,
unfinished or incomplete shards, shards with other parameters, and overlapping shards; see
:mod:`reliable_lalm.methods.shards`. Exit status 0 when merged, 1 with a one-line reason otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys

from reliable_lalm.core.results import ParamsMismatch
from reliable_lalm.methods.shards import ShardError, merge_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="the --out folder the shards were run with")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="merge even if some shard items lack records (they stay missing: a later run resumes)")


def run(args: argparse.Namespace) -> int:
    try:
        summary = merge_shards(args.out, allow_incomplete=args.allow_incomplete)
    except (ShardError, ParamsMismatch) as err:
        print(f"rlalm merge-shards: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary.to_dict(), indent=2))
    return 0
