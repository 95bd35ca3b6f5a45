"""Breakdowns of a scored run by item fields: ``rlalm score --by task,difficulty,category,sub-category``.

MMAU's and MMAR's own scorers print accuracy per task/modality, difficulty, category and
sub-category; this gives the reliability metrics the same way: Acc, Tru, Rej, Rel (and, with a
baseline, the transitions, ΔCon/ΔHum/RGI in both conventions) per group, with bootstrap
intervals per group when asked. The numbers come from :func:`reliable_lalm.core.metrics.summarize`
on each key's grouping, so a group's values are exactly those the total would have on its items.

A spec is a comma-separated list of breakdowns; each is one key or several joined with ``+``
(crossed: ``task+difficulty`` gives one group per (task, difficulty) pair, named ``sound | easy``).
An item without a value for a key is in the group :data:`NO_VALUE`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from reliable_lalm.core.metrics import summarize

# MMAU's and MMAR's keys, then MMAU-Pro's own axes (its ``sub-cat`` is the sub-category; its skills are
# lists, grouped by the whole list joined with '; ').
KEYS: tuple[str, ...] = ("task", "difficulty", "category", "sub-category", "length_type", "perceptual_skills",
                         "reasoning_skills")
NO_VALUE = "(none)"
JOIN = " | "
# Group order within a key: these first (as MMAU prints them), then the others sorted.
KNOWN_ORDER: dict[str, tuple[str, ...]] = {"task": ("sound", "music", "speech"),
                                           "difficulty": ("easy", "medium", "hard")}
_ALIASES = {"sub_category": "sub-category", "subcategory": "sub-category", "sub-cat": "sub-category", "modality": "task"}


def parse_by(spec: str | Sequence[str] | None) -> list[tuple[str, ...]]:
    """``"task,category+sub-category"`` -> ``[("task",), ("category", "sub-category")]``.

    Raises ``ValueError`` naming an unknown key (the keys are :data:`KEYS`).
    """
    if spec is None:
        return []
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[tuple[str, ...]] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        keys = tuple(_ALIASES.get(k.strip(), k.strip()) for k in part.split("+"))
        for key in keys:
            if key not in KEYS:
                raise ValueError(f"--by: unknown key {key!r} (use any of {', '.join(KEYS)}, comma-separated; "
                                 "'+' crosses keys)")
        if keys not in out:
            out.append(keys)
    return out


def field_value(record: Mapping[str, Any], key: str) -> str:
    """An item's value for a breakdown key (``task`` is the scored task; lists joined by '; ')."""
    if key == "sub-category":
        value = next((record[k] for k in ("sub-category", "sub_category", "sub-cat") if k in record), None)
    else:
        value = record.get(key)
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value)
    value = "" if value is None else str(value).strip()
    return value or NO_VALUE


def _order(key: tuple[str, ...], labels: Sequence[str], modalities: Sequence[str]) -> list[str]:
    present = set(labels)
    if len(key) == 1:
        known = list(modalities) if key == ("task",) and modalities else list(KNOWN_ORDER.get(key[0], ()))
        return [g for g in known if g in present] + sorted(present - set(known))
    return sorted(present)


def breakdown(fields: Sequence[Mapping[str, Any]], outcomes: Sequence[str], keys: Sequence[tuple[str, ...]], *,
              invalid: Sequence[bool] | None = None, baseline: Sequence[str] | None = None, n_boot: int = 0,
              seed: int = 0, level: float = 0.95, modalities: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``{"task": {"sound": {...}, ...}, "category+sub-category": {"A | x": {...}}}``.

    ``fields``: per item a mapping with the keys' values (``task`` included); ``outcomes``,
    ``invalid`` and ``baseline`` as for :func:`~reliable_lalm.core.metrics.summarize`. Only groups
    that have items are listed. ``modalities`` orders the ``task`` groups (the benchmark's own).
    """
    if len(fields) != len(outcomes):
        raise ValueError(f"{len(outcomes)} outcomes but {len(fields)} field records")
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        labels = [JOIN.join(field_value(f, k) for k in key) for f in fields]
        order = _order(key, labels, modalities)
        summary = summarize(outcomes, labels, invalid=invalid, baseline=baseline, n_boot=n_boot, seed=seed,
                            level=level, task_order=order)
        out["+".join(key)] = {name: summary["by_task"][name] for name in order}
    return out


def table_rows(by: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(row name, group)`` pairs for a plain-text table: ``category=Signal Layer`` ..."""
    return [(f"{key}={name}", group) for key, groups in by.items() for name, group in groups.items()]
