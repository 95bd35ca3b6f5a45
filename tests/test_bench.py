"""`rlalm bench inference` and the 7B random-weights configuration."""
from __future__ import annotations

import re

import pytest

from inference_fixtures import tiny_demo_dir  # noqa: F401

FINAL_LINE = re.compile(r"speedup_greedy=(\d+\.\d+) speedup_k_at_n=(\d+\.\d+) "
                        r"speedup_greedy_vs_peer=(\d+\.\d+) speedup_k_at_n_vs_peer=(\d+\.\d+)")


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
    assert all(float(ratio) > 0 for ratio in match.groups())
    for path in ("loop", "peer", "engine"):
        assert any(line.startswith(f"{path} greedy") for line in lines)
        assert any(line.startswith(f"{path} K@2") for line in lines)
    assert "greedy outputs identical (loop = peer = engine): 3/3" in lines


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
    assert result["greedy_identical"] == "4/4" and result["greedy_differences"] == []
    rows = result["rows"]
    assert rows["engine K@3"]["answers"] == rows["peer K@3"]["answers"] == rows["loop K@3"]["answers"] == 12
    assert rows["engine greedy"]["answers"] == rows["peer greedy"]["answers"] == 4
    # Identical greedy answers have identical token counts (EOS included) in all three paths.
    assert (rows["engine greedy"]["generated_tokens"] == rows["peer greedy"]["generated_tokens"]
            == rows["loop greedy"]["generated_tokens"])
    assert result["speedup_k_at_n_vs_peer"] > 0 and result["speedup_greedy_vs_peer"] > 0


def test_compare_greedy_counts_and_names_the_differences():
    from reliable_lalm.cli.bench import compare_greedy

    same, differences = compare_greedy(["a", "b", "c"], {"loop": ["x", "y", "z"], "peer": ["x", "y", "q"],
                                                         "engine": ["x", "w", "z"]})
    assert same == 1
    assert differences == [{"item_id": "b", "loop": "y", "peer": "y", "engine": "w"},
                           {"item_id": "c", "loop": "z", "peer": "q", "engine": "z"}]
    assert compare_greedy(["a"], {"loop": ["x"], "peer": ["x"], "engine": ["x"]}) == (1, [])


def test_peer_gets_the_engines_batches_and_its_answers_map_back(tiny_demo_dir):
    """The peer's batches are the engine's own plan (longest prompts first), and its greedy texts,
    batched with left padding, come back in question order equal to the engine's."""
    from reliable_lalm.cli.bench import _Peer, make_questions
    from reliable_lalm.models.base import GenerationRequest, GenerationSettings
    from reliable_lalm.models.hf_loading import load_model_and_processor
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    model, processor = load_model_and_processor(str(tiny_demo_dir), device="cpu")
    backend = Qwen2AudioBackend(model, processor, batch_size=2)
    questions = make_questions(5, seed=3)
    settings = GenerationSettings(max_new_tokens=4)
    requests = [GenerationRequest(q.item_id, q.audio, q.prompt, settings) for q in questions]
    plan = backend.plan_batches(requests)
    assert sorted(i for chunk in plan for i in chunk) == list(range(5)) and [len(c) for c in plan] == [2, 2, 1]
    engine = backend.generate(requests)
    assert backend.stats["batches"] == len(plan)
    peer = _Peer(model, processor, 4, backend.eos_ids)
    texts = [""] * 5
    for chunk in plan:
        for i, (text, n_tokens) in zip(chunk, peer.answer_batch([questions[i] for i in chunk], do_sample=False)):
            texts[i] = text
            assert 1 <= n_tokens <= 4
    assert texts == [g.text for g in engine]
    sampled = peer.answer_batch(questions[:2], 3, do_sample=True, top_k=0, top_p=1.0)
    assert len(sampled) == 6  # num_return_sequences rows per question


def test_cpu_scale_layout_has_about_100m_parameters():
    """``--random-weights 100m``: ~100 M parameters, Whisper-large-v3's encoder widths, a 10 s window
    whose encoder positions match the feature extractor's frames."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from reliable_lalm.models.hf_loading import _config_from, count_parameters, cpu_scale_7b_spec, random_layouts

    spec = cpu_scale_7b_spec()
    assert random_layouts()["100m"] == spec
    config = _config_from(spec)
    assert config.audio_config.d_model == 1280 and config.audio_config.encoder_ffn_dim == 5120
    assert config.audio_config.max_source_positions * 2 * 160 == spec["chunk_length_s"] * 16000
    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch.float32)
    assert 70e6 < count_parameters(model)["total"] < 130e6


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
    k_at_n = estimate_batch_size(free, config, 2, prompt_len=330, max_new_tokens=32, num_samples=5)
    assert 40 <= greedy <= 128 and 10 <= k_at_n <= 40 and k_at_n < greedy
    assert estimate_batch_size(2**30, config, 2, prompt_len=330, max_new_tokens=32) == 1
    params = {"language_model_and_projector": 7_750_000_000, "audio_encoder": 640_000_000}
    rows = [("engine greedy", 1.0, 10 * 100, 100)]
    out = flop_floor(params, 330 * 100, rows, 100, 5, "NVIDIA H100 80GB HBM3", weight_bytes=17 * 10**9,
                     forward_passes={"engine greedy": 20})
    floor = out["engine greedy"]["compute_floor_ms"]
    assert 7.0 < floor < 7.6  # (2*7.75e9*340 + 2*0.64e9*1500) / 989e12 s
    assert abs(out["engine greedy"]["weight_read_floor_ms"] - 1000 * 20 * 17e9 / 3.35e12 / 100) < 1e-9
    assert "unknown peak" in flop_floor(params, 1, rows, 1, 5, "Some GPU", weight_bytes=1, forward_passes={})["lines"][0]
