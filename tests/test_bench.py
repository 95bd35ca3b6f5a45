"""`rlalm bench inference` and the 7B random-weights configuration."""
from __future__ import annotations

import re

import pytest

from inference_fixtures import tiny_demo_dir  # noqa: F401

FINAL_LINE = re.compile(r"speedup_greedy=(\d+\.\d+) speedup_knn=(\d+\.\d+)")


def test_7b_config_has_the_published_size():
    """The random-weights layout builds (on the meta device: no memory) and has Qwen2-Audio-7B's size."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from reliable_lalm.models.hf_loading import count_parameters, random_weights_7b_config

    config = random_weights_7b_config()
    assert config.audio_config.d_model == 1280 and config.audio_config.encoder_layers == 32
    assert config.text_config.hidden_size == 4096 and config.text_config.vocab_size == 156032
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    counts = count_parameters(model)
    assert 8.2e9 < counts["total"] < 8.6e9  # "Qwen2-Audio-7B" has ~8.4 B parameters with its encoder
    assert 0.6e9 < counts["audio_encoder"] < 0.7e9  # Whisper-large-v3 encoder


def test_bench_random_weights_path_prints_the_final_line(capsys):
    """The `--random-weights 7b` code path, shrunk (`tiny`: same builder, 30 s window) to run on a CPU."""
    from reliable_lalm.cli import main

    rc = main(["bench", "inference", "--device", "cpu", "--random-weights", "tiny", "--n-questions", "3",
               "--max-new-tokens", "3", "--samples", "2", "--audio-seconds", "3", "--batch-size", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = FINAL_LINE.fullmatch(lines[-1])
    assert match, lines[-1]
    assert float(match.group(1)) > 0 and float(match.group(2)) > 0
    assert any(line.startswith("engine K@2") for line in lines)
    assert "greedy outputs identical (engine vs loop): 3/3" in lines


def test_bench_on_a_demo_checkpoint(tiny_demo_dir, tmp_path):
    from reliable_lalm.cli.bench import bench_inference

    import torch

    printed: list[str] = []
    threads = torch.get_num_threads()
    try:  # one thread: batch-1 loops with two threads crawl on a busy 2-core machine
        result = bench_inference(device="cpu", model=str(tiny_demo_dir), n_questions=4, batch_size=4, samples=3,
                                 max_new_tokens=4, threads=1, print_fn=printed.append)
    finally:
        torch.set_num_threads(threads)
    assert FINAL_LINE.fullmatch(printed[-1])
    assert result["greedy_identical"] == "4/4"
    rows = result["rows"]
    assert rows["engine K@3"]["answers"] == rows["loop K@3"]["answers"] == 12
    assert rows["engine greedy"]["generated_tokens"] == rows["loop greedy"]["generated_tokens"]


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_bench_cuda_7b_small():  # pragma: no cover - needs a GPU
    from reliable_lalm.cli.bench import bench_inference

    printed: list[str] = []
    bench_inference(device="cuda", random_weights="7b", n_questions=8, max_new_tokens=4, samples=2,
                    print_fn=printed.append)
    assert FINAL_LINE.fullmatch(printed[-1])


def test_gpu_estimates_for_the_7b():
    """The CUDA-only arithmetic (batch size from free memory, FLOP floors) on the 7B numbers."""
    from reliable_lalm.cli.bench import flop_floor
    from reliable_lalm.models.qwen2_audio import estimate_batch_size
    from reliable_lalm.models.hf_loading import random_weights_7b_config

    config = random_weights_7b_config()
    free = 63 * 2**30  # an 80 GB card after 17 GB of bf16 weights
    greedy = estimate_batch_size(free, config, 2, prompt_len=330, max_new_tokens=32)
    knn = estimate_batch_size(free, config, 2, prompt_len=330, max_new_tokens=32, num_samples=5)
    assert 40 <= greedy <= 128 and 10 <= knn <= 40 and knn < greedy
    assert estimate_batch_size(2**30, config, 2, prompt_len=330, max_new_tokens=32) == 1
    params = {"language_model_and_projector": 7_750_000_000, "audio_encoder": 640_000_000}
    rows = [("engine greedy", 1.0, 10 * 100, 100)]
    out = flop_floor(params, 330 * 100, rows, 100, 5, "NVIDIA H100 80GB HBM3", weight_bytes=17 * 10**9,
                     forward_passes={"engine greedy": 20})
    floor = out["engine greedy"]["compute_floor_ms"]
    assert 7.0 < floor < 7.6  # (2*7.75e9*340 + 2*0.64e9*1500) / 989e12 s
    assert abs(out["engine greedy"]["weight_read_floor_ms"] - 1000 * 20 * 17e9 / 3.35e12 / 100) < 1e-9
    assert "unknown peak" in flop_floor(params, 1, rows, 1, 5, "Some GPU", weight_bytes=1, forward_passes={})["lines"][0]
