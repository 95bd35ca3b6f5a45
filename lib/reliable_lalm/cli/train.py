"""``rlalm train``: K@N sampling, LoRA SFT on the K@N IDK dataset, adapter merging, step benchmark.

    rlalm train k-at-n   --model M --benchmark JSON --modality sound --samples 5 --out STORE
    rlalm train sft   --model M --benchmark JSON --samples-store STORE --modality sound --k 5 --out ADAPTER
                      [--deepspeed params/deepspeed_zero2.json] [--lr 3e-5] [--lora-alpha 32] ...
    rlalm train merge --model M --adapter ADAPTER --out MERGED [--benchmark JSON --check-items 4]
    rlalm train bench-step [--model-config 7b] [--batch 8 --seq-len 330] [--gradient-checkpointing]

Several processes / GPUs (DeepSpeed, NCCL on GPUs, gloo on CPUs)::

    torchrun --nproc_per_node 2 -m reliable_lalm.cli.train sft ... --deepspeed params/deepspeed_zero2.json
    deepspeed --num_gpus 2 --module reliable_lalm.cli.train sft ... --deepspeed params/deepspeed_zero2.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

from reliable_lalm.cli import max_new_tokens, non_negative_int, positive_int
from reliable_lalm.cli.argtypes import MAX_SAMPLES, SAMPLES, TEMPERATURE, TOP_P, real
from reliable_lalm.core.items import TASKS, load_audio, load_benchmark
from reliable_lalm.core.results import ResultStore, StoreLocked
from reliable_lalm.methods.execution import sample_k_at_n
from reliable_lalm.methods.registry import build_prompt, single_call_methods
from reliable_lalm.models.base import GenerationSettings
from reliable_lalm.models.hf_loading import ModelNotAvailable, UnsafeCheckpointError, resolve_model_source
from reliable_lalm.models.registry import load_backend
from reliable_lalm.models.families import LORA_TARGETS
from reliable_lalm.models.training_adapter import TrainingNotSupported
from reliable_lalm.training.idk_dataset import TRAIN_PROMPT_METHODS, build_idk_dataset, idk_fraction_frame
from reliable_lalm.training.lora_config import LoraSFTConfig, resolve_dtype
from reliable_lalm.training.lora_sft import train_lora_sft
from reliable_lalm.training.merge import merge_adapter
from reliable_lalm.training.sft_benchmark import benchmark_sft_step
from reliable_lalm.training.sft_data import SFTExample
from reliable_lalm.training.table9 import ALPHA_READINGS


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="'demo' (the shipped checkpoint), a model folder or a cached hub id")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")


def _add_benchmark(p: argparse.ArgumentParser, *, modality_required: bool = True) -> None:
    p.add_argument("--benchmark", required=modality_required, help="MMAU-schema JSON/JSONL")
    p.add_argument("--audio-dir", default=None, help="folder audio ids are relative to (default: the JSON's)")
    p.add_argument("--modality", nargs="+", choices=list(TASKS) + ["all"], default=None if modality_required else ["all"],
                   required=modality_required, help="task(s) whose items are used; 'all' for every task")
    p.add_argument("--limit", type=positive_int, default=None, help="first N items only (smoke runs)")


K_AT_N_STEP = "k-at-n"
DEPRECATED_K_AT_N_STEP = "knn"  # the step's old name, which read as k-nearest-neighbours


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The deepspeed launcher passes --local_rank=N before the sub-command; LOCAL_RANK is read from the
    # environment, so the value is only accepted here.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="train_command", metavar="STEP", required=True)

    k_at_n = sub.add_parser(K_AT_N_STEP, aliases=[DEPRECATED_K_AT_N_STEP],
                            help=f"sample N answers per item (the K@N store; '{DEPRECATED_K_AT_N_STEP}' still works)")
    _add_model(k_at_n)
    _add_benchmark(k_at_n)
    k_at_n.add_argument("--samples", type=SAMPLES, default=5, help=f"N (the paper: 5; at most {MAX_SAMPLES})")
    k_at_n.add_argument("--out", required=True, help="result store folder")
    k_at_n.add_argument("--prompt", default="baseline", choices=single_call_methods(),
                     help="prompt sampled with (default: baseline, the prompt the SFT model is used with)")
    k_at_n.add_argument("--temperature", type=TEMPERATURE, default=1.0, help="the paper does not state it (default 1.0)")
    k_at_n.add_argument("--top-p", type=TOP_P, default=1.0)
    k_at_n.add_argument("--top-k", type=non_negative_int, default=0)
    k_at_n.add_argument("--seed", type=int, default=0)
    k_at_n.add_argument("--max-new-tokens", type=max_new_tokens, default=64)
    k_at_n.add_argument("--batch-size", type=positive_int, default=None)
    k_at_n.add_argument("--no-progress", action="store_true")

    sft = sub.add_parser("sft", help="LoRA SFT on the K@N IDK dataset of a sample store")
    _add_model(sft)
    _add_benchmark(sft)
    sft.add_argument("--samples-store", required=True, help="store written by 'rlalm train k-at-n'")
    sft.add_argument("--k", type=positive_int, required=True, help="K of K@N (paper main results: 5@5)")
    sft.add_argument("--n", type=positive_int, default=None, help="N (default: the store's)")
    sft.add_argument("--prompt", default="baseline", choices=TRAIN_PROMPT_METHODS,
                     help="prompt of the SFT examples (paper: baseline, Table 4)")
    sft.add_argument("--out", required=True, help="adapter folder (peft format)")
    sft.add_argument("--deepspeed", default=None, metavar="CONFIG", help="DeepSpeed JSON (e.g. params/deepspeed_zero2.json)")
    sft.add_argument("--lr", type=real(0.0, 1.0, low_open=True), default=None, help="default 3e-5 (Table 9)")
    sft.add_argument("--lora-alpha", type=real(0.0, 1e6, low_open=True), default=None,
                     help="default: Table 9's alpha of the training modality under --lora-alpha-reading")
    sft.add_argument("--lora-alpha-reading", default=None, choices=sorted(ALPHA_READINGS),
                     help="reading of Table 9's alpha row, sound-music-speech (default 32-32-16; docs/paper_settings.md)")
    sft.add_argument("--lora-targets", default=None, choices=sorted(LORA_TARGETS),
                     help="language_model_only (default) or paper_names: Table 9's q/k/v names as PEFT matches "
                          "them, the audio encoder's too (docs/paper_settings.md)")
    sft.add_argument("--lora-rank", type=positive_int, default=None, help="default 8")
    sft.add_argument("--lora-dropout", type=real(0.0, 1.0, high_open=True), default=None)
    sft.add_argument("--epochs", type=positive_int, default=None, help="default 1")
    sft.add_argument("--batch-size", type=positive_int, default=None, help="micro-batch per process (default 8)")
    sft.add_argument("--grad-accum", type=positive_int, default=None)
    sft.add_argument("--warmup-steps", type=non_negative_int, default=None)
    sft.add_argument("--lr-schedule", choices=["constant", "linear", "cosine"], default=None)
    sft.add_argument("--seed", type=int, default=None)
    sft.add_argument("--save-every", type=non_negative_int, default=None, help="checkpoint every N optimizer steps")
    sft.add_argument("--gradient-checkpointing", action="store_true")
    sft.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    sft.add_argument("--no-progress", action="store_true")

    merge = sub.add_parser("merge", help="merge an adapter into the base weights (for vLLM)")
    _add_model(merge)
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--out", required=True)
    _add_benchmark(merge, modality_required=False)
    merge.add_argument("--check-items", type=non_negative_int, default=4, help="items whose greedy outputs must match")

    bench = sub.add_parser("bench-step", help="time LoRA SFT steps on a random-weights model")
    bench.add_argument("--model-config", default="7b", help="'7b' (Qwen2-Audio-7B layout) or a model folder")
    bench.add_argument("--batch", type=int, default=8)
    bench.add_argument("--seq-len", type=int, default=330)
    bench.add_argument("--audio-seconds", type=real(0.0, 3600.0, low_open=True), default=10.0)
    bench.add_argument("--steps", type=int, default=10)
    bench.add_argument("--warmup", type=int, default=3)
    bench.add_argument("--gradient-checkpointing", action="store_true")
    bench.add_argument("--loss-impl", choices=["answer", "hf"], default="answer")
    bench.add_argument("--device", default=None)
    bench.add_argument("--dtype", default="auto")


def _items(args):
    bench = load_benchmark(args.benchmark, args.audio_dir)
    for rejected in bench.rejected:
        print(f"benchmark: record {rejected.item_id!r} rejected: {rejected.cause}", file=sys.stderr)
    tasks = TASKS if "all" in args.modality else tuple(args.modality)
    items = [it for it in bench.items if it.task in tasks]
    return items[: args.limit] if args.limit else items


def _run_k_at_n(args) -> int:
    items = _items(args)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature,
                                  top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    backend = load_backend(args.model, batch_size=args.batch_size, device=args.device or "auto", dtype=args.dtype)
    summary = sample_k_at_n(backend, items, args.out, n_samples=args.samples, settings=settings, method=args.prompt,
                         progress=not args.no_progress)
    print(json.dumps(summary.to_dict(), indent=2, default=str))
    frame = idk_fraction_frame(ResultStore(Path(args.out)), items, n=args.samples)
    print("IDK share (%) by K (rows) and task:")
    print(frame.round(2).to_string())
    if frame.attrs.get("skipped"):
        print(f"items left out: {frame.attrs['skipped']}")
    return 0


def _open_store(path: str):
    store = ResultStore(Path(path))
    if not store.manifest_path.is_file():
        raise SystemExit(f"no result store at {path} (run 'rlalm train k-at-n' first)")
    return store


def _run_sft(args) -> int:
    modalities = [m for m in (TASKS if "all" in args.modality else args.modality)]
    items = _items(args)
    store = _open_store(args.samples_store)
    dataset = build_idk_dataset(items, store, args.k, args.n, prompt_method=args.prompt)
    # Table 9 alpha follows the training modality; with several, the first one's (or --lora-alpha).
    config = LoraSFTConfig.for_modality(
        modalities[0], alpha_reading=args.lora_alpha_reading, lora_targets=args.lora_targets,
        learning_rate=args.lr, alpha=args.lora_alpha, rank=args.lora_rank, dropout=args.lora_dropout,
        epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum, warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule, seed=args.seed, save_every=args.save_every, dtype=args.dtype,
        gradient_checkpointing=args.gradient_checkpointing or None)
    if len(modalities) > 1:
        config.modality = "+".join(modalities)
    print(f"IDK dataset {args.k}@{dataset.n}: {dataset.summary()}", file=sys.stderr)
    data_info = {"idk_dataset": dataset.summary(), "samples_store": str(args.samples_store),
                 "sampling": store.manifest().get("params", {}).get("settings"), "benchmark": args.benchmark}
    result = train_lora_sft(args.model, dataset.examples, args.out, config, deepspeed_config=args.deepspeed,
                            resume=not args.no_resume, device=args.device, progress=not args.no_progress,
                            extra_summary=data_info)
    if result.adapter is not None:  # rank 0
        print(json.dumps({"adapter": str(result.adapter_dir), "steps": result.steps, "world_size": result.world_size,
                          "first_loss": result.losses[0], "last_loss": result.losses[-1],
                          "seconds_per_step": result.seconds_per_step}, indent=2))
    return 0


def _run_merge(args) -> int:
    checks = []
    if args.benchmark and args.check_items:
        for item in _items(args)[: args.check_items]:
            checks.append(SFTExample(audio=load_audio(item.audio_path, item_id=item.id),
                                     prompt=build_prompt("baseline", item.question, item.choices), target="",
                                     item_id=item.id))
    device = args.device or "cpu"
    report = merge_adapter(args.model, args.adapter, args.out, check_examples=checks, device=device,
                           dtype=resolve_dtype(args.dtype, device))
    print(json.dumps({k: report[k] for k in ("out_dir", "checked_items", "mismatched_items")}, indent=2))
    return 0


def _run_bench(args) -> int:
    config = LoraSFTConfig(gradient_checkpointing=args.gradient_checkpointing, dtype=args.dtype)
    model_config = "qwen2-audio-7b" if args.model_config == "7b" else args.model_config
    result = benchmark_sft_step(config, model_config=model_config, batch=args.batch, seq_len=args.seq_len,
                                audio_seconds=args.audio_seconds, steps=args.steps, warmup=args.warmup,
                                device=args.device, loss_impl=args.loss_impl)
    print(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {K_AT_N_STEP: _run_k_at_n, DEPRECATED_K_AT_N_STEP: _run_k_at_n, "sft": _run_sft, "merge": _run_merge,
                "bench-step": _run_bench}
    if args.train_command == DEPRECATED_K_AT_N_STEP:
        print(f"rlalm train {DEPRECATED_K_AT_N_STEP}: deprecated name, use 'rlalm train {K_AT_N_STEP}'", file=sys.stderr)
    try:
        if getattr(args, "model", None) is not None:
            resolve_model_source(args.model)  # a model that is not available offline fails here, in one line
        return handlers[args.train_command](args)
    except (ModelNotAvailable, StoreLocked, TrainingNotSupported, UnsafeCheckpointError) as err:
        print(f"rlalm train {args.train_command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliable_lalm.cli.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
