"""The method registry: each prompting method by name, with everything needed to run it.

A method is either *single-call* (one prompt per item, built from the item's question and
choices: baseline, IDK, MCoT), *multi-step* (the task agent: several calls, each prompt built from
the model's earlier answers, run by its own runner), *sampling* (K@N: N sampled answers of a
single-call prompt per item, from one shared prefill), or *follow-up* (a prompt about the model's
own answer to another method: P(True), verbalised confidence; run by
:mod:`reliable_lalm.methods.uncertainty`).

A :class:`MethodEntry` holds the method's prompt builder, its runner, whether it takes few-shot
examples and its default number of new tokens; ``rlalm infer --method``, the experiments and the
runners read them here and never branch on a method's name. Another package adds a method by
declaring a :class:`MethodEntry` under the entry-point group ``reliable_lalm.methods``
(:data:`ENTRY_POINT_GROUP`) in its own ``pyproject.toml``; see the README's "How to add a method".
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable, Protocol, Sequence

from reliable_lalm.core import prompts
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.plugins import entry_point_objects
from reliable_lalm.core.results import ResultStore
from reliable_lalm.methods import agent
from reliable_lalm.methods.generation import BatchHook, run_prompts
from reliable_lalm.models.base import Backend, GenerationSettings

SINGLE, MULTI_STEP, SAMPLING, FOLLOW_UP = "single-call", "multi-step", "sampling", "follow-up"
ENTRY_POINT_GROUP = "reliable_lalm.methods"


class MethodRunner(Protocol):
    """Runs a method over ``items`` into ``store`` (the keys missing from it), resumably."""

    def __call__(self, backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *,
                 entry: MethodEntry, settings: GenerationSettings, few_shot: Sequence[prompts.FewShotExample],
                 progress: bool, retry_errors: bool, on_batch: BatchHook | None, chunk: int | None) -> None: ...


def run_single_call(backend: Backend, items: Sequence[BenchmarkItem], store: ResultStore, *, entry: MethodEntry,
                    settings: GenerationSettings, few_shot: Sequence[prompts.FewShotExample] = (),
                    progress: bool = True, retry_errors: bool = False, on_batch: BatchHook | None = None,
                    chunk: int | None = None) -> None:
    """The runner of a single-call method: one prompt per item (split around the audio where the
    method places text before it), batched."""
    few = tuple(few_shot)
    run_prompts(backend, items, store, method=entry.name, settings=settings,
                make_prompt=lambda it: entry.build_parts(it.question, it.choices, few),
                progress=progress, on_batch=on_batch, chunk=chunk)


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: str  # SINGLE | MULTI_STEP | SAMPLING | FOLLOW_UP
    default_max_new_tokens: int  # for the real 7B model; the demo's profile passes shorter ones
    # (question, choices[, few_shot]) -> text, for SINGLE; (question, choices, proposed answer) for FOLLOW_UP
    prompt: Callable[..., str] | None = None
    uses_few_shot: bool = False  # few-shot examples (Experiment.few_shot, --few-shot) are passed to the prompt
    prompt_parts: Callable[..., prompts.PromptParts] | None = None  # text before/after the audio (MCoT)
    # What runs the method (run_method): the single-call runner by default; a multi-step method brings its own.
    runner: MethodRunner = run_single_call
    # A multi-step method's records are keyed on this item text (its templates), not on one prompt.
    key_prompt: Callable[[BenchmarkItem], str] | None = None
    paper_template: str = ""  # where the paper prints the prompt
    description: str = ""

    @property
    def runnable(self) -> bool:
        """Run by ``run_method`` / ``rlalm infer --method`` (sampling and follow-up methods have their own runners)."""
        return self.kind in (SINGLE, MULTI_STEP)

    def build_prompt(self, question: str, choices: Sequence[str], few_shot: Sequence[prompts.FewShotExample] = ()) -> str:
        if self.prompt is None or self.kind == FOLLOW_UP:
            raise ValueError(f"method {self.name!r} ({self.kind}) has no single prompt")
        if few_shot and not self.uses_few_shot:
            raise ValueError(f"method {self.name!r} takes no few-shot examples")
        return self.prompt(question, choices, few_shot) if self.uses_few_shot else self.prompt(question, choices)

    def build_parts(self, question: str, choices: Sequence[str],
                    few_shot: Sequence[prompts.FewShotExample] = ()) -> prompts.PromptParts:
        """The prompt split around the audio (MCoT: the examples before it, Table 6); else all after it."""
        if self.prompt_parts is not None:
            if few_shot and not self.uses_few_shot:
                raise ValueError(f"method {self.name!r} takes no few-shot examples")
            return self.prompt_parts(question, choices, few_shot)
        return prompts.PromptParts("", self.build_prompt(question, choices, few_shot))

    def key_text(self, item: BenchmarkItem, few_shot: Sequence[prompts.FewShotExample] = ()) -> str:
        """The text an item's records under this method are keyed on (a change is a new key)."""
        if self.key_prompt is not None:
            return self.key_prompt(item)
        return self.build_parts(item.question, item.choices, few_shot).key_text

    def build_follow_up(self, question: str, choices: Sequence[str], proposed_answer: str) -> str:
        """The prompt about ``proposed_answer`` (the model's own answer), for FOLLOW_UP methods."""
        if self.kind != FOLLOW_UP or self.prompt is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) is not a follow-up prompt")
        return self.prompt(question, choices, proposed_answer)


BUILTIN_METHODS: dict[str, MethodEntry] = {e.name: e for e in (
    MethodEntry("baseline", SINGLE, 64, prompts.baseline_prompt, paper_template="Table 4",
                description="the question and its choices; answer with one option"),
    MethodEntry("idk", SINGLE, 64, prompts.idk_prompt, paper_template="Table 5",
                description="the baseline prompt plus: answer IDK when unsure"),
    MethodEntry("mcot", SINGLE, 256, prompts.mcot_prompt, uses_few_shot=True, paper_template="Table 6",
                prompt_parts=prompts.mcot_prompt_parts,
                description="multimodal chain-of-thought: few-shot examples, then reason step by step"),
    MethodEntry("agent", MULTI_STEP, 128, runner=agent.run_agent, key_prompt=agent.agent_key_prompt,
                paper_template="Table 7",
                description="task agent: audio type, then a content description, then the answer"),
    MethodEntry("k-at-n", SAMPLING, 64, prompts.baseline_prompt, paper_template="section 3.2",
                description="K@N: N sampled answers per item (the IDK dataset's input)"),
    MethodEntry("p-true", FOLLOW_UP, 1, prompts.p_true_prompt, paper_template="beyond the paper",
                description="P(True): is the model's own answer true? 'True' vs 'False' scored, not generated"),
    MethodEntry("verbalized-confidence", FOLLOW_UP, 8, prompts.verbalized_confidence_prompt,
                paper_template="beyond the paper",
                description="verbalised confidence: a number from 0 to 100 for the model's own answer"),
)}


@cache
def all_methods() -> dict[str, MethodEntry]:
    """The built-in methods, then those other packages register under :data:`ENTRY_POINT_GROUP`
    (loaded on first use: a plugin imports this module to build its entry)."""
    found = dict(BUILTIN_METHODS)
    for name, entry in entry_point_objects(ENTRY_POINT_GROUP).items():
        if not isinstance(entry, MethodEntry):
            raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP!r} is a {type(entry).__name__}, "
                            "not a MethodEntry")
        if entry.name != name:
            raise ValueError(f"entry point {name!r} of {ENTRY_POINT_GROUP!r} names its MethodEntry {entry.name!r}")
        if name in BUILTIN_METHODS:
            raise ValueError(f"entry point {name!r} of {ENTRY_POINT_GROUP!r} would replace a built-in method")
        found[name] = entry
    return found


def get_method(name: str) -> MethodEntry:
    methods = all_methods()
    try:
        return methods[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {tuple(methods)}") from None


def runnable_methods() -> tuple[str, ...]:
    """What ``run_method`` and ``rlalm infer --method`` run (single-call and multi-step methods)."""
    return tuple(name for name, e in all_methods().items() if e.runnable)


def single_call_methods() -> tuple[str, ...]:
    return tuple(name for name, e in all_methods().items() if e.kind == SINGLE)


def build_prompt(method: str, question: str, choices: Sequence[str], *,
                 few_shot: Sequence[prompts.FewShotExample] = ()) -> str:
    """The prompt text of a single-call method (``baseline``, ``idk``, ``mcot``, or a registered one).

    A multi-step method (the agent) builds its prompts from the model's own earlier outputs, step
    by step (:mod:`reliable_lalm.methods.agent`). ``few_shot`` is only accepted by a method that
    uses few-shot examples; passing it elsewhere is an error, not ignored.
    """
    entry = get_method(method)
    if entry.kind == MULTI_STEP:
        raise ValueError(f"the {method!r} method takes several calls, each built from the model's earlier answers")
    if entry.kind != SINGLE:
        raise ValueError(f"method {method!r} ({entry.kind}) has no single prompt")
    return entry.build_prompt(question, choices, few_shot)

