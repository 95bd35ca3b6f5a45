"""The paper's prompt templates (Appendix C, Tables 4-8) rendered exactly."""
from __future__ import annotations

import pytest

from reliable_lalm.core.normalize import normalize_answer
from reliable_lalm.core.prompts import (
    AGENT_AUDIO_TYPES,
    FewShotExample,
    agent_answer_prompt,
    agent_content_prompt,
    agent_type_prompt,
    agent_type_slot,
    build_normalization_prompt,
    parse_audio_type,
    render_few_shot,
)
from reliable_lalm.methods.registry import build_prompt

QUESTION = "What is the source of the sound?"
CHOICES = ("Dog barking", "Cat meowing", "Car horn", "Rain")
IDK_LINE = "Output 'IDK' if you don't know the answer."
MCOT_LINE = ("Let's think step by step. You can first analyze the sound, music, or speech and then answer "
             "the question. Output 'IDK' if you don't know the answer.")

BASELINE = (
    "What is the source of the sound?\n"
    "Select one option from the provided choices:\n"
    "Dog barking\n"
    "Cat meowing\n"
    "Car horn\n"
    "Rain"
)

EXAMPLES = (
    FewShotExample("How many people speak?", ("One", "Two"), "Two different voices alternate.", "Two"),
    FewShotExample("Which instrument plays?", ["Piano", "Violin", "Drums"], "The tone is too faint to tell.", "IDK"),
)
EXAMPLES_BLOCK = (
    "Example 1:\n"
    "How many people speak?\n"
    "Select one option from the provided choices:\n"
    "One\n"
    "Two\n"
    "Reasoning: Two different voices alternate.\n"
    "Answer: Two\n"
    "\n"
    "Example 2:\n"
    "Which instrument plays?\n"
    "Select one option from the provided choices:\n"
    "Piano\n"
    "Violin\n"
    "Drums\n"
    "Reasoning: The tone is too faint to tell.\n"
    "Answer: IDK"
)


def test_public_constants():
    from reliable_lalm.methods.registry import get_method

    # The paper's methods are registered with the table that prints each (others may be added).
    assert {name: get_method(name).paper_template for name in ("baseline", "idk", "mcot", "agent")} == {
        "baseline": "Table 4", "idk": "Table 5", "mcot": "Table 6", "agent": "Table 7"}
    assert AGENT_AUDIO_TYPES == ("Sound", "Music", "Speech")


def test_follow_up_prompts():
    from reliable_lalm.methods.registry import get_method, runnable_methods

    body = f"{QUESTION}\nChoices:\n" + "\n".join(CHOICES) + f"\nProposed answer: {CHOICES[1]}"
    assert get_method("p-true").build_follow_up(QUESTION, CHOICES, f"  {CHOICES[1]} ") == (
        f"{body}\nIs the proposed answer true or false? Answer with True or False only.")
    assert get_method("verbalized-confidence").build_follow_up(QUESTION, CHOICES, CHOICES[1]) == (
        f"{body}\nHow confident are you that the proposed answer is correct? Reply with a number from 0 to 100 only.")
    with pytest.raises(ValueError, match="no single prompt"):
        build_prompt("p-true", QUESTION, CHOICES)
    with pytest.raises(ValueError, match="proposed answer is empty"):
        get_method("p-true").build_follow_up(QUESTION, CHOICES, " ")
    with pytest.raises(ValueError, match="not a follow-up"):
        get_method("baseline").build_follow_up(QUESTION, CHOICES, CHOICES[0])
    runnable = runnable_methods()
    assert "p-true" not in runnable and "verbalized-confidence" not in runnable  # their own runners


def test_baseline_table4():
    assert build_prompt("baseline", QUESTION, CHOICES) == BASELINE


def test_idk_table5():
    assert build_prompt("idk", QUESTION, CHOICES) == f"{BASELINE}\n{IDK_LINE}"


def test_mcot_table6_without_examples():
    assert build_prompt("mcot", QUESTION, CHOICES) == f"{BASELINE}\n{MCOT_LINE}"


def test_mcot_table6_with_examples():
    assert render_few_shot(EXAMPLES) == EXAMPLES_BLOCK
    assert build_prompt("mcot", QUESTION, CHOICES, few_shot=EXAMPLES) == f"{EXAMPLES_BLOCK}\n\n{BASELINE}\n{MCOT_LINE}"


def test_few_shot_example_choices_become_a_tuple():
    assert EXAMPLES[1].choices == ("Piano", "Violin", "Drums")


def test_few_shot_answer_must_be_a_choice_or_idk():
    bad = FewShotExample("Q?", ("One", "Two"), "Because.", "Three")
    with pytest.raises(ValueError, match="Three"):
        render_few_shot([bad])


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_any_number_of_choices(count):
    choices = [f"Option text {index}" for index in range(count)]
    lines = build_prompt("idk", QUESTION, choices).split("\n")
    assert lines == [QUESTION, "Select one option from the provided choices:", *choices, IDK_LINE]


@pytest.mark.parametrize("count", [0, 1, 9])
def test_choice_count_out_of_range(count):
    with pytest.raises(ValueError):
        build_prompt("baseline", QUESTION, [f"c{index}" for index in range(count)])


def test_whitespace_is_collapsed_so_each_choice_stays_on_one_line():
    prompt = build_prompt("baseline", "  What\nis it?  ", [" Dog\n barking ", "Rain\t\tfalling"])
    assert prompt == "What is it?\nSelect one option from the provided choices:\nDog barking\nRain falling"


@pytest.mark.parametrize("question,choices", [("", CHOICES), ("   ", CHOICES), (QUESTION, ("Rain", " "))])
def test_empty_question_or_choice_is_rejected(question, choices):
    with pytest.raises(ValueError):
        build_prompt("baseline", question, choices)


def test_choices_given_as_a_string_are_rejected():
    with pytest.raises(TypeError):
        build_prompt("baseline", QUESTION, "Rain")


def test_unknown_method_agent_and_misplaced_few_shot_are_errors():
    with pytest.raises(ValueError, match="unknown method"):
        build_prompt("cot", QUESTION, CHOICES)
    with pytest.raises(ValueError, match="several calls"):
        build_prompt("agent", QUESTION, CHOICES)
    with pytest.raises(ValueError, match="takes no few-shot"):
        build_prompt("idk", QUESTION, CHOICES, few_shot=EXAMPLES)


def test_prompts_are_ascii():
    from reliable_lalm.methods.registry import single_call_methods

    for method in single_call_methods():
        build_prompt(method, QUESTION, CHOICES).encode("ascii")
    build_normalization_prompt("Dog barking", CHOICES).encode("ascii")
    agent_answer_prompt("Sound", "a dog", QUESTION, CHOICES).encode("ascii")


# --- task agent (Table 7)


def test_agent_type_prompt():
    assert agent_type_prompt() == (
        "Identify the type of audio. Select one option from the provided choices:\nSound\nMusic\nSpeech"
    )


@pytest.mark.parametrize("audio_type,expected", [
    ("Sound", "What is the Sound content?"),  # Table 7 writes {Type}, the step-1 option: never lowercased
    ("Music", "What is the Music content?"),
    (" Speech ", "What is the Speech content?"),
])
def test_agent_content_prompt_uses_the_type_as_given(audio_type, expected):
    assert agent_content_prompt(audio_type) == expected


def test_agent_content_prompt_rejects_an_empty_type():
    with pytest.raises(ValueError):
        agent_content_prompt("  ")


def test_agent_answer_prompt():
    prompt = agent_answer_prompt("Sound", " A dog barks twice,\nthen a car passes. ", QUESTION, CHOICES)
    assert prompt == f"The Sound content is: A dog barks twice, then a car passes.\n{BASELINE}\n{IDK_LINE}"


@pytest.mark.parametrize("output,expected", [
    ("Sound", "Sound"),  # the option as Table 7 spells it
    ("music", "Music"),
    ("It is music.", "Music"),
    ("This audio is speech, not music.", "Speech"),
    ("I don't know", "I don't know"),  # no option named: the reply itself fills {Type}
    ("Music and\nspeech", "Music and speech"),  # several named: the reply itself, on one line
    ("", None),  # nothing to fill {Type} with: the item ends with an empty answer
    ("  \n ", None),
])
def test_agent_type_slot_policy_for_step_1_replies(output, expected):
    assert agent_type_slot(output) == expected


@pytest.mark.parametrize("output,expected", [
    ("Sound", "Sound"),
    ("music", "Music"),
    ("SPEECH.", "Speech"),
    ("It is music.", "Music"),
    ("The type of audio is: Speech", "Speech"),
    ("**Sound**", "Sound"),
    ("This audio is speech, not music.", "Speech"),
    ("It sounds like a dog.", None),  # 'sounds' is a verb here
    ("A musician is playing.", None),
    ("Music and speech", None),
    ("Sound, music or speech", None),
    ("I don't know", None),
    ("", None),
])
def test_parse_audio_type(output, expected):
    assert parse_audio_type(output) == expected


# --- answer normalization prompt (Table 8)


def test_normalization_prompt_table8():
    assert build_normalization_prompt("It is probably a dog.", CHOICES) == (
        "According to the answer, select one option from the provided choices.\n"
        "The answer is: It is probably a dog.\n"
        "The choices are:\n"
        "Dog barking\n"
        "Cat meowing\n"
        "Car horn\n"
        "Rain\n"
        "IDK\n"
        "Don't output any other information."
    )


def test_normalization_prompt_flattens_a_long_answer_and_allows_an_empty_one():
    prompt = build_normalization_prompt("Step 1: listen.\n\nStep 2: it is rain.", ("Rain", "Snow"))
    assert prompt.split("\n")[1] == "The answer is: Step 1: listen. Step 2: it is rain."
    assert build_normalization_prompt("", ("Rain", "Snow")).split("\n")[1] == "The answer is:"


def test_few_shot_answer_format_is_read_by_the_normalizer():
    """A model imitating the few-shot layout ends with 'Answer: X', which the rule normalizer reads."""
    imitation = render_few_shot([FewShotExample(QUESTION, CHOICES, "Low repeated barks.", "Car horn")])
    assert normalize_answer(imitation.split("\n", 1)[1], CHOICES).choice == "Car horn"
