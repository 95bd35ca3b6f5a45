"""``rlalm infer``: run a prompting method (or K@N sampling) over a benchmark into a result store.

    rlalm infer --model PATH --benchmark JSON [--audio-dir D] --method M --out STORE_DIR
                [--batch-size B] [--samples N] [--temperature T] [--seed S] [--limit L] [--device D]

Re-running the same command after an interruption finishes the run (finished keys are skipped).
``--samples N`` with N > 1 samples N answers per item (K@N, sampling at ``--temperature``).
``--model demo`` is the shipped demo checkpoint. Counts must be positive integers (``--samples`` at
most 100), float options finite and in range; a model that is not available offline, settings the
model cannot run, or a store another process is writing end the command at once with one line
(exit 2). A run that leaves no output for any item (every item failed) exits 1 with one line.
``--shard i/n`` runs shard i of n (store ``STORE_DIR/shards/i-of-n``; see
:mod:`reliable_lalm.methods.shards`); ``rlalm merge-shards STORE_DIR`` merges the n shards.
Started by a launcher (``torchrun``, ``accelerate launch -m reliable_lalm.cli infer ...``), each
process runs the shard of its rank and the main process merges when all are done
(:mod:`reliable_lalm.methods.data_parallel`).
``--model openai:<model>@<base_url>`` sends the items to an OpenAI-compatible endpoint;
``--model "worker:<command line>"`` to an isolated worker process (:mod:`reliable_lalm.models.worker`).
"""
from __future__ import annotations

import argparse
import json
import sys

from reliable_lalm.benchmarks.registry import load as load_benchmark
from reliable_lalm.cli import max_new_tokens, non_negative_int, positive_int
from reliable_lalm.cli.argtypes import MAX_SAMPLES, SAMPLES, TEMPERATURE, TOP_P
from reliable_lalm.core.jsonio import load_file
from reliable_lalm.core.normalize import RuleBasedNormalizer
from reliable_lalm.core.prompts import FewShotExample
from reliable_lalm.core.results import ParamsMismatch, ResultStore, StoreLocked
from reliable_lalm.core.scoring import invalid_outputs_warning
from reliable_lalm.methods import data_parallel, execution, shards
from reliable_lalm.methods.generation import StaleResultsError
from reliable_lalm.methods.registry import SINGLE, get_method, runnable_methods, single_call_methods
from reliable_lalm.models.base import BackendFatalError, GenerationSettings
from reliable_lalm.models.hf_loading import ModelNotAvailable, UnsafeCheckpointError
from reliable_lalm.models.registry import load_backend, resolve_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="'demo' (the shipped checkpoint), a checkpoint folder, "
                                                       "or a cached hub id (e.g. Qwen/Qwen2-Audio-7B-Instruct)")
    parser.add_argument("--adapter", default=None, help="PEFT (LoRA) adapter folder")
    parser.add_argument("--benchmark", required=True,
                        help="MMAU-schema JSON/JSONL, or a registry spec such as mmar:FILE, mmau-test:FILE "
                             "(see 'rlalm benchmark list')")
    parser.add_argument("--audio-dir", default=None, help="folder the records' audio_id is relative to "
                                                         "(default: the JSON's folder)")
    parser.add_argument("--method", required=True, choices=runnable_methods(),
                        help="a registered prompting method (built in, or added by a package's entry point)")
    parser.add_argument("--out", required=True, help="result store folder")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: from free GPU memory / 32 on CPU")
    parser.add_argument("--samples", type=SAMPLES, default=1,
                        help=f"N > 1: K@N sampling (N answers per item; at most {MAX_SAMPLES})")
    parser.add_argument("--temperature", type=TEMPERATURE, default=None,
                        help="sampling temperature (default: 1.0 with --samples > 1; greedy otherwise)")
    parser.add_argument("--top-p", type=TOP_P, default=1.0)
    parser.add_argument("--top-k", type=non_negative_int, default=0)
    parser.add_argument("--max-new-tokens", type=max_new_tokens, default=None,
                        help="default: the method's own (" + ", ".join(
                            f"{name} {get_method(name).default_max_new_tokens}" for name in runnable_methods()) + ")")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=positive_int, default=None, help="first L items only")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--device-map", default=None, help="'auto' to spread the model over several GPUs")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32")
    parser.add_argument("--few-shot", default=None,
                        help="JSON list of few-shot examples {question, choices, reasoning, answer}, for a method "
                             "that takes them (" + ", ".join(n for n in runnable_methods() if get_method(n).uses_few_shot)
                             + ")")
    parser.add_argument("--retry-errors", action="store_true", help="retry items whose record is an error")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option of an openai:/worker: backend, VALUE as JSON or a string "
                             "(e.g. max_concurrency=32, audio_format=audio_url, timeout=300); repeatable")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run shard I of N (0-based) into OUT/shards/I-of-N; merge with rlalm merge-shards OUT")
    parser.add_argument("--shard-by", default="hash", choices=["hash", "position"],
                        help="shard by a stable hash of the item id (default) or by position")
    parser.add_argument("--no-progress", action="store_true")


MAX_LISTED = 20  # per-item lines printed before "... N more"


def report_store_problems(store_dir, bench) -> None:
    """Per-item warnings of the store (a clip longer than the model's window, an agent step that
    named no audio type, ...), each printed, and a warning when most outputs are invalid."""
    store = ResultStore(store_dir)
    records = [r for r in store.records() if int(r.get("sample_index", 0)) == 0]
    warned = store.item_warnings()
    for item_id, warning in warned[:MAX_LISTED]:
        print(f"warning {item_id}: {warning}", file=sys.stderr)
    if len(warned) > MAX_LISTED:
        print(f"... and {len(warned) - MAX_LISTED} more item warnings ('rlalm report {store_dir}' lists every item)",
              file=sys.stderr)
    choices = {item.id: list(item.choices) for item in bench.items}
    answered = [r for r in records if isinstance(r.get("model_output"), str) and r["item_id"] in choices]
    kinds = RuleBasedNormalizer().normalize_many([r["model_output"] for r in answered],
                                                 [choices[r["item_id"]] for r in answered])
    mostly_invalid = invalid_outputs_warning(sum(x.kind == "invalid" for x in kinds), len(kinds))
    if mostly_invalid:
        print(f"rlalm infer: {mostly_invalid}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    entry = get_method(args.method)
    # Missing audio files are not rejected here: they become per-item error records in the store.
    bench = load_benchmark(args.benchmark, args.audio_dir, check_audio=False)  # registry: any kind
    for rejected in bench.rejected:
        print(f"skipped record {rejected.item_id!r}: {rejected.cause}", file=sys.stderr)
    items = bench.items[: args.limit] if args.limit else bench.items
    if not items:
        print("no usable items", file=sys.stderr)
        return 1
    few_shot = ()
    if args.few_shot:
        try:
            few_shot = tuple(FewShotExample(**e) for e in load_file(args.few_shot))
        except (OSError, ValueError, TypeError) as err:
            print(f"rlalm infer: error: --few-shot {' '.join(str(err).split())}", file=sys.stderr)
            return 2
    if args.samples > 1 and entry.kind != SINGLE:
        print(f"--samples > 1 needs a single-call method ({', '.join(single_call_methods())})", file=sys.stderr)
        return 2
    out = None
    try:  # --shard i/n, or the rank of a process a launcher (torchrun, accelerate launch) started
        shard, launched = data_parallel.process_shard(args.shard, args.shard_by)
    except ValueError as err:
        print(f"rlalm infer: error: {err}", file=sys.stderr)
        return 2
    if launched is not None:
        args.device = data_parallel.process_device(args.device, launched)
    if shard is not None:
        items = shards.select_shard(items, shard)  # after --limit: the shards of the limited run
        out = shards.shard_store_dir(args.out, shard)
        shards.check_shard_dir(out, shard, items)
    out = out or args.out
    try:
        max_new = args.max_new_tokens or entry.default_max_new_tokens
        sampling = args.samples > 1 or (args.temperature is not None and args.temperature > 0)
        settings = GenerationSettings(
            max_new_tokens=max_new, do_sample=sampling,
            temperature=args.temperature if args.temperature is not None else 1.0,
            top_p=args.top_p, top_k=args.top_k, seed=args.seed)
        if args.model.startswith(("openai:", "worker:")):  # an endpoint or a worker process: no local weights
            options = {}
            for option in args.backend_option:
                key, sep, value = option.partition("=")
                if not sep or not key.strip():
                    print(f"--backend-option expects KEY=VALUE, not {option!r}", file=sys.stderr)
                    return 2
                try:
                    options[key.strip()] = json.loads(value)
                except ValueError:
                    options[key.strip()] = value
            backend = resolve_model(args.model).load(**options)
        else:
            backend = load_backend(args.model, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                                   device_map=args.device_map, adapter=args.adapter)
        try:
            backend.check_settings(settings)
        except ValueError as err:
            raise ValueError(f"--max-new-tokens {max_new}: {err}") from None
        if args.samples > 1:
            summary = execution.sample_k_at_n(backend, items, out, n_samples=args.samples, settings=settings,
                                           method=args.method, progress=not args.no_progress,
                                           retry_errors=args.retry_errors)
        else:
            summary = execution.run_method(backend, items, args.method, out, settings=settings,
                                           few_shot=few_shot, progress=not args.no_progress,
                                           retry_errors=args.retry_errors)
    except BackendFatalError as err:  # a refused key, a worker that does not start or dies
        print(f"rlalm infer: stopped: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except (ModelNotAvailable, StoreLocked, ParamsMismatch, StaleResultsError, UnsafeCheckpointError, ValueError) as err:
        print(f"rlalm infer: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if shard is not None:
        shards.mark_shard(out, shard, items)
    if launched is not None:
        try:
            merged = data_parallel.gather_and_merge(args.out, launched)
        except (shards.ShardError, ParamsMismatch) as err:
            print(f"rlalm infer: merge: {err}", file=sys.stderr)
            return 1
    info = summary.to_dict()
    errors = info.pop("error_items")
    if launched is not None:
        info["shard"] = shard.name
        if merged is not None:
            info["merged"] = merged.to_dict()
    print(json.dumps(info, indent=2))
    for item_id, cause in list(errors.items())[:20]:
        print(f"error {item_id}: {cause}", file=sys.stderr)
    report_store_problems(out, bench)
    if bench.rejected:
        print(f"{len(bench.rejected)} benchmark records rejected at load time (not in the store)", file=sys.stderr)
    return _exit_status(out, items)


def _exit_status(out, items) -> int:
    """1, with one line, when the store holds no output for any of the items (every one failed)."""
    ids = {it.id for it in items}
    mine = [r for r in ResultStore(out).records() if r["item_id"] in ids]
    if any(r.get("error") is None for r in mine):
        return 0
    first = next((r for r in mine if r.get("error")), None)
    cause = f" (first: {first['item_id']}: {' '.join(str(first['error']).split())})" if first else ""
    print(f"rlalm infer: nothing generated: all {len(ids)} item(s) failed{cause}; their error records are in {out}",
          file=sys.stderr)
    return 1
