"""MMAR (Ma et al., 2025): 1000 multiple-choice questions on sound, music, speech and their mixes.

Schema (checked against the released ``MMAR-meta`` metadata, 1000 records): ``id``,
``audio_path`` (``./audio/<id>.wav``, relative to the metadata file), ``question``, ``choices``
(2-6 option texts; 815 records have 4), ``answer`` (the option text), ``modality`` (one of the
seven groups of :data:`MODALITIES`, spelled as in the release), ``category`` (Signal / Perception /
Semantic / Cultural Layer), ``sub-category``, ``language`` (``null`` when nothing is spoken), plus
``source``, ``url``, ``timestamp`` and the rubric fields (``thinking``, ``cue``, ``rubric``), which
are kept in the item's ``record`` but not used.

Four released records end with an empty option (``""``); the loader drops it, with a note on the
item, as MMAU's duplicated options are dropped (MMAR's scorer ignores an empty option too).

Mapping onto :class:`~reliable_lalm.core.items.BenchmarkItem`: ``task`` = the modality group (so
tables have one column per group, not three squeezed ones), ``category`` and ``sub_category`` as
given, no ``difficulty`` (MMAR has none).

MMAR's official scorer (``code/evaluation.py`` in github.com/ddlBoJack/MMAR, adapted from MMAU's)
reads the model's answer from :data:`OUTPUT_FIELD` and judges it with a token rule:
:func:`mmar_string_match` re-implements it (its counting is re-implemented in the tests), so a test can
check that the file :func:`reliable_lalm.benchmarks.official.export_for_benchmark` writes is
scored by MMAR's rule exactly as we score it, up to the items it lists.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reliable_lalm.benchmarks.loading import audio_field, NOTES_KEY, load_translated, record_id, text_field
from reliable_lalm.core.items import ItemError, LoadedBenchmark
from reliable_lalm.core.normalize import mmau_string_match

MODALITIES: tuple[str, ...] = ("sound", "music", "speech", "mix-sound-music", "mix-sound-speech",
                               "mix-music-speech", "mix-sound-music-speech")
CATEGORIES: tuple[str, ...] = ("Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer")
OUTPUT_FIELD = "answer_prediction"  # the key MMAR's evaluation.py reads
MIN_CHOICES, MAX_CHOICES = 2, 6  # what the release has; more or fewer is a malformed record


def _translate(record: dict[str, Any], index: int) -> dict[str, Any]:
    item_id = record_id(record, index)
    modality = record.get("modality")
    if not isinstance(modality, str) or modality.strip() not in MODALITIES:
        raise ItemError(item_id, f"modality {modality!r} is not one of the MMAR groups {MODALITIES}")
    choices = record.get("choices")
    notes = []
    if isinstance(choices, (list, tuple)):
        # Four released records end with an empty option (""), an artefact: MMAR's own rule ignores
        # it (no tokens), and a model should not be shown an empty option, so it is dropped.
        kept = [c for c in choices if not (isinstance(c, str) and not c.strip())]
        if len(kept) != len(choices):
            notes.append(f"empty choice removed: {list(choices)} -> {kept}")
            choices = kept
        if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
            raise ItemError(item_id, f"{len(choices)} choices; MMAR has {MIN_CHOICES}-{MAX_CHOICES}")
    return {NOTES_KEY: notes,"id": item_id, "question": record.get("question"), "choices": choices, "answer": record.get("answer"),
            "task": modality.strip(), "audio_id": audio_field(record, "audio_path", "audio"),
            "category": text_field(record, "category"), "sub-category": text_field(record, "sub-category"),
            "dataset": text_field(record, "source")}


def load(path: str | Path, audio_dir: str | Path | None = None, *, modalities: Sequence[str] = MODALITIES,
         check_audio: bool = True, dedupe_choices: bool = True, **kwargs: Any) -> LoadedBenchmark:
    """Load MMAR metadata (JSON list, JSONL or a dataset, :mod:`.hf_data`); every record is accepted or rejected with a reason.

    ``audio_dir``: the folder ``audio_path`` is relative to (default: the metadata file's folder).
    """
    return load_translated(path, audio_dir, _translate, modalities=tuple(modalities), check_audio=check_audio,
                           dedupe_choices=dedupe_choices, **kwargs)


# ------------------------------------------------------------------------------------------------
# MMAR's official rule (its published evaluation code uses MMAU's)
# ------------------------------------------------------------------------------------------------


def mmar_string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """MMAR's ``string_match``: does ``prediction`` count as ``answer``?

    ``code/evaluation.py`` of github.com/ddlBoJack/MMAR uses MMAU's token rule unchanged (lower-cased
    ``\\b\\w+\\b`` token sets; all answer tokens present, no token of another choice outside the
    answer's), so this is :func:`reliable_lalm.core.normalize.mmau_string_match`, named for MMAR.
    """
    return mmau_string_match(answer, prediction, choices)
