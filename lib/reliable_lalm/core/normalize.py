"""Rule-based normalization of a raw model output to one choice, a refusal (IDK) or invalid.

The paper extracts answers with rules and then with gpt-4o-mini (Table 8); this module is the
rule-based half and never guesses: when the rules do not single out one choice, the output is
``invalid``. The policy these rules implement, with examples and its measured agreement with
labelled outputs, is docs/judging.md; :mod:`reliable_lalm.core.judge_eval` measures it.

Before any rule: the text is cleaned (Unicode NFKC, quotes, chat-template tokens, Markdown;
Chinese punctuation becomes ASCII and every CJK character is a token of its own), and echoes of the
prompt's fixed sentences are removed ("Output 'IDK' if you don't know the answer.", "Select one
option from the provided choices:", the MCoT step-by-step line), so an echoed instruction neither
makes an answer a refusal nor adds option mentions. An output that is empty, or nothing but such an
echo, is ``invalid`` (method ``empty`` / ``echo_instruction``).

A *mention* is a choice text found as a run of whole tokens ("seven" never inside "seventeen"); a
mention inside a longer mention of another choice is dropped ("funk" in "funk rock"). A mention is
*negated* when a negation cue ("not", "n't", "no", "never", "cannot", "unlikely", "doubt",
"without", "rather than", "instead of", "except", "neither/nor", Chinese 不/没/无/非) stands
anywhere before it in its clause, or one follows it as its predicate ("Dog barking is absent",
"Rock is ruled out", "The violin is not present"). Clauses end at punctuation and at "but",
"however", "although", "though", "whereas", "yet" (Chinese 但/而). A negated mention asserts nothing.

Order of the rules, applied to one piece of text (a *segment*):

1. ``exact``: the segment equals a choice, ignoring case, punctuation and spacing. Comes before
   refusal detection so a choice such as "Not sure" or "I don't know" is taken as that choice.
2. ``refusal``: a refusal phrase (:data:`REFUSAL_PATTERNS`, English and Chinese) outside every
   mention of this item's choices (choice "Not sure" answered "I'm not sure" is the choice). Doubt
   next to an answer: when every refusal phrase only states doubt (:data:`DOUBT_PATTERNS`: "not
   sure", "uncertain", "can't be sure", "hard to tell", "unclear"; not "IDK", "I don't know",
   "cannot be determined", "no idea") and the
   text outside the refusal's clause still asserts exactly one option
   (rules 3-5 on it: "Dog barking, but I'm not sure.", "I'm not sure, but I think there are two
   speakers."), the output is that option (method ``doubt``): it gave an answer, with stated
   uncertainty. Mentions inside the refusal's own clause are what it doubts ("I can't tell whether
   it is a dog barking or a cat meowing"): the output is IDK. "None of the options" is a refusal.
3. ``letter``: an option letter, A = first choice: "B", "(B)", "B.", "B) ...", "[B]", "Answer: B",
   "The answer is (B)", "Option B". Upper-case letters only, within the number of choices; "A dog"
   is not a letter. Letters are switched off for an item whose choices are themselves letter-like
   ("A", "C#", "Bm", "A/G": key and chord questions), and a letter that contradicts a choice text
   named in the same segment is dropped (the prompts show no letters, so the text is more reliable).
4. ``phrase``: the segment asserts exactly one choice (one choice among its non-negated mentions).
5. ``leading``: only for an answer statement: the text after "the answer is" starts with a choice
   ("The answer is Dog barking, because ...").
6. ``mmau_token``: exactly one choice passes MMAU's official token rule (:func:`mmau_string_match`),
   and the segment has no negation cue and no negated mention at all (the token rule ignores word
   order, so "the dog is not barking" would pass for "Dog barking"). The token rule keeps only word characters, so, as
   in MMAU's scorer, "C" passes for choice "C#" when no other choice has the token "c".

Hedges: a segment that names two options is not an answer. When the letter, phrase, leading or
token rule would pick a choice from a segment that joins two different options with "or" ("3/4 or
4/4", "B or Car horn", "either A or B"), or the token rule from a segment naming two choices at all
("3/4 and 4/4": MMAU's token rule accepts "3/4" there because the tokens of "4/4" are among its
own), the output is ``invalid`` with method ``hedge``: picking one of them would be a guess. The
second option may be shortened to the words that set it apart ("The speaker is ordering food or
making a reservation").

Segments, tried in this order, first decision wins (``method`` gets the segment as a prefix):

* ``answer_statement:``: the rest of the line after each "answer is" / "Answer:" / "option is" /
  "答案是" cue, last cue first (chain-of-thought outputs end with their answer; the reasoning before
  it mentions several choices and words such as "not sure" about details);
* ``echo_choices`` (no segment): two or more lines, each exactly a choice, naming at least two
  different choices: the choice list echoed back, ``invalid``;
* ``first_line:`` (exact rule only): a multi-line output whose first line is a choice, the
  rest explaining it ("Man\nThe woman in the background is silent.");
* ``last_line:``: the last non-empty line, for multi-line outputs;
* ``conclusion:``: the rest of the line after the last concluding cue ("so", "therefore",
  "overall", "points to", "makes it", "realised"...): reasoning that weighs several options and
  then concludes ("Siren and thunder are both loud, but the rumble points to thunder.");
* the whole output (no prefix).

Nothing matched is ``invalid`` with method ``no_match``.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterator, Sequence

from reliable_lalm.core.normalize_types import Normalized
from reliable_lalm.core.prompts import IDK_INSTRUCTION, MCOT_INSTRUCTION, SELECT_INSTRUCTION

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

# CJK ideographs: each is a token of its own (Chinese has no spaces between words), and \b does not
# separate them from Latin letters ("答案是Dog" must still show the choice "Dog").
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# Characters that belong to a token besides \w: musical sharps/flats and slash chords ("C#", "A/G").
_TOKEN_CHARS = r"\w#\u266f\u266d/+"
# A token: one CJK character, or a run of token characters, keeping apostrophes inside words
# ("don't") and decimal or thousands separators inside numbers ("2.5", "1,000"). Choices are found
# as runs of whole tokens, so "seven" never matches inside "seventeen" and "2" never inside "2.5".
_TOKEN = re.compile(rf"[{_CJK}]|(?:[^\W{_CJK}]|[#\u266f\u266d/+]|(?<=\w)'(?=\w)|(?<=\d)[.,](?=\d))+")

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'", "`": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
                         # Chinese punctuation NFKC leaves alone: full stop, enumeration comma, brackets
                         "\u3002": ". ", "\u3001": ", ", "\u300c": '"', "\u300d": '"', "\u300e": '"',
                         "\u300f": '"', "\u3010": "[", "\u3011": "]"})
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|</?s>")  # chat-template leftovers such as <|im_end|>
_MARKDOWN = re.compile(r"\*+|^[ \t]*#+[ \t]+", re.MULTILINE)  # bold/italic stars, heading marks


def _echo_pattern(sentence: str) -> str:
    """A prompt sentence as a pattern tolerant of case, spacing and quote style."""
    words = re.findall(r"\w+|[^\w\s]", sentence)
    parts = ["[\"']?" if word in ("'", '"') else re.escape(word) for word in words]
    return r"\s*".join(parts)


# The prompt's fixed sentences echoed back (Tables 4-6), and the IDK instruction paraphrased.
_INSTRUCTION_ECHO = re.compile(
    "|".join([_echo_pattern(MCOT_INSTRUCTION), _echo_pattern(IDK_INSTRUCTION), _echo_pattern(SELECT_INSTRUCTION),
              r"\b(?:output|answer|say|write|respond(?:\s+with)?|reply(?:\s+with)?)\s+[\"']?idk[\"']?\s+"
              r"(?:if|when)\s+you\s+(?:do\s+not|don't)\s+know(?:\s+the\s+answer)?\s*\.?"]),
    re.IGNORECASE,
)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _SPECIAL_TOKEN.sub(" ", text)
    return _MARKDOWN.sub("", text)


def _strip_instruction_echo(text: str) -> str:
    return _INSTRUCTION_ECHO.sub("\n", text)


def _key(text: str) -> str:
    """Case-, punctuation- and spacing-insensitive form used for exact comparison."""
    return " ".join(_TOKEN.findall(text.lower()))


# Negation cues that negate a mention anywhere after them in the same clause.
_NEGATION_CUE = re.compile(
    r"\b(?:not|no|never|neither|nor|cannot|unlikely|doubt|doubtful|without|lacks?|lacking|absence\s+of|"
    r"rather\s+than|instead\s+of|other\s+than|as\s+opposed\s+to|except|excluding|rule\s+out|ruled\s+out|"
    r"rules\s+out|hardly|barely)\b|n't\b|不|没|並非|并非|非(?!常)|無(?!法)|无(?!法)",
    re.IGNORECASE,
)
# A negation that follows a mention as its predicate: "Dog barking is absent", "The violin is not
# present", "Rock is ruled out", "Footsteps are missing" (at most two words in between).
_NEGATION_AFTER = re.compile(
    r"^\W*(?:[\w']+\s+){0,2}?(?:(?:is|are|was|were|seems?|appears?|does|do|did|can|could|would|will|"
    r"must|should|has|have|had)\s+)?(?:not|never|absent|missing|unlikely|ruled\s+out|excluded|impossible|"
    r"cannot|nowhere)\b|^\W*(?:[\w']+\s+){0,2}?\w+n't\b",
    re.IGNORECASE,
)
# Where a clause ends: punctuation, contrast words (a negation or a refusal before "but" does not
# reach past it), and their Chinese counterparts.
_CLAUSE_BREAK = re.compile(
    r"[.;:!?,\n]|\b(?:but|however|although|though|whereas|yet)\b|但是|但|而是|而|所以|因此",
    re.IGNORECASE,
)
# Predicates end earlier: "a dog barking that never stops" does not negate the dog barking.
_PREDICATE_BREAK = re.compile(
    r"[.;:!?,\n]|\b(?:but|however|although|though|whereas|yet|because|since|as|which|that|and|while|when)\b",
    re.IGNORECASE,
)

# Refusal phrases. Subject-less "don't know" only at the very start, so "they don't know Joey"
# (a plausible choice text) is not a refusal.
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bidk\b",
    r"(?:^\W*|\b(?:i|we)\s+(?:really\s+|honestly\s+|just\s+|simply\s+)?)(?:do\s+not|don't|dont|did\s+not|didn't)\s+know\b",
    r"\bnot\s+(?:so\s+|quite\s+|entirely\s+|completely\s+|totally\s+|really\s+|100%\s+)?(?:sure|certain)\b",
    r"\b(?:i\s+am|i'm|im|i\s+was)\s+(?:unsure|uncertain)\b",
    r"\b(?:cannot|can't|cant|can\s+not|could\s+not|couldn't|unable\s+to|not\s+able\s+to|impossible\s+to|"
    r"not\s+possible\s+to|hard\s+to|difficult\s+to|tough\s+to)\s+(?:be\s+)?(?:determine|determined|tell|told|"
    r"identify|identified|answer|answered|know|known|say|decide|decided|judge|judged|recognize|recognise|"
    r"recognized|make\s+out|be\s+sure|be\s+certain|help|assist|distinguish|measure)\b",
    r"\b(?:cannot|can't|can\s+not)\s+be\s+(?:sure|certain)\b",
    r"\bno\s+way\s+(?:to|of)\s+(?:tell|telling|know|knowing|determine|determining|say|saying)\b",
    r"\bno\s+idea\b",
    r"\b(?:hard|difficult|impossible)\s+to\s+say\b",
    r"\b(?:unclear|unknown|not\s+clear|indeterminable|undeterminable)\b",
    r"\b(?:insufficient|not\s+enough|lack\s+of|not\s+sufficient)\s+(?:information|info|context|evidence|data|"
    r"detail|details|clues?|cues?)\b",
    r"(?:\bnot|n't|\bno|\bwithout)\b(?:\s+[\w']+){0,3}\s+(?:enough|sufficient)\s+(?:information|info|context|"
    r"evidence|data|detail|details|clues?|cues?)\b",
    r"\bnone\s+of\s+the\s+(?:above|options|choices|answers|given\s+options|given\s+choices|provided\s+options|provided\s+choices)\b",
    r"不知道|不确定|不清楚|不能确定|无法|無法|难以|很难|说不准|说不清|不好说|(?:信息|线索)不足|没有足够的?(?:信息|线索)",
)
_REFUSAL = re.compile("|".join(f"(?:{pattern})" for pattern in REFUSAL_PATTERNS), re.IGNORECASE)
# The refusal phrases that only state doubt: next to exactly one asserted option they leave it the
# answer ("Dog barking, but I'm not sure.", "The audio is unclear, but it sounds like rain."). An
# outright refusal ("IDK", "I don't know", "cannot be determined", "no idea", "none of the
# options") never does: "three high notes ... The pitch is IDK" is IDK.
DOUBT_PATTERNS: tuple[str, ...] = (
    r"\bnot\s+(?:so\s+|quite\s+|entirely\s+|completely\s+|totally\s+|really\s+|100%\s+)?(?:sure|certain)\b",
    r"\b(?:i\s+am|i'm|im|i\s+was)\s+(?:unsure|uncertain)\b",
    r"\b(?:cannot|can't|can\s+not)\s+be\s+(?:sure|certain)\b",
    r"\b(?:hard|difficult|tough)\s+to\s+(?:be\s+)?(?:tell|say|determine|judge|decide|be\s+sure)\b",
    r"\b(?:unclear|not\s+clear)\b",
    r"不确定|说不准|很难说|不好说",
)
_DOUBT = re.compile("|".join(f"(?:{pattern})" for pattern in DOUBT_PATTERNS), re.IGNORECASE)

# "answer is", "Answer:", "the correct option is", "答案是" ... ; the answer statement follows the cue.
_ANSWER_CUE = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be|"
    r"appears\s+to\s+be)\b\s*:?|\s*[:=])|(?:答案|选项|選項)(?:应该|應該)?(?:是|为|為)?\s*[:=]?",
    re.IGNORECASE,
)
# A concluding cue: what follows it on the line is the reasoning's conclusion.
_CONCLUSION_CUE = re.compile(
    r"(?:^|[.,;:!?]\s*|\b(?:and|but)\s+)(?:so|therefore|thus|hence|consequently|overall|in\s+conclusion|in\s+summary|"
    r"to\s+conclude)\b,?|\b(?:points\s+to|makes\s+it|which\s+means|realized|realised|turns\s+out)\b|所以|因此",
    re.IGNORECASE | re.MULTILINE,
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


def _clause_start(text: str, position: int) -> int:
    """Where the clause holding ``position`` starts."""
    start = 0
    for match in _CLAUSE_BREAK.finditer(text, 0, position):
        start = match.end()
    return start


def _clause_end(text: str, position: int, breaks: re.Pattern[str] = _CLAUSE_BREAK) -> int:
    match = breaks.search(text, position)
    return match.start() if match else len(text)


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
                found.append((start, end, index))
        kept = [
            (start, end, index) for start, end, index in found
            if not any(o_start <= start and end <= o_end and o_end - o_start > end - start
                       for o_start, o_end, _ in found)
        ]
        spans = [(start, end) for start, end, _ in kept]
        return [_Mention(start, end, index, _negated(text, start, end, spans)) for start, end, index in kept]


def _outside(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    return not any(s <= start and end <= e for s, e in spans)


def _negated(text: str, start: int, end: int, mention_spans: Sequence[tuple[int, int]]) -> bool:
    """Is the mention at ``start:end`` negated (a cue before it in its clause, or after it as its predicate)?
    Cues inside any choice mention (the choice "No", "Not sure") do not count."""
    clause_start = _clause_start(text, start)
    if any(_outside(mention_spans, *cue.span()) for cue in _NEGATION_CUE.finditer(text, clause_start, start)):
        return True
    after = text[end:_clause_end(text, end, _PREDICATE_BREAK)]
    return bool(_NEGATION_AFTER.search(after))


def _one(indices: set[int]) -> int | None:
    return next(iter(indices)) if len(indices) == 1 else None


def _refusal_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _REFUSAL.finditer(text)]


# ---------------------------------------------------------------------------------------------
# The rules on one segment


def _rule_exact(segment: str, item: _Item) -> int | None:
    key = _key(segment)
    return _one({index for index, choice_key in enumerate(item.keys) if key and key == choice_key})


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
    # The token rule ignores word order, so "the dog is not barking" would pass for "Dog barking":
    # a segment with any negation cue outside the choice texts gets no token rule.
    spans = [(m.start, m.end) for m in mentions]
    if any(m.negated for m in mentions) or any(_outside(spans, *cue.span()) for cue in _NEGATION_CUE.finditer(segment)):
        return None
    return _one({index for index, choice in enumerate(item.choices) if mmau_string_match(choice, segment, item.choices)})


# What may join two options into a hedge: "X or Y", "X, or maybe Y", "X and/or Y", "(A) or (B)".
_HEDGE_JOIN = re.compile(r"[\s,;()\[\]\"'*]*(?:and/)?or(?:\s+(?:else|maybe|perhaps|possibly|probably))?"
                         r"(?:\s+(?:a|an|the))?[\s()\[\]\"'*]*", re.IGNORECASE)
# "... traffic or <option>": an alternative right before an option.
_OR_BEFORE = re.compile(rf"[{_TOKEN_CHARS}]\s*,?\s+or(?:\s+(?:else|maybe|perhaps|possibly|probably))?(?:\s+(?:a|an|the))?\s*$",
                        re.IGNORECASE)
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
    if any(a[2] != b[2] and _HEDGE_JOIN.fullmatch(segment[a[1]:b[0]]) for a, b in zip(refs, refs[1:])):
        return True
    # "The speaker is ordering food or making a reservation": the second option shortened to the
    # words that set it apart from the first; "thunder or traffic": an option offered next to
    # something else is still a hedge.
    for start, end, index in refs:
        if _OR_BEFORE.search(segment, 0, start):
            return True
        join = _HEDGE_JOIN.match(segment, end)
        if join is None or not re.search(r"\bor\b", join.group(), re.IGNORECASE):
            continue
        if _TOKEN.match(segment, join.end()):
            return True
        after = set(_key(segment[join.end():_clause_end(segment, join.end())]).split())
        own = set(item.key_tokens[index])
        if any(other != index and set(tokens) - own and set(tokens) - own <= after
               for other, tokens in enumerate(item.key_tokens)):
            return True
    return False


def _choose(segment: str, item: _Item, scope: str, mentions: list[_Mention]) -> tuple[str, int | None] | None:
    """Rules 3-6 and the hedge check: (rule, index), ("hedge", None) or None."""
    for rule, index in (("letter", _rule_letter(segment, item, mentions)), ("phrase", _rule_phrase(mentions)),
                        ("leading", _rule_leading(segment, mentions) if scope == _ANSWER_STATEMENT else None),
                        ("mmau_token", _rule_mmau_token(segment, item, mentions))):
        if index is None:
            continue
        named = {m.choice_index for m in mentions if not m.negated}
        if _hedged(segment, item, mentions) or (rule == "mmau_token" and len(named) > 1):
            return "hedge", None
        return rule, index
    return None


def _doubt_choice(segment: str, item: _Item, scope: str, mentions: list[_Mention],
                  refusals: list[tuple[int, int]]) -> int | None:
    """The one option asserted outside the clauses of the refusal phrases ("Dog barking, but I'm
    not sure."), or None. A refusal's clause is blanked out, mentions in it included."""
    blanked = list(segment)
    for start, _ in refusals:
        clause_start, clause_end = _clause_start(segment, start), _clause_end(segment, start)
        blanked[clause_start:clause_end] = " " * (clause_end - clause_start)
    rest = "".join(blanked)
    kept = [m for m in mentions if rest[m.start:m.end] == segment[m.start:m.end]]
    decision = _choose(rest, item, scope, kept)
    return decision[1] if decision is not None and decision[0] != "mmau_token" else None


def _decide(segment: str, item: _Item, scope: str) -> tuple[str, int | None] | None:
    """(rule, choice index), ("refusal", None) or ("hedge", None); None when no rule decides."""
    index = _rule_exact(segment, item)
    if index is not None:
        return "exact", index
    if scope == _FIRST_LINE:
        return None  # an answer-first reply: only an exact first line is trusted over the rest
    mentions = item.mentions(segment)
    spans = [(m.start, m.end) for m in mentions]
    refusals = [span for span in _refusal_spans(segment) if _outside(spans, *span)]
    if refusals:
        doubt_only = all(_DOUBT.fullmatch(segment, start, end) for start, end in refusals)
        index = _doubt_choice(segment, item, scope, mentions, refusals) if doubt_only else None
        return ("doubt", index) if index is not None else ("refusal", None)
    return _choose(segment, item, scope, mentions)


_ANSWER_STATEMENT, _FIRST_LINE, _LAST_LINE, _CONCLUSION, _WHOLE = (
    "answer_statement:", "first_line:", "last_line:", "conclusion:", "")

# Every rule name a decision can carry (``Normalized.method``, after an optional scope prefix), in
# words: what per-item reports and sample logs show as the reason. A test checks the list is complete.
RULE_DESCRIPTIONS = {
    "exact": "the output is exactly one option",
    "refusal": "a refusal phrase (IDK, 'cannot determine', ...)",
    "doubt": "one option asserted with stated doubt ('X, but I'm not sure'): that option",
    "letter": "an option letter ('B', '(b)', 'option 2')",
    "phrase": "an answer phrase naming one option ('the answer is ...')",
    "leading": "the answer statement begins with one option",
    "mmau_token": "MMAU's token rule: the words of one option",
    "hedge": "it names more than one option (a hedge is invalid)",
    "echo_instruction": "only an echo of the prompt's instruction, no answer",
    "echo_choices": "the choice list echoed back, one option per line (invalid)",
    "no_match": "no option, letter or refusal could be found",
    "empty": "the output is empty",
    "llm": "the LLM judge decided",
    "llm-cache": "the LLM judge decided (cached reply)",
    "llm-unparsed": "the LLM judge's reply named no single option, IDK or INVALID (invalid, not guessed)",
    "llm-failed": "the LLM judge could not be reached; the rules decided",
}
SCOPE_DESCRIPTIONS = {_ANSWER_STATEMENT[:-1]: "in the answer statement", _FIRST_LINE[:-1]: "on the first line",
                      _LAST_LINE[:-1]: "on the last line", _CONCLUSION[:-1]: "in the concluding sentence"}


def _echoed_choice_list(lines: Sequence[str], item: _Item) -> bool:
    """Two or more lines, every one exactly a choice, at least two different choices."""
    if len(lines) < 2:
        return False
    exact = [_rule_exact(line, item) for line in lines]
    return None not in exact and len(set(exact)) > 1


def _segments(text: str, item: _Item) -> Iterator[tuple[str, str]]:
    """(scope prefix, segment) in the order they are tried; ("echo_choices", "") for an echoed list."""
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        rest = text[cue.end():].lstrip()
        statement = rest.split("\n", 1)[0].strip()
        if statement:
            yield _ANSWER_STATEMENT, statement
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if _echoed_choice_list(lines, item):
        yield "echo_choices", ""
        return
    if len(lines) > 1:
        yield _FIRST_LINE, lines[0]
        yield _LAST_LINE, lines[-1]
    cues = list(_CONCLUSION_CUE.finditer(text))
    if cues:
        conclusion = text[cues[-1].end():].split("\n", 1)[0].strip()
        if conclusion:
            yield _CONCLUSION, conclusion
    yield _WHOLE, text.strip()


def normalize_answer(output: str, choices: Sequence[str]) -> Normalized:
    """Map one raw model output to a choice, IDK or invalid (see the module docstring for the rules)."""
    item = _Item(choices)
    if not isinstance(output, str) or not output.strip():
        return Normalized("invalid", None, "empty")
    cleaned = _clean(output)
    if not _TOKEN.search(cleaned):
        return Normalized("invalid", None, "empty" if not cleaned.strip() else "no_match")
    whole_exact = _rule_exact(cleaned, item)  # a whole output equal to a choice beats every cue inside it
    if whole_exact is not None:
        return Normalized("choice", item.choices[whole_exact], "exact")
    text = _strip_instruction_echo(cleaned)
    if not _TOKEN.search(text):
        return Normalized("invalid", None, "echo_instruction")
    whole_exact = _rule_exact(text, item)
    if whole_exact is not None:
        return Normalized("choice", item.choices[whole_exact], "exact")
    for scope, segment in _segments(text, item):
        if scope == "echo_choices":
            return Normalized("invalid", None, scope)
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
