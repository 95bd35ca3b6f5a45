"""Score prediction records: the total and per task, against a baseline, with intervals.

Each output is normalized (a :class:`~reliable_lalm.core.normalize_types.Normalizer`: the rules by
default; the LLM judges live in :mod:`reliable_lalm.methods.llm_judge`) to a choice, IDK or invalid
and scored with :mod:`reliable_lalm.core.metrics`. Records are read and checked by
:mod:`reliable_lalm.core.records`; ``rlalm score`` is :mod:`reliable_lalm.cli.score`.

A bad record (no ``model_output``, answer not among the choices, ...) never stops the run: it is
listed under ``errors`` with its id and the reason and left out of the counts. With a baseline,
both sides must hold the same ids (else :class:`~reliable_lalm.core.records.IdMismatchError` names
them); an id that is bad on either side is left out of both, so the transitions stay paired.

Output (fractions in [0, 1]): the total's ``n, n_correct, n_rejected, n_wrong, n_invalid, acc,
tru, rej, rel`` at the top level and the same per task under ``by_task``; with a baseline also
the transition counts ``ncc ... nrw``, the ``baseline`` counts, ``d_con, d_hum, rgi`` (class
convention, eqs. 8-9) and ``d_con_subset, d_hum_subset, rgi_subset`` (what the paper's Tables 2
and 11 print); ``ci`` with ``n_boot``; ``normalizer`` (its summary, which rules decided, and
``failed_items``: the ids whose LLM normalization failed); ``by``: the same per group of each
breakdown key (:mod:`reliable_lalm.core.breakdowns`). Records without any answer (a hidden test
split) are refused with one message (:mod:`reliable_lalm.core.submission`).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from reliable_lalm.core.breakdowns import breakdown, parse_by
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.metrics import outcome_of, summarize
from reliable_lalm.core.normalize import RuleBasedNormalizer, mmau_string_match
from reliable_lalm.core.normalize_types import LLMRefusedError, Normalized, Normalizer
from reliable_lalm.core.records import IdMismatchError, RecordError, ScoredRecord, check_records, task_order
from reliable_lalm.core.sample_log import disagreement_summary, sample_rows, write_sample_log
from reliable_lalm.core.submission import refuse_unscorable

# A score dict in place of a model's scores that holds only why the model was not run (e.g. a worker
# whose environment is not configured): {NOT_RUN_KEY: reason}; tables print its row as "not run".
NOT_RUN_KEY = "not_run"
MOSTLY_INVALID = 0.5  # share of invalid outputs above which a run is probably misread or misprompted


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
    summary_fn = getattr(normalizer, "summary", None)
    fatal = summary_fn().get("fatal_error") if callable(summary_fn) else None
    if fatal:
        host = summary_fn().get("base_url_host", "")
        raise LLMRefusedError(f"the LLM endpoint {host} refused the requests ({' '.join(str(fatal).split())}); "
                              "nothing is reported: check OPENAI_API_KEY and --openai-model, or use --normalizer rule")


def normalizer_summary(normalizer: Normalizer, normalized: Sequence[Normalized] = ()) -> dict[str, Any]:
    summary_fn = getattr(normalizer, "summary", None)
    out: dict[str, Any] = dict(summary_fn()) if callable(summary_fn) else {}
    out.setdefault("name", getattr(normalizer, "name", type(normalizer).__name__))
    out["kinds"] = dict(Counter(x.kind for x in normalized))
    out["methods"] = dict(Counter(x.method for x in normalized).most_common())
    return out



def score_records(pred_records: Iterable[Any], baseline_records: Iterable[Any] | None = None,
                  normalizer: Normalizer | None = None, *, n_boot: int = 0, seed: int = 0,
                  level: float = 0.95, keep_items: bool = False, errors: Sequence[RecordError] = (),
                  baseline_errors: Sequence[RecordError] = (), by: str | Sequence[str] | None = None,
                  modalities: Sequence[str] = (), log_samples: str | Path | None = None) -> dict[str, Any]:
    """Score MMAU-style prediction records (optionally against a baseline run on the same items).

    ``normalizer``: an object with ``name`` and ``normalize_many`` (an LLM judge:
    :func:`reliable_lalm.methods.llm_judge.build_normalizer`); default rule-based.
    ``keep_items`` adds ``items``: per record id, task, outcome, normalized label, kind and rule
    (and the baseline's). ``errors``/``baseline_errors``: read errors to report with the rest.
    Raises :class:`IdMismatchError` when the baseline's ids differ from the predictions'.
    ``by``: breakdown keys (:func:`reliable_lalm.core.breakdowns.parse_by`); ``modalities`` orders
    the ``task`` groups. Raises :class:`~reliable_lalm.core.submission.NoAnswersError` for records
    that carry no answer at all. ``log_samples``: write the per-output judge log there
    (:mod:`reliable_lalm.core.sample_log`). Where an LLM judge and the rules both decided outputs,
    ``normalizer.disagreements`` counts how often they differ.
    """
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
    norm = normalizer or RuleBasedNormalizer()
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


# ------------------------------------------------------------------------------------------------
# Reference rows of Table 1 (no normalizer involved)
# ------------------------------------------------------------------------------------------------

def score_mmau_string_match(pred_records: Iterable[Any]) -> dict[str, Any]:
    """Table 1's "MMAU (Unnormalized)" row: MMAU's official string match on the raw outputs.

    The official scorer knows no refusals: an output is correct when it string-matches the answer,
    wrong otherwise (an IDK counts as wrong, so Acc = Tru = Rel).
    """
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
