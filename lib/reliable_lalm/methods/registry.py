"""The method registry: each prompting method of the paper by name.

A method is either *single-call* (one prompt per item, built from the item's question and
choices: baseline, IDK, MCoT), *multi-step* (the task agent: three calls, each prompt built from
the model's earlier answers), *sampling* (K@N: N sampled answers of a single-call prompt per
item, from one shared prefill), or *follow-up* (a prompt about the model's own answer to another
method: P(True), verbalised confidence; run by :mod:`reliable_lalm.methods.uncertainty`). Runners look methods up here instead of branching on names.

Adding a method: a prompt function (or a runner) plus one :class:`MethodEntry` in :data:`METHODS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from reliable_lalm.core import prompts

SINGLE, MULTI_STEP, SAMPLING, FOLLOW_UP = "single-call", "multi-step", "sampling", "follow-up"


@dataclass(frozen=True)
class MethodEntry:
    name: str
    kind: str  # SINGLE | MULTI_STEP | SAMPLING | FOLLOW_UP
    default_max_new_tokens: int  # for the real 7B model; the demo's profile passes shorter ones
    # (question, choices[, few_shot]) -> text, for SINGLE; (question, choices, proposed answer) for FOLLOW_UP
    prompt: Callable[..., str] | None = None
    uses_few_shot: bool = False  # MCoT: few-shot examples come before the audio and the question
    prompt_parts: Callable[..., prompts.PromptParts] | None = None  # text before/after the audio (MCoT)
    paper_template: str = ""  # where the paper prints the prompt
    description: str = ""

    def build_prompt(self, question: str, choices: Sequence[str], few_shot: Sequence[prompts.FewShotExample] = ()) -> str:
        if self.prompt is None or self.kind == FOLLOW_UP:
            raise ValueError(f"method {self.name!r} ({self.kind}) has no single prompt")
        if few_shot and not self.uses_few_shot:
            raise ValueError(f"few-shot examples are only used by 'mcot', not {self.name!r}")
        return self.prompt(question, choices, few_shot) if self.uses_few_shot else self.prompt(question, choices)

    def build_parts(self, question: str, choices: Sequence[str],
                    few_shot: Sequence[prompts.FewShotExample] = ()) -> prompts.PromptParts:
        """The prompt split around the audio (MCoT: the examples before it, Table 6); else all after it."""
        if self.prompt_parts is not None:
            if few_shot and not self.uses_few_shot:
                raise ValueError(f"few-shot examples are only used by 'mcot', not {self.name!r}")
            return self.prompt_parts(question, choices, few_shot)
        return prompts.PromptParts("", self.build_prompt(question, choices, few_shot))

    def build_follow_up(self, question: str, choices: Sequence[str], proposed_answer: str) -> str:
        """The prompt about ``proposed_answer`` (the model's own answer), for FOLLOW_UP methods."""
        if self.kind != FOLLOW_UP or self.prompt is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) is not a follow-up prompt")
        return self.prompt(question, choices, proposed_answer)


METHODS: dict[str, MethodEntry] = {e.name: e for e in (
    MethodEntry("baseline", SINGLE, 64, prompts.baseline_prompt, paper_template="Table 4",
                description="the question and its choices; answer with one option"),
    MethodEntry("idk", SINGLE, 64, prompts.idk_prompt, paper_template="Table 5",
                description="the baseline prompt plus: answer IDK when unsure"),
    MethodEntry("mcot", SINGLE, 256, prompts.mcot_prompt, uses_few_shot=True, paper_template="Table 6",
                prompt_parts=prompts.mcot_prompt_parts,
                description="multimodal chain-of-thought: few-shot examples, then reason step by step"),
    MethodEntry("agent", MULTI_STEP, 128, paper_template="Table 7",
                description="task agent: audio type, then a content description, then the answer"),
    MethodEntry("knn", SAMPLING, 64, prompts.baseline_prompt, paper_template="section 3.2",
                description="K@N: N sampled answers per item (the IDK dataset's input)"),
    MethodEntry("p-true", FOLLOW_UP, 1, prompts.p_true_prompt, paper_template="beyond the paper",
                description="P(True): is the model's own answer true? 'True' vs 'False' scored, not generated"),
    MethodEntry("verbalized-confidence", FOLLOW_UP, 8, prompts.verbalized_confidence_prompt,
                paper_template="beyond the paper",
                description="verbalised confidence: a number from 0 to 100 for the model's own answer"),
)}


def get_method(name: str) -> MethodEntry:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {tuple(METHODS)}") from None


def single_call_methods() -> tuple[str, ...]:
    return tuple(name for name, e in METHODS.items() if e.kind == SINGLE)
