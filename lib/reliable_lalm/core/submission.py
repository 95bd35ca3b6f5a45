"""Splits without answers (MMAU's 9000-item test split): refuse to score them, export them.

Such a split is for inference and for a leaderboard submission only. Scoring it would reject
every record ("answer '' is not among the choices"); :func:`refuse_unscorable` says instead, in
one line, that the records carry no answers. :func:`submission_records` writes the official
submission format: each original record with ``model_output`` holding the normalized answer (the
option text, ``"IDK"`` for a refusal, ``""`` when nothing could be mapped).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from reliable_lalm.core.normalize import RuleBasedNormalizer
from reliable_lalm.core.normalize_types import Normalizer
from reliable_lalm.core.records import OUTPUT_FIELD, RAW_FIELD


class NoAnswersError(ValueError):
    """Records (or a registered benchmark) without answers were given to the scorer."""


def has_no_answers(records: Sequence[Any]) -> bool:
    """True when there are records and none of them carries a non-empty ``answer``."""
    dicts = [r for r in records if isinstance(r, dict)]
    return bool(dicts) and all(r.get("answer") in (None, "") for r in dicts)


def refuse_unscorable(records: Sequence[Any], what: str = "the predictions") -> None:
    """Raise :class:`NoAnswersError` (one line) when ``records`` carry no answers at all."""
    if has_no_answers(records):
        raise NoAnswersError(f"{what} carry no answers (a hidden test split such as mmau-test?): they cannot be "
                             "scored; use 'rlalm export' for a leaderboard submission file")


def refuse_answerless_benchmark(name: str) -> None:
    raise NoAnswersError(f"benchmark {name!r} has no answers (a hidden test split): it cannot be scored; "
                         "use 'rlalm export' for a leaderboard submission file")


def _err(item_id: str, reason: str, index: int) -> dict[str, Any]:
    return {"id": item_id, "reason": reason, "source": "pred", "index": index}


def submission_records(records: Iterable[Any], normalizer: Normalizer | None = None, *,
                       originals: dict[str, dict[str, Any]] | None = None
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The submission file's records for prediction records with ``id``, ``choices`` and the raw
    output in ``model_output`` (answers are neither needed nor read).

    ``originals``: per id the benchmark's original record, written instead of the prediction
    record's fields (so the file holds exactly the split's records plus the outputs). A record
    without an id, choices or an output is left out and listed in ``summary["errors"]``.
    """
    good: list[tuple[str, dict[str, Any], list[str], str]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, rec in enumerate(records):
        if not isinstance(rec, dict):
            errors.append(_err(f"#{index}", f"record is a {type(rec).__name__}, not an object", index))
            continue
        item_id = str(rec.get("id") or "").strip()
        if not item_id:
            errors.append(_err(f"#{index}", "no id", index))
            continue
        if item_id in seen:
            errors.append(_err(item_id, "duplicated id (the first record is kept)", index))
            continue
        seen.add(item_id)
        output = rec.get(OUTPUT_FIELD)
        choices = rec.get("choices")
        if not isinstance(output, str):
            cause = rec.get("error")
            errors.append(_err(item_id, f"no {OUTPUT_FIELD}" + (f" (inference error: {cause})" if cause else ""), index))
            continue
        if not isinstance(choices, (list, tuple)) or len(choices) < 2:
            errors.append(_err(item_id, "choices must be a list of at least two options", index))
            continue
        good.append((item_id, rec, list(dict.fromkeys(str(c).strip() for c in choices)), output))
    norm = normalizer or RuleBasedNormalizer()
    normalized = norm.normalize_many([g[3] for g in good], [g[2] for g in good]) if good else []
    exported = []
    for (item_id, rec, _, output), x in zip(good, normalized):
        base = dict(originals[item_id]) if originals and item_id in originals else dict(rec)
        base.pop(RAW_FIELD, None)
        base[OUTPUT_FIELD] = x.label
        base[RAW_FIELD] = output
        base["normalization"] = {"kind": x.kind, "method": x.method, "normalizer": getattr(norm, "name", "")}
        exported.append(base)
    summary = {"n_exported": len(exported), "n_errors": len(errors), "errors": errors, "submission": True,
               "kinds": dict(Counter(x.kind for x in normalized))}
    return exported, summary
