"""MMAU (test-mini, both releases): a JSON list (or JSONL) of records with ``id``, ``audio_id``,
``question``, ``choices``, ``answer`` (option text), ``task`` (sound/music/speech), ``difficulty``,
``category``, ``sub-category``. The official scorer reads ``model_output``.

MMAU's 9000-item test split has the same schema without ``answer`` (its leaderboard scores the
submissions): :func:`load_test` accepts records without one (``answer = ""``); such items are
for inference and export only, and scoring refuses them (:mod:`reliable_lalm.benchmarks.official`).

The record validation itself is the scoring core's (:func:`reliable_lalm.core.items.validate_record`),
shared by every benchmark of this schema.

The same schema as a dataset (parquet, ``save_to_disk`` folder, ``hf:<repo>``; :mod:`.hf_data`) is
read record by record the same way; a Hub copy that embeds the clips (an ``audio`` column of
bytes, as the copies evaluation harnesses load) uses the embedded clip in place of ``audio_id``.
"""
from __future__ import annotations

from typing import Any, Sequence

from reliable_lalm.benchmarks import hf_data
from reliable_lalm.benchmarks.loading import audio_field, load_translated
from reliable_lalm.core.items import TASKS, LoadedBenchmark, load_benchmark


def _view(record: dict[str, Any], index: int) -> dict[str, Any]:
    """A dataset row as the MMAU record it is (its clip: embedded first, else ``audio_id``)."""
    view = {k: v for k, v in record.items() if k != hf_data.EMBEDDED_KEY}
    view["audio_id"] = audio_field(record, "audio_id", "audio_path", "audio")
    return view


def load(path: str, audio_dir: str | None = None, *, modalities: Sequence[str] = TASKS,
         **kwargs: Any) -> LoadedBenchmark:
    if hf_data.is_dataset_spec(path):
        return load_translated(path, audio_dir, _view, modalities=tuple(modalities), **kwargs)
    return load_benchmark(path, audio_dir, modalities=tuple(modalities), **kwargs)


def load_test(path: str, audio_dir: str | None = None, *, modalities: Sequence[str] = TASKS,
              **kwargs: Any) -> LoadedBenchmark:
    """MMAU's hidden test split: the MMAU schema, ``answer`` absent, null or empty."""
    kwargs.pop("require_answer", None)
    return load(path, audio_dir, modalities=modalities, require_answer=False, **kwargs)
