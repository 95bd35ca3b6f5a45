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
from typing import Any, Sequence

from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.normalize_types import IDK_LABEL
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.registry import SINGLE, get_method
from reliable_lalm.methods.execution import method_inputs
from reliable_lalm.methods.generation import (RunSummary, checked_context_problem, drop_error_records, item_fields,
                                              open_store, run_scoring, store_params)
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

    def build(item):
        return entry.build_prompt(item.question, item.choices), [*(str(c) for c in item.choices), idk_text]

    def check(prepared, prompt, conts):
        return checked_context_problem(backend, GenerationRequest(prepared.item.id, prepared.audio, prompt, settings))

    def error_record(item, prompt, conts, error):
        return {"item_id": item.id, "sample_index": 0, "method": method, "prompt": prompt, "input": inputs[item.id],
                "error": error, "warning": None, "option_logprobs": None, "option_tokens": None,
                "idk_text": idk_text, "idk_logprob": None, "idk_tokens": None, **item_fields(item)}

    def score_record(item, req, conts, sc, warning):
        k = len(item.choices)
        return {"item_id": item.id, "sample_index": 0, "method": method, "prompt": req.prompt,
                "input": inputs[item.id], "error": None, "warning": warning,
                "option_logprobs": sc.logprobs[:k], "option_tokens": sc.token_counts[:k],
                "idk_text": idk_text, "idk_logprob": sc.logprobs[k], "idk_tokens": sc.token_counts[k],
                "prompt_tokens": sc.prompt_tokens, **item_fields(item)}

    return run_scoring(backend, items, store, inputs=inputs, build=build, check=check, error_record=error_record,
                       score_record=score_record, settings=settings, desc=f"option scores ({method})",
                       summary_label=f"option-scores:{method}", terminate=terminate, progress=progress, chunk=chunk)


def option_score_records(store: ResultStore | str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The store's records by item id (error records included: ``option_logprobs`` is then ``None``)."""
    store = store if isinstance(store, ResultStore) else ResultStore(store)
    return store.by_item(0)
