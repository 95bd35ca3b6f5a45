"""MMAU-Pro (Kumar et al., 2025), its multiple-choice part.

Schema (from MMAU-Pro's release description; this loader is tested on fixtures written from it,
not on the released file, which is not available here): ``id``, ``question``, ``choices`` (option
texts), ``answer`` (the option text), ``category`` and ``audio_path`` (a path, or a list of paths
relative to the metadata file).

What is skipped, each with its reason in ``rejected``:

* instruction-following items (``category`` "instruction following"): scored by format checks,
  not by a choice;
* open-ended items (``category`` "open" / "open-ended", or fewer than two choices): no options
  to choose from;
* multi-audio items (``audio_path`` a list of more than one path): the model backends take one
  clip per question. A one-element list is read as that one path.

Modalities: the item's ``category`` (lower-cased) is its modality group. :data:`MODALITIES` lists
the single-audio groups in table order; a category outside it is accepted as a further group
(appended, sorted) rather than rejected, because the spelling of MMAU-Pro's categories could not
be checked against the real file here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reliable_lalm.benchmarks._common import load_translated, read_raw_records, record_id, text_field
from reliable_lalm.core.items import ItemError, LoadedBenchmark

MODALITIES: tuple[str, ...] = ("sound", "music", "speech", "sound-music", "sound-speech", "music-speech",
                               "sound-music-speech", "spatial", "voice")
INSTRUCTION_FOLLOWING = ("instruction following", "instruction-following", "instruction_following")
OPEN_ENDED = ("open", "open-ended", "open_ended", "open ended")


def _category(record: dict[str, Any]) -> str:
    return text_field(record, "category").lower()


def _translate(record: dict[str, Any], index: int) -> dict[str, Any]:
    item_id = record_id(record, index)
    category = _category(record)
    if category in INSTRUCTION_FOLLOWING:
        raise ItemError(item_id, "instruction-following item skipped (scored by format checks, not a choice)")
    choices = record.get("choices")
    if category in OPEN_ENDED or not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ItemError(item_id, "open-ended item skipped (no options to choose from)")
    audio = record.get("audio_path")
    if isinstance(audio, (list, tuple)):
        if len(audio) > 1:
            raise ItemError(item_id, f"multi-audio item skipped ({len(audio)} clips; the backends take one)")
        audio = audio[0] if audio else None
    if not category:
        raise ItemError(item_id, "no category (MMAU-Pro's modality group)")
    return {"id": item_id, "question": record.get("question"), "choices": list(choices),
            "answer": record.get("answer"), "task": category, "audio_id": audio, "category": category,
            "sub-category": text_field(record, "sub-category", "sub_category")}


def load(path: str | Path, audio_dir: str | Path | None = None, *, modalities: Sequence[str] = MODALITIES,
         check_audio: bool = True, dedupe_choices: bool = True, **kwargs: Any) -> LoadedBenchmark:
    """Load MMAU-Pro's metadata (JSON list or JSONL); multiple-choice single-audio items only."""
    groups = list(modalities)
    extra = {_category(r) for r in read_raw_records(path) if isinstance(r, dict)} - set(groups)
    groups += sorted(g for g in extra if g and g not in INSTRUCTION_FOLLOWING and g not in OPEN_ENDED)
    return load_translated(path, audio_dir, _translate, modalities=tuple(groups), check_audio=check_audio,
                           dedupe_choices=dedupe_choices, **kwargs)
