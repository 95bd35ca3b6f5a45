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

    from reliable_lalm.modeling import count_parameters, random_weights_7b_config

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
    from reliable_lalm.bench import bench_inference

    printed: list[str] = []
    result = bench_inference(device="cpu", model=str(tiny_demo_dir), n_questions=4, batch_size=4, samples=3,
                             max_new_tokens=4, print_fn=printed.append)
    assert FINAL_LINE.fullmatch(printed[-1])
    assert result["greedy_identical"] == "4/4"
    rows = result["rows"]
    assert rows["engine K@3"]["answers"] == rows["loop K@3"]["answers"] == 12
    assert rows["engine greedy"]["generated_tokens"] == rows["loop greedy"]["generated_tokens"]


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_bench_cuda_7b_small():  # pragma: no cover - needs a GPU
    from reliable_lalm.bench import bench_inference

    printed: list[str] = []
    bench_inference(device="cuda", random_weights="7b", n_questions=8, max_new_tokens=4, samples=2,
                    print_fn=printed.append)
    assert FINAL_LINE.fullmatch(printed[-1])
