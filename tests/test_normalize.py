"""Rule-based answer normalization and MMAU's official string_match rule."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliable_lalm.core.normalize import (
    RuleBasedNormalizer,
    mmau_string_match,
    normalize_answer,
)
from reliable_lalm.core.normalize_types import Normalized

SOUNDS = ("Dog barking", "Cat meowing", "Car horn", "Rain")
SPEAKERS = ("Man", "Woman", "Child", "Robot")
SPEAKING = ("Man speaking", "Woman speaking", "Child speaking", "Robot")
NUMBERS = ("seven", "seventeen", "eight", "six")
DIGITS = ("2", "3", "4", "5")
GENRES = ("Funk rock", "Classical music", "Electronic rock", "Funk")
CERTAINTY = ("Yes", "No", "Maybe", "Not sure")
KNOW = ("They love assembling furniture together.", "They don't know Joey and Chandler.",
        "They are not coming over.", "Not genuinely excited about assembling.")
KNOW_TOKENS = ("marriage,social", "two,hours", "one,farthest", "you, know")
REFUSAL_CHOICE = ("I don't know", "Piano", "Violin", "Drums")
YEARS = ("one thousand, nine hundred and eighty", "one thousand, nine hundred and ninety-four",
         "one thousand, nine hundred and ninety", "two thousand and one")
CHORDS = ("C", "D", "G", "A")
KEYS = ("C#", "F#", "Ebm", "G#")
KEY_NAMES = ("C major", "A minor", "G major", "E minor")
WORDS = ("b", "Said", "Conjure", "I'd")
ARTICLE = ("A dog barking", "A cat meowing", "A car horn", "Rain falling")
YES_NO = ("Yes", "No")
INSTRUMENTS = ("Piano", "Violin", "Guitar", "Drums", "Flute", "Trumpet", "Cello", "Saxophone")

COT_CAR = ("Let's think step by step.\nThe audio begins with rain. I'm not sure about the rest, "
           "but a car horn is clearly audible.\nTherefore, it is a car horn.")
COT_ANSWER = ("Let's think step by step. The recording has a repetitive, low-pitched sound. A cat meowing "
              "would be higher pitched and rain would be continuous, so it is not a cat meowing.\n"
              "So the answer is Dog barking.")
COT_IDK = "Let's analyze. Rain can be heard faintly. A dog barking might be present.\nThe answer is IDK."
COT_LETTER = ("Option A is unlikely because the pitch is high. Option B matches the high pitch.\n"
              "**Answer:** (B)")
COT_AMBIGUOUS = "The clip could contain a dog barking, or a cat meowing, or perhaps a car horn."
FEW_SHOT_STYLE = "Reasoning: The sound is a low, repeated bark.\nAnswer: Dog barking"

CASES = [
    # (output, choices, expected kind, expected choice, expected method)
    ("Dog barking", SOUNDS, "choice", "Dog barking", "exact"),
    ("dog barking", SOUNDS, "choice", "Dog barking", "exact"),
    ("DOG BARKING", SOUNDS, "choice", "Dog barking", "exact"),
    ("Dog barking.", SOUNDS, "choice", "Dog barking", "exact"),
    ("  Rain!\n", SOUNDS, "choice", "Rain", "exact"),
    ('"Car horn"', SOUNDS, "choice", "Car horn", "exact"),
    ("<|im_start|>Rain<|im_end|>", SOUNDS, "choice", "Rain", "exact"),
    ("The answer is: Dog barking.", SOUNDS, "choice", "Dog barking", "answer_statement:exact"),
    ("Answer: Cat meowing", SOUNDS, "choice", "Cat meowing", "answer_statement:exact"),
    ("The correct answer is rain", SOUNDS, "choice", "Rain", "answer_statement:exact"),
    ("The answer is Dog barking, not Cat meowing.", SOUNDS, "choice", "Dog barking", "answer_statement:phrase"),
    ("The answer is Dog barking, and there is a car horn later.", SOUNDS, "choice", "Dog barking",
     "answer_statement:leading"),
    ("The sound is a dog barking, the answer is Cat meowing", SOUNDS, "choice", "Cat meowing",
     "answer_statement:exact"),
    # option letters
    ("B", SOUNDS, "choice", "Cat meowing", "letter"),
    ("(B)", SOUNDS, "choice", "Cat meowing", "letter"),
    ("B.", SOUNDS, "choice", "Cat meowing", "letter"),
    ("B)", SOUNDS, "choice", "Cat meowing", "letter"),
    ("[C]", SOUNDS, "choice", "Car horn", "letter"),
    ("B) Cat meowing", SOUNDS, "choice", "Cat meowing", "letter"),
    ("Answer: C", SOUNDS, "choice", "Car horn", "answer_statement:letter"),
    ("The answer is (D)", SOUNDS, "choice", "Rain", "answer_statement:letter"),
    ("The answer is D.", SOUNDS, "choice", "Rain", "answer_statement:letter"),
    ("Option B", SOUNDS, "choice", "Cat meowing", "letter"),
    ("I choose option (A).", SOUNDS, "choice", "Dog barking", "letter"),
    ("A", SOUNDS, "choice", "Dog barking", "letter"),
    ("Answer: E", SOUNDS, "invalid", None, "no_match"),  # E is beyond four choices
    ("b", SOUNDS, "invalid", None, "no_match"),  # lower-case letters are not option letters
    ("A) Cat meowing", SOUNDS, "choice", "Cat meowing", "phrase"),  # letter contradicts text: text wins
    ("The correct answer is B, Dog barking.", SOUNDS, "choice", "Dog barking", "answer_statement:phrase"),
    # the English article "A" is not option A
    ("A dog barking is heard.", SOUNDS, "choice", "Dog barking", "phrase"),
    ("The answer is A dog barking.", SOUNDS, "choice", "Dog barking", "answer_statement:phrase"),
    ("A cat meowing", ARTICLE, "choice", "A cat meowing", "exact"),
    ("I hear a car horn.", ARTICLE, "choice", "A car horn", "phrase"),
    ("B", ARTICLE, "choice", "A cat meowing", "letter"),
    # option text inside a sentence
    ("I think it's a dog barking.", SOUNDS, "choice", "Dog barking", "phrase"),
    ("It is not a dog barking, it's a cat meowing.", SOUNDS, "choice", "Cat meowing", "phrase"),
    ("It sounds like rain rather than a car horn.", SOUNDS, "choice", "Rain", "phrase"),
    ("Dog barking dog barking dog barking", SOUNDS, "choice", "Dog barking", "phrase"),
    ("Not a dog barking.", SOUNDS, "invalid", None, "no_match"),
    ("I think it's either a dog barking or a cat meowing.", SOUNDS, "invalid", None, "no_match"),
    ("The audio contains a car horn and rain.", SOUNDS, "invalid", None, "no_match"),
    ("The dog is barking", SOUNDS, "choice", "Dog barking", "mmau_token"),
    ("A man is speaking.", SPEAKING, "choice", "Man speaking", "mmau_token"),
    ("Woman speaking", SPEAKING, "choice", "Woman speaking", "exact"),
    ("The voice belongs to a woman.", SPEAKERS, "choice", "Woman", "phrase"),
    ("Man\nThe woman in the background is quiet.", SPEAKERS, "choice", "Man", "first_line:exact"),
    # long chain-of-thought outputs
    (COT_ANSWER, SOUNDS, "choice", "Dog barking", "answer_statement:exact"),
    (COT_CAR, SOUNDS, "choice", "Car horn", "last_line:phrase"),
    (COT_IDK, SOUNDS, "idk", None, "answer_statement:refusal"),
    (COT_LETTER, SOUNDS, "choice", "Cat meowing", "answer_statement:letter"),
    (COT_AMBIGUOUS, SOUNDS, "invalid", None, "no_match"),
    (FEW_SHOT_STYLE, SOUNDS, "choice", "Dog barking", "answer_statement:exact"),
    # refusals
    ("IDK", SOUNDS, "idk", None, "refusal"),
    ("idk.", SOUNDS, "idk", None, "refusal"),
    ("I don't know.", SOUNDS, "idk", None, "refusal"),
    ("I don\u2019t know the answer.", SOUNDS, "idk", None, "refusal"),
    ("I do not know.", SOUNDS, "idk", None, "refusal"),
    ("Don't know", SOUNDS, "idk", None, "refusal"),
    ("I'm not sure.", SOUNDS, "idk", None, "refusal"),
    ("It cannot be determined from the audio.", SOUNDS, "idk", None, "refusal"),
    ("The speaker's age can't be determined.", SPEAKERS, "idk", None, "refusal"),
    ("I am unable to answer this question.", SOUNDS, "idk", None, "refusal"),
    ("There is no way to tell.", SOUNDS, "idk", None, "refusal"),
    ("There is insufficient information in the audio.", SOUNDS, "idk", None, "refusal"),
    ("None of the above.", SOUNDS, "idk", None, "refusal"),
    # doubt next to one asserted option is that answer (docs/judging.md)
    ("It could be a dog barking, but I'm not sure.", SOUNDS, "choice", "Dog barking", "doubt"),
    # choices that contain refusal words: the choice wins
    ("Not sure", CERTAINTY, "choice", "Not sure", "exact"),
    ("I'm not sure.", CERTAINTY, "choice", "Not sure", "phrase"),
    ("I don't know", REFUSAL_CHOICE, "choice", "I don't know", "exact"),
    ("They don't know Joey and Chandler", KNOW, "choice", "They don't know Joey and Chandler.", "exact"),
    ("Maybe they don't know Joey and Chandler.", KNOW, "choice", "They don't know Joey and Chandler.", "phrase"),
    ("you know", KNOW_TOKENS, "choice", "you, know", "exact"),
    ("I don't know", KNOW_TOKENS, "idk", None, "refusal"),
    ("The word is known.", KNOW_TOKENS, "invalid", None, "no_match"),
    # numbers and choices contained in other choices
    ("seventeen", NUMBERS, "choice", "seventeen", "exact"),
    ("There are seven people.", NUMBERS, "choice", "seven", "phrase"),
    ("I count seventeen beeps.", NUMBERS, "choice", "seventeen", "phrase"),
    ("Seven.", NUMBERS, "choice", "seven", "exact"),
    ("There are 3 speakers.", DIGITS, "choice", "3", "phrase"),
    ("2.5 seconds", DIGITS, "invalid", None, "no_match"),
    ("It is funk rock music.", GENRES, "choice", "Funk rock", "phrase"),
    ("It is funk, not funk rock.", GENRES, "choice", "Funk", "phrase"),
    ("rock", GENRES, "invalid", None, "no_match"),
    ("The year is one thousand nine hundred and ninety.", YEARS, "choice",
     "one thousand, nine hundred and ninety", "phrase"),
    ("It was recorded in one thousand, nine hundred and ninety-four.", YEARS, "choice",
     "one thousand, nine hundred and ninety-four", "phrase"),
    # choices that look like letters: the choice text wins, letters are off
    ("A", CHORDS, "choice", "A", "exact"),
    ("The chord is G.", CHORDS, "choice", "G", "phrase"),
    ("(B)", WORDS, "choice", "b", "exact"),
    ("C#", KEYS, "choice", "C#", "exact"),
    ("The key is F# major.", KEYS, "choice", "F#", "phrase"),
    ("C", KEYS, "choice", "C#", "mmau_token"),  # MMAU's tokens drop '#', so its scorer accepts this too
    ("A", KEY_NAMES, "invalid", None, "no_match"),  # letter A or the key A minor? unclear
    ("The key is A minor.", KEY_NAMES, "choice", "A minor", "phrase"),
    # two and eight choices
    ("Yes", YES_NO, "choice", "Yes", "exact"),
    ("No, the speaker is not angry.", YES_NO, "choice", "No", "phrase"),
    ("Yes, the speaker is not angry.", YES_NO, "choice", "Yes", "phrase"),
    ("C", YES_NO, "invalid", None, "no_match"),
    ("The answer is H.", INSTRUMENTS, "choice", "Saxophone", "answer_statement:letter"),
    ("G", INSTRUMENTS, "choice", "Cello", "letter"),
    ("(F) Trumpet", INSTRUMENTS, "choice", "Trumpet", "letter"),
    ("I hear a cello and a piano.", INSTRUMENTS, "invalid", None, "no_match"),
    ("It is a saxophone solo.", INSTRUMENTS, "choice", "Saxophone", "phrase"),
    # empty and garbage
    ("", SOUNDS, "invalid", None, "empty"),
    ("   \n\t", SOUNDS, "invalid", None, "empty"),
    ("asdf qwerty", SOUNDS, "invalid", None, "no_match"),
    ("...", SOUNDS, "invalid", None, "no_match"),
    ("Speech", SOUNDS, "invalid", None, "no_match"),
]


EMOTIONS_ZH = ("高兴", "悲伤", "愤怒", "平静")
UNKNOWN = ("Male", "Female", "Unknown")

# The judging policy (docs/judging.md), one case per decision it makes.
POLICY_CASES = [
    # negation reaches over the clause, and follows the option as its predicate
    ("I don't think it's a dog barking.", SOUNDS, "invalid", None, "no_match"),
    ("It's unlikely to be a dog barking.", SOUNDS, "invalid", None, "no_match"),
    ("Dog barking is absent from the recording.", SOUNDS, "invalid", None, "no_match"),
    ("The dog is not barking.", SOUNDS, "invalid", None, "no_match"),  # no token rule next to a negation
    ("It is not a dog barking but a cat meowing.", SOUNDS, "choice", "Cat meowing", "phrase"),
    ("A dog barking that never stops.", SOUNDS, "choice", "Dog barking", "phrase"),
    ("It is a cat meowing instead of a dog barking.", SOUNDS, "choice", "Cat meowing", "phrase"),
    # doubt next to one option is that answer; doubt about the options is a refusal
    ("Dog barking, but I'm not sure.", SOUNDS, "choice", "Dog barking", "doubt"),
    ("I'm not sure, but I think it is rain.", SOUNDS, "choice", "Rain", "doubt"),
    ("I'm not sure whether it is a dog barking or a cat meowing.", SOUNDS, "idk", None, "refusal"),
    ("It could be rain or wind, I can't tell.", SOUNDS, "idk", None, "refusal"),
    ("Rain is heard, with some background noise. The answer is IDK", SOUNDS, "idk", None,
     "answer_statement:refusal"),
    ("Rain is heard, with some background noise. It is IDK", SOUNDS, "idk", None, "refusal"),  # not doubt
    ("The audio is unclear, but it sounds like rain.", SOUNDS, "choice", "Rain", "doubt"),
    ("Rain is heard. I have no idea what else.", SOUNDS, "idk", None, "refusal"),  # outright: not doubt
    # hedges
    ("It could be rain or wind.", SOUNDS, "invalid", None, "hedge"),
    # refusals in more phrasings
    ("It's hard to tell.", SOUNDS, "idk", None, "refusal"),
    ("Unclear.", SOUNDS, "idk", None, "refusal"),
    ("I'm sorry, I can't help with that.", SOUNDS, "idk", None, "refusal"),
    ("The answer is unknown.", SOUNDS, "idk", None, "answer_statement:refusal"),
    ("我不知道。", SOUNDS, "idk", None, "refusal"),
    # options with refusal words stay options
    ("The speaker's gender is unknown.", UNKNOWN, "choice", "Unknown", "phrase"),
    # echoes of the prompt
    ("Rain. Output 'IDK' if you don't know the answer.", SOUNDS, "choice", "Rain", "exact"),
    ("Output 'IDK' if you don't know the answer.", SOUNDS, "invalid", None, "echo_instruction"),
    ("Dog barking\nCat meowing\nCar horn\nRain", SOUNDS, "invalid", None, "echo_choices"),
    # conclusions after weighing options
    ("Rain and a car horn are both possible, but the rhythm points to a dog barking.", SOUNDS, "choice",
     "Dog barking", "conclusion:phrase"),
    # Chinese
    ("答案是 Rain。", SOUNDS, "choice", "Rain", "answer_statement:exact"),
    ("说话人非常高兴。", EMOTIONS_ZH, "choice", "高兴", "phrase"),
    ("说话人不是高兴，而是平静。", EMOTIONS_ZH, "choice", "平静", "phrase"),
]


@pytest.mark.parametrize("output,choices,kind,choice,method", POLICY_CASES)
def test_judging_policy(output, choices, kind, choice, method):
    assert normalize_answer(output, choices) == Normalized(kind, choice, method)


@pytest.mark.parametrize("output,choices,kind,choice,method", CASES)
def test_normalize_answer(output, choices, kind, choice, method):
    assert normalize_answer(output, choices) == Normalized(kind, choice, method)


def test_at_least_sixty_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("output,expected", [
    ("IDK", True),
    ("I don't know", True),
    ("I honestly do not know.", True),
    ("It is not possible to determine the speaker.", True),
    ("Not enough information.", True),
    ("None of the options fit.", True),
    ("none of the speakers", False),  # an MMAU choice text, not a refusal
    ("They don't know Joey.", False),
    ("Dog barking", False),
    ("I know it is a dog.", False),
    ("", False),
])
def test_refusal_is_decided_idk(output, expected):
    choices = ("Dog barking", "Cat meowing", "none of the speakers")
    assert (normalize_answer(output, choices).kind == "idk") is expected


MMAU_RULE_CASES = [
    # (answer, prediction, choices, expected) per the rule in MMAU's evaluation.py
    ("Dog barking", "dog barking", SOUNDS, True),
    ("Dog barking", "I think it is a Dog Barking!", SOUNDS, True),
    ("Dog barking", "", SOUNDS, False),  # empty prediction
    ("Dog barking", "?!", SOUNDS, False),  # no tokens at all
    ("Dog barking", "dog", SOUNDS, False),  # 'barking' missing
    ("Dog barking", "dog barking and cat meowing", SOUNDS, False),  # tokens of another choice
    ("Man speaking", "a man speaking", SPEAKING, True),  # 'speaking' is shared, so allowed
    ("Man speaking", "speaking", SPEAKING, False),
    ("Man speaking", "woman speaking", SPEAKING, False),
    ("Funk", "funk rock", GENRES, False),  # 'rock' belongs to other choices
    ("Funk rock", "funk", GENRES, False),
    ("Funk rock", "it is funk rock", GENRES, True),
    ("funk rock", "rock funk", ("rock funk", "funk rock", "jazz"), True),  # same token set skipped
    ("C#", "C", KEYS, True),  # \w drops '#'
    ("2", "2.5", DIGITS, False),  # '5' is another choice
    ("Dog barking", "IDK", SOUNDS, False),
    ("you, know", "you know", KNOW_TOKENS, True),
]


@pytest.mark.parametrize("answer,prediction,choices,expected", MMAU_RULE_CASES)
def test_mmau_string_match(answer, prediction, choices, expected):
    assert mmau_string_match(answer, prediction, choices) is expected


def test_rule_based_normalizer_batch():
    normalizer = RuleBasedNormalizer()
    assert normalizer.name == "rule"
    results = normalizer.normalize_many(["(C)", "IDK", "", "Rain."], [SOUNDS, SOUNDS, YES_NO, SOUNDS])
    assert results == [
        Normalized("choice", "Car horn", "letter"),
        Normalized("idk", None, "refusal"),
        Normalized("invalid", None, "empty"),
        Normalized("choice", "Rain", "exact"),
    ]
    assert [result.label for result in results] == ["Car horn", "IDK", "", "Rain"]


def test_rule_based_normalizer_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        RuleBasedNormalizer().normalize_many(["B"], [SOUNDS, SOUNDS])


def test_choices_must_be_a_sequence():
    with pytest.raises(TypeError):
        normalize_answer("Rain", "Rain")
    with pytest.raises(ValueError):
        normalize_answer("Rain", [])


MMAU_FILES = sorted((Path(__file__).resolve().parents[2] / "shared" / "mmau").glob("mmau-test-mini*.json"))


@pytest.mark.skipif(not MMAU_FILES, reason="MMAU test-mini metadata is not available here")
def test_every_mmau_choice_maps_back_to_itself():
    """Each real choice text, bare and in an answer statement, normalizes to exactly that choice."""
    for path in MMAU_FILES:
        for record in json.loads(path.read_text(encoding="utf-8")):
            choices = list(dict.fromkeys(str(choice).strip() for choice in record["choices"]))
            for choice in choices:
                assert normalize_answer(choice, choices) == Normalized("choice", choice, "exact"), (record["id"], choice)
                stated = normalize_answer(f"The answer is {choice}", choices)
                assert stated.choice == choice, (record["id"], choice, stated)
