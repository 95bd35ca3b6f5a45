"""MMAR's evaluation script (``code/evaluation.py`` in github.com/ddlBoJack/MMAR) re-implemented as
a test oracle: what it counts on the records of an exported file."""
from __future__ import annotations

from typing import Any, Iterable

from reliable_lalm.benchmarks.mmar import OUTPUT_FIELD, mmar_string_match


def mmar_evaluate(records: Iterable[dict[str, Any]], output_field: str = OUTPUT_FIELD) -> dict[str, Any]:
    """What MMAR's evaluation script counts on ``records`` (its input file's records).

    As the script does: a record without ``output_field`` is skipped (not in the total); the others
    are judged by :func:`mmar_string_match` against the record's own ``answer`` and ``choices``, and
    counted in total and per ``modality``, ``category`` and ``sub-category`` as ``[correct, total]``.
    ``matched_ids`` lists the records judged correct (the script only sets ``match`` on them).
    """
    correct = total = 0
    by: dict[str, dict[str, list[int]]] = {"modality": {}, "category": {}, "sub-category": {}}
    matched: list[str] = []
    for record in records:
        if output_field not in record:
            continue
        hit = mmar_string_match(record["answer"], record[output_field], record["choices"])
        total += 1
        correct += hit
        if hit:
            matched.append(str(record.get("id")))
        for key in by:
            value = record.get(key)
            if value is None:
                continue
            cell = by[key].setdefault(str(value), [0, 0])
            cell[0] += hit
            cell[1] += 1
    return {"correct": correct, "total": total, "accuracy": correct / total if total else None,
            "matched_ids": matched, **{f"by_{k.replace('-', '_')}": v for k, v in by.items()}}
