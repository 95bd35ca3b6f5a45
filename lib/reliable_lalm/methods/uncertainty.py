"""The model's own answers scored and questioned again: what the uncertainty estimators need.

Beyond the paper (see :mod:`reliable_lalm.core.uncertainty` for the estimators' maths).

* :func:`score_texts` writes, per item, the log-likelihood of given texts as the assistant's
  complete answer to a prompt (:meth:`reliable_lalm.models.base.Backend.score_continuations`:
  one prefill per item, every text on its cache, end-of-turn token scored). With the baseline
  prompt and the greedy answer this is the greedy answer's sequence log-probability; with the
  K@N samples, their log-probabilities for the predictive entropy; with
  :func:`reliable_lalm.core.prompts.p_true_prompt` and ``("True", "False")``, P(True).
  The answer is scored as *text* (re-tokenized), so backends need no change to their generation
  loop and cached runs are scored without generating again; it equals the log-probability of the
  generated tokens whenever the decoded text tokenizes back to them (checked on the demo model in
  the tests).
* :func:`run_follow_up` generates a follow-up method's reply (verbalised confidence) to a prompt
  built from the item and the model's own answer, through the generation runner.

Both are resumable result stores keyed like every other (:func:`reliable_lalm.methods.generation.store_params`
plus a ``kind``); each record is keyed by the item's content, the prompt and the scored texts, so
a changed answer is never mixed with an old score. An item that cannot be scored (unreadable
audio, no answer to ask about) gets an error record naming the cause and the run goes on.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.registry import FOLLOW_UP, get_method
from reliable_lalm.methods.generation import (RunSummary, drop_error_records, input_fingerprint, item_fields,
                                              open_store, run_prompts, run_scoring, store_params, store_params_for,
                                              run_locked)
from reliable_lalm.models.base import Backend, GenerationSettings, OptionScoringUnsupported

# Decoding settings do not enter a log-likelihood; a fixed value keys the store (greedy, 1 token).
SCORING_SETTINGS = GenerationSettings(max_new_tokens=1)
TEXT_SEPARATOR = "\x1f"  # between scored texts in a record's key (never inside a decoded answer)

PromptOf = Callable[[BenchmarkItem], str]
TextsOf = Callable[[BenchmarkItem], Sequence[str]]


def text_score_inputs(items: Sequence[BenchmarkItem], prompt_of: PromptOf, texts_of: TextsOf
                      ) -> dict[str, dict[str, str]]:
    """Per item, what its record is computed from: item content, audio bytes, prompt and texts."""
    def key_text(item):
        return prompt_of(item) + "\x1e" + TEXT_SEPARATOR.join(texts_of(item))
    return {it.id: input_fingerprint(it, key_text) for it in items}


def text_score_params(model: dict[str, Any], method: str) -> dict[str, Any]:
    """The store key of :func:`score_texts` for a model description (``Backend.describe()``)."""
    return store_params_for(model, method, SCORING_SETTINGS, kind="text-scores", terminate=True)


def score_texts(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore | str | os.PathLike, *,
                method: str, prompt_of: PromptOf, texts_of: TextsOf, progress: bool = True,
                retry_errors: bool = False, chunk: int | None = None) -> RunSummary:
    """Log-likelihood of each of ``texts_of(item)`` as the complete answer to ``prompt_of(item)``.

    ``method`` names what is scored (it keys the store: ``"baseline"`` for answers to the baseline
    prompt, ``"p-true"`` for the verification prompt). One record per item: ``texts``,
    ``logprobs`` (natural log, end-of-turn included), ``token_counts``. ``prompt_of`` or
    ``texts_of`` raising ``ValueError`` (e.g. no answer to score) gives that item an error record.
    """
    if not getattr(backend, "supports_option_logprobs", False):
        raise OptionScoringUnsupported(f"{type(backend).__name__} cannot score continuations")
    store = open_store(store, text_score_params(backend.describe(), method), SCORING_SETTINGS)
    with store.writer_lock():
        if retry_errors:
            drop_error_records(store)
        inputs = text_score_inputs(items, _or_error(prompt_of), _or_error(texts_of, []))

        def build(item):
            return prompt_of(item), [str(t) for t in texts_of(item)]

        def check(prepared, prompt, conts):
            return "prompt: no text to score" if not conts else backend.check_prompt(prompt)

        def error_record(item, prompt, conts, error):
            return {"item_id": item.id, "sample_index": 0, "method": method, "prompt": prompt,
                    "input": inputs[item.id], "error": error, "warning": None,
                    "texts": conts, "logprobs": None, "token_counts": None, **item_fields(item)}

        def score_record(item, req, conts, sc, warning):
            return {"item_id": item.id, "sample_index": 0, "method": method, "prompt": req.prompt,
                    "input": inputs[item.id], "error": None, "warning": warning,
                    "texts": conts, "logprobs": list(sc.logprobs), "token_counts": list(sc.token_counts),
                    "prompt_tokens": sc.prompt_tokens, **item_fields(item)}

        summary = run_scoring(backend, items, store, inputs=inputs, build=build, check=check,
                              error_record=error_record, score_record=score_record, settings=SCORING_SETTINGS,
                              desc=f"answer scores ({method})", summary_label=f"text-scores:{method}",
                              progress=progress, chunk=chunk)
    return summary


def _or_error(fn: Callable[[BenchmarkItem], Any], fallback: Any = None) -> Callable[[BenchmarkItem], Any]:
    """``fn`` for keying: an item whose prompt/texts cannot be built is keyed by the cause."""
    def wrapped(item):
        try:
            return fn(item)
        except (ValueError, TypeError) as err:
            return f"error: {err}" if fallback is None else fallback
    return wrapped


def follow_up_prompt_of(method: str, answers: dict[str, str | None]) -> PromptOf:
    """``item -> prompt`` of a follow-up method about ``answers[item.id]`` (the model's own answer);
    ``ValueError`` (-> an error record) when the item has no answer."""
    entry = get_method(method)
    if entry.kind != FOLLOW_UP:
        raise ValueError(f"{method!r} is not a follow-up method")

    def prompt_of(item: BenchmarkItem) -> str:
        answer = answers.get(item.id)
        if answer is None or not str(answer).strip():
            raise ValueError("the model gave no answer to ask about")
        return entry.build_follow_up(item.question, item.choices, str(answer))
    return prompt_of


def run_follow_up(backend: Backend, items: Sequence[BenchmarkItem], answers: dict[str, str | None],
                  store: ResultStore | str | os.PathLike, *, method: str, settings: GenerationSettings,
                  progress: bool = True, retry_errors: bool = False, chunk: int | None = None) -> RunSummary:
    """Generate ``method``'s reply (a follow-up prompt about ``answers[item.id]``) for every item,
    resumable, into a result store keyed by ``store_params`` (records keyed by the prompt, which
    holds the answer)."""
    prompt_of = follow_up_prompt_of(method, answers)
    store = open_store(store, store_params(backend, method, settings), settings)
    return run_locked(store, items, method, lambda: run_prompts(
        backend, items, store, method=method, settings=settings, make_prompt=prompt_of, progress=progress,
        chunk=chunk), retry_errors=retry_errors)
