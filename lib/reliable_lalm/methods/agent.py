"""The task agent (paper Table 7), a multi-step method: three calls per item, each prompt built from
the model's earlier answers (audio type, then a content description, then the answer).

Its registry entry (:mod:`reliable_lalm.methods.registry`) names :func:`run_agent` as its runner
and :func:`agent_key_prompt` as the text its records are keyed on; nothing else knows the agent
by name.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from reliable_lalm.core import prompts
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods.generation import (BatchHook, drop_error_records, input_fingerprint, item_fields,
                                              join_warnings, run_prompts, valid_done_keys)
from reliable_lalm.models.base import Backend, GenerationSettings


def agent_key_prompt(item: BenchmarkItem) -> str:
    """The task agent's three templates rendered for this item (placeholders for the model's own
    step-1/2 answers, which are keyed through the step stores): a template change is a new key."""
    return "\n\x1e".join([prompts.agent_type_prompt(),
                            prompts.agent_content_prompt(prompts.AGENT_AUDIO_TYPES[0]),
                            prompts.agent_answer_prompt(prompts.AGENT_AUDIO_TYPES[0], "{content}", item.question,
                                                        item.choices)])



AGENT_TYPE_MAX_NEW_TOKENS = 16  # step 1 answers one word ("Sound"); no need to wait for 128 tokens
AGENT_STEP_DIRS = ("agent_step1_type", "agent_step2_content")


def run_agent(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *, entry: Any,
              settings: GenerationSettings, few_shot: Sequence[Any] = (), progress: bool = True,
              retry_errors: bool = False, on_batch: BatchHook | None = None, chunk: int | None = None) -> None:
    """The task agent (paper Table 7): type -> content -> answer, each step batched over all items.

    Steps 1 and 2 keep their outputs in their own stores inside the final store's folder, so a run
    interrupted in any step resumes there. Item errors go straight to the final store. {Type} of
    steps 2-3 is :func:`~reliable_lalm.core.prompts.agent_type_slot` of the step-1 reply: the option
    it names, else the reply itself (with a warning); an empty reply ends the item with an empty
    answer (scored invalid) and a warning.
    ``entry`` is the method's registry entry (its name labels the records); the agent takes no
    few-shot examples.
    """
    params = store.manifest().get("params", {})
    type_store = ResultStore.open(store.directory / AGENT_STEP_DIRS[0], {**params, "step": "type"}, seed=settings.seed)
    content_store = ResultStore.open(store.directory / AGENT_STEP_DIRS[1], {**params, "step": "content"},
                                     seed=settings.seed)
    if retry_errors:
        drop_error_records(type_store)
        drop_error_records(content_store)

    key_prompt = agent_key_prompt
    inputs = {it.id: input_fingerprint(it, key_prompt) for it in items}

    def pending_after(candidates):
        done = valid_done_keys(store, inputs)
        return [it for it in candidates if (it.id, 0) not in done]

    pending = pending_after(items)
    # Step 1: the audio type.
    type_settings = replace(settings, max_new_tokens=min(settings.max_new_tokens, AGENT_TYPE_MAX_NEW_TOKENS))

    def type_record(item, g, j):
        slot = prompts.agent_type_slot(g.texts[j])
        unparsed = slot is not None and prompts.parse_audio_type(g.texts[j]) is None
        note = f"agent step 1 named no single audio type; {{Type}} of steps 2-3 is its reply {slot!r}" if unparsed else None
        return {"model_output": g.texts[j], "agent_type_raw": g.texts[j], "agent_type": slot,
                "agent_type_note": note, "warning": note}

    run_prompts(backend, pending, type_store, method=entry.name, settings=type_settings,
                 make_prompt=lambda it: prompts.agent_type_prompt(), make_record=type_record,
                 key_prompt=key_prompt,
                 error_store=store, progress=progress, desc="agent 1/3 type", on_batch=on_batch, chunk=chunk)
    types = type_store.by_item()
    untyped = []
    for it in pending_after(pending):
        rec = types.get(it.id)
        if rec is not None and rec.get("agent_type") is None:
            untyped.append({"item_id": it.id, "sample_index": 0, "method": entry.name, "prompt": None,
                            "input": inputs[it.id],
                            "model_output": "", "error": None, "settings": settings.to_dict(),
                            "agent_type_raw": rec.get("agent_type_raw"), "agent_type": None, "agent_content": None,
                            "agent_type_prompt": rec.get("prompt"),
                            "warning": join_warnings(rec.get("warning"), "agent step 1 gave an empty reply "
                                             f"({rec.get('agent_type_raw')!r}): nothing to fill {{Type}} with; "
                                             "steps 2-3 skipped"),
                            **item_fields(it)})
    store.extend(untyped)
    typed = [it for it in pending_after(pending) if it.id in types]

    # Step 2: the content description.
    def content_record(item, g, j):
        return {"model_output": g.texts[j], "agent_type": types[item.id]["agent_type"], "agent_content": g.texts[j],
                "warning": types[item.id].get("agent_type_note")}

    run_prompts(backend, typed, content_store, method=entry.name, settings=settings,
                 make_prompt=lambda it: prompts.agent_content_prompt(types[it.id]["agent_type"]),
                 make_record=content_record, error_store=store, progress=progress, desc="agent 2/3 content",
                 key_prompt=key_prompt,
                 on_batch=on_batch, chunk=chunk)
    contents = content_store.by_item()
    ready = [it for it in pending_after(typed) if it.id in contents]

    # Step 3: the answer, given type and content.
    def answer_record(item, g, j):
        t, c = types[item.id], contents[item.id]
        return {"model_output": g.texts[j], "agent_type_raw": t.get("agent_type_raw"), "agent_type": t["agent_type"],
                "agent_content": c.get("agent_content"), "agent_type_prompt": t.get("prompt"),
                "agent_content_prompt": c.get("prompt"), "agent_type_note": t.get("agent_type_note"),
                "warning": t.get("agent_type_note")}

    def answer_prompt(it):
        content = contents[it.id].get("agent_content") or ""
        if not content.strip():  # the template needs text; record that the description was empty
            content = "(no description)"
        return prompts.agent_answer_prompt(types[it.id]["agent_type"], content, it.question, it.choices)

    run_prompts(backend, ready, store, method=entry.name, settings=settings, make_prompt=answer_prompt,
                 make_record=answer_record, progress=progress, desc="agent 3/3 answer", on_batch=on_batch,
                 key_prompt=key_prompt,
                 chunk=chunk)
