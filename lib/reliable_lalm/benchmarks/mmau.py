"""MMAU (test-mini, both releases): a JSON list (or JSONL) of records with ``id``, ``audio_id``,
``question``, ``choices``, ``answer`` (option text), ``task`` (sound/music/speech), ``difficulty``,
``category``, ``sub-category``. The official scorer reads ``model_output``.

MMAU's 9000-item test split has the same schema without ``answer`` (its leaderboard scores the
submissions): :func:`load_test` accepts records without one (``answer = ""``); such items are
for inference and export only, and scoring refuses them (:mod:`reliable_lalm.benchmarks.official`).

The record validation itself is the scoring core's (:func:`reliable_lalm.core.items.validate_record`),
shared by every benchmark of this schema.
"""
from __future__ import annotations

from typing import Any, Sequence

from reliable_lalm.core.items import TASKS, LoadedBenchmark, load_benchmark


def load(path: str, audio_dir: str | None = None, *, modalities: Sequence[str] = TASKS,
         **kwargs: Any) -> LoadedBenchmark:
    return load_benchmark(path, audio_dir, modalities=tuple(modalities), **kwargs)


def load_test(path: str, audio_dir: str | None = None, *, modalities: Sequence[str] = TASKS,
              **kwargs: Any) -> LoadedBenchmark:
    """MMAU's hidden test split: the MMAU schema, ``answer`` absent, null or empty."""
    kwargs.pop("require_answer", None)
    return load_benchmark(path, audio_dir, modalities=tuple(modalities), require_answer=False, **kwargs)
