"""``rlalm report``: one self-contained HTML page with every item of a run, to listen to and read.

    rlalm report STORE [--baseline STORE] [--benchmark SPEC] [--out report.html] [--audio link|embed|none]

Every item of the result store: an audio player, the question, the choices, the answer, the raw
output, the judge's decision and why (the normalizer's rule), the outcome, with ``--baseline``
the baseline's output and the baseline -> method transition, and K@N samples where the store has
several per item; filters by outcome, transition, modality and error; the run's summary,
transition and breakdown tables at the top (:mod:`reliable_lalm.reporting.item_report`).

The clips come from the benchmark (``--benchmark synthetic``, ``mmar:FILE``, a JSON file): linked
by a path relative to the report (default; keep the report beside the data, or move both), or
embedded as base64 (``--audio embed``: one portable file, about 1.4 times the audio's size). No
network, no server: open the file in a browser. Exit status 2 with a one-line reason when the
store or the benchmark cannot be read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reliable_lalm.cli.score import add_normalizer_arguments, normalizer_from_args
from reliable_lalm.core.normalize_types import LLMConfigError, LLMRefusedError
from reliable_lalm.core.scoring import invalid_outputs_warning


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE", help="result store folder (rlalm infer --out, cache/results/...)")
    parser.add_argument("--baseline", metavar="STORE", default=None,
                        help="the baseline's result store on the same items (adds transitions and ΔCon/ΔHum/RGI)")
    parser.add_argument("--benchmark", metavar="SPEC", default=None,
                        help="the benchmark the store was run on (gives the audio): synthetic, mmar:FILE, a JSON file")
    parser.add_argument("--out", metavar="FILE", default="report.html", help="the HTML file to write (default report.html)")
    parser.add_argument("--audio", choices=("link", "embed", "none"), default="link",
                        help="clips linked relative to the report (default), embedded as base64, or left out")
    parser.add_argument("--title", default=None, help="the page title (default: method on benchmark)")
    add_normalizer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    # local import: reporting (matplotlib, pandas) loads for `rlalm report`, not for `rlalm --help`
    from reliable_lalm.reporting.item_report import build_item_report, write_report

    try:
        for name, path in (("store", args.store), ("baseline", args.baseline)):
            if path is not None and not (Path(path) / "records.jsonl").is_file():
                raise FileNotFoundError(f"{name} {path} is not a result store (no records.jsonl)")
        report = build_item_report(args.store, baseline=args.baseline, benchmark=args.benchmark,
                                   normalizer=normalizer_from_args(args))
        out = write_report(report, args.out, audio=args.audio, title=args.title)
    except (FileNotFoundError, ValueError, LLMConfigError, LLMRefusedError) as err:
        print(f"rlalm report: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    mostly_invalid = invalid_outputs_warning(report.summary["n_invalid"], report.summary["n"])
    if mostly_invalid:
        print(f"rlalm report: {mostly_invalid}", file=sys.stderr)
    errors = sum(1 for it in report.items if it.error)
    linked = sum(1 for it in report.items if it.audio_path)
    print(f"wrote {out}: {len(report.items)} items ({errors} with an error), "
          f"{linked} with audio ({args.audio})" + ("" if args.benchmark else "; no --benchmark: no audio"),
          file=sys.stderr)
    return 0
