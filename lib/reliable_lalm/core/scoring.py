"""Score predictions: ``rlalm score PRED [--baseline BASE]`` and the library functions behind it.

A prediction file is MMAU-style: a JSON list (or ``{"items": [...]}``) or JSONL of records with
``id``, ``choices``, ``answer``, ``task`` and the raw model output in ``model_output``. Each output
is normalized (rule-based or LLM, :mod:`reliable_lalm.core.llm_normalizer`) to a choice, IDK or
invalid and scored with :mod:`reliable_lalm.core.metrics` for the total and per task.

A bad record (no ``model_output``, answer not among the choices, ...) never stops the run: it is
listed under ``errors`` with its id and the reason and left out of the counts. With a baseline,
both files must hold the same ids (else :class:`IdMismatchError` names them); an id that is bad
on either side is left out of both, so the transitions stay paired.

Output (fractions in [0, 1]): the total's ``n, n_correct, n_rejected, n_wrong, n_invalid, acc,
tru, rej, rel`` at the top level and the same per task under ``by_task``; with a baseline also
the transition counts ``ncc ... nrw``, the ``baseline`` counts, ``d_con, d_hum, rgi`` (class
convention, eqs. 8-9) and ``d_con_subset, d_hum_subset, rgi_subset`` (what the paper's Tables 2
and 11 print); ``ci`` with ``--bootstrap N``; ``normalizer`` (its summary, which rules decided,
and ``failed_items``: the ids whose LLM normalization failed); with ``--benchmark``, ``rejected``:
the benchmark records rejected at load time (id, index, line, reason), which therefore have no
result at all.

Exit status of ``rlalm score``: 0 when something was scored; 2 with a one-line reason when
nothing was, when the output field (``--output-field``, default ``model_output``) or the
``--sample-index`` is absent from every record, or when the LLM endpoint refused the requests
(401/403, unknown model, no quota: rule-based numbers are never reported under the LLM's name);
with ``--strict``, 1 when any record error, load rejection or LLM failure was reported.
``--by task,difficulty,category,sub-category`` (any subset) adds ``by``: the same per group of
each key (:mod:`reliable_lalm.core.breakdowns`). Records without any answer (a hidden test split)
are refused with one message (:mod:`reliable_lalm.core.submission`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from reliable_lalm.core.argtypes import real
from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.items import (MAX_CHOICES, MIN_CHOICES, TASKS, checked_answer, clean_choices, BenchmarkItem, LoadedBenchmark, RejectedRecord, load_benchmark,
                   read_json_records)
from reliable_lalm.core.metrics import outcome_of, summarize
from reliable_lalm.core.normalize_types import Normalized, Normalizer
from reliable_lalm.core.llm_normalizer import normalizer_kind_error
from reliable_lalm.core.sample_log import disagreement_summary, sample_rows, write_sample_log

OUTPUT_FIELD = "model_output"
# A score dict in place of a model's scores that holds only why the model was not run (e.g. a worker
# whose environment is not configured): {NOT_RUN_KEY: reason}; tables print its row as "not run".
NOT_RUN_KEY = "not_run"
# Field names a result store record may keep the raw output under, tried in this order.
STORE_OUTPUT_FIELDS: tuple[str, ...] = ("model_output", "output", "raw_output", "response", "text")
MAX_IDS_IN_MESSAGE = 20


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


def llm_failures(normalizer: Normalizer, ids: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Items whose LLM normalization failed in the latest ``normalize_many`` call, by id.

    ``ids``: (id, source) of each output in the order they were passed.
    """
    details = getattr(normalizer, "last_details", None) or []
    return [{"id": item_id, "source": source, "error": d["error"]}
            for (item_id, source), d in zip(ids, details) if d is not None and d.get("error")]


def check_llm_refusal(normalizer: Normalizer) -> None:
    """Raise when the LLM endpoint refused the requests (bad key, unknown model, no quota).

    Every item then keeps its rule-based result: reporting those numbers under the LLM
    normalizer's name would be silently wrong.
    """
    from reliable_lalm.core.llm_normalizer import LLMRefusedError

    summary_fn = getattr(normalizer, "summary", None)
    fatal = summary_fn().get("fatal_error") if callable(summary_fn) else None
    if fatal:
        host = summary_fn().get("base_url_host", "")
        raise LLMRefusedError(f"the LLM endpoint {host} refused the requests ({' '.join(str(fatal).split())}); "
                              "nothing is reported: check OPENAI_API_KEY and --openai-model, or use --normalizer rule")


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
# Normalizers
# ------------------------------------------------------------------------------------------------

def resolve_normalizer(normalizer: Normalizer | str | None = None, **kw: Any) -> Normalizer:
    """A normalizer object from an object, a kind (``"rule"``, ``"openai"``, ``"auto"``) or None (rule)."""
    if normalizer is None or isinstance(normalizer, str):
        from reliable_lalm.core.llm_normalizer import build_normalizer

        return build_normalizer(normalizer or "rule", **kw)
    return normalizer


def normalizer_summary(normalizer: Normalizer, normalized: Sequence[Normalized] = ()) -> dict[str, Any]:
    summary_fn = getattr(normalizer, "summary", None)
    out: dict[str, Any] = dict(summary_fn()) if callable(summary_fn) else {}
    out.setdefault("name", getattr(normalizer, "name", type(normalizer).__name__))
    out["kinds"] = dict(Counter(x.kind for x in normalized))
    out["methods"] = dict(Counter(x.method for x in normalized).most_common())
    return out


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------

def score_records(pred_records: Iterable[Any], baseline_records: Iterable[Any] | None = None,
                  normalizer: Normalizer | str | None = None, *, n_boot: int = 0, seed: int = 0,
                  level: float = 0.95, keep_items: bool = False, errors: Sequence[RecordError] = (),
                  baseline_errors: Sequence[RecordError] = (), by: str | Sequence[str] | None = None,
                  modalities: Sequence[str] = (), log_samples: str | Path | None = None) -> dict[str, Any]:
    """Score MMAU-style prediction records (optionally against a baseline run on the same items).

    ``normalizer``: an object with ``name`` and ``normalize_many``, or a kind for
    :func:`reliable_lalm.core.llm_normalizer.build_normalizer`; default rule-based.
    ``keep_items`` adds ``items``: per record id, task, outcome, normalized label, kind and rule
    (and the baseline's). ``errors``/``baseline_errors``: read errors to report with the rest.
    Raises :class:`IdMismatchError` when the baseline's ids differ from the predictions'.
    ``by``: breakdown keys (:func:`reliable_lalm.core.breakdowns.parse_by`); ``modalities`` orders
    the ``task`` groups. Raises :class:`~reliable_lalm.core.submission.NoAnswersError` for records
    that carry no answer at all. ``log_samples``: write the per-output judge log there
    (:mod:`reliable_lalm.core.sample_log`). Where an LLM judge and the rules both decided outputs,
    ``normalizer.disagreements`` counts how often they differ.
    """
    from reliable_lalm.core.breakdowns import breakdown, parse_by
    from reliable_lalm.core.submission import refuse_unscorable

    by_keys = parse_by(by)
    pred_records = list(pred_records)
    refuse_unscorable(pred_records)
    pred, pred_errors, pred_ids = check_records(pred_records, "pred")
    all_errors: list[RecordError] = [*errors, *pred_errors]
    base: dict[str, ScoredRecord] | None = None
    if baseline_records is not None:
        base, base_errors, base_ids = check_records(baseline_records, "baseline")
        all_errors += [*baseline_errors, *base_errors]
        pred_set, base_set = set(pred_ids), set(base_ids)
        only_pred = [i for i in pred_ids if i not in base_set]
        only_base = [i for i in base_ids if i not in pred_set]
        if only_pred or only_base:
            raise IdMismatchError(only_pred, only_base)
        for item_id in list(pred):
            if item_id not in base:
                all_errors.append(RecordError(item_id, "left out: the baseline record is bad", "pred"))
                del pred[item_id]
                continue
            p, b = pred[item_id], base[item_id]
            if (p.answer, p.task, set(p.choices)) != (b.answer, b.task, set(b.choices)):
                all_errors.append(RecordError(item_id, "baseline record has another answer, task or choices", "baseline"))
                del pred[item_id]
        reported = {e.id for e in all_errors}
        for item_id in [i for i in base if i not in pred]:
            if item_id not in reported:
                all_errors.append(RecordError(item_id, "left out: the prediction record is bad", "baseline"))
            del base[item_id]

    items = list(pred.values())
    norm = resolve_normalizer(normalizer)
    outputs = [r.output for r in items]
    choices = [list(r.choices) for r in items]
    if base is not None:  # one call, so an LLM normalizer batches and caches both runs together
        outputs += [base[r.id].output for r in items]
        choices += [list(base[r.id].choices) for r in items]
    normalized = norm.normalize_many(outputs, choices) if outputs else []
    if len(normalized) != len(outputs):
        raise RuntimeError(f"normalizer {norm!r} returned {len(normalized)} results for {len(outputs)} outputs")
    check_llm_refusal(norm)
    failed = llm_failures(norm, [(r.id, "pred") for r in items] + [(r.id, "baseline") for r in items])
    pred_norm, base_norm = normalized[:len(items)], normalized[len(items):]

    outcomes = [outcome_of(x, r.answer) for x, r in zip(pred_norm, items)]
    base_outcomes = [outcome_of(x, r.answer) for x, r in zip(base_norm, items)] if base is not None else None
    summary = summarize(outcomes, [r.task for r in items], invalid=[x.kind == "invalid" for x in pred_norm],
                        baseline=base_outcomes, n_boot=n_boot, seed=seed, level=level,
                        task_order=tuple(modalities) or task_order([r.task for r in items]))
    result: dict[str, Any] = {**summary["total"], "by_task": summary["by_task"]}
    if by_keys:
        result["by"] = breakdown([{**r.record, "task": r.task} for r in items], outcomes, by_keys,
                                 invalid=[x.kind == "invalid" for x in pred_norm], baseline=base_outcomes,
                                 n_boot=n_boot, seed=seed, level=level, modalities=modalities)
    result["n_errors"] = len(all_errors)
    result["errors"] = [e.to_dict() for e in all_errors]
    result["normalizer"] = normalizer_summary(norm, pred_norm)
    if failed or hasattr(norm, "last_details"):
        result["normalizer"]["failed_items"] = failed
    details = list(getattr(norm, "last_details", None) or [None] * len(normalized))
    rows = sample_rows(items, pred_norm, outcomes, details[:len(items)], "pred")
    if base_outcomes is not None:
        rows += sample_rows([base[r.id] for r in items], base_norm, base_outcomes, details[len(items):], "baseline")
    if any("judges_disagree" in row for row in rows):
        result["normalizer"]["disagreements"] = disagreement_summary(rows)
    if log_samples is not None:
        write_sample_log(log_samples, rows)
    if base is not None:
        result["baseline_normalizer"] = {"kinds": dict(Counter(x.kind for x in base_norm)),
                                         "methods": dict(Counter(x.method for x in base_norm).most_common())}
        result["conventions"] = {
            "class": "d_con = (Nc - Ncc) / Nc, d_hum = (Nw - Nww) / Nw (paper eqs. 8-9)",
            "subset": "d_con_subset = (Nc - Ncc) / N, d_hum_subset = (Nw - Nww) / N, N = Nc + Nw "
                      "(what the paper's Tables 2 and 11 print)",
            "rgi": "log10(d_hum / d_con); baseline-rejected items (nrc, nrr, nrw) are outside Nc, Nw and N",
        }
    if n_boot > 0:
        result["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": level, "method": "percentile",
                               "paired": base is not None}
    if keep_items:
        result["items"] = []
        for k, (r, x) in enumerate(zip(items, pred_norm)):
            entry = {"id": r.id, "task": r.task, "answer": r.answer, "outcome": outcomes[k],
                     "label": x.label, "kind": x.kind, "method": x.method}
            if base_outcomes is not None:
                entry.update(baseline_outcome=base_outcomes[k], baseline_label=base_norm[k].label,
                             baseline_kind=base_norm[k].kind, baseline_method=base_norm[k].method)
            result["items"].append(entry)
    return result


def score_files(pred_path: str | Path, baseline_path: str | Path | None = None,
                normalizer: Normalizer | str | None = None, **kw: Any) -> dict[str, Any]:
    """:func:`score_records` on files; JSONL lines that do not parse are reported as errors."""
    pred, pred_read_errors = read_records(pred_path, "pred")
    base, base_read_errors = (read_records(baseline_path, "baseline") if baseline_path is not None else (None, []))
    return score_records(pred, base, normalizer, errors=pred_read_errors, baseline_errors=base_read_errors, **kw)


# ------------------------------------------------------------------------------------------------
# Result stores
# ------------------------------------------------------------------------------------------------

def _load_join_benchmark(benchmark: LoadedBenchmark | Sequence[BenchmarkItem] | str | Path | None
                         ) -> tuple[dict[str, BenchmarkItem] | None, list[RejectedRecord]]:
    """Items by id and the records rejected at load time (a path or LoadedBenchmark has them)."""
    if benchmark is None:
        return None, []
    if isinstance(benchmark, (str, Path)):  # a file or a registry spec (mmar:FILE, ...); no audio needed
        from reliable_lalm.benchmarks.registry import load as load_spec

        benchmark = load_spec(str(benchmark), check_audio=False)
    if isinstance(benchmark, LoadedBenchmark):
        return {item.id: item for item in benchmark.items}, list(benchmark.rejected)
    return {item.id: item for item in benchmark}, []


def _benchmark_items(benchmark: LoadedBenchmark | Sequence[BenchmarkItem] | str | Path | None
                     ) -> dict[str, BenchmarkItem] | None:
    return _load_join_benchmark(benchmark)[0]


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


def records_from_store(store: Any, benchmark: LoadedBenchmark | Sequence[BenchmarkItem] | str | Path | None = None,
                       *, sample_index: int = 0, output_field: str | None = None) -> list[dict[str, Any]]:
    """MMAU-style prediction records from a result store (``ResultStore`` or its folder).

    Each store record (one per item at ``sample_index``) is joined on ``item_id`` with the
    benchmark item's original record; the raw output goes to ``model_output``. It is read from
    ``output_field``, or from the first of :data:`STORE_OUTPUT_FIELDS` the record has. Without a
    benchmark the store records must carry ``choices``, ``answer`` and ``task`` themselves. An
    item missing from the benchmark yields a record without choices (reported as an error when
    scored).
    """
    from reliable_lalm.core.results import ResultStore

    if not isinstance(store, ResultStore):
        path = Path(store)
        if not (path / "records.jsonl").exists() and not (path / "manifest.json").exists():
            raise FileNotFoundError(f"no result store at {path} (records.jsonl / manifest.json missing)")
        store = ResultStore(path)
    items = _benchmark_items(benchmark)
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


def score_store(store: Any, benchmark: LoadedBenchmark | Sequence[BenchmarkItem] | str | Path | None = None,
                baseline: Any | None = None, normalizer: Normalizer | str | None = None, *,
                sample_index: int = 0, output_field: str | None = None, **kw: Any) -> dict[str, Any]:
    """Score a result store (and optionally a baseline store) on the same benchmark.

    Adds ``missing``: benchmark ids with no record in the store (not scored), and with a benchmark
    file ``rejected``: its records rejected at load time.
    """
    items, rejected = _load_join_benchmark(benchmark)
    pred = records_from_store(store, list(items.values()) if items is not None else None,
                              sample_index=sample_index, output_field=output_field)
    base = None
    if baseline is not None:
        base = records_from_store(baseline, list(items.values()) if items is not None else None,
                                  sample_index=sample_index, output_field=output_field)
    result = score_records(pred, base, normalizer, **kw)
    if items is not None:
        result.update(join_summary(items, pred, rejected))
    return result


# ------------------------------------------------------------------------------------------------
# Printing
# ------------------------------------------------------------------------------------------------

def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(result: Mapping[str, Any]) -> str:
    """A readable plain-text rendering of a :func:`score_records` result."""
    groups = [("total", result)] + list(result["by_task"].items())
    if result.get("by"):  # --by breakdowns: extra rows named key=group (task's are the rows above already)
        from reliable_lalm.core.breakdowns import table_rows

        groups += table_rows({k: v for k, v in result["by"].items() if k != "task"})
    has_base = "ncc" in result
    head = ["group", "n", "correct", "rejected", "wrong", "invalid", "Acc%", "Tru%", "Rej%", "Rel%"]
    if has_base:
        head += ["ΔCon%", "ΔHum%", "RGI", "ΔCon%(N)", "ΔHum%(N)", "RGI(N)"]
    rows = [head]
    for name, g in groups:
        row = [name, str(g["n"]), str(g["n_correct"]), str(g["n_rejected"]), str(g["n_wrong"]), str(g["n_invalid"]),
               _pct(g["acc"]), _pct(g["tru"]), _pct(g["rej"]), _pct(g["rel"])]
        if has_base:
            row += [_pct(g["d_con"]), _pct(g["d_hum"]), _num(g["rgi"]),
                    _pct(g["d_con_subset"]), _pct(g["d_hum_subset"]), _num(g["rgi_subset"])]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if has_base:
        lines.append("")
        lines.append("ΔCon/ΔHum/RGI: class convention (eqs. 8-9, divided by Nc and Nw); (N): subset convention "
                     "(divided by N = Nc + Nw, as the paper's Tables 2 and 11). RGI = log10(ΔHum/ΔCon).")
        lines.append("transitions (baseline -> method):")
        for name, g in groups:
            lines.append(f"  {name}: " + " ".join(f"{k}={g[k]}" for k in ("ncc", "ncr", "ncw", "nwc", "nwr", "nww",
                                                                           "nrc", "nrr", "nrw")))
        reasons = [(name, k, g[k + "_reason"]) for name, g in groups for k in
                   ("d_con", "d_hum", "rgi", "d_con_subset", "d_hum_subset", "rgi_subset") if g.get(k + "_reason")]
        if reasons:
            lines.append("undefined values:")
        for name, k, reason in reasons:
            lines.append(f"  {name}: {k} undefined: {reason}")
    if "ci" in result:
        lines.append("")
        lev = result.get("bootstrap", {})
        lines.append(f"bootstrap {100 * lev.get('level', 0.95):.0f}% intervals "
                     f"({lev.get('n_boot')} resamples, seed {lev.get('seed')}):")
        for name, g in groups:
            ci = g.get("ci", {})
            parts = []
            for k, v in ci.items():
                scale = _num if k.startswith("rgi") else _pct
                parts.append(f"{k} [{scale(v['low'])}, {scale(v['high'])}]")
            lines.append(f"  {name}: " + "; ".join(parts))
    norm = result.get("normalizer", {})
    lines.append("")
    lines.append(f"normalizer: {norm.get('name')}; kinds {norm.get('kinds')}")
    disagree = norm.get("disagreements")
    if disagree:
        lines.append(f"LLM judge and rules disagree on {disagree['n_disagree']} of {disagree['n_compared']} output(s) "
                     "both decided (--log-samples lists them)")
    failed = norm.get("failed_items") or []
    if failed:
        lines.append(f"LLM normalization failed for {len(failed)} item(s) (rule-based result kept): "
                     + ", ".join(f"{f['id']}" + (" (baseline)" if f["source"] == "baseline" else "") for f in failed[:20])
                     + (" ..." if len(failed) > 20 else ""))
    if result.get("missing", {}).get("n"):
        lines.append(f"missing from the store: {result['missing']['n']} benchmark item(s)")
    rejected = result.get("rejected", {})
    if rejected.get("n"):
        lines.append(f"{rejected['n']} benchmark record(s) rejected at load time (no result):")
        for r in rejected["records"][:50]:
            where = f"line {r['line']}" if r.get("line") else f"index {r['index']}"
            lines.append(f"  {r['id']} ({where}): {r['reason']}")
    if result["errors"]:
        lines.append(f"{len(result['errors'])} record error(s):")
        for e in result["errors"][:50]:
            lines.append(f"  [{e['source']}] {e['id']}: {e['reason']}")
        if len(result["errors"]) > 50:
            lines.append(f"  ... {len(result['errors']) - 50} more (see --format json)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def add_normalizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--normalizer", type=_normalizer_kind, default="rule", metavar="KIND",
                        help="answer normalization: rule (default), openai (an OpenAI-compatible LLM for the "
                             "outputs the rules cannot map; key from $OPENAI_API_KEY), auto (the LLM when "
                             "configured), all (the LLM on every output, the paper's setting), or hf:<model> "
                             "(a local transformers chat model as the judge; needs torch)")
    parser.add_argument("--judge-prompt", choices=("paper", "toolkit"), default=None,
                        help="LLM judge prompt: paper (Table 8) or toolkit; default paper for 'all', else toolkit")
    parser.add_argument("--openai-base-url", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or api.openai.com)")
    parser.add_argument("--openai-model", default=None, metavar="M", help="LLM for normalization (default gpt-4o-mini)")
    parser.add_argument("--refresh-cache", action="store_true",
                        help="ask the LLM again instead of reading its cached replies (the cache is rewritten)")
    parser.add_argument("--output-field", default=None, metavar="NAME",
                        help="field holding the raw model output (default: model_output; in a result store "
                             "the first of model_output, output, raw_output, response, text)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any record error, load rejection or LLM failure is reported")


def _normalizer_kind(text: str) -> str:
    error = normalizer_kind_error(text)
    if error:
        raise argparse.ArgumentTypeError(error)
    return text


def normalizer_from_args(args: argparse.Namespace) -> Normalizer:
    kw: dict[str, Any] = {"refresh_cache": True} if getattr(args, "refresh_cache", False) else {}
    if getattr(args, "judge_prompt", None):
        kw["prompt"] = args.judge_prompt
    return resolve_normalizer(args.normalizer, base_url=args.openai_base_url, model=args.openai_model, **kw)


def strict_problems(result: Mapping[str, Any]) -> str | None:
    """What ``--strict`` refuses, in one line (None when the run is clean)."""
    parts = []
    if result.get("n_errors"):
        parts.append(f"{result['n_errors']} record error(s)")
    if result.get("rejected", {}).get("n"):
        parts.append(f"{result['rejected']['n']} record(s) rejected at load time")
    failed = (result.get("normalizer") or {}).get("failed_items") or []
    if failed:
        parts.append(f"{len(failed)} LLM normalization failure(s)")
    return "; ".join(parts) or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", metavar="PRED", help="predictions: MMAU-style JSON/JSONL with model_output, "
                                                     "or a result store folder")
    parser.add_argument("--baseline", metavar="BASE", default=None,
                        help="baseline predictions on the same items (adds transitions, ΔCon, ΔHum, RGI)")
    parser.add_argument("--benchmark", metavar="JSON", default=None,
                        help="benchmark whose records a result store is joined with: a JSON file or a "
                             "registry spec such as mmar:FILE")
    parser.add_argument("--format", choices=("json", "table"), default="json")
    add_normalizer_arguments(parser)
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="bootstrap resamples for 95%% intervals (0: none; 1000 is a good choice)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed")
    parser.add_argument("--level", type=real(0.0, 1.0, low_open=True, high_open=True), default=0.95,
                        help="interval level (default 0.95)")
    parser.add_argument("--sample-index", type=int, default=0, help="which sample of a result store to score")
    parser.add_argument("--output", metavar="FILE", default=None, help="write the output here instead of stdout")
    parser.add_argument("--log-samples", metavar="FILE", default=None,
                        help="write one JSON line per scored output: the decision, the rule or judge that made "
                             "it and why, the LLM reply, the outcome (docs/judging.md)")
    parser.add_argument("--by", metavar="KEYS", default=None,
                        help="breakdowns: any of task,difficulty,category,sub-category (MMAU-Pro: also sub-cat, "
                             "length_type, perceptual_skills, reasoning_skills), comma-separated "
                             "('+' crosses keys, e.g. task+difficulty); JSON under 'by', extra table rows")


def _load_side(path: str, benchmark: Any, sample_index: int, source: str,
               output_field: str | None = None) -> tuple[list[Any], list[RecordError]]:
    """Prediction records in the scorer's form (raw output under ``model_output``) and read errors."""
    p = Path(path)
    if p.is_dir():
        return records_from_store(p, benchmark, sample_index=sample_index, output_field=output_field), []
    records, errors = read_records(p, source)
    field = output_field or OUTPUT_FIELD
    check_output_field(records, field, source)
    if field != OUTPUT_FIELD:  # the scorer reads model_output: move the chosen field there
        records = [{**r, OUTPUT_FIELD: r.get(field)} if isinstance(r, dict) else r for r in records]
    return records, errors


def _write_text(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")


MOSTLY_INVALID = 0.5  # share of invalid outputs above which a run is probably misread or misprompted


def invalid_outputs_warning(n_invalid: int, n: int) -> str | None:
    """One line when most outputs could be mapped to no choice and no refusal, with what to try."""
    if not n or n_invalid / n <= MOSTLY_INVALID:
        return None
    return (f"warning: {n_invalid} of {n} outputs ({100 * n_invalid / n:.0f} %) match no choice and no refusal "
            "(invalid, scored as wrong). Look at a few ('rlalm report STORE --benchmark B'); if the raw output "
            "is under another field pass --output-field; if answers are cut off raise --max-new-tokens; for "
            "free-form answers use an LLM judge (--normalizer openai)")


def nothing_scored_reason(result: Mapping[str, Any], what: str = "scored") -> str:
    errors = result.get("errors") or []
    first = f" (first: {errors[0]['id']}: {errors[0]['reason']})" if errors else ""
    return f"nothing was {what}: {len(errors)} record error(s){first}"


def run(args: argparse.Namespace) -> int:
    from reliable_lalm.core.llm_normalizer import LLMConfigError, LLMRefusedError

    try:
        if args.bootstrap < 0:
            raise ValueError("--bootstrap must be >= 0")
        modalities: Sequence[str] = ()
        if args.benchmark is not None:  # a hidden test split is refused before anything is read
            from reliable_lalm.benchmarks.registry import parse_benchmark
            from reliable_lalm.core.submission import refuse_answerless_benchmark

            entry, _ = parse_benchmark(args.benchmark)
            if not entry.has_answers:
                refuse_answerless_benchmark(entry.name)
            modalities = entry.modalities
        bench_items, rejected = (_load_join_benchmark(args.benchmark) if args.benchmark is not None else (None, []))
        join = list(bench_items.values()) if bench_items is not None else None
        pred, pred_errors = _load_side(args.pred, join, args.sample_index, "pred", args.output_field)
        base, base_errors = (None, [])
        if args.baseline is not None:
            base, base_errors = _load_side(args.baseline, join, args.sample_index, "baseline", args.output_field)
        result = score_records(pred, base, normalizer_from_args(args), n_boot=args.bootstrap, seed=args.seed,
                               level=args.level, errors=pred_errors, baseline_errors=base_errors,
                               by=args.by, modalities=modalities, log_samples=args.log_samples)
        if bench_items is not None:
            if Path(args.pred).is_dir():
                have = {r.get("id") for r in pred if isinstance(r, dict)}
                missing = [i for i in bench_items if i not in have]
                result["missing"] = {"n": len(missing), "ids": missing[:100]}
            result["rejected"] = rejected_summary(rejected)
        if result["n"] == 0:
            raise NothingScoredError(nothing_scored_reason(result))
        norm = result.get("normalizer") or {}
        failed = norm.get("failed_items") or []
        if failed and len(failed) >= (norm.get("llm_items") or 0):  # not one LLM answer: the rules' scores
            raise ValueError(f"every LLM normalization request failed ({len(failed)} of {norm.get('llm_items')} "
                             f"outputs; first: {(norm.get('errors') or ['?'])[0]}); no score is printed under "
                             f"the LLM normalizer's name")
    except (FileNotFoundError, ValueError, LLMConfigError, LLMRefusedError) as err:
        print(f"rlalm score: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    text = format_table(result) if args.format == "table" else json.dumps(result, indent=2, ensure_ascii=False)
    _write_text(text, args.output)
    mostly_invalid = invalid_outputs_warning(result["n_invalid"], result["n"])
    if mostly_invalid:
        print(f"rlalm score: {mostly_invalid}", file=sys.stderr)
    problems = strict_problems(result) if args.strict else None
    if problems:
        print(f"rlalm score: --strict: {problems}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# Reference rows of Table 1 (no normalizer involved)
# ------------------------------------------------------------------------------------------------

def score_mmau_string_match(pred_records: Iterable[Any]) -> dict[str, Any]:
    """Table 1's "MMAU (Unnormalized)" row: MMAU's official string match on the raw outputs.

    The official scorer knows no refusals: an output is correct when it string-matches the answer,
    wrong otherwise (an IDK counts as wrong, so Acc = Tru = Rel).
    """
    from reliable_lalm.core.normalize import mmau_string_match

    pred, errors, _ = check_records(pred_records, "pred")
    items = list(pred.values())
    outcomes = ["correct" if mmau_string_match(r.answer, r.output or "", list(r.choices)) else "wrong" for r in items]
    summary = summarize(outcomes, [r.task for r in items], task_order=task_order([r.task for r in items]))
    return {**summary["total"], "by_task": summary["by_task"], "n_errors": len(errors),
            "errors": [e.to_dict() for e in errors], "normalizer": {"name": "mmau-string-match"}}


def score_reference_baselines(items: Sequence[BenchmarkItem], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Table 1's reference rows computed on the evaluated items.

    - ``Random Guess``: one uniformly random choice per item (seeded).
    - ``Most Frequent Choice``: per modality, the choice whose text is most often the correct answer
      in that modality (ties: the first choice), as in MMAU's reference row.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = [it.task for it in items]
    random_outcomes = ["correct" if it.choices[rng.integers(len(it.choices))] == it.answer else "wrong" for it in items]
    frequency = {task: Counter(it.answer for it in items if it.task == task) for task in set(tasks)}
    frequent_outcomes = []
    for it in items:
        pick = max(it.choices, key=lambda c: (frequency[it.task][c], -it.choices.index(c)))
        frequent_outcomes.append("correct" if pick == it.answer else "wrong")
    out = {}
    for name, outcomes in (("Random Guess", random_outcomes), ("Most Frequent Choice", frequent_outcomes)):
        summary = summarize(outcomes, tasks, task_order=task_order(tasks))
        out[name] = {**summary["total"], "by_task": summary["by_task"]}
    return out
