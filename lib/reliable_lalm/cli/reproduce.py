"""``rlalm reproduce``: execute the notebooks of a profile with papermill (``make reproduce``).

    rlalm reproduce [--profile demo] [--only 01,04] [--list] [--kernel python3] [--keep-going]
    rlalm reproduce --profile demo --check     # regenerated tables/figures == committed ones?

The work is :mod:`reliable_lalm.runner.reproduce` (execution) and :mod:`reliable_lalm.runner.check`
(the comparison); exit status 1 for a failed notebook or a difference, 2 for an invalid profile or
command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from reliable_lalm.runner.check import CheckUnavailable, check_outputs
from reliable_lalm.runner.profiles import ProfileError, load_profile
from reliable_lalm.runner.reproduce import build_plan, loud_failure, relative, reproduce


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="demo", help="profile name in params/ or a YAML path (default: demo)")
    parser.add_argument("--only", default=None, metavar="NN[,NN]",
                        help="run only these notebooks: numbers (04) or stems (04_sft), comma-separated")
    parser.add_argument("--list", action="store_true", help="validate and print the planned executions; run nothing")
    parser.add_argument("--kernel", default=None, metavar="K",
                        help="Jupyter kernel name (default: the kernel named in each notebook)")
    parser.add_argument("--keep-going", action="store_true", help="continue with the next notebook after a failure")
    parser.add_argument("--check", action="store_true",
                        help="run nothing: compare tables/<profile>/ and figures/<profile>/ with the committed files "
                             "(git HEAD) and exit 1 on any difference")
    parser.add_argument("--log-output", action="store_true", help="stream cell outputs to the log while running")
    # Injectable locations (tests, or profiles kept elsewhere); the defaults are the repository's.
    parser.add_argument("--params-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--notebooks-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    stream = sys.stderr
    if args.check:
        try:
            result = check_outputs(Path(args.profile).stem)
        except CheckUnavailable as err:
            print(f"check: {err}", file=stream)
            return 2
        print(result.verdict(), flush=True)
        return 0 if result.ok or not (result.identical or result.differences) else 1
    try:
        if args.list:
            prof = load_profile(args.profile, params_dir=args.params_dir, notebooks_dir=args.notebooks_dir)
            plan = build_plan(prof, only=args.only, runs_root=args.runs_dir)
            print(f"profile {prof.name} ({relative(prof.path)}): {len(plan)} execution(s)")
            for i, r in enumerate(plan, 1):
                shown = ", ".join(f"{k}={v!r}" for k, v in r.parameters.items())
                print(f"{i:3d}. {r.stem:28s} -> {relative(r.output)}\n       {shown}")
            return 0
        if args.log_output:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        report = reproduce(args.profile, only=args.only, kernel_name=args.kernel, params_dir=args.params_dir,
                           notebooks_dir=args.notebooks_dir, runs_root=args.runs_dir, log_output=args.log_output,
                           keep_going=args.keep_going, stream=stream)
    except ProfileError as err:
        loud_failure(stream, str(err))
        return 2
    return 0 if report["status"] == "ok" else 1
