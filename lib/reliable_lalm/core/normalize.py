"""Rule-based normalization of a raw model output to one choice, a refusal (IDK) or invalid.

The paper extracts answers with rules and then with gpt-4o-mini (Table 8); this module is the
rule-based half and never guesses: when the rules do not single out one choice, the output is
``invalid``.

Order of the rules, applied to one piece of text (a *segment*):

1. ``exact``: the segment equals a choice, ignoring case, punctuation and spacing. Comes before
   refusal detection so a choice such as "Not sure" or "I don't know" is taken as that choice.
2. ``refusal``: a refusal phrase (see :data:`REFUSAL_PATTERNS`), unless the phrase lies inside a
   mention of one of this item's choices (choice "Not sure" answered with "I'm not sure" is the
   choice). "None of the options/choices/above" counts as a refusal: it declines every option, and
   the LLM judge of Table 8 (choices + IDK only) would map it to IDK too.
3. ``letter``: an option letter, A = first choice: "B", "(B)", "B.", "B) ...", "[B]", "Answer: B",
   "The answer is (B)", "Option B". Upper-case letters only, within the number of choices; "A dog"
   is not a letter. Letters are switched off for an item whose choices are themselves letter-like
   ("A", "C#", "Bm", "A/G": key and chord questions), and a letter that contradicts a choice text
   named in the same segment is dropped (the prompts show no letters, so the text is more reliable).
4. ``phrase``: the segment mentions exactly one choice as a whole-word phrase. A mention inside a
   longer mention is dropped ("funk" in "funk rock"; "seven" never matches inside "seventeen"), and
   a negated mention ("not a dog barking", "rather than X") is dropped, so "not A but B" gives B.
   Two different choices still mentioned: ambiguous, next rule.
5. ``leading``: only for an answer statement: the text after "the answer is" starts with a choice
   ("The answer is Dog barking, because ...").
6. ``mmau_token``: exactly one choice passes MMAU's official token rule (:func:`mmau_string_match`),
   leaving out choices the segment negates. The token rule keeps only word characters, so, as in
   MMAU's scorer, "C" passes for choice "C#" when no other choice has the token "c".

Hedges: a segment that names two options is not an answer. When the letter, phrase, leading or
token rule would pick a choice from a segment that joins two different options with "or" ("3/4 or
4/4", "B or Car horn", "either A or B"), or the token rule from a segment naming two choices at all
("3/4 and 4/4": MMAU's token rule accepts "3/4" there because the tokens of "4/4" are among its
own), the output is ``invalid`` with method ``hedge``: picking one of them would be a guess.

Segments, tried in this order, first decision wins (``method`` gets the segment as a prefix):

* ``answer_statement:``: the rest of the line after each "answer is" / "Answer:" / "option is"
  cue, last cue first (chain-of-thought outputs end with their answer; the reasoning before it
  mentions several choices and words such as "not sure" about details);
* ``first_line:`` (exact rule only): a multi-line output whose first line is a choice, the
  rest explaining it ("Man\nThe woman in the background is silent.");
* ``last_line:``: the last non-empty line, for multi-line outputs;
* the whole output (no prefix).

An empty or whitespace-only output is ``invalid`` with method ``empty``; nothing matched is
``invalid`` with method ``no_match``.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterator, Sequence

from reliable_lalm.core.normalize_types import Normalized

# ---------------------------------------------------------------------------------------------
# MMAU's official scorer rule


def _mmau_tokens(text: str) -> set[str]:
    return set(re.findall(r"\b\w+\b", text.lower()))


def mmau_string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """MMAU's ``string_match``: does ``prediction`` count as ``answer``?

    Same behaviour as ``string_match`` in MMAU's evaluation.py (github.com/Sakshi113/MMAU; read
    through the public code index, not copied): lower-cased ``\\b\\w+\\b`` token sets; an empty
    prediction never matches; every answer token must be in the prediction; the prediction must
    share no token with the other choices, where a choice with the same token set as the answer is
    skipped and the answer's own tokens are removed from the rest ("shared words" are allowed).
    """
    prediction_tokens = _mmau_tokens(prediction)
    if not prediction_tokens:
        return False
    answer_tokens = _mmau_tokens(answer)
    other_choice_tokens: set[str] = set()
    for choice in choices:
        choice_tokens = _mmau_tokens(choice)
        if choice_tokens != answer_tokens:
            other_choice_tokens |= choice_tokens - answer_tokens
    return answer_tokens <= prediction_tokens and prediction_tokens.isdisjoint(other_choice_tokens)


# ---------------------------------------------------------------------------------------------
# Text cleaning and matching helpers

# Characters that belong to a token besides \w: musical sharps/flats and slash chords ("C#", "A/G").
_TOKEN_CHARS = r"\w#\u266f\u266d/+"
# A token: a run of token characters, keeping apostrophes inside words ("don't") and decimal or
# thousands separators inside numbers ("2.5", "1,000"). Choices are found as runs of whole tokens,
# so "seven" never matches inside "seventeen" and "2" never inside "2.5".
_TOKEN = re.compile(rf"(?:[{_TOKEN_CHARS}]|(?<=\w)'(?=\w)|(?<=\d)[.,](?=\d))+")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "`": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"'})
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|</?s>")  # chat-template leftovers such as <|im_end|>
_MARKDOWN = re.compile(r"\*+|^[ \t]*#+[ \t]+", re.MULTILINE)  # bold/italic stars, heading marks


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _SPECIAL_TOKEN.sub(" ", text)
    return _MARKDOWN.sub("", text)


def _key(text: str) -> str:
    """Case-, punctuation- and spacing-insensitive form used for exact comparison."""
    return " ".join(_TOKEN.findall(text.lower()))


# Words right before a mention that negate it ("not a dog barking", "rather than speech").
_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:not|no|never|nor|neither|rather\s+than|instead\s+of|other\s+than|as\s+opposed\s+to|"
    r"except(?:\s+for)?|excluding|rule\s+out|ruled\s+out|rules\s+out)|n't)"
    r"\s+(?:(?:a|an|the|just|simply|really|actually|exactly|be|from)\s+)?$",
    re.IGNORECASE,
)

# Refusal phrases. Subject-less "don't know" only at the very start, so "they don't know Joey"
# (a plausible choice text) is not a refusal.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bidk\b",
    r"(?:^\W*|\b(?:i|we)\s+(?:really\s+|honestly\s+|just\s+|simply\s+)?)(?:do\s+not|don't|dont|did\s+not|didn't)\s+know\b",
    r"\bnot\s+(?:sure|certain)\b",
    r"\b(?:i\s+am|i'm|im)\s+(?:unsure|uncertain)\b",
    r"\b(?:cannot|can't|cant|can\s+not|could\s+not|couldn't|unable\s+to|impossible\s+to|not\s+possible\s+to)"
    r"\s+(?:be\s+)?(?:determine|determined|tell|told|identify|identified|answer|answered|know|known|say|decide|decided|judge|judged)\b",
    r"\bno\s+way\s+to\s+(?:tell|know|determine|say)\b",
    r"\b(?:insufficient|not\s+enough|lack\s+of|not\s+sufficient)\s+(?:information|info|context|evidence|data|detail|details)\b",
    r"\bnone\s+of\s+the\s+(?:above|options|choices|answers|given\s+options|given\s+choices|provided\s+options|provided\s+choices)\b",
)
_REFUSAL = re.compile("|".join(f"(?:{pattern})" for pattern in REFUSAL_PATTERNS), re.IGNORECASE)

# "answer is", "Answer:", "the correct option is" ... ; the answer statement follows the cue.
_ANSWER_CUE = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be|"
    r"appears\s+to\s+be)\b\s*:?|\s*[:=])",
    re.IGNORECASE,
)

# Option-letter forms; group 1 is the letter. Letters are matched case-sensitively (only capitals).
_LETTER_FORMS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^[^\w]*([A-Z])[^\w]*$"),  # the whole segment: "B", "(B)", "B.", "'B'"
    re.compile(r"^[^\w]*(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.):\]])(?=\s|$)"),  # "B. Dog", "(B) Dog"
    re.compile(r"(?i:\banswer)(?:\s+(?i:is|would\s+be|should\s+be|will\s+be|must\s+be))?\s*[:=]?\s*"
               rf"(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])(?![{_TOKEN_CHARS}'])(?!\s+[a-z]))"),  # "Answer: B"
    re.compile(rf"(?i:\b(?:option|choice))\s*(?:\(([A-Z])\)|([A-Z])(?![{_TOKEN_CHARS}'])|\[([A-Z])\])"),
    re.compile(r"\(([A-Z])\)"),  # "(B)" anywhere
)

# A choice text that reads like an option letter: a bare letter, or a key/chord name ("C#", "Bm",
# "Eb", "A/G", "E6", "Dmaj7", "A minor"). Such items get no letter interpretation.
_LETTER_LIKE_CHOICE = re.compile(
    r"^([a-z])(?:$|[^a-z\s]|[bm](?![a-z]{2})|(?:maj|min|dim|aug|sus|add)|\s+(?:major|minor|flat|sharp)\b)"
)


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    choice_index: int
    negated: bool


class _Item:
    """One item's choices as token keys, plus whether option letters can be read for it."""

    def __init__(self, choices: Sequence[str]):
        if isinstance(choices, str):
            raise TypeError("choices must be a sequence of strings, not a string")
        self.choices = [str(choice) for choice in choices]
        if not self.choices:
            raise ValueError("no choices")
        self.keys = [_key(_clean(choice)) for choice in self.choices]
        self.key_tokens = [tuple(key.split()) for key in self.keys]
        self.letters = [chr(ord("A") + index) for index in range(min(len(self.choices), 26))]
        letter_range = {letter.lower() for letter in self.letters}
        self.letters_enabled = not any(
            (match := _LETTER_LIKE_CHOICE.match(key)) and match.group(1) in letter_range for key in self.keys
        )

    def mentions(self, text: str) -> list[_Mention]:
        """Choice mentions in ``text``, without those lying inside a longer mention of another choice."""
        tokens = list(_TOKEN.finditer(text))
        words = [token.group().lower() for token in tokens]
        found = []
        for index, choice_tokens in enumerate(self.key_tokens):
            size = len(choice_tokens)
            if not size:
                continue
            for position in range(len(words) - size + 1):
                if tuple(words[position:position + size]) != choice_tokens:
                    continue
                start, end = tokens[position].start(), tokens[position + size - 1].end()
                negated = bool(_NEGATION_BEFORE.search(text[max(0, start - 40):start]))
                found.append(_Mention(start, end, index, negated))
        return [
            mention for mention in found
            if not any(other.start <= mention.start and mention.end <= other.end
                       and other.end - other.start > mention.end - mention.start for other in found)
        ]


def _one(indices: set[int]) -> int | None:
    return next(iter(indices)) if len(indices) == 1 else None


def _refusal_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _REFUSAL.finditer(text)]


def is_refusal(output: str) -> bool:
    """Does ``output`` contain a refusal phrase (:data:`REFUSAL_PATTERNS`)? Knows nothing of the choices."""
    return isinstance(output, str) and bool(_refusal_spans(_clean(output)))


# ---------------------------------------------------------------------------------------------
# The rules on one segment


def _rule_exact(segment: str, item: _Item) -> int | None:
    key = _key(segment)
    return _one({index for index, choice_key in enumerate(item.keys) if key and key == choice_key})


def _rule_refusal(segment: str, mentions: list[_Mention]) -> bool:
    return any(
        not any(mention.start <= start and end <= mention.end for mention in mentions)
        for start, end in _refusal_spans(segment)
    )


def _rule_letter(segment: str, item: _Item, mentions: list[_Mention]) -> int | None:
    if not item.letters_enabled:
        return None
    letters = set()
    for form in _LETTER_FORMS:
        for match in form.finditer(segment):
            group = next(g for g in range(1, (form.groups or 0) + 1) if match.group(g) is not None)
            position = match.start(group)
            if any(mention.start <= position < mention.end for mention in mentions):
                continue  # the capital starts a choice text ("A dog barking"), not a letter
            if match.group(group) in item.letters:
                letters.add(item.letters.index(match.group(group)))
    letter_choice = _one(letters)
    if letter_choice is None:
        return None
    named = {mention.choice_index for mention in mentions if not mention.negated}
    if named and named != {letter_choice}:
        return None  # "(A) Cat meowing" where A is not "Cat meowing": let the text decide
    return letter_choice


def _rule_phrase(mentions: list[_Mention]) -> int | None:
    return _one({mention.choice_index for mention in mentions if not mention.negated})


def _rule_leading(segment: str, mentions: list[_Mention]) -> int | None:
    """The answer statement starts with a choice (after opening punctuation)."""
    first_token = _TOKEN.search(segment)
    if first_token is None:
        return None
    leading = [mention for mention in mentions if mention.start == first_token.start() and not mention.negated]
    return _one({mention.choice_index for mention in leading})


def _rule_mmau_token(segment: str, item: _Item, mentions: list[_Mention]) -> int | None:
    # The token rule ignores word order, so "not a dog barking" would pass for "Dog barking":
    # a choice the segment negates is not eligible.
    negated = {mention.choice_index for mention in mentions if mention.negated}
    return _one({index for index, choice in enumerate(item.choices)
                 if index not in negated and mmau_string_match(choice, segment, item.choices)})


# What may join two options into a hedge: "X or Y", "X, or maybe Y", "X and/or Y", "(A) or (B)".
_HEDGE_JOIN = re.compile(r"[\s,;()\[\]\"'*]*(?:and/)?or(?:\s+(?:else|maybe|perhaps|possibly|probably))?"
                         r"(?:\s+(?:a|an|the))?[\s()\[\]\"'*]*", re.IGNORECASE)
# A bare option letter ("B", "(B)"), not the article "A" before a word ("A dog"), unless "or" follows.
_BARE_LETTER = re.compile(rf"(?<![{_TOKEN_CHARS}'])([A-Z])(?![{_TOKEN_CHARS}'])(?!\s+(?!or\b)[a-z])")


def _hedged(segment: str, item: _Item, mentions: list[_Mention]) -> bool:
    """Does the segment join two different options with "or"? (choice texts or option letters)"""
    refs = [(m.start, m.end, m.choice_index) for m in mentions if not m.negated]
    if item.letters_enabled:
        for match in _BARE_LETTER.finditer(segment):
            if match.group(1) in item.letters and not any(m.start <= match.start() < m.end for m in mentions):
                refs.append((match.start(), match.end(), item.letters.index(match.group(1))))
    refs.sort()
    return any(a[2] != b[2] and _HEDGE_JOIN.fullmatch(segment[a[1]:b[0]])
               for a, b in zip(refs, refs[1:]))


def _decide(segment: str, item: _Item, scope: str) -> tuple[str, int | None] | None:
    """(rule, choice index), ("refusal", None) or ("hedge", None); None when no rule decides."""
    decision = _decide_rules(segment, item, scope)
    if decision is None or decision[1] is None or decision[0] == "exact":
        return decision
    mentions = item.mentions(segment)
    named = {m.choice_index for m in mentions if not m.negated}
    if _hedged(segment, item, mentions) or (decision[0] == "mmau_token" and len(named) > 1):
        return "hedge", None
    return decision


def _decide_rules(segment: str, item: _Item, scope: str) -> tuple[str, int | None] | None:
    """(rule, choice index) or ("refusal", None); None when no rule decides."""
    index = _rule_exact(segment, item)
    if index is not None:
        return "exact", index
    if scope == _FIRST_LINE:
        return None  # an answer-first reply: only an exact first line is trusted over the rest
    mentions = item.mentions(segment)
    if _rule_refusal(segment, mentions):
        return "refusal", None
    index = _rule_letter(segment, item, mentions)
    if index is not None:
        return "letter", index
    index = _rule_phrase(mentions)
    if index is not None:
        return "phrase", index
    if scope == _ANSWER_STATEMENT:
        index = _rule_leading(segment, mentions)
        if index is not None:
            return "leading", index
    index = _rule_mmau_token(segment, item, mentions)
    if index is not None:
        return "mmau_token", index
    return None


_ANSWER_STATEMENT, _FIRST_LINE, _LAST_LINE, _WHOLE = "answer_statement:", "first_line:", "last_line:", ""


def _segments(text: str) -> Iterator[tuple[str, str]]:
    """(scope prefix, segment) in the order they are tried."""
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        rest = text[cue.end():].lstrip()
        statement = rest.split("\n", 1)[0].strip()
        if statement:
            yield _ANSWER_STATEMENT, statement
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        yield _FIRST_LINE, lines[0]
        yield _LAST_LINE, lines[-1]
    yield _WHOLE, text.strip()


def normalize_answer(output: str, choices: Sequence[str]) -> Normalized:
    """Map one raw model output to a choice, IDK or invalid (see the module docstring for the rules)."""
    item = _Item(choices)
    if not isinstance(output, str) or not output.strip():
        return Normalized("invalid", None, "empty")
    text = _clean(output)
    if not text.strip():
        return Normalized("invalid", None, "empty")
    whole_exact = _rule_exact(text, item)  # a whole output equal to a choice beats every cue inside it
    if whole_exact is not None:
        return Normalized("choice", item.choices[whole_exact], "exact")
    for scope, segment in _segments(text):
        decision = _decide(segment, item, scope)
        if decision is None:
            continue
        rule, index = decision
        if rule == "hedge":
            return Normalized("invalid", None, scope + rule)
        if index is None:
            return Normalized("idk", None, scope + rule)
        return Normalized("choice", item.choices[index], scope + rule)
    return Normalized("invalid", None, "no_match")


class RuleBasedNormalizer:
    """The :class:`~reliable_lalm.core.normalize_types.Normalizer` built on :func:`normalize_answer`."""

    name = "rule"

    def normalize(self, output: str, choices: Sequence[str]) -> Normalized:
        return normalize_answer(output, choices)

    def normalize_many(self, outputs: Sequence[str], choices_list: Sequence[Sequence[str]]) -> list[Normalized]:
        if len(outputs) != len(choices_list):
            raise ValueError(f"{len(outputs)} outputs but {len(choices_list)} choice lists")
        return [normalize_answer(output, choices) for output, choices in zip(outputs, choices_list)]
