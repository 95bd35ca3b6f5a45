"""Export to a registered benchmark's own format, checked against its official scorer's rule.

:func:`reliable_lalm.core.export.export_records` writes MMAU's format (``model_output``). A
benchmark whose scorer reads another key (MMAR: ``answer_prediction``) or that has no answers
(``mmau-test``) is exported here instead, from its :class:`~.registry.BenchmarkEntry`:

* each exported record is the benchmark's *original* record (the fields its scorer reads, as
  released) plus ``entry.output_field`` = the normalized answer (option text, ``"IDK"``, or
  ``""`` when nothing could be mapped), ``model_output_raw`` and ``normalization``;
* with ``entry.official_rule`` (MMAR: :func:`~.mmar.mmar_string_match`), every exported answer is
  judged by that rule on the record's own answer and choices and compared with our scoring; the
  items where they differ are listed under ``official_rule_disagreements`` by id, so the
  difference between the official count and ours is explicit, never silent;
* a split without answers is written in the submission format (:mod:`reliable_lalm.core.submission`);
* with ``entry.verbatim_refusals`` (MMAU-Pro, whose embedding scorer has no notion of abstention),
  a refusal or an output that maps to no option is exported as the model's own text, not as
  ``"IDK"`` or ``""``;
* an output file ending in ``.parquet`` is written as parquet (MMAU-Pro's scorer reads its
  ``test.parquet`` with a ``model_output`` column), JSON otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from reliable_lalm.benchmarks.registry import parse_benchmark
from reliable_lalm.core.atomic import TEMP_SUFFIX
from reliable_lalm.core.export import export_records, write_json
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.normalize_types import Normalizer
from reliable_lalm.core.plugins import load_object
from reliable_lalm.core.records import OUTPUT_FIELD, RAW_FIELD, records_from_store
from reliable_lalm.core.submission import submission_records


def export_for_benchmark(records: Iterable[Any], entry: Any, normalizer: Normalizer | None = None, *,
                         items: Mapping[str, BenchmarkItem] | None = None
                         ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(exported, summary)`` for prediction records (raw output in ``model_output``) of ``entry``.

    ``items``: the benchmark's items by id; their original records are what is written (without
    them, the prediction records' own fields are).
    """
    originals = {i: item.to_record() for i, item in items.items()} if items else {}
    if not entry.has_answers:
        exported, summary = submission_records(records, normalizer, originals=originals)
        summary["benchmark"] = entry.name
        return exported, summary
    records = list(records)
    answers = {str(r.get("id")): r.get("answer") for r in records if isinstance(r, dict)}
    exported, summary = export_records(records, normalizer)
    rule = load_object(entry.official_rule) if entry.official_rule else None
    out: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    verbatim = 0
    for rec in exported:
        item_id = str(rec["id"])
        label = rec.pop(OUTPUT_FIELD)
        extra = {RAW_FIELD: rec.pop(RAW_FIELD), "normalization": rec.pop("normalization")}
        if getattr(entry, "verbatim_refusals", False) and extra["normalization"]["kind"] != "choice":
            label = "" if extra[RAW_FIELD] is None else str(extra[RAW_FIELD])
            verbatim += 1
        base = dict(originals.get(item_id, rec))
        base.pop(OUTPUT_FIELD, None)
        new = {**base, entry.output_field: label, **extra}
        out.append(new)
        if rule is not None:
            answer = str(answers.get(item_id) or "").strip()
            ours = extra["normalization"]["kind"] == "choice" and label.strip() == answer
            official = bool(rule(str(new["answer"]), label, [str(c) for c in new["choices"]]))
            if official != ours:
                disagreements.append({"id": item_id, entry.output_field: label, "answer": answer,
                                      "ours": ours, "official_rule": official})
    summary["benchmark"] = entry.name
    summary["output_field"] = entry.output_field
    if getattr(entry, "verbatim_refusals", False):
        summary["verbatim_outputs"] = verbatim  # refusals and unmapped outputs written as the model's text
    if rule is not None:  # the benchmark's own rule replaces MMAU's in the summary
        summary.pop("mmau_rule_disagreements", None)
        summary["official_rule"] = entry.official_rule
        summary["official_rule_disagreements"] = disagreements
    return out, summary


def export_store_for_benchmark(store: Any, spec: str, out: str | Path, normalizer: Normalizer | None = None,
                               *, sample_index: int = 0, output_field: str | None = None) -> dict[str, Any]:
    """A result store joined with the registered benchmark ``spec`` (``mmar:FILE`` ...) to ``out``."""
    entry, path = parse_benchmark(spec)
    bench = entry.load(path, check_audio=False)
    items = {item.id: item for item in bench.items}
    records = records_from_store(store, bench.items, sample_index=sample_index, output_field=output_field)
    exported, summary = export_for_benchmark(records, entry, normalizer, items=items)
    if Path(out).suffix == ".parquet":
        write_parquet(exported, out)
    else:
        write_json(exported, out)
    summary["out"] = str(out)
    have = {r["id"] for r in records}
    missing = [i for i in items if i not in have]
    summary["missing"] = {"n": len(missing), "ids": missing[:100]}
    return summary


def needs_own_export(spec: str | None) -> bool:
    """Whether ``rlalm export --benchmark spec`` must go through :func:`export_store_for_benchmark`
    (a registered benchmark whose format is not MMAU's test-mini format)."""
    if not spec:
        return False
    entry, _ = parse_benchmark(spec)
    return (entry.output_field != OUTPUT_FIELD or not entry.has_answers or entry.official_rule is not None
            or entry.verbatim_refusals)


def write_parquet(records: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """Write records as one parquet table (columns: the first record's keys, types inferred over
    all rows), atomically: a temporary file beside ``out``, then renamed."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
    try:
        pq.write_table(pa.Table.from_pylist(list(records)), str(tmp))
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
