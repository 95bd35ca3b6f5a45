"""Per-option log-likelihoods of every item under a prompt, resumable, into a result store.

Beyond the paper (issue 20): confidence-based abstention needs the model's probability of each
option, not only the option it generates. :func:`score_options` asks the backend
(:meth:`reliable_lalm.models.base.Backend.score_continuations`) for the log-likelihood of each
choice text *and* of the refusal ``"IDK"`` as the assistant's complete answer (the text followed
by the end-of-turn token), under the baseline prompt (Table 4) or the IDK prompt (Table 5), and
writes one record per item::

    item_id, sample_index (0), method, prompt, choices, option_logprobs, option_tokens,
    idk_text, idk_logprob, idk_tokens, error, warning, task, question, answer

The store is keyed like the generation runners' (:func:`reliable_lalm.methods.generation.store_params`
with ``kind="option-scores"``, the IDK text and whether the end-of-turn token is scored), so
scores of other prompts, models or settings never mix into it. A re-run skips finished items; a
run killed at any point is finished by running it again. Item errors (unreadable audio, bad
choices) become error records and the run goes on, as in :mod:`reliable_lalm.methods.generation`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.normalize_types import IDK_LABEL
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.registry import SINGLE, get_method
from reliable_lalm.methods.execution import method_inputs
from reliable_lalm.methods.generation import (RunSummary, checked_context_problem, drop_error_records, item_fields,
                                              item_progress, open_store, prepared_chunks, store_params,
                                              summarize_run, valid_done_keys)
from reliable_lalm.models.base import Backend, GenerationRequest, GenerationSettings, OptionScoringUnsupported

# Decoding settings do not enter a log-likelihood; a fixed value keys the store (greedy, 1 token).
SCORING_SETTINGS = GenerationSettings(max_new_tokens=1)
SCORE_METHODS = ("baseline", "idk")


def score_options(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore | str | os.PathLike, *,
                  method: str = "baseline", idk_text: str = IDK_LABEL, terminate: bool = True,
                  progress: bool = True, retry_errors: bool = False, chunk: int | None = None) -> RunSummary:
    """Log-likelihood of each choice and of ``idk_text`` as the answer to ``method``'s prompt, per item.

    ``method``: ``"baseline"`` or ``"idk"`` (single-call prompts; the options are scored as the
    answer the prompt asks for). ``terminate``: score the end-of-turn token after each text (the
    text as the *whole* answer). Raises :class:`OptionScoringUnsupported` for a backend that
    cannot score continuations. Returns the counts of this run.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"option scoring is defined for the prompts {SCORE_METHODS}, not {method!r}")
    if not getattr(backend, "supports_option_logprobs", False):
        raise OptionScoringUnsupported(f"{type(backend).__name__} cannot score continuations")
    entry = get_method(method)
    assert entry.kind == SINGLE
    settings = SCORING_SETTINGS
    params = store_params(backend, method, settings, **store_extras(idk_text, terminate))
    store = open_store(store, params, settings)
    with store.writer_lock():  # a second process on this store is refused, not run twice
        return _score_options(backend, items, store, entry, method, settings, idk_text, terminate, progress,
                              retry_errors, chunk)


def store_extras(idk_text: str = IDK_LABEL, terminate: bool = True) -> dict[str, Any]:
    """The store-key entries beyond :func:`store_params`' (what else determines option scores)."""
    return {"kind": "option-scores", "idk_text": idk_text, "terminate": terminate}


def _score_options(backend, items, store, entry, method, settings, idk_text, terminate, progress, retry_errors,
                   chunk) -> RunSummary:
    if retry_errors:
        drop_error_records(store)
    inputs = method_inputs(items, method)  # records are reused only for the same item content and prompt
    done_before = valid_done_keys(store, inputs)
    todo = [it for it in items if (it.id, 0) not in done_before]
    chunk = chunk or max(64, 8 * int(getattr(backend, "batch_size", None) or 32))
    start = time.perf_counter()
    bar = item_progress(len(todo), f"option scores ({method})", progress)
    try:
        for prepared in prepared_chunks(todo, backend.window_seconds, backend.sampling_rate, chunk):
            requests, conts, errors, warnings, by_id = [], [], [], {}, {}
            for p in prepared:
                prompt = None
                if p.error is None:
                    try:
                        prompt = entry.build_prompt(p.item.question, p.item.choices)
                    except (ValueError, TypeError) as err:
                        p.error = f"prompt: {err}"
                    else:
                        p.error = checked_context_problem(backend, GenerationRequest(p.item.id, p.audio, prompt, settings))
                if p.error is not None:
                    errors.append({"item_id": p.item.id, "sample_index": 0, "method": method, "prompt": prompt,
                                   "input": inputs[p.item.id],
                                   "error": p.error, "warning": None, "option_logprobs": None,
                                   "option_tokens": None, "idk_text": idk_text, "idk_logprob": None,
                                   "idk_tokens": None, **item_fields(p.item)})
                    continue
                by_id[p.item.id] = p.item
                warnings[p.item.id] = p.warning
                requests.append(GenerationRequest(p.item.id, p.audio, prompt, settings))
                conts.append([*(str(c) for c in p.item.choices), idk_text])
            if errors:
                store.extend(errors)
                bar.update(len(errors))
            if not requests:
                continue
            scores = backend.score_continuations(requests, conts, terminate=terminate)
            records = []
            for req, sc in zip(requests, scores):
                item = by_id[sc.item_id]
                k = len(item.choices)
                records.append({"item_id": item.id, "sample_index": 0, "method": method, "prompt": req.prompt,
                                "input": inputs[item.id],
                                "error": None, "warning": warnings.get(item.id),
                                "option_logprobs": sc.logprobs[:k], "option_tokens": sc.token_counts[:k],
                                "idk_text": idk_text, "idk_logprob": sc.logprobs[k], "idk_tokens": sc.token_counts[k],
                                "prompt_tokens": sc.prompt_tokens, **item_fields(item)})
            store.extend(records)  # one write per chunk: a crash loses at most this chunk
            bar.update(len(records))
    finally:
        bar.close()
    summary = summarize_run(f"option-scores:{method}", store, items, done_before, 1, time.perf_counter() - start)
    store.update_manifest(last_run=summary.to_dict())
    return summary


def option_score_records(store: ResultStore | str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The store's records by item id (error records included: ``option_logprobs`` is then ``None``)."""
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    return store.by_item(0)
