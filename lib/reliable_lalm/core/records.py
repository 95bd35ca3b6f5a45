"""Prediction records: reading them, checking them one by one, and joining a result store with its
benchmark into records in the scorer's form (MMAU-style, the raw output under ``model_output``).

A prediction file is a JSON list (or ``{"items": [...]}``) or JSONL of records with ``id``,
``choices``, ``answer``, ``task`` and the raw model output in :data:`OUTPUT_FIELD`. A bad record (no
output, answer not among the choices, ...) becomes a :class:`RecordError` naming the item and the
reason; it never stops a run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from reliable_lalm.core.items import (TASKS, BenchmarkItem, LoadedBenchmark, RejectedRecord, checked_answer,
                                      clean_choices, read_json_records)
from reliable_lalm.core.results import ResultStore

# The field MMAU's scorer reads the normalized answer from, and the one a prediction record keeps the
# raw output under (a benchmark whose scorer reads another field names it in its registry entry).
OUTPUT_FIELD = "model_output"
# Beside the normalized answer, an exported record keeps the raw output under this field.
RAW_FIELD = "model_output_raw"
# Field names a result store record may keep the raw output under, tried in this order.
STORE_OUTPUT_FIELDS: tuple[str, ...] = ("model_output", "output", "raw_output", "response", "text")
MAX_IDS_IN_MESSAGE = 20
# The benchmark a store is joined with: loaded, or its items (a spec is loaded by the benchmark registry).
JoinBenchmark = LoadedBenchmark | Sequence[BenchmarkItem] | None


class IdMismatchError(ValueError):
    """Prediction and baseline files do not hold the same item ids."""

    def __init__(self, only_pred: Sequence[str], only_base: Sequence[str]):
        self.only_pred, self.only_base = list(only_pred), list(only_base)
        parts = []
        for label, ids in (("in PRED but not in BASE", self.only_pred), ("in BASE but not in PRED", self.only_base)):
            if ids:
                shown = ", ".join(ids[:MAX_IDS_IN_MESSAGE])
                more = f" (+{len(ids) - MAX_IDS_IN_MESSAGE} more)" if len(ids) > MAX_IDS_IN_MESSAGE else ""
                parts.append(f"{len(ids)} id(s) {label}: {shown}{more}")
        super().__init__("prediction and baseline items differ; " + "; ".join(parts))


@dataclass(frozen=True)
class RecordError:
    id: str
    reason: str
    source: str = "pred"  # pred | baseline | store
    index: int | None = None  # position in the file (line number - 1 for JSONL)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "source": self.source, "index": self.index}


@dataclass(frozen=True)
class ScoredRecord:
    """A record that passed the checks: deduplicated choices, stripped answer and task."""

    id: str
    task: str
    choices: tuple[str, ...]
    answer: str
    output: str
    record: dict[str, Any] = field(compare=False, repr=False)


# ------------------------------------------------------------------------------------------------
# Reading and checking records
# ------------------------------------------------------------------------------------------------

def task_order(tasks: Sequence[str]) -> tuple[str, ...]:
    """Table order of the modality groups when the benchmark does not give it: the paper's three
    (always reported, empty or not), then any other group as it appears (MMAR's mixes, a user's own)."""
    present = list(dict.fromkeys(tasks))
    return tuple(TASKS) + tuple(t for t in present if t not in TASKS)


class NothingScoredError(ValueError):
    """Not one record could be scored (or exported): a one-line reason for a non-zero exit."""


def read_records(path: str | Path, source: str = "pred") -> tuple[list[Any], list[RecordError]]:
    """Records of a JSON list / ``{"items": [...]}`` / JSONL file.

    A JSONL line that is not valid JSON or UTF-8 becomes a :class:`RecordError` (``#line N``), as
    does a JSON-list record holding a byte that is not UTF-8; a JSON file that does not parse at
    all raises ``ValueError`` (there is no record to keep). See :func:`reliable_lalm.data.read_json_records`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source} file not found: {path}")
    records, _, rejected = read_json_records(path)
    return records, [RecordError(r.item_id, r.cause, source, r.index) for r in rejected]


def check_output_field(records: Sequence[Any], output_field: str = OUTPUT_FIELD, source: str = "pred") -> None:
    """Raise :class:`NothingScoredError` when no record has ``output_field`` (outputs kept under another
    key, e.g. MMAU's ``model_prediction`` or MMAR's ``answer_prediction``), naming the keys seen."""
    dicts = [r for r in records if isinstance(r, dict)]
    if not dicts or any(output_field in r for r in dicts):
        return
    seen = sorted({str(k) for r in dicts for k in r})
    shown = ", ".join(seen[:MAX_IDS_IN_MESSAGE]) + (" ..." if len(seen) > MAX_IDS_IN_MESSAGE else "")
    raise NothingScoredError(f"no {source} record has the field {output_field!r} (keys seen: {shown}); "
                             "pass --output-field NAME for the field holding the raw model output")


def check_record(record: Any, index: int, source: str = "pred",
                 output_field: str = OUTPUT_FIELD) -> ScoredRecord | RecordError:
    """One record -> :class:`ScoredRecord`, or :class:`RecordError` with the reason."""
    if not isinstance(record, dict):
        return RecordError(f"#{index}", f"record is a {type(record).__name__}, not an object", source, index)
    raw_id = record.get("id", record.get("item_id"))
    item_id = str(raw_id).strip() if raw_id is not None else ""
    if not item_id:
        return RecordError(f"#{index}", "no id", source, index)

    def bad(reason: str) -> RecordError:
        return RecordError(item_id, reason, source, index)

    if output_field not in record or record[output_field] is None:
        # Inference writes error records (model_output None, error = the cause): pass the cause on.
        cause = record.get("error")
        return bad(f"no {output_field}" + (f" (inference error: {cause})" if cause else ""))
    output = record[output_field]
    if not isinstance(output, str):
        return bad(f"{output_field} is a {type(output).__name__}, not a string")
    try:  # the loader's own checks, so a record the loader accepts is scored and vice versa
        choices, _ = clean_choices(record.get("choices"))
        answer = checked_answer(record.get("answer"), choices)
    except ValueError as err:
        return bad(str(err))
    task = str(record.get("task") or "").strip().lower()
    if not task:
        return bad("no task")
    return ScoredRecord(item_id, task, tuple(choices), answer, output, record)


def check_records(records: Iterable[Any], source: str = "pred", output_field: str = OUTPUT_FIELD
                  ) -> tuple[dict[str, ScoredRecord], list[RecordError], list[str]]:
    """Good records by id (file order), errors, and every id seen (good or bad, first occurrence)."""
    good: dict[str, ScoredRecord] = {}
    errors: list[RecordError] = []
    seen: dict[str, None] = {}
    for index, record in enumerate(records):
        checked = check_record(record, index, source, output_field)
        item_id = checked.id
        if not item_id.startswith("#") and item_id in seen:
            errors.append(RecordError(item_id, "duplicated id (the first record is kept)", source, index))
            continue
        if not item_id.startswith("#"):
            seen[item_id] = None
        if isinstance(checked, RecordError):
            errors.append(checked)
        else:
            good[item_id] = checked
    return good, errors, list(seen)


# ------------------------------------------------------------------------------------------------
# Result stores
# ------------------------------------------------------------------------------------------------

def join_items(benchmark: JoinBenchmark) -> tuple[dict[str, BenchmarkItem] | None, list[RejectedRecord]]:
    """Items by id and the records rejected at load time (a LoadedBenchmark has them)."""
    if benchmark is None:
        return None, []
    if isinstance(benchmark, LoadedBenchmark):
        return {item.id: item for item in benchmark.items}, list(benchmark.rejected)
    if isinstance(benchmark, (str, Path)):
        raise TypeError(f"benchmark {str(benchmark)!r} is a spec: load it first "
                        "(reliable_lalm.benchmarks.registry.resolve_benchmark)")
    return {item.id: item for item in benchmark}, []


def join_summary(items: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 rejected: Sequence[RejectedRecord]) -> dict[str, Any]:
    """``missing`` (benchmark items without a record) and ``rejected`` (records rejected at load time)
    of a result store joined with its benchmark, for score and export output alike."""
    have = {r["id"] for r in records}
    missing = [i for i in items if i not in have]
    return {"missing": {"n": len(missing), "ids": missing[:100]}, "rejected": rejected_summary(rejected)}


def rejected_summary(rejected: Sequence[RejectedRecord]) -> dict[str, Any]:
    """``{"n", "records": [{id, index, line, reason}]}`` of benchmark records rejected at load time."""
    return {"n": len(rejected), "records": [r.to_dict() for r in rejected]}


def _sample_ranges(indices: set[int]) -> str:
    out, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def records_from_store(store: Any, benchmark: JoinBenchmark = None,
                       *, sample_index: int = 0, output_field: str | None = None) -> list[dict[str, Any]]:
    """MMAU-style prediction records from a result store (``ResultStore`` or its folder).

    Each store record (one per item at ``sample_index``) is joined on ``item_id`` with the
    benchmark item's original record; the raw output goes to ``model_output``. It is read from
    ``output_field``, or from the first of :data:`STORE_OUTPUT_FIELDS` the record has. Without a
    benchmark the store records must carry ``choices``, ``answer`` and ``task`` themselves. An
    item missing from the benchmark yields a record without choices (reported as an error when
    scored).
    """
    if not isinstance(store, ResultStore):
        path = Path(store)
        if not (path / "records.jsonl").exists() and not (path / "manifest.json").exists():
            raise FileNotFoundError(f"no result store at {path} (records.jsonl / manifest.json missing)")
        store = ResultStore(path)
    items = join_items(benchmark)[0]
    everything = store.records()
    fields = (output_field,) if output_field else STORE_OUTPUT_FIELDS
    if everything:  # an empty store is no error (nothing ran yet); a store without what was asked is
        present = {int(r.get("sample_index", 0)) for r in everything}
        if sample_index not in present:
            raise NothingScoredError(f"{store.directory}: no record has sample index {sample_index} "
                                     f"(the store holds sample indices {_sample_ranges(present)})")
        if not any(f in r for r in everything for f in fields):
            check_output_field(everything, output_field or OUTPUT_FIELD, "store")
    out = []
    for item_id, rec in store.by_item(sample_index).items():
        raw = next((rec[f] for f in fields if f in rec), None)
        if items is not None:
            item = items.get(str(item_id))
            base = item.scoring_record() if item is not None else {"id": str(item_id)}
        else:
            base = {k: v for k, v in rec.items() if k not in fields}
        extra = {"error": rec["error"]} if raw is None and rec.get("error") else {}
        out.append({**base, **extra, "id": str(item_id), OUTPUT_FIELD: raw})
    return out


def prediction_records(path: str | Path, benchmark: JoinBenchmark, sample_index: int, source: str,
                       output_field: str | None = None) -> tuple[list[Any], list[RecordError]]:
    """Prediction records in the scorer's form (raw output under ``model_output``) and read errors,
    from a result store folder (joined with ``benchmark``) or a prediction file."""
    p = Path(path)
    if p.is_dir():
        return records_from_store(p, benchmark, sample_index=sample_index, output_field=output_field), []
    records, errors = read_records(p, source)
    field_name = output_field or OUTPUT_FIELD
    check_output_field(records, field_name, source)
    if field_name != OUTPUT_FIELD:  # the scorer reads model_output: move the chosen field there
        records = [{**r, OUTPUT_FIELD: r.get(field_name)} if isinstance(r, dict) else r for r in records]
    return records, errors
