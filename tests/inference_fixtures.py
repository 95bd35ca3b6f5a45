"""Shared fixtures for the inference and benchmark tests: a tiny untrained demo model and items.

The untrained model has random weights, which makes output comparisons stricter than a trained
model would (near-ties between logits are common, so batching bugs show up as different text).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reliable_lalm.core import prompts
from reliable_lalm.core.items import BenchmarkItem

QUESTIONS = [
    ("What is the main sound source?", ["Dog barking", "Car horn", "Piano", "Rain"]),
    ("Which instrument plays the melody?", ["Violin", "Guitar", "Flute"]),
    ("What is the emotion of the speaker?", ["Happy", "Sad", "Angry", "Neutral", "Surprised"]),
    ("How many times does the bell ring?", ["One", "Two"]),
    ("Is the tempo fast or slow and does it change during the clip?", ["Fast", "Slow", "It changes"]),
]
TASKS = ("sound", "music", "speech")


def corpus() -> list[str]:
    texts = [prompts.agent_type_prompt(), "Sound Music Speech IDK The answer is"]
    for question, choices in QUESTIONS:
        texts.append(prompts.mcot_prompt(question, choices))
        texts.append(prompts.agent_answer_prompt("Sound", "a dog barks", question, choices))
    return texts * 10


def build_tiny_demo(out_dir: Path) -> Path:
    from reliable_lalm.demo.model import create_untrained

    return create_untrained(out_dir, corpus(), seed=0)


def write_wav(path: Path, seconds: float, *, seed: int, sr: int = 16000, channels: int = 1) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
    audio = (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr)
    return path


def make_items(folder: Path, n: int, *, seed: int = 0, max_seconds: float = 3.5, prefix: str = "q") -> list[BenchmarkItem]:
    """``n`` valid items with audio of varied lengths (so batches need padding)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        question, choices = QUESTIONS[i % len(QUESTIONS)]
        path = write_wav(folder / f"{prefix}{i}.wav", float(rng.uniform(0.5, max_seconds)), seed=seed * 1000 + i)
        items.append(BenchmarkItem(id=f"{prefix}{i}", audio_path=str(path), question=question, choices=tuple(choices),
                                   answer=choices[0], task=TASKS[i % 3]))
    return items


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory) -> Path:
    return build_tiny_demo(tmp_path_factory.mktemp("tiny_demo"))


@pytest.fixture(scope="session")
def tiny_model(tiny_demo_dir):
    import torch

    from reliable_lalm.models.hf_loading import load_model_and_processor

    torch.manual_seed(0)
    return load_model_and_processor(tiny_demo_dir, device="cpu")


@pytest.fixture(scope="session")
def items_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("items")


def write_benchmark_json(path: Path, items: list[BenchmarkItem]) -> Path:
    records = [{"id": it.id, "audio_id": it.audio_path, "question": it.question, "choices": list(it.choices),
                "answer": it.answer, "task": it.task} for it in items]
    path.write_text(json.dumps(records))
    return path


def infer_idk_on_two_items(folder: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    """``rlalm infer --method idk`` on a saved checkpoint folder over two short clips: (exit code, records)."""
    from reliable_lalm.cli import main
    from reliable_lalm.core.results import ResultStore

    bench = write_benchmark_json(tmp_path / "bench.json", make_items(tmp_path / "audio", 2, max_seconds=1.5))
    rc = main(["infer", "--model", str(folder), "--benchmark", str(bench), "--method", "idk", "--out",
               str(tmp_path / "out"), "--device", "cpu", "--max-new-tokens", "3", "--no-progress"])
    return rc, (ResultStore(tmp_path / "out").records() if rc == 0 else [])
