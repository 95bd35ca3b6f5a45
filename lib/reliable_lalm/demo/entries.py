"""Registry entries of the embedded default, declared as entry points in ``pyproject.toml``.

This is how the demo model and the synthetic benchmark reach the product code: by name, through
the model and benchmark registries, never by an import of this package.
"""
from __future__ import annotations

from reliable_lalm import paths
from reliable_lalm.benchmarks.registry import BenchmarkEntry
from reliable_lalm.models.registry import ModelEntry


def _demo_checkpoint() -> str:
    return str(paths.DEMO_MODEL_DIR)


def _synthetic_test_split() -> str:
    # local import: listing the registries must not load the generator (scipy); it runs on first use
    from reliable_lalm.demo.synthetic import default_benchmark

    return str(default_benchmark("test"))


DEMO_MODEL = ModelEntry(
    paths.DEMO_MODEL_NAME, "reliable_lalm.models.qwen2_audio:Qwen2AudioBackend", _demo_checkpoint, family="qwen2_audio",
    description="the embedded demo: a tiny Qwen2AudioForConditionalGeneration trained on the synthetic benchmark")

TINY_AUDIO_FLAMINGO3 = ModelEntry(
    "audio-flamingo-3-tiny-random", "reliable_lalm.models.hf_generic:NativeHFBackend",
    lambda: str(paths.ASSETS_DIR / "tiny_audio_flamingo3_random"), family="audioflamingo3",
    description="a tiny random-weight Audio Flamingo 3 (shipped): a second model family for the demo's Table 3")

SYNTHETIC_BENCHMARK = BenchmarkEntry(
    paths.SYNTHETIC_BENCHMARK_NAME, "reliable_lalm.benchmarks.mmau:load", default_path=_synthetic_test_split,
    description="the demo's synthetic three-modality benchmark (test split, generated offline)")
