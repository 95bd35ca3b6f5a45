"""``rlalm bench inference``: the inference engine against the per-question loop and the batched
Hugging Face ``generate`` peer, in one run.

The loop is what public MMAU evaluation scripts do: for every question, ``processor(...)`` then one
``model.generate`` call (K@N: N separate sampled calls). The peer is the strongest common
alternative (lmms-eval and batched scripts at their best): ``processor(...)`` on a left-padded batch
and one ``model.generate`` per batch, K@N as ``generate(num_return_sequences=N, do_sample=True)``; it
gets the engine's own batches (same batch size, same length-sorted grouping). The engine is
:class:`~reliable_lalm.models.qwen2_audio.Qwen2AudioBackend`: length-sorted batches, one prefill per question,
N samples decoded from the shared prefix.
All paths get the same questions, the same audio arrays (already in memory: file reading is
not timed), the same prompts and the same ``max_new_tokens``; each is warmed up once before
timing. Questions are timed in rounds with the three paths interleaved (their order rotating from
round to round), so on a shared machine all see the same background load. The greedy texts of the
three paths are compared (identical text expected); the differing questions are counted and shown.
The last line printed is ``speedup_greedy=<x> speedup_k_at_n=<y> speedup_greedy_vs_peer=<z>
speedup_k_at_n_vs_peer=<w>`` (loop or peer wall time / engine wall time).

On CUDA it also prints ms/question and two lower bounds per question:
``compute floor = FLOPs / peak``, with ``FLOPs = 2 * P_lm * (prompt tokens + generated tokens)
+ 2 * P_enc * 1500`` (every clip fills the encoder's 1500 positions), and ``weight-read floor =
forward passes * weight bytes / memory bandwidth / questions`` (each prefill or decode step of a
batch reads every weight once).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reliable_lalm import paths
from reliable_lalm.benchmarks.registry import registered_benchmarks
from reliable_lalm.core import prompts
from reliable_lalm.cli.argtypes import REPETITION_PENALTY, SAMPLES, TEMPERATURE, real
from reliable_lalm.core.items import SAMPLING_RATE, load_audio
from reliable_lalm.models.base import GenerationRequest, GenerationSettings
from reliable_lalm.models.hf_loading import (build_random_model_and_processor, count_parameters, load_model_and_processor,
                                             random_layouts, resolve_device)
from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend
from reliable_lalm.models.chat import chat_text
from reliable_lalm.models.registry import registered_models

# Dense bf16 peak (TFLOP/s) and HBM bandwidth (TB/s) of the SXM parts, from NVIDIA's data sheets.
GPU_PEAKS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0)}
MAX_SHOWN_DIFFERENCES = 10  # greedy answers that differ between the paths, printed (all go to --json)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    p = sub.add_parser("inference", help="engine vs per-question loop (greedy and K@N)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--random-weights", choices=list(random_layouts()), default=None,
                   help="random weights of the Qwen2-Audio-7B layout (7b), of its ~100 M-parameter CPU cut "
                        "(100m) or of its tiny test copy (tiny); default: the demo model")
    p.add_argument("--model", default=None, help="checkpoint (default: the registered demo model's checkpoint, "
                                                 "else random weights of the tiny layout)")
    p.add_argument("--n-questions", type=int, default=None,
                   help="default: 256 on CUDA; on CPU 48 (demo) or 4 (random weights)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size of the engine and the peer (default: the engine's automatic size)")
    p.add_argument("--samples", type=SAMPLES, default=5, help="N of K@N")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 16 (demo) / 32 (random weights)")
    p.add_argument("--audio-seconds", type=real(0.0, 3600.0, low_open=True), default=None,
                   help="loop every clip to this length (default: 10 s for --random-weights, else as generated)")
    p.add_argument("--temperature", type=TEMPERATURE, default=1.0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repetition-penalty", type=REPETITION_PENALTY, default=1.0,
                   help="greedy rows: HF's repetition penalty in both paths (Qwen2-Audio's published config: 1.1)")
    p.add_argument("--round-size", type=int, default=None,
                   help="questions per interleaved round (default: 32 on CPU, all on CUDA)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "bench_command", None) != "inference":
        print("usage: rlalm bench inference [--device cpu|cuda] [--random-weights 7b] ...")
        return 2
    results = bench_inference(
        device=args.device, random_weights=args.random_weights, model=args.model, n_questions=args.n_questions,
        batch_size=args.batch_size, samples=args.samples, max_new_tokens=args.max_new_tokens,
        audio_seconds=args.audio_seconds, temperature=args.temperature, threads=args.threads, seed=args.seed,
        round_size=args.round_size, repetition_penalty=args.repetition_penalty)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


# --------------------------------------------------------------------------------------------------


@dataclass
class Question:
    item_id: str
    audio: np.ndarray
    prompt: str


def make_questions(n: int, *, seed: int = 0, audio_seconds: float | None = None,
                   sampling_rate: int = SAMPLING_RATE) -> list[Question]:
    """``n`` questions of the registered synthetic benchmark (drawn with ``seed``, repeated when ``n``
    exceeds it), or noise clips with a fixed question where no such benchmark is registered."""
    rng = np.random.default_rng(seed)
    entry = registered_benchmarks().get(paths.SYNTHETIC_BENCHMARK_NAME)
    items = entry.load(None, check_audio=False).items if entry is not None else []
    out = []
    for i in range(n):
        if items:
            item = items[int(rng.integers(len(items)))]
            audio = load_audio(item.audio_path, sampling_rate=sampling_rate, item_id=item.id)
            question, choices = item.question, list(item.choices)
        else:
            audio = (0.1 * rng.standard_normal(int(rng.uniform(1.0, 4.0) * sampling_rate))).astype(np.float32)
            question, choices = "What is the main sound source?", ["Dog barking", "Car horn", "Piano", "Rain"]
        if audio_seconds:
            audio = np.resize(audio, int(audio_seconds * sampling_rate))  # loop the clip
        out.append(Question(f"bench-{i}", np.asarray(audio, dtype=np.float32),
                            prompts.baseline_prompt(question, choices)))
    return out


def _load(device: str, random_weights: str | None, model_path: str | None):
    """The model to bench: a random-weights layout, ``model_path``, else the registered demo model's
    checkpoint, else random weights of the tiny layout (no demo checkpoint here)."""
    if random_weights is None and model_path is None:
        demo = registered_models().get(paths.DEMO_MODEL_NAME)
        source = Path(demo.resolve_source()) if demo is not None and not demo.built_on_first_use else None
        if source is not None and (source / "config.json").exists():
            model_path = str(source)
        else:
            random_weights = "tiny"
    if random_weights:
        model, processor = build_random_model_and_processor(random_weights, device=device)
        return model, processor, f"random weights, {random_weights} layout"
    model, processor = load_model_and_processor(model_path, device=device)
    return model, processor, str(model_path)


class _Loop:
    """The per-question loop of public evaluation scripts: processor + one generate() per call."""

    def __init__(self, model, processor, max_new_tokens: int):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.device = model.get_input_embeddings().weight.device

    def answer(self, q: Question, **sampling) -> tuple[str, int]:
        # local import: `rlalm --help` imports every command module and stays torch-free
        import torch

        inputs = self.processor(text=chat_text(self.processor, q.prompt), audio=q.audio, sampling_rate=SAMPLING_RATE,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.shape[0])


class _Peer:
    """The strongest common reference: Hugging Face ``generate`` on left-padded batches (what lmms-eval
    and batched MMAU scripts run), K@N as one ``generate(num_return_sequences=N, do_sample=True)``
    per batch. It gets the engine's own batches (:meth:`Qwen2AudioBackend.plan_batches`)."""

    def __init__(self, model, processor, max_new_tokens: int, eos_ids: Sequence[int]):
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.device = model.get_input_embeddings().weight.device
        self.eos_ids = set(int(e) for e in eos_ids)

    def answer_batch(self, qs: Sequence[Question], num_return_sequences: int = 1,
                     **sampling) -> list[tuple[str, int]]:
        """``(text, generated tokens)`` per row: question by question, its ``num_return_sequences`` rows in a row."""
        # local import: `rlalm --help` imports every command module and stays torch-free
        import torch

        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(text=[chat_text(self.processor, q.prompt) for q in qs],
                                audio=[q.audio for q in qs], sampling_rate=SAMPLING_RATE, padding=True,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      num_return_sequences=num_return_sequences, **sampling)
        rows = []
        for new in out[:, inputs["input_ids"].shape[1]:].tolist():
            # Finished rows are filled with padding after their EOS: the answer ends at the first EOS.
            end = next((i + 1 for i, t in enumerate(new) if t in self.eos_ids), len(new))
            rows.append(new[:end])
        texts = self.processor.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [(text.strip(), len(row)) for text, row in zip(texts, rows)]


def compare_greedy(item_ids: Sequence[str], texts: dict[str, Sequence[str]]) -> tuple[int, list[dict[str, str]]]:
    """``(questions where every path gave the same text, the other questions with each path's text)``."""
    same, differences = 0, []
    for i, item_id in enumerate(item_ids):
        answers = {path: path_texts[i] for path, path_texts in texts.items()}
        if len(set(answers.values())) == 1:
            same += 1
        else:
            differences.append({"item_id": item_id, **answers})
    return same, differences


def _sync(device: str) -> None:
    if device == "cuda":
        # local import: `rlalm --help` imports every command module and stays torch-free
        import torch

        torch.cuda.synchronize()


def bench_inference(*, device: str | None = None, random_weights: str | None = None, model: str | None = None,
                    n_questions: int | None = None, batch_size: int | None = None, samples: int = 5,
                    max_new_tokens: int | None = None, audio_seconds: float | None = None,
                    temperature: float = 1.0, threads: int | None = None, seed: int = 0,
                    round_size: int | None = None, repetition_penalty: float = 1.0,
                    print_fn=print) -> dict[str, Any]:
    # local import: `rlalm --help` imports every command module and stays torch-free
    import torch

    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    # On a CPU a random-weights layout (100 M parameters and up, answers of max_new_tokens) costs
    # seconds per question and path: a handful of questions keeps the run to minutes.
    n_questions = n_questions or (256 if device == "cuda" else 4 if random_weights else 48)
    max_new_tokens = max_new_tokens or (32 if random_weights else 16)
    if audio_seconds is None and random_weights:
        audio_seconds = 10.0  # typical MMAU clip length
    model_obj, processor, model_desc = _load(device, random_weights, model)
    questions = make_questions(n_questions, seed=seed, audio_seconds=audio_seconds)
    backend = Qwen2AudioBackend(model_obj, processor, batch_size=batch_size)
    loop = _Loop(model_obj, processor, max_new_tokens)
    peer = _Peer(model_obj, processor, max_new_tokens, backend.eos_ids)
    # The greedy rows compare the three paths' texts: all apply the same repetition penalty (loop
    # and peer through HF generate's logits processor, the engine in its own decoding loop).
    greedy = GenerationSettings(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    hf_greedy = {"do_sample": False, "repetition_penalty": repetition_penalty}
    k_at_n = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             num_samples=samples, seed=seed)
    hf_sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
    torch.manual_seed(seed)  # loop and peer sample from torch's global generator

    n = len(questions)
    round_size = round_size or (n if device == "cuda" else min(n, 32))
    paths = ("loop", "peer", "engine")
    greedy_names = [f"{p} greedy" for p in paths]
    k_at_n_names = [f"{p} K@{samples}" for p in paths]
    names = greedy_names + k_at_n_names
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    tokens = dict.fromkeys(names, 0)
    answers_count = dict.fromkeys(names, 0)
    passes: dict[str, int] = dict.fromkeys(names, 0)
    prompt_tok: dict[str, int] = dict.fromkeys(names, 0)
    greedy_texts: dict[str, list[str]] = {p: [] for p in paths}

    def timed(name, fn):
        _sync(device)
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        wall[name] += time.perf_counter() - w
        cpu[name] += time.process_time() - c
        return out

    def engine(name, settings, qs):
        reqs = [GenerationRequest(q.item_id, q.audio, q.prompt, settings) for q in qs]
        before = backend.stats["decode_steps"] + backend.stats["batches"]
        gens = timed(name, lambda: backend.generate(reqs))
        # forward passes (prefills + decode steps): each reads every weight once
        passes[name] += backend.stats["decode_steps"] + backend.stats["batches"] - before
        tokens[name] += sum(sum(g.new_tokens) for g in gens)
        answers_count[name] += sum(len(g.texts) for g in gens)
        prompt_tok[name] += sum(g.prompt_tokens for g in gens)
        return [g.text for g in gens]

    def loop_run(name, n_calls, sampling, qs):
        answers = timed(name, lambda: [loop.answer(q, **sampling) for q in qs for _ in range(n_calls)])
        tokens[name] += sum(k for _, k in answers)
        answers_count[name] += len(answers)
        return [text for text, _ in answers]

    def peer_run(name, n_return, sampling, qs, plan):
        batches = [[qs[i] for i in chunk] for chunk in plan]
        per_batch = timed(name, lambda: [peer.answer_batch(b, n_return, **sampling) for b in batches])
        texts: list[str] = [""] * len(qs)
        for chunk, answers in zip(plan, per_batch):
            tokens[name] += sum(k for _, k in answers)
            answers_count[name] += len(answers)
            for j, i in enumerate(chunk):
                texts[i] = answers[j * n_return][0]  # the first row of each question (greedy: its only row)
        return texts

    def plan(settings, qs):
        return backend.plan_batches([GenerationRequest(q.item_id, q.audio, q.prompt, settings) for q in qs])

    # Warm-up (allocator, kernels, lazy imports), untimed, for the three paths.
    loop.answer(questions[0], **hf_greedy)
    loop.answer(questions[0], **hf_sampling)
    peer.answer_batch(questions[:2], **hf_greedy)
    peer.answer_batch(questions[:2], samples, **hf_sampling)
    backend.generate([GenerationRequest(q.item_id, q.audio, q.prompt, s) for q in questions[:4] for s in (greedy, k_at_n)])

    # Rounds of questions, the three paths interleaved (their order rotating from round to round),
    # so that all see the same background load on a shared machine.
    rounds = list(range(0, n, round_size))
    for r, start in enumerate(rounds):
        qs = questions[start:start + round_size]
        greedy_plan, k_at_n_plan = plan(greedy, qs), plan(k_at_n, qs)
        greedy_steps = {
            "loop": lambda: greedy_texts["loop"].extend(loop_run(greedy_names[0], 1, hf_greedy, qs)),
            "peer": lambda: greedy_texts["peer"].extend(peer_run(greedy_names[1], 1, hf_greedy, qs, greedy_plan)),
            "engine": lambda: greedy_texts["engine"].extend(engine(greedy_names[2], greedy, qs)),
        }
        k_at_n_steps = {
            "loop": lambda: loop_run(k_at_n_names[0], samples, hf_sampling, qs),
            "peer": lambda: peer_run(k_at_n_names[1], samples, hf_sampling, qs, k_at_n_plan),
            "engine": lambda: engine(k_at_n_names[2], k_at_n, qs),
        }
        order = paths[r % 3:] + paths[:r % 3]
        for steps in (greedy_steps, k_at_n_steps):
            for path in order:
                steps[path]()
        if len(rounds) > 1:
            print_fn(f"round {r + 1}/{len(rounds)} done ({min(start + round_size, n)}/{n} questions)")
    prompt_tokens = prompt_tok[greedy_names[2]]  # real (unpadded) prompt tokens, audio included
    same, differences = compare_greedy([q.item_id for q in questions], greedy_texts)
    rows = [(name, wall[name], tokens[name], answers_count[name]) for name in names]
    params = count_parameters(model_obj)
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name()
    result: dict[str, Any] = {
        "device": device, "device_name": device_name, "torch_threads": torch.get_num_threads(),
        "model": model_desc, "dtype": str(backend._inner.dtype), "params": params, "n_questions": n,
        "samples": samples, "max_new_tokens": max_new_tokens, "audio_seconds": audio_seconds,
        "repetition_penalty": repetition_penalty,
        "batch_size": batch_size or "auto", "prompt_tokens_mean": prompt_tokens / n,
        "greedy_identical": f"{same}/{n}", "greedy_differences": differences, "round_size": round_size,
        "rows": {}, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print_fn(f"device: {device_name} ({device}, {torch.get_num_threads()} threads) | model: {model_desc} "
             f"({params['total'] / 1e6:.1f} M params, {result['dtype']})")
    print_fn(f"{n} questions, mean prompt {prompt_tokens / n:.0f} tokens, max_new_tokens={max_new_tokens}, "
             f"K@N N={samples}, batch size {batch_size or 'auto'} (peer and engine), rounds of {round_size} "
             f"questions")
    header = (f"{'path':<16}{'seconds':>10}{'ms/question':>14}{'questions/s':>13}{'gen tokens':>12}"
              f"{'CPU s':>10}")
    print_fn(header)
    print_fn("-" * len(header))
    for name, seconds, gen_tokens, answers in rows:
        result["rows"][name] = {"seconds": seconds, "ms_per_question": 1000 * seconds / n,
                                "questions_per_s": n / seconds, "generated_tokens": gen_tokens,
                                "answers": answers, "process_cpu_seconds": cpu[name]}
        print_fn(f"{name:<16}{seconds:>10.2f}{1000 * seconds / n:>14.1f}{n / seconds:>13.2f}{gen_tokens:>12d}"
                 f"{cpu[name]:>10.2f}")
    print_fn(f"greedy outputs identical (loop = peer = engine): {same}/{n}")
    for diff in differences[:MAX_SHOWN_DIFFERENCES]:
        print_fn(f"  differs {diff['item_id']}: " + " | ".join(f"{p} {diff[p]!r}" for p in paths))
    if len(differences) > MAX_SHOWN_DIFFERENCES:
        print_fn(f"  ... and {len(differences) - MAX_SHOWN_DIFFERENCES} more (all in --json)")
    if device == "cuda":
        floors = flop_floor(params, prompt_tokens, rows, n, samples, device_name,
                            weight_bytes=sum(p.numel() * p.element_size() for p in model_obj.parameters()),
                            forward_passes=passes)
        result["floors"] = floors
        for line in floors.get("lines", []):
            print_fn(line)
    speedups = {
        "speedup_greedy": wall[greedy_names[0]] / wall[greedy_names[2]],
        "speedup_k_at_n": wall[k_at_n_names[0]] / wall[k_at_n_names[2]],
        "speedup_greedy_vs_peer": wall[greedy_names[1]] / wall[greedy_names[2]],
        "speedup_k_at_n_vs_peer": wall[k_at_n_names[1]] / wall[k_at_n_names[2]],
    }
    result["speedup_cpu_time"] = {
        "greedy": cpu[greedy_names[0]] / cpu[greedy_names[2]], "k_at_n": cpu[k_at_n_names[0]] / cpu[k_at_n_names[2]],
        "greedy_vs_peer": cpu[greedy_names[1]] / cpu[greedy_names[2]],
        "k_at_n_vs_peer": cpu[k_at_n_names[1]] / cpu[k_at_n_names[2]]}
    result.update(speedups)
    backend.close()
    # Process CPU time is less disturbed than wall time by other jobs on a shared machine.
    print_fn("CPU-time ratios: " + " ".join(f"{k}={v:.2f}" for k, v in result["speedup_cpu_time"].items()))
    print_fn(" ".join(f"{k}={v:.2f}" for k, v in speedups.items()))
    return result


def flop_floor(params: dict[str, int], prompt_tokens: int, rows, n: int, samples: int, device_name: str, *,
               weight_bytes: int, forward_passes: dict[str, int]) -> dict[str, Any]:
    """Lower bounds on ms/question for the engine rows (see the module docstring for the formulas)."""
    peak = next((v for k, v in GPU_PEAKS.items() if k in device_name), None)
    if peak is None:
        return {"lines": [f"FLOP floor: unknown peak for {device_name!r}"]}
    tflops, tbps = peak
    p_lm, p_enc = params["language_model_and_projector"], params["audio_encoder"]
    lines = [f"floors on {device_name}: {tflops:g} TFLOP/s bf16 dense, {tbps:g} TB/s; "
             "FLOPs = 2*P_lm*(prompt+generated tokens) + 2*P_enc*1500 per clip"]
    out: dict[str, Any] = {"peak_tflops": tflops, "bandwidth_tbps": tbps}
    for name, seconds, gen_tokens, _ in rows:
        if not name.startswith("engine"):
            continue
        flops = 2 * p_lm * (prompt_tokens + gen_tokens) + 2 * p_enc * 1500 * n
        compute_ms = 1000 * flops / (tflops * 1e12) / n
        read_ms = 1000 * forward_passes.get(name, 0) * weight_bytes / (tbps * 1e12) / n
        out[name] = {"flops_per_question": flops / n, "compute_floor_ms": compute_ms, "weight_read_floor_ms": read_ms,
                     "forward_passes": forward_passes.get(name), "measured_ms": 1000 * seconds / n}
        lines.append(f"{name:<16} measured {1000 * seconds / n:8.1f} ms/question; floors: compute {compute_ms:6.1f} ms "
                     f"({flops / n / 1e12:.1f} TFLOP/question), weight reads {read_ms:6.1f} ms "
                     f"({forward_passes.get(name, 0)} forward passes x {weight_bytes / 1e9:.1f} GB)")
    out["lines"] = lines
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()
