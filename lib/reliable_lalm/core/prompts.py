"""The paper's prompt templates (Appendix C, Tables 4-8) as data, for 2-8 choices.

Whitespace, decided once for every template (the paper prints each template on one line, so the
layout below is ours; the words are the paper's, with ASCII quotes instead of typographic ones):

* Parts are joined with a single ``"\\n"``; a prompt never starts or ends with whitespace.
* The question and every choice are stripped and any run of whitespace inside them (newlines
  included) becomes one space, so each choice occupies exactly one line.
* Choices are plain option text, one per line, in the given order, without letters (as in the paper).
* A fixed instruction sentence sits on its own line, right after the last choice.
* MCoT few-shot examples come first, each separated from the next and from the query by one
  blank line (``"\\n\\n"``). Table 6 orders the turn "{Few-shot Examples} {Audio} {Question} ...":
  :func:`mcot_prompt_parts` gives the text before the audio (the examples) and after it (the
  query); backends that place text before the audio in the chat turn do so (Qwen2-Audio's content
  list: text, audio, text), others get the joined text after the audio. An example is rendered as ``Example {i}:``, its question, the selection
  line and its choices, then ``Reasoning: {reasoning}`` and ``Answer: {answer}`` (the paper does not
  show an example's layout; ``Answer:`` on the last line is the cue the rule-based normalizer reads).

Baseline (Table 4)::

    {question}
    Select one option from the provided choices:
    {choice 1}
    ...
    {choice n}

IDK prompting (Table 5) adds the line ``Output 'IDK' if you don't know the answer.``; MCoT
(Table 6) puts the few-shot examples in front and adds the step-by-step line (which ends with the
same IDK sentence). The task agent (Table 7) is three calls: :func:`agent_type_prompt`,
:func:`agent_content_prompt`, :func:`agent_answer_prompt`. The answer-normalization prompt for an
LLM judge (Table 8) is :func:`build_normalization_prompt`.

Stored results are keyed on each record's rendered prompt text, so a change to any template is a new
key by itself (no version number to bump).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from reliable_lalm.core.items import MAX_CHOICES, MIN_CHOICES
from reliable_lalm.core.normalize_types import IDK_LABEL

SELECT_INSTRUCTION = "Select one option from the provided choices:"
IDK_INSTRUCTION = f"Output '{IDK_LABEL}' if you don't know the answer."
MCOT_INSTRUCTION = (
    "Let's think step by step. You can first analyze the sound, music, or speech and then answer the "
    f"question. {IDK_INSTRUCTION}"
)

AGENT_AUDIO_TYPES: tuple[str, ...] = ("Sound", "Music", "Speech")
AGENT_TYPE_INSTRUCTION = "Identify the type of audio."

NORMALIZATION_INSTRUCTION = "According to the answer, select one option from the provided choices."
NORMALIZATION_CLOSING = "Don't output any other information."


@dataclass(frozen=True)
class FewShotExample:
    """One worked MCoT example; ``answer`` is one of ``choices`` or ``"IDK"``."""

    question: str
    choices: tuple[str, ...]
    reasoning: str
    answer: str

    def __post_init__(self) -> None:
        # Accept lists from JSON but keep the dataclass hashable and immutable.
        object.__setattr__(self, "choices", tuple(self.choices))


def _one_line(text: str, what: str) -> str:
    """Strip and collapse whitespace so a value cannot break the one-item-per-line layout."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    flat = re.sub(r"\s+", " ", text).strip()
    if not flat:
        raise ValueError(f"{what} is empty")
    return flat


def _clean_choices(choices: Sequence[str]) -> list[str]:
    if isinstance(choices, str):  # a lone string would be split into characters
        raise TypeError("choices must be a sequence of strings, not a string")
    cleaned = [_one_line(choice, "a choice") for choice in choices]
    if not MIN_CHOICES <= len(cleaned) <= MAX_CHOICES:
        raise ValueError(f"{len(cleaned)} choices; {MIN_CHOICES}-{MAX_CHOICES} are supported")
    return cleaned


def render_choices(choices: Sequence[str]) -> str:
    """The choices, one per line, without letters."""
    return "\n".join(_clean_choices(choices))


def _question_block(question: str, choices: Sequence[str]) -> str:
    """``{question}`` / selection instruction / choices: the body shared by Tables 4-7."""
    return "\n".join([_one_line(question, "question"), SELECT_INSTRUCTION, render_choices(choices)])


def baseline_prompt(question: str, choices: Sequence[str]) -> str:
    """Table 4."""
    return _question_block(question, choices)


def idk_prompt(question: str, choices: Sequence[str]) -> str:
    """Table 5 (also the last step of the task agent)."""
    return f"{_question_block(question, choices)}\n{IDK_INSTRUCTION}"


def render_few_shot(examples: Sequence[FewShotExample]) -> str:
    """The ``{Few-shot Examples}`` block of Table 6; empty string for no examples."""
    blocks = []
    for number, example in enumerate(examples, start=1):
        choices = _clean_choices(example.choices)
        answer = _one_line(example.answer, f"few-shot example {number} answer")
        if answer not in choices and answer != IDK_LABEL:
            raise ValueError(f"few-shot example {number}: answer {answer!r} is neither a choice nor {IDK_LABEL!r}")
        reasoning = _one_line(example.reasoning, f"few-shot example {number} reasoning")
        blocks.append("\n".join([
            f"Example {number}:",
            _question_block(example.question, choices),
            f"Reasoning: {reasoning}",
            f"Answer: {answer}",
        ]))
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class PromptParts:
    """A user turn's text around its audio: ``before_audio`` (may be empty), the audio, ``after_audio``."""

    before_audio: str
    after_audio: str

    @property
    def text(self) -> str:
        """The joined text (what a backend without a text part before the audio receives)."""
        return f"{self.before_audio}\n\n{self.after_audio}" if self.before_audio else self.after_audio

    @property
    def key_text(self) -> str:
        """The text with the audio's position marked (results are keyed on it: order matters)."""
        return f"{self.before_audio}\n\x1e{{Audio}}\x1e\n{self.after_audio}" if self.before_audio else self.after_audio


def mcot_prompt_parts(question: str, choices: Sequence[str], few_shot: Sequence[FewShotExample] = ()) -> PromptParts:
    """Table 6 in its order: the few-shot examples before the audio, the query after it."""
    return PromptParts(render_few_shot(few_shot), f"{_question_block(question, choices)}\n{MCOT_INSTRUCTION}")


def mcot_prompt(question: str, choices: Sequence[str], few_shot: Sequence[FewShotExample] = ()) -> str:
    """Table 6 as one text: few-shot examples (passed by the caller, e.g. from a training split), then
    the query (:func:`mcot_prompt_parts` keeps the audio's place between them)."""
    return mcot_prompt_parts(question, choices, few_shot).text


# ---------------------------------------------------------------------------------------------
# Task agent (Table 7)


def agent_type_prompt() -> str:
    """Step 1: ask for the audio type."""
    return "\n".join([f"{AGENT_TYPE_INSTRUCTION} {SELECT_INSTRUCTION}", *AGENT_AUDIO_TYPES])


# Whole words only, so "sounds like" (a verb) and "musician" are not read as a type.
_AUDIO_TYPE_WORD = re.compile(r"\b(sound|music|speech)\b", re.IGNORECASE)
_NEGATED_TYPE = re.compile(r"\b(?:not|no|isn't|isnt|never)\s+(?:a\s+|an\s+|the\s+)?(sound|music|speech)\b", re.IGNORECASE)


def parse_audio_type(output: str) -> str | None:
    """Map the model's step-1 reply to ``"Sound"``, ``"Music"`` or ``"Speech"``.

    Case and punctuation are ignored and a sentence is fine ("It is music."). A type preceded by a
    negation ("not speech") does not count. ``None`` when no type or more than one type is named.
    """
    if not isinstance(output, str):
        return None
    negated = {match.group(1).lower() for match in _NEGATED_TYPE.finditer(output)}
    named = {match.group(1).lower() for match in _AUDIO_TYPE_WORD.finditer(output)}
    affirmed = named - negated
    if len(affirmed) != 1:
        return None
    return affirmed.pop().capitalize()


def agent_type_slot(step1_output: str) -> str | None:
    """What fills Table 7's {Type} in steps 2 and 3, given the model's step-1 reply.

    The paper writes {Type}, the step-1 output, whose options are capitalised ("Sound", "Music",
    "Speech"); it says nothing of a reply that names no option. Our policy:

    * the reply names exactly one type (:func:`parse_audio_type`): that option as Table 7 spells it
      ("It is music." -> "Music"; never lowercased);
    * it names none, or several: the reply itself on one line, since the template substitutes the
      step-1 output as it is (the run records a warning saying so);
    * an empty reply: ``None``; there is nothing to substitute and the item ends with an empty
      answer, scored invalid (wrong), with a warning.
    """
    option = parse_audio_type(step1_output)
    if option is not None:
        return option
    flat = re.sub(r"\s+", " ", step1_output).strip() if isinstance(step1_output, str) else ""
    return flat or None


def agent_content_prompt(audio_type: str) -> str:
    """Step 2: ask for the content of the identified type, {Type} as given (:func:`agent_type_slot`)."""
    return f"What is the {_one_line(audio_type, 'audio type')} content?"


def agent_answer_prompt(audio_type: str, content: str, question: str, choices: Sequence[str]) -> str:
    """Step 3: the step-2 description, then the IDK prompt (Table 5 body); {Type} as in step 2."""
    return (f"The {_one_line(audio_type, 'audio type')} content is: {_one_line(content, 'content')}\n"
            f"{idk_prompt(question, choices)}")


# ---------------------------------------------------------------------------------------------
# Follow-up prompts about the model's own answer (beyond the paper: uncertainty estimators)

P_TRUE_INSTRUCTION = "Is the proposed answer true or false? Answer with True or False only."
P_TRUE_ANSWERS: tuple[str, str] = ("True", "False")
VERBALIZED_INSTRUCTION = ("How confident are you that the proposed answer is correct? "
                          "Reply with a number from 0 to 100 only.")


def _proposed_block(question: str, choices: Sequence[str], proposed_answer: str) -> str:
    """``{question}`` / ``Choices:`` / the choices / ``Proposed answer: {answer}`` (the model's own)."""
    return "\n".join([_one_line(question, "question"), "Choices:", render_choices(choices),
                      f"Proposed answer: {_one_line(proposed_answer, 'proposed answer')}"])


def p_true_prompt(question: str, choices: Sequence[str], proposed_answer: str) -> str:
    """P(True) (Kadavath et al., 2022): the model judges its own answer; the log-likelihoods of
    :data:`P_TRUE_ANSWERS` as the complete reply are compared."""
    return f"{_proposed_block(question, choices, proposed_answer)}\n{P_TRUE_INSTRUCTION}"


def verbalized_confidence_prompt(question: str, choices: Sequence[str], proposed_answer: str) -> str:
    """Verbalised confidence: a number from 0 to 100 for the model's own answer (parsed strictly by
    :func:`reliable_lalm.core.uncertainty.parse_verbalized_confidence`)."""
    return f"{_proposed_block(question, choices, proposed_answer)}\n{VERBALIZED_INSTRUCTION}"


# ---------------------------------------------------------------------------------------------
# Answer normalization by an LLM (Table 8)


def build_normalization_prompt(answer: str, choices: Sequence[str]) -> str:
    """Ask an LLM to map a free-form ``answer`` to one of ``choices`` or ``IDK``.

    An empty answer is allowed (the judge should then say IDK); the line is then ``The answer is:``.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    flat_answer = re.sub(r"\s+", " ", answer).strip()
    return "\n".join([
        NORMALIZATION_INSTRUCTION,
        f"The answer is: {flat_answer}".rstrip(),
        "The choices are:",
        render_choices(choices),
        IDK_LABEL,
        NORMALIZATION_CLOSING,
    ])


# ---------------------------------------------------------------------------------------------
# The toolkit's judge prompt (beyond the paper): the same task with the judging policy spelled out
# (docs/judging.md) and a constrained reply. The paper profile keeps Table 8.

JUDGE_INVALID_LABEL = "INVALID"  # the toolkit prompt's reply for an output that asserts no option

TOOLKIT_JUDGE_RULES = (
    "You judge the answer an audio model gave to a multiple-choice question. Decide which single option "
    "the answer asserts as its final answer. Judge only the answer's words, not the audio or the question.\n"
    "Rules:\n"
    f"- Reply {IDK_LABEL} if the answer declines to answer: it says it does not know, cannot tell, is unsure "
    "without choosing an option, that the audio lacks the information, or that none of the options fits.\n"
    "- An option the answer negates is not asserted (\"not a dog barking\", \"dog barking is absent\", "
    "\"unlikely to be a dog barking\").\n"
    "- If the answer asserts exactly one option and adds doubt (\"Dog barking, but I'm not sure\"), reply "
    "that option.\n"
    "- If the answer reasons about several options, use its final conclusion.\n"
    "- A letter refers to the options in the order listed (A is the first).\n"
    f"- Reply {JUDGE_INVALID_LABEL} if the answer hedges between options, only repeats the options or the "
    "instructions, is empty, or asserts none of the options.\n"
    "- An option whose own text reads like a refusal (\"Unknown\", \"Not sure\") is an option like any other.\n"
    f"Reply with exactly one line: the option text copied exactly as listed, or {IDK_LABEL}, or "
    f"{JUDGE_INVALID_LABEL}. No explanation."
)


def build_toolkit_judge_prompt(answer: str, choices: Sequence[str]) -> str:
    """The toolkit's judge prompt: :data:`TOOLKIT_JUDGE_RULES`, the lettered options, the answer verbatim."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    options = [f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(_clean_choices(choices))]
    return "\n".join([TOOLKIT_JUDGE_RULES, "Options:", *options, "Answer:", "<<<", answer.strip(), ">>>",
                      "Reply:"])


# Which prompt an LLM judge sends: "paper" is Table 8, "toolkit" the stronger default.
JUDGE_PROMPT_BUILDERS = {"paper": build_normalization_prompt, "toolkit": build_toolkit_judge_prompt}
