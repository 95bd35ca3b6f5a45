"""``rlalm benchmark``: list the registered benchmarks, validate a benchmark file.

    rlalm benchmark list
    rlalm benchmark validate FILE [--kind mmau|mmar|mmsu|mmau-pro|...] [--audio-dir D] [--check-audio]

``validate`` loads the file with the kind's loader and prints ``accepted=N rejected=M``, then the
rejection reasons by count (most frequent first), each with its first items and their offending
values (``q7: answer 'Paris' is not among the choices ['a', 'b']``), then any repairs the loader
made (e.g. duplicated or empty options dropped). Exit status: 0 when every record is accepted or
skipped by the benchmark's design (MMAU-Pro's open-ended, instruction-following and multi-audio
items: listed and counted, but not errors in the data); **1 when any other record is rejected** (a
rejected record is never evaluated); 2 when the file cannot be read at all.
Audio files are not required unless ``--check-audio`` (metadata is often validated before the audio
is downloaded); with it every clip must exist *and decode*: each is read as inference reads it, and
a format the installed decoders cannot read is named with the fix (installing ffmpeg).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import replace

from reliable_lalm.benchmarks.registry import UnknownBenchmarkError, registered_benchmarks
from reliable_lalm.core.items import ItemError, LoadedBenchmark, RejectedRecord, load_audio
from reliable_lalm.core.progress import progress_bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark_command", metavar="ACTION")
    sub.add_parser("list", help="registered benchmarks: modalities, output field, paper values")
    v = sub.add_parser("validate", help="load a benchmark file: accepted/rejected records and the reasons")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--kind", default="mmau", help="registered benchmark kind (default mmau; see 'rlalm benchmark list')")
    v.add_argument("--audio-dir", default=None, help="folder the audio paths are relative to (default: the file's)")
    v.add_argument("--check-audio", action="store_true",
                   help="also require every audio file to exist and decode (reads every clip)")
    v.add_argument("--examples", type=int, default=3, metavar="N",
                   help="items (with their offending values) shown per reason (default 3)")


def _reason_key(cause: str) -> str:
    """A rejection cause without its item-specific parts, so that causes can be counted."""
    cause = re.sub(r": /\S+", ": PATH", cause)
    cause = re.sub(r"\[[^\]]*\]", "[...]", cause)
    parts = re.split(r"(\([^()]*\))", cause)  # a parenthesized list of allowed values stays as is
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\b\d+\b", "N", re.sub(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"", "'...'", parts[i]))
    return "".join(parts)


def _list() -> int:
    rows = [("name", "modalities", "output field", "answers", "paper values", "description")]
    for name, e in sorted(registered_benchmarks().items()):
        rows.append((name, ",".join(e.modalities), e.output_field, "yes" if e.has_answers else "no (hidden)",
                     "yes" if e.paper_reference else "no", e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    return 0


def _validate(args: argparse.Namespace) -> int:
    entries = registered_benchmarks()
    if args.kind not in entries:
        print(f"rlalm benchmark validate: error: unknown kind {args.kind!r} (registered: {', '.join(sorted(entries))})",
              file=sys.stderr)
        return 2
    try:
        bench = entries[args.kind].load(args.file, args.audio_dir, check_audio=args.check_audio)
    except (FileNotFoundError, ValueError, UnknownBenchmarkError) as err:
        print(f"rlalm benchmark validate: error: {err}", file=sys.stderr)
        return 2
    if args.check_audio:
        bench = decode_every_clip(bench)
    print(f"accepted={len(bench.items)} rejected={len(bench.rejected)}")
    groups: dict[str, list[RejectedRecord]] = {}
    for r in bench.rejected:
        groups.setdefault(_reason_key(r.cause), []).append(r)
    for reason, records in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        ids = [r.item_id for r in records]
        shown = ", ".join(ids[: args.examples]) + (", ..." if len(ids) > args.examples else "")
        print(f"  {len(ids):5d}  {reason}  ({shown})")
        for r in records[: args.examples]:  # the offending values themselves
            where = f" (line {r.line})" if r.line else (f" (record {r.index})" if r.index >= 0 else "")
            print(f"         {r.item_id}{where}: {r.cause}")
    notes = Counter(_reason_key(n.split(":")[0]) for item in bench.items for n in item.notes)
    for note, n in notes.most_common():
        print(f"  repaired {n} item(s): {note}")
    counts = Counter(item.task for item in bench.items)
    print("per modality: " + ", ".join(f"{m}={counts.get(m, 0)}" for m in bench.modalities))
    errors = [r for r in bench.rejected if not r.skipped]
    if len(errors) < len(bench.rejected):
        print(f"skipped by the benchmark's design: {len(bench.rejected) - len(errors)} (not errors)")
    if errors:
        print(f"rlalm benchmark validate: {len(errors)} record(s) rejected: they would not be evaluated "
              "(exit status 1)", file=sys.stderr)
        return 1
    return 0 if bench.items else 1


def decode_every_clip(bench: LoadedBenchmark) -> LoadedBenchmark:
    """The benchmark with every accepted item whose clip does not decode moved to the rejected ones
    (each clip read as inference reads it: :func:`reliable_lalm.core.items.load_audio`)."""
    items, rejected = [], list(bench.rejected)
    for item in progress_bar(bench.items, desc="decoding audio", unit="clip"):
        try:
            load_audio(item.audio_path, item_id=item.id)
        except ItemError as err:
            rejected.append(RejectedRecord(index=-1, item_id=item.id, cause=err.cause))  # -1: not a load position
            continue
        items.append(item)
    return replace(bench, items=items, rejected=rejected)


def run(args: argparse.Namespace) -> int:
    if args.benchmark_command == "list":
        return _list()
    if args.benchmark_command == "validate":
        return _validate(args)
    print("rlalm benchmark: choose an action: list | validate FILE", file=sys.stderr)
    return 2
