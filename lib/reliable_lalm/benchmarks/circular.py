"""Option-order robustness: "circular" evaluation under the cyclic permutations of the choices.

Beyond the paper. A model that picks an option by its *position* (always "A") scores
by luck. Circular evaluation (as in MMBench's CircularEval) asks each question once per cyclic
rotation of its options: an item with ``n`` choices gives ``n`` presentations, rotation ``r``
listing ``choices[r:] + choices[:r]`` (rotation 0 is the original order), with the derived id
``<id>::rot<r>``. The answer text does not change, so every rotation is an ordinary, valid
:class:`~reliable_lalm.core.items.BenchmarkItem` and runs through the usual engine and normalizer.

Per source item, from the normalized outputs of its ``n`` rotations:

* **consistent**: the same option *text* is chosen under all ``n`` rotations (a refusal or an
  invalid output in any rotation is not consistent);
* **consistent_with_refusal**: the same label under all rotations, where a refusal counts as one
  label ("IDK" every time is consistent; invalid never is);
* **correct_all** (circular accuracy): correct under every rotation;
* **mean accuracy**: correct presentations / all presentations (the usual accuracy, averaged
  over the orders).

:func:`circular_summary` reports the rates of these over items, per task (modality) and in total,
with ``rot0_accuracy`` (the original order only) beside them. A source item whose rotations are
incomplete (some ``rot<r>`` missing or duplicated) is left out and listed with its reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Sequence


from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.metrics import group_indices
from reliable_lalm.core.normalize_types import Normalized

_ROTATION_ID = re.compile(r"^(?P<source>.+)::rot(?P<r>\d+)$")


def rotation_id(item_id: str, rotation: int) -> str:
    return f"{item_id}::rot{rotation}"


def parse_rotation_id(derived_id: str) -> tuple[str, int]:
    """``"<id>::rot<r>"`` -> ``(id, r)``; a ``ValueError`` for an id that is not a rotation's."""
    m = _ROTATION_ID.match(derived_id)
    if not m:
        raise ValueError(f"{derived_id!r} is not a rotation id '<id>::rot<r>'")
    return m.group("source"), int(m.group("r"))


def rotate_choices(choices: Sequence[str], rotation: int) -> tuple[str, ...]:
    """``choices[r:] + choices[:r]``: rotation 1 of (A, B, C) is (B, C, A)."""
    n = len(choices)
    if not 0 <= rotation < max(n, 1):
        raise ValueError(f"rotation {rotation} outside [0, {n})")
    return tuple(choices[rotation:]) + tuple(choices[:rotation])


def circular_variants(item: BenchmarkItem) -> list[BenchmarkItem]:
    """The ``n`` rotations of an item with ``n`` choices (rotation 0 first), ids ``<id>::rot<r>``.

    The record carried for export is the original one with the rotated ``choices`` and the
    derived ``id`` (so an exported prediction file lists the order that was asked).
    """
    out = []
    for r in range(len(item.choices)):
        choices = rotate_choices(item.choices, r)
        new_id = rotation_id(item.id, r)
        record = {**item.record, "id": new_id, "choices": list(choices)} if item.record else {}
        out.append(replace(item, id=new_id, choices=choices, record=record,
                           notes=item.notes + (f"circular rotation {r} of {len(choices)}",)))
    return out


def build_circular(items: Sequence[BenchmarkItem]) -> list[BenchmarkItem]:
    """All rotations of all items, item by item (``sum(len(item.choices))`` presentations)."""
    return [v for item in items for v in circular_variants(item)]


@dataclass(frozen=True)
class CircularItem:
    """One source item's verdicts over its ``n_rotations`` presentations."""

    source_id: str
    task: str
    n_rotations: int
    n_correct: int
    consistent: bool
    consistent_with_refusal: bool
    correct_all: bool
    rot0_correct: bool


def _label(x: Normalized) -> str | None:
    if x.kind == "choice":
        return "choice:" + (x.choice or "").strip()
    return "idk" if x.kind == "idk" else None


def circular_items(rotated: Sequence[BenchmarkItem], normalized: Sequence[Normalized]
                   ) -> tuple[list[CircularItem], dict[str, str]]:
    """Per source item verdicts from the rotated items and their normalized outputs (aligned).

    Returns the verdicts (in order of first appearance) and ``{source id: reason}`` of the items
    left out (rotations incomplete or duplicated).
    """
    if len(rotated) != len(normalized):
        raise ValueError(f"{len(rotated)} rotated items but {len(normalized)} normalized outputs")
    groups: dict[str, list[tuple[int, BenchmarkItem, Normalized]]] = {}
    for item, x in zip(rotated, normalized):
        source, r = parse_rotation_id(item.id)
        groups.setdefault(source, []).append((r, item, x))
    verdicts, excluded = [], {}
    for source, rows in groups.items():
        n = len(rows[0][1].choices)
        rotations = sorted(r for r, _, _ in rows)
        if rotations != list(range(n)):
            excluded[source] = f"rotations {rotations}, expected 0..{n - 1} once each"
            continue
        rows.sort(key=lambda row: row[0])
        correct = [x.kind == "choice" and (x.choice or "").strip() == item.answer.strip() for _, item, x in rows]
        labels = [_label(x) for _, _, x in rows]
        same = labels[0] is not None and all(lab == labels[0] for lab in labels)
        verdicts.append(CircularItem(source_id=source, task=rows[0][1].task, n_rotations=n, n_correct=sum(correct),
                                     consistent=same and labels[0].startswith("choice:"),
                                     consistent_with_refusal=same, correct_all=all(correct),
                                     rot0_correct=correct[0]))
    return verdicts, excluded


def _rates(rows: Sequence[CircularItem]) -> dict[str, Any]:
    n = len(rows)
    n_pres = sum(r.n_rotations for r in rows)
    out: dict[str, Any] = {
        "n_items": n, "n_presentations": n_pres,
        "n_consistent": sum(r.consistent for r in rows),
        "n_consistent_with_refusal": sum(r.consistent_with_refusal for r in rows),
        "n_correct_all": sum(r.correct_all for r in rows),
        "n_correct_presentations": sum(r.n_correct for r in rows),
    }
    out["consistency_rate"] = out["n_consistent"] / n if n else None
    out["consistency_rate_with_refusal"] = out["n_consistent_with_refusal"] / n if n else None
    out["circular_accuracy"] = out["n_correct_all"] / n if n else None
    out["mean_accuracy"] = out["n_correct_presentations"] / n_pres if n_pres else None
    out["rot0_accuracy"] = sum(r.rot0_correct for r in rows) / n if n else None
    if not n:
        out["reason"] = "no items"
    return out


def circular_summary(rotated: Sequence[BenchmarkItem], normalized: Sequence[Normalized], *,
                     task_order: Sequence[str] = ("sound", "music", "speech")) -> dict[str, Any]:
    """Consistency rate, circular accuracy, mean accuracy and rot0 accuracy, total and per task.

    Returns ``{"total": {...}, "by_task": {task: {...}}, "excluded": {source id: reason}}``.
    """
    verdicts, excluded = circular_items(rotated, normalized)
    groups = group_indices([v.task for v in verdicts], task_order)
    return {"total": _rates(verdicts),
            "by_task": {task: _rates([verdicts[i] for i in idx]) for task, idx in groups.items()},
            "excluded": excluded}
