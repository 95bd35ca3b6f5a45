"""``rlalm bench inference``: the inference engine against the per-question loop, in one run.

The loop is what public MMAU evaluation scripts do: for every question, ``processor(...)`` then one
``model.generate`` call (K@N: N separate sampled calls). The engine is :class:`~reliable_lalm.models.qwen2_audio.HFBackend`:
length-sorted batches, one prefill per question, N samples decoded from the shared prefix.
Both paths get the same questions, the same audio arrays (already in memory: file reading is
not timed), the same prompts and the same ``max_new_tokens``; each is warmed up once before
timing. Questions are timed in rounds with loop and engine interleaved (alternating order), so on
a shared machine both see the same background load. The last line printed is
``speedup_greedy=<x> speedup_knn=<y>`` (loop wall time / engine wall time).

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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reliable_lalm.core.argtypes import REPETITION_PENALTY, SAMPLES, TEMPERATURE, real

# Dense bf16 peak (TFLOP/s) and HBM bandwidth (TB/s) of the SXM parts, from NVIDIA's data sheets.
GPU_PEAKS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    p = sub.add_parser("inference", help="engine vs per-question loop (greedy and K@N)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--random-weights", choices=["7b", "tiny"], default=None,
                   help="random weights of the Qwen2-Audio-7B layout (7b) or of its scaled-down copy (tiny); "
                        "default: the demo model")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped demo, else a freshly built "
                                                 "untrained demo)")
    p.add_argument("--n-questions", type=int, default=None, help="default: 48 on CPU, 256 on CUDA")
    p.add_argument("--batch-size", type=int, default=None, help="engine batch size (default: automatic)")
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
                   sampling_rate: int = 16000) -> list[Question]:
    """Synthetic benchmark questions (the project's generator), or noise clips if it is unavailable."""
    from reliable_lalm.core import prompts

    rng = np.random.default_rng(seed)
    tasks = ("sound", "music", "speech")
    out = []
    try:
        from reliable_lalm.demo.synthetic import generate_item
    except ImportError:  # generator not installed: noise clips with a fixed question
        generate_item = None
    for i in range(n):
        if generate_item is not None:
            audio, record = generate_item(rng, tasks[i % 3], item_id=f"bench-{i}")
            question, choices = record["question"], record["choices"]
        else:
            audio = (0.1 * rng.standard_normal(int(rng.uniform(1.0, 4.0) * sampling_rate))).astype(np.float32)
            question, choices = "What is the main sound source?", ["Dog barking", "Car horn", "Piano", "Rain"]
        if audio_seconds:
            audio = np.resize(audio, int(audio_seconds * sampling_rate))  # loop the clip
        out.append(Question(f"bench-{i}", np.asarray(audio, dtype=np.float32),
                            prompts.build_prompt("baseline", question, choices)))
    return out


def _load(device: str, random_weights: str | None, model_path: str | None, tmp: str):
    from reliable_lalm import paths
    from reliable_lalm.models.hf_loading import build_random_model_and_processor, load_model_and_processor

    if random_weights:
        model, processor = build_random_model_and_processor(random_weights, device=device)
        return model, processor, f"random weights, {random_weights} layout"
    if model_path is None:
        if (paths.DEMO_MODEL_DIR / "config.json").exists():
            model_path = str(paths.DEMO_MODEL_DIR)
        else:
            from reliable_lalm.demo.model import create_untrained
            from reliable_lalm.models.hf_loading import _tokenizer_corpus

            model_path = str(create_untrained(Path(tmp) / "demo", _tokenizer_corpus()))
    model, processor = load_model_and_processor(model_path, device=device)
    return model, processor, str(model_path)


class _Loop:
    """The per-question loop of public evaluation scripts: processor + one generate() per call."""

    def __init__(self, model, processor, max_new_tokens: int):
        from reliable_lalm.models.qwen_chat import chat_text

        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens
        self.chat_text = chat_text
        self.device = model.get_input_embeddings().weight.device

    def answer(self, q: Question, **sampling) -> tuple[str, int]:
        import torch

        inputs = self.processor(text=self.chat_text(self.processor, q.prompt), audio=q.audio, sampling_rate=16000,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.shape[0])


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_inference(*, device: str | None = None, random_weights: str | None = None, model: str | None = None,
                    n_questions: int | None = None, batch_size: int | None = None, samples: int = 5,
                    max_new_tokens: int | None = None, audio_seconds: float | None = None,
                    temperature: float = 1.0, threads: int | None = None, seed: int = 0,
                    round_size: int | None = None, repetition_penalty: float = 1.0,
                    print_fn=print) -> dict[str, Any]:
    import torch

    from reliable_lalm.models.base import GenerationRequest, GenerationSettings
    from reliable_lalm.models.qwen2_audio import HFBackend
    from reliable_lalm.models.hf_loading import count_parameters, resolve_device

    device = resolve_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    n_questions = n_questions or (256 if device == "cuda" else 48)
    max_new_tokens = max_new_tokens or (32 if random_weights else 16)
    if audio_seconds is None and random_weights:
        audio_seconds = 10.0  # typical MMAU clip length
    with tempfile.TemporaryDirectory() as tmp:
        model_obj, processor, model_desc = _load(device, random_weights, model, tmp)
    questions = make_questions(n_questions, seed=seed, audio_seconds=audio_seconds)
    backend = HFBackend(model_obj, processor, batch_size=batch_size)
    loop = _Loop(model_obj, processor, max_new_tokens)
    # The greedy rows compare the two paths' texts: both apply the same repetition penalty (the
    # loop through HF generate's logits processor, the engine in its own decoding loop).
    greedy = GenerationSettings(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    hf_greedy = {"do_sample": False, "repetition_penalty": repetition_penalty}
    knn = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             num_samples=samples, seed=seed)
    hf_sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}

    n = len(questions)
    round_size = round_size or (n if device == "cuda" else min(n, 32))
    names = ["loop greedy", "engine greedy", f"loop K@{samples}", f"engine K@{samples}"]
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    tokens = dict.fromkeys(names, 0)
    passes: dict[str, int] = dict.fromkeys(names, 0)
    prompt_tok: dict[str, int] = dict.fromkeys(names, 0)
    loop_texts: list[str] = []
    engine_texts: list[str] = []

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
        prompt_tok[name] += sum(g.prompt_tokens for g in gens)
        return gens

    def loop_run(name, n_calls, sampling, qs):
        answers = timed(name, lambda: [loop.answer(q, **sampling) for q in qs for _ in range(n_calls)])
        tokens[name] += sum(k for _, k in answers)
        return [text for text, _ in answers]

    # Warm-up (allocator, kernels, lazy imports), untimed, for both paths.
    loop.answer(questions[0], **hf_greedy)
    loop.answer(questions[0], **hf_sampling)
    backend.generate([GenerationRequest(q.item_id, q.audio, q.prompt, s) for q in questions[:4] for s in (greedy, knn)])

    # Rounds of questions, loop and engine interleaved (in alternating order), so that both see
    # the same background load on a shared machine.
    for r, start in enumerate(range(0, n, round_size)):
        qs = questions[start:start + round_size]
        steps = [
            lambda: loop_texts.extend(loop_run(names[0], 1, hf_greedy, qs)),
            lambda: engine_texts.extend(g.text for g in engine(names[1], greedy, qs)),
            lambda: loop_run(names[2], samples, hf_sampling, qs),
            lambda: engine(names[3], knn, qs),
        ]
        order = [0, 1, 2, 3] if r % 2 == 0 else [1, 0, 3, 2]
        for i in order:
            steps[i]()
    prompt_tokens = prompt_tok[names[1]]  # real (unpadded) prompt tokens, audio included
    same = sum(a == b for a, b in zip(loop_texts, engine_texts))
    rows = [(name, wall[name], tokens[name], n * (samples if "K@" in name else 1)) for name in names]
    params = count_parameters(model_obj)
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name()
    result: dict[str, Any] = {
        "device": device, "device_name": device_name, "torch_threads": torch.get_num_threads(),
        "model": model_desc, "dtype": str(backend._inner.dtype), "params": params, "n_questions": n,
        "samples": samples, "max_new_tokens": max_new_tokens, "audio_seconds": audio_seconds,
        "repetition_penalty": repetition_penalty,
        "batch_size": batch_size or "auto", "prompt_tokens_mean": prompt_tokens / n,
        "greedy_identical": f"{same}/{n}", "round_size": round_size, "rows": {},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print_fn(f"device: {device_name} ({device}, {torch.get_num_threads()} threads) | model: {model_desc} "
             f"({params['total'] / 1e6:.1f} M params, {result['dtype']})")
    print_fn(f"{n} questions, mean prompt {prompt_tokens / n:.0f} tokens, max_new_tokens={max_new_tokens}, "
             f"K@N N={samples}, engine batch size {batch_size or 'auto'}, rounds of {round_size} questions")
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
    print_fn(f"greedy outputs identical (engine vs loop): {same}/{n}")
    if device == "cuda":
        floors = flop_floor(params, prompt_tokens, rows, n, samples, device_name,
                            weight_bytes=sum(p.numel() * p.element_size() for p in model_obj.parameters()),
                            forward_passes=passes)
        result["floors"] = floors
        for line in floors.get("lines", []):
            print_fn(line)
    speedup_greedy = wall[names[0]] / wall[names[1]]
    speedup_knn = wall[names[2]] / wall[names[3]]
    result["speedup_cpu_time"] = {"greedy": cpu[names[0]] / cpu[names[1]], "knn": cpu[names[2]] / cpu[names[3]]}
    result.update(speedup_greedy=speedup_greedy, speedup_knn=speedup_knn)
    backend.close()
    print_fn(f"speedup_greedy={speedup_greedy:.2f} speedup_knn={speedup_knn:.2f}")
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
    import platform

    return platform.processor() or platform.machine()
