"""MMAU-Pro (Kumar et al., 2025), its multiple-choice single-audio part.

Schema of the release's ``test.parquet`` (5305 rows; audio in ``data.zip``), as documented with
the release; this loader is tested on files built from those columns, not on the released file,
which is not available here. Each column is read or deliberately ignored:

=========================  ===================================================================
``id``                     the item id
``audio_path``             a list of paths relative to where ``data.zip`` is extracted (give that
                           folder as ``--audio-dir``; default the parquet's folder); a one-element
                           list is that clip, more than one is a multi-audio item (skipped). A
                           plain string is read as one path; embedded clips (bytes) are read too
``question``               the question
``choices``                a list of option texts (absent, null or fewer than two: open-ended)
``answer``                 the correct option's text
``category``               the modality group (sound, music, speech, their mixes, spatial,
                           voice, ...); "open" and "instruction following" rows are skipped
``sub-cat``                the sub-category (``rlalm score --by sub-category``; ``sub-cat`` too)
``length_type``            kept for ``--by length_type``
``perceptual_skills``      lists, kept for ``--by perceptual_skills`` / ``--by reasoning_skills``
``reasoning_skills``       (an item's group is its whole list joined with '; ')
``transcription``          ignored: the spoken content of the clip; showing it to the model would
                           answer speech questions without listening
``task_classification``,   ignored: what MMAU-Pro's instruction-following checks (IFEval-style)
``task_identifier``,       need; the rows that have them are skipped
``kwargs``
=========================  ===================================================================

Every column stays in the item's ``record``, so an export (:mod:`.official`) writes the parquet
MMAU-Pro's scorer reads: all original columns plus ``model_output``. That scorer matches the
output to the nearest option by text embeddings: it has no notion of abstention, so a refusal is
never counted as one (it is matched to some option or is wrong). Refusals and outputs that map to
no option are therefore exported verbatim (the model's own text), not as ``"IDK"``; our
``rlalm score`` is what counts them.

What is skipped, each with its reason in ``rejected`` (``rlalm benchmark validate`` counts them):

* instruction-following items (``category`` "instruction following"): scored by format checks,
  not by a choice;
* open-ended items (``category`` "open", or fewer than two choices): no options to choose from;
* multi-audio items (``audio_path`` a list of more than one path): the model backends take one
  clip per question.

Modalities: the item's ``category`` (lower-cased) is its modality group. :data:`MODALITIES` lists
the single-audio groups in table order; a category outside it is accepted as a further group
(appended, sorted) rather than rejected, because the spelling of MMAU-Pro's categories could not
be checked against the real file here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from reliable_lalm.benchmarks.loading import audio_field, load_translated, record_id, text_field
from reliable_lalm.core.items import ItemError, ItemSkipped, LoadedBenchmark

MODALITIES: tuple[str, ...] = ("sound", "music", "speech", "sound-music", "sound-speech", "music-speech",
                               "sound-music-speech", "spatial", "voice")
INSTRUCTION_FOLLOWING = ("instruction following", "instruction-following", "instruction_following")
OPEN_ENDED = ("open", "open-ended", "open_ended", "open ended")
SUB_CATEGORY_FIELDS = ("sub-cat", "sub-category", "sub_category")  # the release spells it sub-cat


def _category(record: dict[str, Any]) -> str:
    return text_field(record, "category").lower()


def _translate(record: dict[str, Any], index: int) -> dict[str, Any]:
    item_id = record_id(record, index)
    category = _category(record)
    if category in INSTRUCTION_FOLLOWING:
        raise ItemSkipped(item_id, "instruction-following item skipped (scored by format checks, not a choice)")
    choices = record.get("choices")
    if category in OPEN_ENDED or not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ItemSkipped(item_id, "open-ended item skipped (no options to choose from)")
    audio = audio_field(record, "audio_path", "audio")
    if isinstance(audio, (list, tuple)):
        if len(audio) > 1:
            raise ItemSkipped(item_id, f"multi-audio item skipped ({len(audio)} clips; the backends take one)")
        audio = audio[0] if audio else None
    if not category:
        raise ItemError(item_id, "no category (MMAU-Pro's modality group)")
    return {"id": item_id, "question": record.get("question"), "choices": list(choices),
            "answer": record.get("answer"), "task": category, "audio_id": audio, "category": category,
            "sub-category": text_field(record, *SUB_CATEGORY_FIELDS)}


def _further_group(category: str) -> bool:
    return bool(category) and category not in INSTRUCTION_FOLLOWING and category not in OPEN_ENDED


def load(path: str | Path, audio_dir: str | Path | None = None, *, modalities: Sequence[str] = MODALITIES,
         check_audio: bool = True, dedupe_choices: bool = True, **kwargs: Any) -> LoadedBenchmark:
    """Load MMAU-Pro (its ``test.parquet``, a dataset folder, ``hf:...``, or JSON/JSONL of the same
    columns); multiple-choice single-audio items only."""
    return load_translated(path, audio_dir, _translate, modalities=tuple(modalities), check_audio=check_audio,
                           dedupe_choices=dedupe_choices, open_groups=_further_group, **kwargs)
