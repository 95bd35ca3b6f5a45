"""MMSU (Wang et al., 2025): 5000 multiple-choice questions on spoken language, 47 sub-tasks.

Schema (from MMSU's release description; this loader is tested on fixtures written from it, not
on the released file, which is not available here): ``id``, ``audio`` (path of the clip, relative
to the metadata file), ``task_name`` (one of the 47 sub-tasks), ``question``, ``choice_a`` ...
``choice_d`` (option texts; an absent, null or empty option is dropped, so 2-4 options),
``answer_gt`` (the option text), ``category`` (perception / reasoning), ``sub-category``
(linguistics / paralinguistics), ``sub-sub-category`` (semantics, phonology, speaker traits,
speaking style) and ``linguistics_sub_discipline``.

Modalities: MMSU is all speech, so it has one modality group, ``speech``: its items sit in the
speech column of the tables beside MMAU's speech items, and a model trained or prompted per
modality treats them as speech. MMSU's own axes are breakdowns, not modalities:
``rlalm score --by category,sub-category`` (perception/reasoning, linguistics/paralinguistics);
``sub-sub-category``, ``task_name`` and ``linguistics_sub_discipline`` stay in ``record``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reliable_lalm.benchmarks.loading import audio_field, load_translated, record_id, text_field
from reliable_lalm.core.items import ItemError, LoadedBenchmark

MODALITIES: tuple[str, ...] = ("speech",)
CHOICE_FIELDS: tuple[str, ...] = ("choice_a", "choice_b", "choice_c", "choice_d")


def _translate(record: dict[str, Any], index: int) -> dict[str, Any]:
    item_id = record_id(record, index)
    if not any(name in record for name in CHOICE_FIELDS):
        raise ItemError(item_id, f"no choice fields ({', '.join(CHOICE_FIELDS)})")
    choices = [record.get(name) for name in CHOICE_FIELDS]
    choices = [c for c in choices if c is not None and str(c).strip()]
    audio = audio_field(record, "audio", "audio_path")  # a Hub copy embeds the clip (benchmarks.hf_data)
    return {"id": item_id, "question": record.get("question"), "choices": choices,
            "answer": record.get("answer_gt"), "task": "speech", "audio_id": audio,
            "category": text_field(record, "category"), "sub-category": text_field(record, "sub-category"),
            "dataset": text_field(record, "task_name")}


def load(path: str | Path, audio_dir: str | Path | None = None, *, modalities: Sequence[str] = MODALITIES,
         check_audio: bool = True, dedupe_choices: bool = True, **kwargs: Any) -> LoadedBenchmark:
    """Load MMSU metadata (JSON list, JSONL or a dataset, :mod:`.hf_data`); every record is accepted or rejected with a reason."""
    return load_translated(path, audio_dir, _translate, modalities=tuple(modalities), check_audio=check_audio,
                           dedupe_choices=dedupe_choices, **kwargs)
