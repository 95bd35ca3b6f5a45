"""Batched generation into a result store: the engine every prompting method runs on.

The engine that generates is a backend of :mod:`reliable_lalm.models` (the protocol in
:mod:`reliable_lalm.models.base`). :func:`run_prompts` renders one prompt per item (a method's
prompt builder), generates the missing keys a batch at a time and writes their records;
:mod:`reliable_lalm.methods.execution` runs a registered method with it, and a multi-step method
(the task agent, :mod:`reliable_lalm.methods.agent`) calls it once per step.

Resumability
    One record per ``(item_id, sample_index)`` goes into a :class:`~reliable_lalm.core.results.ResultStore`
    after every batch, and finished keys are skipped when re-run: a run killed at any point (even
    ``kill -9``) is finished by running the same command again, without duplicates.

Policies
    * A bad item (missing/unreadable/empty audio, audio < 0.1 s, empty or duplicated choices, a prompt
      that cannot be built) gets an *error record* (``error`` = the reason, ``model_output`` =
      ``None``) and the run goes on. Error records count as done on resume: input errors are
      deterministic. ``retry_errors=True`` removes them from the store first and tries those items
      again (do not use it while another process writes to the same store).
    * Audio longer than the feature extractor's window (30 s for Qwen2-Audio, 4 s for the demo) is
      truncated to the window, as the processor would silently do, and the record gets a
      ``warning``. Stereo and non-16 kHz files are downmixed and resampled by
      :func:`reliable_lalm.core.items.load_audio`.
    * A prompt the model must not see is an item error before batching: text UTF-8 cannot encode
      (a lone surrogate such as ``"\ud83d"`` is valid JSON) or a special token of the tokenizer
      (``<|AUDIO|>`` makes the processor count one audio too many for the whole batch;
      ``<|im_start|>`` would be read as a control token). If a batch still raises an input error
      (``ValueError``, ``TypeError``, ``UnicodeError``, ``KeyError``, ``IndexError``: what the
      processor raises for text it cannot handle), it is split in halves until the failing items
      are alone; they get error records, the others are generated.
    * Exceptions that are not about one item (CUDA errors, a model bug, the audio check, or an input
      error that every item of a batch raises on its own) stop the run; CUDA out-of-memory splits
      the batch in two and retries.
    * A run holds the store's writer lock (:meth:`~reliable_lalm.core.results.ResultStore.writer_lock`):
      a second process on the same store is refused with the pid of the first.
    * A record is reused only when it was computed from the item's current content (audio bytes
      included) and the current prompt text; a record of other inputs stops the run with what differs.
    * A backend that fails one item after its own retries (an HTTP endpoint, a worker process) returns
      a :class:`~reliable_lalm.models.base.Generation` with ``error`` set: that item gets error
      records ``generation failed: <cause>`` and the run goes on (``retry_errors`` retries them).
      :class:`~reliable_lalm.models.base.BackendFatalError` (a refused key) stops the run.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.fingerprint import digest, item_fingerprint, text_digest
from reliable_lalm.core.items import SAMPLING_RATE, BenchmarkItem, ItemError, clean_choices, load_audio
from reliable_lalm.core.progress import progress_bar
from reliable_lalm.core.prompts import PromptParts
from reliable_lalm.core.results import ResultStore, record_line
from reliable_lalm.models.base import (Backend, Generation, GenerationRequest, GenerationSettings, _one_line,
                                       context_problem)

MIN_AUDIO_SECONDS = 0.1  # shorter clips give 0-1 audio tokens after the encoder's two halvings


@dataclass
class RunSummary:
    method: str
    store: str
    n_items: int  # items asked for
    already_done: int  # items skipped because every key was already in the store
    processed: int  # items handled in this run (generated or errored)
    generated_records: int
    errors: int  # error records written in this run
    warnings: int  # records written with a warning in this run
    seconds: float
    error_items: dict[str, str] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items_per_second": self.items_per_second}


@dataclass
class PreparedItem:
    item: BenchmarkItem
    audio: np.ndarray | None = None
    warning: str | None = None
    error: str | None = None


def check_choices(item: BenchmarkItem) -> None:
    """An item's choices before it is prompted, by the loader's check (:func:`clean_choices`);
    duplicates are an error here: an item built in code has not been through the loader."""
    try:
        clean_choices(item.choices, dedupe=False)
    except ValueError as err:
        raise ItemError(item.id, str(err)) from None


def prepare_item(item: BenchmarkItem, window_seconds: float, sampling_rate: int = SAMPLING_RATE) -> PreparedItem:
    """Validate an item and read its audio; item-level problems become ``error``, not exceptions."""
    try:
        check_choices(item)
        audio = load_audio(item.audio_path, sampling_rate=sampling_rate, item_id=item.id)
        seconds = len(audio) / sampling_rate
        if seconds < MIN_AUDIO_SECONDS:
            raise ItemError(item.id, f"audio is {seconds:.3f} s long; at least {MIN_AUDIO_SECONDS} s is needed")
    except ItemError as err:
        return PreparedItem(item, error=err.cause)
    warning = None
    window = int(round(window_seconds * sampling_rate))
    if len(audio) > window:
        warning = (f"audio is {seconds:.1f} s, longer than the model's {window_seconds:g} s window: "
                   f"truncated to the first {window_seconds:g} s")
        audio = audio[:window]
    return PreparedItem(item, audio=audio, warning=warning)


def prepared_chunks(items: Sequence[BenchmarkItem], window_seconds: float, sampling_rate: int,
                     chunk: int) -> Iterator[list[PreparedItem]]:
    """Read audio ``chunk`` items at a time, the next chunk in background threads while the model
    works on the current one (decoding mp3/flac and resampling is CPU work)."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(start):
            return [pool.submit(prepare_item, it, window_seconds, sampling_rate) for it in items[start:start + chunk]]
        pending = submit(0)
        for start in range(0, len(items), chunk):
            current = [f.result() for f in pending]
            if start + chunk < len(items):
                pending = submit(start + chunk)
            yield current


def item_fields(item: BenchmarkItem) -> dict[str, Any]:
    return {"task": item.task, "question": item.question, "choices": list(item.choices), "answer": item.answer}


class StaleResultsError(RuntimeError):
    """A store holds results of the same keys computed from other inputs (never reused, never mixed)."""


def input_fingerprint(item: BenchmarkItem, prompt_of: Callable[[BenchmarkItem], str]) -> dict[str, str]:
    """What one record was computed from: the item's text, its audio bytes and the prompt text.

    ``key`` combines the parts; the parts say what differs when a record is stale.
    """
    parts = item_fingerprint(item)
    try:
        parts["prompt"] = text_digest(prompt_of(item))
    except (ValueError, TypeError) as err:  # the item gets an error record; key it by the cause
        parts["prompt"] = text_digest(f"error: {err}")
    return {**parts, "key": digest(parts)}


def valid_done_keys(store: ResultStore, inputs: dict[str, dict[str, str]]) -> set[tuple[str, int]]:
    """Keys of ``store`` whose record was computed from ``inputs[item_id]``.

    Raises :class:`StaleResultsError`, naming the first item and what differs, when a record of one
    of these items was computed from other inputs (or by a version that did not record them).
    """
    done: set[tuple[str, int]] = set()
    stale: list[tuple[str, str]] = []
    for record in store.records():
        item_id = str(record["item_id"])
        expected = inputs.get(item_id)
        if expected is None:
            continue
        got = record.get("input") or {}
        if got.get("key") == expected["key"]:
            done.add((item_id, int(record.get("sample_index", 0))))
        else:
            differs = [name for name in ("item", "audio", "prompt") if got.get(name) != expected.get(name)]
            stale.append((item_id, ", ".join(differs) or "inputs"))
    if stale:
        item_id, what = stale[0]
        raise StaleResultsError(
            f"{store.directory}: {len(stale)} record(s) were computed from other inputs (item {item_id!r}: {what} "
            f"differ{'s' if ',' not in what else ''}); use another output folder or delete this one")
    return done


def store_params(backend: Backend, method: str, settings: GenerationSettings, few_shot=(), **extra) -> dict[str, Any]:
    """What a result store is keyed on: results of other settings never mix into it."""
    return store_params_for(backend.describe(), method, settings, few_shot, **extra)


def store_params_for(model: dict[str, Any], method: str, settings: GenerationSettings, few_shot=(),
                     **extra) -> dict[str, Any]:
    """:func:`store_params` from a model description (``Backend.describe()``, or the same computed
    without loading the model). The model enters by content (weights and adapter hashes, dtype),
    never by path; items and prompt texts are keyed per record (:func:`input_fingerprint`).
    """
    params = {"method": method, "settings": settings.to_dict(), "model": model,
              "few_shot": [asdict(e) for e in few_shot]}
    params.update(extra)
    return params


def open_store(store: ResultStore | str | os.PathLike, params: dict[str, Any], settings: GenerationSettings) -> ResultStore:
    if isinstance(store, ResultStore):
        return store
    return ResultStore.open(store, params, seed=settings.seed)


def drop_error_records(store: ResultStore) -> int:
    """Rewrite the store without its error records (for ``retry_errors``); returns how many were removed.

    The store is append-only with first-record-wins, so a retried key must not have an older record.
    """
    records = store.records()
    kept = [r for r in records if r.get("error") is None]
    removed = len(records) - len(kept)
    if removed:
        atomic_write_text(store.records_path, "".join(record_line(r) for r in kept))
    return removed


def item_progress(total: int, desc: str, enabled: bool):
    return progress_bar(total=total, desc=desc, unit="item", enabled=enabled, dynamic_ncols=True)


BatchHook = Callable[[int, list[dict[str, Any]]], None]
# What a processor or tokenizer raises for input it cannot handle: one item's problem, not the run's.
ITEM_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, UnicodeError, KeyError, IndexError)


def checked_context_problem(backend: Backend, request: GenerationRequest) -> str | None:
    """:func:`context_problem`, an input the tokenizer cannot take being that item's problem too."""
    try:
        return context_problem(backend, request)
    except ITEM_INPUT_ERRORS as err:
        return f"prompt: {_one_line(err)}"


def _generate_isolating(backend: Backend, requests: Sequence[GenerationRequest]
                        ) -> Iterator[tuple[list[int], list[Generation], dict[int, str]]]:
    """``backend.generate_iter`` that turns an input error of one request into that request's failure.

    Yields ``(request indices, generations, {request index: reason})``. When a batch raises one of
    :data:`ITEM_INPUT_ERRORS`, the requests not generated yet are split in halves until each failing
    one is alone. If every one of them fails on its own (and there are several), the error is not
    about an item: it is raised.
    """
    pending = set(range(len(requests)))
    batches = iter(backend.generate_iter(requests))
    while True:
        try:
            indices, generations = next(batches)
        except StopIteration:
            return
        except ITEM_INPUT_ERRORS as err:
            first_error = err
            break
        pending.difference_update(indices)
        yield indices, generations, {}
    todo = sorted(pending)
    done: list[tuple[list[int], list[Generation]]] = []
    failed: dict[int, str] = {}

    def isolate(idx: list[int]) -> None:
        try:
            generations = backend.generate([requests[i] for i in idx])
        except ITEM_INPUT_ERRORS as err:
            if len(idx) == 1:
                failed[idx[0]] = f"generation failed: {_one_line(err)}"
                return
            isolate(idx[: len(idx) // 2])
            isolate(idx[len(idx) // 2:])
            return
        done.append((idx, generations))

    isolate(todo)
    if len(todo) > 1 and len(failed) == len(todo):
        raise first_error
    for idx, generations in done:
        yield idx, generations, {}
    if failed:
        yield [], [], failed


def run_prompts(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *, method: str,
                 settings: GenerationSettings, make_prompt: Callable[[BenchmarkItem], str],
                 make_record: Callable[[BenchmarkItem, Generation, int], dict[str, Any]] | None = None,
                 error_store: ResultStore | None = None, n_samples: int = 1, progress: bool = True,
                 desc: str = "", on_batch: BatchHook | None = None, chunk: int | None = None,
                 key_prompt: Callable[[BenchmarkItem], str] | None = None) -> None:
    """Generate ``n_samples`` outputs per item for the keys missing from ``store``, writing as batches finish.

    A key is done only when its record was computed from this item's content (audio bytes
    included) and this prompt text (``key_prompt``, default ``make_prompt``); a record of the
    same key computed from other inputs stops the run (:class:`StaleResultsError`).

    Item errors go to ``error_store`` (default: ``store``), one error record per missing key; an item
    with an error record there is not retried.
    """
    error_store = error_store or store

    def key_of(item):  # a prompt split around the audio is keyed with the audio's position
        made = (key_prompt or make_prompt)(item)
        return made.key_text if isinstance(made, PromptParts) else made

    inputs = {item.id: input_fingerprint(item, key_of) for item in items}
    before_audio_ok = bool(getattr(backend, "places_text_before_audio", False))
    done = valid_done_keys(store, inputs)
    err_done = valid_done_keys(error_store, inputs) if error_store is not store else set()
    todo: list[tuple[BenchmarkItem, tuple[int, ...]]] = []
    for item in items:
        missing = tuple(j for j in range(n_samples) if (item.id, j) not in done)
        if missing and not any((item.id, j) in err_done for j in missing):
            todo.append((item, missing))
    missing_of = {item.id: missing for item, missing in todo}
    chunk = chunk or max(64, 8 * int(getattr(backend, "batch_size", None) or 32))
    backend.check_settings(settings)
    batches = 0
    bar = item_progress(len(todo), desc or method, progress)
    try:
        for prepared in prepared_chunks([it for it, _ in todo], backend.window_seconds, backend.sampling_rate, chunk):
            requests: list[GenerationRequest] = []
            warnings: dict[str, str | None] = {}
            errors: list[dict[str, Any]] = []
            before: dict[str, str] = {}
            for p in prepared:
                prompt = None
                if p.error is None:
                    try:
                        prompt = make_prompt(p.item)
                    except (ValueError, TypeError) as err:  # e.g. a choice the template cannot render
                        p.error = f"prompt: {err}"
                    else:
                        if isinstance(prompt, PromptParts):
                            if before_audio_ok and prompt.before_audio:
                                before[p.item.id] = prompt.before_audio
                                p.error = backend.check_prompt(prompt.before_audio)
                                prompt = prompt.after_audio
                            else:
                                prompt = prompt.text
                        p.error = p.error or backend.check_prompt(prompt)
                        p.error = p.error or checked_context_problem(backend, GenerationRequest(
                            p.item.id, p.audio, prompt, settings, text_before_audio=before.get(p.item.id, "")))
                if p.error is not None:
                    for j in missing_of[p.item.id]:
                        errors.append({"item_id": p.item.id, "sample_index": j, "method": method,
                                       "input": inputs[p.item.id],
                                       "prompt": prompt, "model_output": None, "error": p.error,
                                       "warning": None, "settings": settings.to_dict(), **item_fields(p.item)})
                    continue
                warnings[p.item.id] = p.warning
                requests.append(GenerationRequest(p.item.id, p.audio, prompt, settings,
                                                  sample_indices=missing_of[p.item.id],
                                                  text_before_audio=before.get(p.item.id, "")))
            if errors:
                error_store.extend(errors)
                bar.update(len({e["item_id"] for e in errors}))
            by_id = {p.item.id: p.item for p in prepared}
            for indices, generations, failed in (_generate_isolating(backend, requests) if requests else ()):
                if failed:
                    errors = [{"item_id": requests[i].item_id, "sample_index": j, "method": method,
                               "input": inputs[requests[i].item_id],
                               "prompt": _shown_prompt(requests[i]), "model_output": None, "error": cause, "warning": None,
                               "settings": settings.to_dict(), **item_fields(by_id[requests[i].item_id])}
                              for i, cause in failed.items() for j in requests[i].samples]
                    error_store.extend(errors)
                    bar.update(len(failed))
                if not generations:
                    continue
                records = []
                backend_failed: list[dict[str, Any]] = []
                for i, g in zip(indices, generations):
                    item, req = by_id[g.item_id], requests[i]
                    if getattr(g, "error", None) is not None:  # the backend failed this item: error records
                        backend_failed.extend({"item_id": item.id, "sample_index": j, "method": method,
                                       "input": inputs[item.id], "prompt": _shown_prompt(req),
                                       "model_output": None, "error": f"generation failed: {g.error}",
                                       "warning": warnings.get(item.id), "settings": settings.to_dict(),
                                       **item_fields(item)} for j in req.samples)
                        continue
                    for j, (text, k, fin) in enumerate(zip(g.texts, g.new_tokens, g.finished)):
                        extra = make_record(item, g, j) if make_record is not None else {"model_output": text}
                        warning = join_warnings(warnings.get(item.id), extra.pop("warning", None))
                        records.append({"item_id": item.id, "sample_index": g.sample_indices[j], "method": method,
                                        "input": inputs[item.id],
                                        "prompt": _shown_prompt(req), "error": None, "warning": warning,
                                        "settings": settings.to_dict(), "new_tokens": k, "finished": fin,
                                        **item_fields(item), **extra})
                store.extend(records)  # one write per batch: a crash loses at most this batch
                error_store.extend(backend_failed)
                bar.update(len(generations))
                batches += 1
                if on_batch is not None:
                    on_batch(batches, records)
    finally:
        bar.close()


def run_scoring(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *,
                inputs: dict[str, dict[str, str]], build: Callable[[BenchmarkItem], tuple[str, list[str]]],
                check: Callable[[PreparedItem, str, list[str]], str | None],
                error_record: Callable[[BenchmarkItem, str | None, list[str] | None, str], dict[str, Any]],
                score_record: Callable[[BenchmarkItem, GenerationRequest, list[str], Any, str | None], dict[str, Any]],
                settings: GenerationSettings, desc: str, summary_label: str, terminate: bool = True,
                progress: bool = True, chunk: int | None = None) -> RunSummary:
    """Log-likelihoods of continuations (``backend.score_continuations``) for the items not yet in
    ``store``, a chunk at a time; the body shared by option scoring and text scoring.

    ``build(item) -> (prompt, continuations)``; its ``ValueError``/``TypeError`` becomes the item's
    error record (``"prompt: <cause>"``), as does a problem ``check(prepared, prompt, continuations)``
    names. ``error_record`` and ``score_record`` shape the records; ``inputs`` keys them
    (:func:`input_fingerprint`). Writes the run summary to the manifest and returns it.
    """
    done_before = valid_done_keys(store, inputs)
    todo = [it for it in items if (it.id, 0) not in done_before]
    chunk = chunk or max(64, 8 * int(getattr(backend, "batch_size", None) or 32))
    start = time.perf_counter()
    bar = item_progress(len(todo), desc, progress)
    try:
        for prepared in prepared_chunks(todo, backend.window_seconds, backend.sampling_rate, chunk):
            requests, conts_of, errors, by_id, warnings = [], [], [], {}, {}
            for p in prepared:
                prompt = conts = None
                if p.error is None:
                    try:
                        prompt, conts = build(p.item)
                    except (ValueError, TypeError) as err:
                        p.error = f"prompt: {err}"
                    else:
                        p.error = check(p, prompt, conts)
                if p.error is not None:
                    errors.append(error_record(p.item, prompt, conts, p.error))
                    continue
                by_id[p.item.id], warnings[p.item.id] = p.item, p.warning
                requests.append(GenerationRequest(p.item.id, p.audio, prompt, settings))
                conts_of.append(conts)
            if errors:
                store.extend(errors)
                bar.update(len(errors))
            if not requests:
                continue
            scores = backend.score_continuations(requests, conts_of, terminate=terminate)
            records = [score_record(by_id[sc.item_id], req, conts, sc, warnings.get(sc.item_id))
                       for req, conts, sc in zip(requests, conts_of, scores)]
            store.extend(records)  # one write per chunk: a crash loses at most this chunk
            bar.update(len(records))
    finally:
        bar.close()
    summary = summarize_run(summary_label, store, items, done_before, 1, time.perf_counter() - start)
    store.update_manifest(last_run=summary.to_dict())
    return summary


def run_locked(store: ResultStore, items: Sequence[BenchmarkItem], label: str, work: Callable[[], Any], *,
               n_samples: int = 1, retry_errors: bool = False) -> RunSummary:
    """Run ``work`` with the store's writer lock held (a second process on this store is refused, not run
    twice), after dropping error records if asked; record and return the summary of what it added."""
    with store.writer_lock():
        if retry_errors:
            drop_error_records(store)
        done_before = store.done_keys()
        start = time.perf_counter()
        work()
        summary = summarize_run(label, store, items, done_before, n_samples, time.perf_counter() - start)
        store.update_manifest(last_run=summary.to_dict())
    return summary


def summarize_run(method: str, store: ResultStore, items: Sequence[BenchmarkItem], done_before: set,
               n_samples: int, seconds: float) -> RunSummary:
    """Counts of this run, from the records the store gained."""
    ids = {it.id for it in items}
    new = [r for r in store.records()
           if (str(r["item_id"]), int(r.get("sample_index", 0))) not in done_before and r["item_id"] in ids]
    already = sum(all((it.id, j) in done_before for j in range(n_samples)) for it in items)
    errors = {r["item_id"]: r["error"] for r in new if r.get("error") is not None}
    return RunSummary(method=method, store=str(store.directory), n_items=len(items), already_done=already,
                      processed=len({r["item_id"] for r in new}),
                      generated_records=sum(r.get("error") is None for r in new), errors=len(errors),
                      warnings=len({r["item_id"] for r in new if r.get("warning")}), seconds=seconds,
                      error_items=errors)


def _shown_prompt(req: GenerationRequest) -> str:
    """The user text of a request as recorded: text before the audio, the audio's place, the rest."""
    if req.text_before_audio:
        return f"{req.text_before_audio}\n\n{{Audio}}\n\n{req.prompt}"
    return req.prompt


def join_warnings(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
