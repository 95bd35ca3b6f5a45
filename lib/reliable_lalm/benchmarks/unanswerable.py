"""Unanswerable variants of a multiple-choice audio benchmark, and how to score them.

Beyond the paper: the paper only asks questions that have a correct option, so it
cannot tell whether a model refuses *where it does not know*. Questions with no correct option
test that directly: the right behaviour is a refusal (IDK) and any option is a hallucination.

Three kinds of variant, each generated offline and deterministically from the benchmark's own
items (no audio is read or written; ids are derived as ``<source id>::<kind>``):

* ``"no-answer"`` — the correct option is removed, the other options kept in their order. Needs
  at least 3 choices (so at least 2 remain and the item is still multiple-choice). Skipped when
  a remaining option still answers the question: it equals the answer up to case and spaces, or
  it is a catch-all option ("none of the above", "all of the above", ...) or a refusal-like one
  ("not sure", "unknown", "cannot be determined"), see :func:`is_catch_all`.
* ``"foreign-options"`` — the options are replaced by another item's option set that contains
  nothing equal to this item's answer (up to case and spaces) and no catch-all or refusal-like
  option. The donor
  is taken from the same task (modality) by default, so the options look plausible.
* ``"foreign-audio"`` — the question and its options are paired with the audio of an item of
  *another* task (a music question asked about a speech recording). The question's task stays
  the item's task; ``audio_task`` names the audio's. This is unanswerable by construction with
  high probability, not verified: an unrelated recording may by chance contain the answer.

Deterministic pairing: for each source item and kind, the donor is
``eligible[h % len(eligible)]`` where ``eligible`` are the possible donors sorted by id and
``h`` is the SHA-256 of ``"<seed>:<kind>:<item id>"``. The result depends only on the items'
content and the seed — not on their order, the Python hash seed or the numpy version.

Representation: :class:`BenchmarkItem` requires ``answer`` to be one of its choices (the loader
validates it), so an unanswerable question is a separate :class:`UnanswerableItem` with the same
field names the inference engine reads (``id``, ``audio_path``, ``question``, ``choices``,
``task``), ``answer = ""`` (no option is correct; never one of ``choices``) and
``answerable = False``. Existing validation is unchanged. Its :meth:`UnanswerableItem.to_record`
marks the record with ``"answerable": false`` and the provenance.

Scoring (:func:`unanswerable_outcome_of`, :func:`unanswerable_summary`): on an unanswerable item
a refusal is ``"refused"`` (correct behaviour), an option is ``"hallucinated"``, and an output the
normalizer maps onto nothing is ``"invalid"`` (kept apart, as :mod:`reliable_lalm.core.metrics` keeps
invalid outputs visible; it is neither a refusal nor an option). Metrics: refusal rate on
unanswerable items, on answerable items (``Rej`` of the ordinary outcomes), hallucination rate
(options chosen / unanswerable items) and the gap ``refusal rate (unanswerable) - refusal rate
(answerable)``: positive when the model refuses more where there is nothing to know.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from reliable_lalm.core.items import TASKS, BenchmarkItem
from reliable_lalm.core.metrics import group_indices, outcome_codes
from reliable_lalm.core.normalize_types import Normalized

NO_ANSWER, FOREIGN_OPTIONS, FOREIGN_AUDIO = "no-answer", "foreign-options", "foreign-audio"
KINDS: tuple[str, ...] = (NO_ANSWER, FOREIGN_OPTIONS, FOREIGN_AUDIO)
REFUSED, HALLUCINATED, INVALID = "refused", "hallucinated", "invalid"
UNANSWERABLE_OUTCOMES: tuple[str, ...] = (REFUSED, HALLUCINATED, INVALID)

# A catch-all option ("none of the above") becomes correct once the right option is gone, and a
# refusal-like option ("not sure") lets a model refuse by choosing it: either spoils the variant.
_CATCH_ALL = re.compile(r"\b(none|all|neither|both)\s+of\s+(the\s+)?(above|these|them|options|choices)\b|"
                        r"\bnone\s+(of\s+them\s+)?(is|are)\s+correct\b|"
                        r"^\s*(not\s+sure|unsure|unknown|none|i\s+don'?t\s+know|idk|can(not|'t)\s+(be\s+)?(tell|determined?))"
                        r"\s*[.!]?\s*$", re.IGNORECASE)

# Skip reasons (counted, never silent).
TOO_FEW_CHOICES = "fewer than 3 choices: removing the answer would leave a single option"
ANSWER_REMAINS = "another option equals the answer up to case and spaces"
HAS_CATCH_ALL = "a remaining option is a catch-all ('none of the above') or a refusal ('not sure')"
NO_OPTION_DONOR = "no other item with an option set that excludes this answer"
NO_AUDIO_DONOR = "no item of another task to take the audio from"


def _task_rank(task: str) -> tuple[int, str]:
    return (TASKS.index(task), "") if task in TASKS else (len(TASKS), task)


def _key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def is_catch_all(option: str) -> bool:
    """Whether an option is a catch-all ("None of the above", "All of these") or a refusal ("Not sure")."""
    return bool(_CATCH_ALL.search(str(option)))


@dataclass(frozen=True)
class UnanswerableItem:
    """A question with no correct option (module docstring); duck-types :class:`BenchmarkItem`."""

    id: str  # "<source id>::<kind>"
    audio_path: str
    question: str
    choices: tuple[str, ...]
    task: str  # the question's task (the source item's)
    kind: str  # one of KINDS
    source_id: str  # the item whose question is asked
    donor_id: str | None  # the item whose options (foreign-options) or audio (foreign-audio) are used
    source_answer: str  # the source item's answer, for auditing (not a correct option here)
    audio_task: str  # the audio's task (differs from task only for foreign-audio)
    category: str = ""
    sub_category: str = ""
    difficulty: str = ""
    dataset: str = ""
    answer: str = ""  # no option is correct: never one of ``choices``
    answerable: bool = False
    notes: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def source_ids(self) -> tuple[str, ...]:
        return (self.source_id,) if self.donor_id is None else (self.source_id, self.donor_id)

    def to_record(self) -> dict[str, Any]:
        """An MMAU-schema record (answer ``""``) with ``answerable: false`` and the provenance."""
        base = {k: v for k, v in self.record.items()} if self.record else {}
        base.update({"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer,
                     "task": self.task, "audio_path": self.audio_path, "answerable": False,
                     "unanswerable_kind": self.kind, "source_ids": list(self.source_ids),
                     "source_answer": self.source_answer, "audio_task": self.audio_task})
        base.pop("audio_id", None)  # the audio may be another item's: audio_path is authoritative
        return base


@dataclass(frozen=True)
class SkippedVariant:
    item_id: str
    task: str
    kind: str
    reason: str


@dataclass
class UnanswerableSet:
    """The variants built from ``n_source`` items with one ``seed``, and the ones skipped (with why)."""

    items: list[UnanswerableItem]
    skipped: list[SkippedVariant]
    seed: int
    source_tasks: dict[str, int]  # source items per task

    @property
    def n_source(self) -> int:
        return sum(self.source_tasks.values())

    def by_kind(self, kind: str) -> list[UnanswerableItem]:
        return [it for it in self.items if it.kind == kind]

    def counts(self) -> list[dict[str, Any]]:
        """One row per (kind, task): ``n_source``, ``n_built``, ``n_skipped`` (built + skipped = source)."""
        built = Counter((it.kind, it.task) for it in self.items)
        skipped = Counter((s.kind, s.task) for s in self.skipped)
        kinds = list(dict.fromkeys([*(it.kind for it in self.items), *(s.kind for s in self.skipped)]))
        return [{"kind": kind, "task": task, "n_source": n, "n_built": built.get((kind, task), 0),
                 "n_skipped": skipped.get((kind, task), 0)}
                for kind in sorted(kinds, key=KINDS.index)
                for task, n in sorted(self.source_tasks.items(), key=lambda tn: _task_rank(tn[0]))]

    def skip_reasons(self) -> dict[str, dict[str, int]]:
        """``{kind: {reason: count}}`` of the skipped variants."""
        out: dict[str, dict[str, int]] = {}
        for s in self.skipped:
            out.setdefault(s.kind, {}).setdefault(s.reason, 0)
            out[s.kind][s.reason] += 1
        return out

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "n_source": self.n_source, "n_built": len(self.items),
                **{f"n_{kind}": len(self.by_kind(kind)) for kind in KINDS},
                "n_skipped": len(self.skipped), "skipped": self.skip_reasons()}


def _pick(eligible: Sequence[BenchmarkItem], seed: int, kind: str, item_id: str) -> BenchmarkItem:
    digest = hashlib.sha256(f"{seed}:{kind}:{item_id}".encode("utf-8")).digest()
    return eligible[int.from_bytes(digest[:8], "big") % len(eligible)]


def _variant(item: BenchmarkItem, kind: str, *, choices: Sequence[str], audio_path: str | None = None,
             donor: BenchmarkItem | None = None) -> UnanswerableItem:
    return UnanswerableItem(
        id=f"{item.id}::{kind}", audio_path=audio_path or item.audio_path, question=item.question,
        choices=tuple(choices), task=item.task, kind=kind, source_id=item.id,
        donor_id=None if donor is None else donor.id, source_answer=item.answer,
        audio_task=donor.task if kind == FOREIGN_AUDIO and donor is not None else item.task,
        category=item.category, sub_category=item.sub_category, difficulty=item.difficulty, dataset=item.dataset,
        record={k: v for k, v in item.to_record().items() if k not in ("choices", "answer", "id")})


def no_answer_variant(item: BenchmarkItem) -> UnanswerableItem | str:
    """The item with its correct option removed, or the reason it cannot be built."""
    if len(item.choices) < 3:
        return TOO_FEW_CHOICES
    remaining = [c for c in item.choices if c != item.answer]
    if any(_key(c) == _key(item.answer) for c in remaining):
        return ANSWER_REMAINS
    if any(is_catch_all(c) for c in remaining):
        return HAS_CATCH_ALL
    return _variant(item, NO_ANSWER, choices=remaining)


def _option_donors(item: BenchmarkItem, pool: Sequence[BenchmarkItem], same_task: bool) -> list[BenchmarkItem]:
    answer = _key(item.answer)
    own = {_key(c) for c in item.choices}
    return [d for d in pool
            if d.id != item.id and (not same_task or d.task == item.task)
            and answer not in {_key(c) for c in d.choices}
            and {_key(c) for c in d.choices} != own
            and not any(is_catch_all(c) for c in d.choices)]


def build_unanswerable(items: Iterable[BenchmarkItem], *, kinds: Sequence[str] = KINDS, seed: int = 0,
                       same_task_options: bool = True) -> UnanswerableSet:
    """All requested unanswerable variants of ``items`` (module docstring), with skipped ones and why.

    Variants are listed per source item in input order, kinds in the order of ``kinds``.
    """
    items = list(items)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; expected some of {KINDS}")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicated item ids: derived ids would collide")
    pool = sorted(items, key=lambda it: it.id)
    out: list[UnanswerableItem] = []
    skipped: list[SkippedVariant] = []
    for item in items:
        for kind in kinds:
            if kind == NO_ANSWER:
                result: UnanswerableItem | str = no_answer_variant(item)
            elif kind == FOREIGN_OPTIONS:
                donors = _option_donors(item, pool, same_task_options)
                if donors:
                    donor = _pick(donors, seed, kind, item.id)
                    result = _variant(item, kind, choices=donor.choices, donor=donor)
                else:
                    result = NO_OPTION_DONOR
            else:
                donors = [d for d in pool if d.task != item.task]
                if donors:
                    donor = _pick(donors, seed, kind, item.id)
                    result = _variant(item, kind, choices=item.choices, audio_path=donor.audio_path, donor=donor)
                else:
                    result = NO_AUDIO_DONOR
            if isinstance(result, str):
                skipped.append(SkippedVariant(item.id, item.task, kind, result))
            else:
                out.append(result)
    return UnanswerableSet(out, skipped, seed, dict(Counter(it.task for it in items)))


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------

def unanswerable_outcome_of(normalized: Normalized) -> str:
    """``"refused"`` (IDK: right), ``"hallucinated"`` (any option) or ``"invalid"`` on an unanswerable item."""
    if normalized.kind == "idk":
        return REFUSED
    if normalized.kind == "choice":
        return HALLUCINATED
    return INVALID


def _unanswerable_codes(outcomes: Iterable[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(UNANSWERABLE_OUTCOMES)}
    try:
        return np.fromiter((index[o] for o in outcomes), dtype=np.int8)
    except KeyError as err:
        raise ValueError(f"unknown unanswerable outcome {err.args[0]!r}; expected one of {UNANSWERABLE_OUTCOMES}") from None


def _rates(answerable: np.ndarray, unanswerable: np.ndarray) -> dict[str, Any]:
    """``answerable``: metrics codes (1 = rejected); ``unanswerable``: codes of UNANSWERABLE_OUTCOMES."""
    n_a, n_u = len(answerable), len(unanswerable)
    n_refused_a = int((answerable == 1).sum())
    n_refused_u = int((unanswerable == 0).sum())
    n_halluc = int((unanswerable == 1).sum())
    n_invalid = int((unanswerable == 2).sum())
    out: dict[str, Any] = {
        "n_answerable": n_a, "n_unanswerable": n_u, "n_refused_answerable": n_refused_a,
        "n_refused_unanswerable": n_refused_u, "n_hallucinated": n_halluc, "n_invalid_unanswerable": n_invalid,
        "refusal_rate_answerable": n_refused_a / n_a if n_a else None,
        "refusal_rate_unanswerable": n_refused_u / n_u if n_u else None,
        "hallucination_rate": n_halluc / n_u if n_u else None,
        "invalid_rate_unanswerable": n_invalid / n_u if n_u else None,
    }
    if not n_a:
        out["refusal_rate_answerable_reason"] = "no answerable items"
    if not n_u:
        out["refusal_rate_unanswerable_reason"] = out["hallucination_rate_reason"] = "no unanswerable items"
    ra, ru = out["refusal_rate_answerable"], out["refusal_rate_unanswerable"]
    out["refusal_gap"] = ru - ra if ra is not None and ru is not None else None
    if out["refusal_gap"] is None:
        out["refusal_gap_reason"] = "; ".join(
            r for r, missing in (("no answerable items", ra is None), ("no unanswerable items", ru is None)) if missing)
    return out


def unanswerable_summary(answerable_outcomes: Sequence[str], answerable_tasks: Sequence[str],
                         unanswerable_outcomes: Sequence[str], unanswerable_tasks: Sequence[str],
                         unanswerable_kinds: Sequence[str] | None = None,
                         task_order: Sequence[str] = ("sound", "music", "speech")) -> dict[str, Any]:
    """Refusal rates on answerable vs unanswerable items, hallucination rate and their gap.

    ``answerable_outcomes``: the ordinary outcomes (``correct``/``rejected``/``wrong``) of a run
    on the answerable items; a refusal there is ``"rejected"``. ``unanswerable_outcomes``:
    ``refused``/``hallucinated``/``invalid`` (:func:`unanswerable_outcome_of`) of the same model
    and prompt on the unanswerable items. Returns ``{"total", "by_task"}`` and, with
    ``unanswerable_kinds``, ``"by_kind"`` (each kind against all answerable items). A rate with an
    empty denominator is ``None`` with a ``*_reason``.
    """
    a = outcome_codes(answerable_outcomes)
    u = _unanswerable_codes(unanswerable_outcomes)
    if len(answerable_tasks) != len(a) or len(unanswerable_tasks) != len(u):
        raise ValueError("outcomes and tasks differ in length")
    a_groups = group_indices(answerable_tasks, task_order)
    u_groups = group_indices(unanswerable_tasks, task_order)
    names = list(dict.fromkeys([*a_groups, *u_groups]))
    empty = np.zeros(0, dtype=np.int64)
    out: dict[str, Any] = {"total": _rates(a, u),
                           "by_task": {t: _rates(a[a_groups.get(t, empty)], u[u_groups.get(t, empty)]) for t in names}}
    if unanswerable_kinds is not None:
        kinds = np.asarray(list(unanswerable_kinds), dtype=object)
        if len(kinds) != len(u):
            raise ValueError(f"{len(u)} unanswerable outcomes but {len(kinds)} kinds")
        present = [k for k in KINDS if k in set(kinds.tolist())] + sorted(set(kinds.tolist()) - set(KINDS))
        out["by_kind"] = {k: _rates(a, u[kinds == k]) for k in present}
    return out


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (``group`` = total, a task or ``kind:<kind>``) of :func:`unanswerable_summary`."""
    rows = [{"group": "total", **summary["total"]}]
    rows += [{"group": task, **values} for task, values in summary["by_task"].items()]
    rows += [{"group": f"kind:{kind}", **values} for kind, values in summary.get("by_kind", {}).items()]
    return rows
