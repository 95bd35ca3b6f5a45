"""Run a registered prompting method (or K@N sampling) over a benchmark's items into a result store.

:func:`run_method` looks the method up in :mod:`reliable_lalm.methods.registry` and calls the
runner its entry names (the single-call runner, or a multi-step method's own, such as the task
agent's); :func:`sample_k_at_n` samples N answers of a single-call prompt per item. Both are
resumable and key their records as :mod:`reliable_lalm.methods.generation` describes.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.generation import (BatchHook, RunSummary, input_fingerprint,
                                              open_store, run_prompts, store_params, run_locked,
                                              valid_done_keys)
from reliable_lalm.methods.registry import SINGLE, get_method, single_call_methods
from reliable_lalm.models.base import GenerationSettings, Backend

K_AT_N_DEFAULT_TEMPERATURE = 1.0  # the paper does not state its sampling settings for K@N


def method_inputs(items: Sequence[BenchmarkItem], method: str, few_shot=()) -> dict[str, dict[str, str]]:
    """:func:`input_fingerprint` of every item under ``method`` (its rendered prompt text)."""
    entry = get_method(method)
    few = tuple(few_shot)
    prompt_of = lambda it: entry.key_text(it, few)  # noqa: E731
    return {it.id: input_fingerprint(it, prompt_of) for it in items}


def pending_items(store: ResultStore, items: Sequence[BenchmarkItem], method: str, few_shot=(),
                  n_samples: int = 1) -> list[str]:
    """Ids of ``items`` not yet done in ``store`` for ``method`` (the check every run makes first)."""
    done = valid_done_keys(store, method_inputs(items, method, few_shot))
    return [it.id for it in items if any((it.id, j) not in done for j in range(n_samples))]



def default_settings(method: str) -> GenerationSettings:
    """Greedy decoding with the method's default number of new tokens (for the real 7B model)."""
    return GenerationSettings(max_new_tokens=get_method(method).default_max_new_tokens)



def run_method(backend: Backend, items: Sequence[BenchmarkItem], method: str,
               store_dir_or_store: ResultStore | str | os.PathLike, *, settings: GenerationSettings | None = None,
               few_shot: Sequence[Any] = (), progress: bool = True, retry_errors: bool = False,
               on_batch: BatchHook | None = None, chunk: int | None = None) -> RunSummary:
    """Run a prompting method (a registered single-call or multi-step method: "baseline", "idk",
    "mcot", "agent", ...) over ``items`` into a result store, by the runner its entry names.

    Resumable: keys already in the store are skipped. Returns counts for this run.
    """
    entry = get_method(method)
    if not entry.runnable:
        raise ValueError(f"{method!r} is a {entry.kind} method: it has its own runner (K@N: sample_k_at_n)")
    settings = settings or default_settings(method)
    if settings.num_samples != 1:
        raise ValueError("run_method writes one output per item; use sample_k_at_n for several samples")
    store = open_store(store_dir_or_store, store_params(backend, method, settings, few_shot), settings)
    return run_locked(store, items, method, lambda: entry.runner(
        backend, items, store, entry=entry, settings=settings, few_shot=tuple(few_shot), progress=progress,
        retry_errors=retry_errors, on_batch=on_batch, chunk=chunk), retry_errors=retry_errors)


def sample_k_at_n(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore | str | os.PathLike,
               n_samples: int = 5, settings: GenerationSettings | None = None, *, method: str = "baseline",
               progress: bool = True, retry_errors: bool = False, on_batch: BatchHook | None = None,
               chunk: int | None = None) -> RunSummary:
    """K@N sampling: ``n_samples`` answers per item (sample_index 0..N-1) from one shared prefill each.

    Default settings: pure sampling at temperature 1 (the paper gives none), 64 new tokens.
    Samples are reproducible from ``settings.seed`` whatever the batching or resumption.
    """
    entry = get_method(method)
    if entry.kind != SINGLE:
        raise ValueError(f"K@N sampling uses a single-call prompt ({', '.join(single_call_methods())})")
    settings = settings or GenerationSettings(max_new_tokens=entry.default_max_new_tokens, do_sample=True,
                                              temperature=K_AT_N_DEFAULT_TEMPERATURE)
    settings = replace(settings, num_samples=n_samples)
    store = open_store(store, store_params(backend, method, settings, kind="knn"), settings)  # the kind existing stores hold
    return run_locked(store, items, f"k-at-n:{method}", lambda: run_prompts(
        backend, items, store, method=method, settings=settings, n_samples=n_samples,
        make_prompt=lambda it: entry.build_prompt(it.question, it.choices), progress=progress,
        desc=f"K@{n_samples} {method}", on_batch=on_batch, chunk=chunk), n_samples=n_samples, retry_errors=retry_errors)
