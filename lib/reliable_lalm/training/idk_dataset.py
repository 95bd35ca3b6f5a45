"""The model-specific K@N IDK dataset (paper section 3.2, Figure 5).

For every item the model is sampled N times (``inference.sample_k_at_n``: one result-store record
per ``(item_id, sample_index)``). Each sample is normalized by the evaluation's normalizer (the
``normalizer`` argument: a normalizer object such as the LLM judge of Table 8, all samples in one
``normalize_many`` call; default the rules, :func:`reliable_lalm.core.normalize.normalize_answer`); an item whose samples are correct at least K
times keeps its answer as the SFT target, any other item gets the target ``IDK``, the refusal
word the IDK prompt asks for (Table 5, :data:`reliable_lalm.core.prompts.IDK_INSTRUCTION`). ``0@N`` keeps
every label; ``N@N`` keeps an item only when all N samples are correct.

Every sample is stored, so any K (and any N' <= N, by taking the first N' samples) is derived
from one sampling pass without resampling: the Figure 5 curve costs one pass.

Which prompt the SFT examples use: the paper's Appendix C groups "Baseline and LoRA Fine-tuning"
under one template (Table 4), i.e. the fine-tuned model is prompted with the baseline prompt, and
it must learn to answer ``IDK`` without being told it may. Training uses that prompt by default
(``prompt_method="baseline"``); ``"idk"`` (Table 5) is available as a variation.

An item is left out of the dataset, with a counted reason, when it has no sample records, fewer
than N samples, or an error record among its first N samples (the sampling of that item failed,
so its K@N label would be a guess).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from reliable_lalm.core.items import BenchmarkItem, ItemError, load_audio
from reliable_lalm.core.metrics import CORRECT, outcome_of
from reliable_lalm.core.normalize import normalize_answer
from reliable_lalm.core.normalize_types import IDK_LABEL
from reliable_lalm.core.prompts import IDK_INSTRUCTION
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.training.sft_data import SFTExample

IDK_TARGET = IDK_LABEL  # the word the IDK prompt (Table 5) tells the model to output
assert f"'{IDK_TARGET}'" in IDK_INSTRUCTION  # the SFT target must be the IDK prompt's refusal word
TRAIN_PROMPT_METHODS = ("baseline", "idk")

# Skip reasons (counted, never silent).
NO_SAMPLES = "no samples"
TOO_FEW_SAMPLES = "fewer than N samples"
SAMPLE_ERROR = "error record"
AUDIO_ERROR = "audio unreadable"

# Keys under which the sampling settings may be recorded in the store manifest's params.
_N_KEYS = ("n_samples", "n", "num_samples")


@dataclass(frozen=True)
class KAtNItem:
    """One item's N samples, normalized: how often the model answered it correctly."""

    item_id: str
    task: str
    n_samples: int
    n_correct: int
    n_idk: int  # samples that refused (useful to see whether the base model ever says IDK)
    outputs: tuple[str, ...]
    kinds: tuple[str, ...]  # normalize_answer kind per sample: choice / idk / invalid

    def keeps_label(self, k: int) -> bool:
        """K@N: the original answer is kept when at least ``k`` samples are correct (0@N keeps all)."""
        return self.n_correct >= k


@dataclass
class KAtNTable:
    """Per-item sample statistics of a K@N store, with the items left out and why."""

    n: int
    items: list[KAtNItem]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> item ids

    def skip_counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in self.skipped.items()}

    def idk_fraction(self, k: int, task: str | None = None) -> float | None:
        rows = [it for it in self.items if task is None or it.task == task]
        if not rows:
            return None
        return sum(not it.keeps_label(k) for it in rows) / len(rows)

    def idk_fraction_by_k(self, task: str | None = None) -> dict[int, float | None]:
        return {k: self.idk_fraction(k, task) for k in range(1, self.n + 1)}


def _is_error(record: dict[str, Any]) -> str | None:
    """The error message of a failed sample record, else None."""
    error = record.get("error")
    if error:
        return str(error)
    if not isinstance(record.get("model_output"), str):
        return "no model_output"
    return None


def store_n_samples(store) -> int | None:
    """N as recorded in the store manifest by the sampler (``None`` when not recorded)."""
    try:
        params = store.manifest().get("params", {})
    except (OSError, ValueError):
        return None

    def find(obj: Any) -> int | None:
        if isinstance(obj, dict):
            for key in _N_KEYS:
                if isinstance(obj.get(key), int) and not isinstance(obj.get(key), bool):
                    return int(obj[key])
            for value in obj.values():
                found = find(value)
                if found is not None:
                    return found
        return None

    return find(params)


def sampling_settings(store) -> dict[str, Any]:
    """The decoding settings the sampler recorded in the store manifest (``{}`` if none)."""
    try:
        params = store.manifest().get("params", {})
    except (OSError, ValueError):
        return {}
    settings = params.get("settings")
    return dict(settings) if isinstance(settings, dict) else {}


def _normalize_all(normalizer, outputs: list[str], choices: list[Sequence[str]]) -> list[Any]:
    """Every sample normalized: one ``normalize_many`` call for a normalizer object, else per sample."""
    many = getattr(normalizer, "normalize_many", None)
    if callable(many):
        return list(many(outputs, choices)) if outputs else []
    return [normalizer(o, c) for o, c in zip(outputs, choices)]


def k_at_n_table(store, items: Sequence[BenchmarkItem], *, n: int | None = None,
              normalizer: Any = normalize_answer) -> KAtNTable:
    """Normalize every stored sample of ``items`` and count correct ones per item.

    ``n``: the N of K@N; default the sampler's recorded N (manifest), else the largest number of
    samples any item has. A smaller ``n`` than was sampled uses the first ``n`` samples (by
    ``sample_index``).
    """
    by_item: dict[str, list[dict[str, Any]]] = {}
    for record in store.records():
        by_item.setdefault(str(record["item_id"]), []).append(record)
    if n is None:
        n = store_n_samples(store)
    if n is None:
        n = max((len(v) for v in by_item.values()), default=0)
    if n < 1:
        raise ValueError("N must be >= 1 (no samples in the store and none recorded)")
    table = KAtNTable(n=n, items=[])
    kept: list[tuple[BenchmarkItem, tuple[str, ...]]] = []
    for item in items:
        records = sorted(by_item.get(item.id, []), key=lambda r: int(r.get("sample_index", 0)))
        records = [r for r in records if int(r.get("sample_index", 0)) < n]
        if not records:
            table.skipped.setdefault(NO_SAMPLES, []).append(item.id)
            continue
        if any(_is_error(r) for r in records):
            table.skipped.setdefault(SAMPLE_ERROR, []).append(item.id)
            continue
        if len(records) < n:
            table.skipped.setdefault(TOO_FEW_SAMPLES, []).append(item.id)
            continue
        kept.append((item, tuple(r["model_output"] for r in records)))
    flat = _normalize_all(normalizer, [o for _, outs in kept for o in outs],
                          [item.choices for item, outs in kept for _ in outs])
    for k, (item, outputs) in enumerate(kept):
        normalized = flat[k * n:(k + 1) * n]
        correct = sum(outcome_of(x, item.answer) == CORRECT for x in normalized)
        table.items.append(KAtNItem(item_id=item.id, task=item.task, n_samples=n, n_correct=int(correct),
                                   n_idk=sum(x.kind == "idk" for x in normalized), outputs=outputs,
                                   kinds=tuple(x.kind for x in normalized)))
    return table


def idk_fraction_by_k(store, items: Sequence[BenchmarkItem], *, n: int | None = None,
                      task: str | None = None) -> dict[int, float | None]:
    """Share of IDK-labelled items for every K in 1..N (Figure 5), from one sampling pass.

    Non-decreasing in K by construction (a stricter threshold never un-labels an item). ``task``
    restricts to one modality (Table 12's "IDK Dataset" column).
    """
    return k_at_n_table(store, items, n=n).idk_fraction_by_k(task)


def idk_fraction_frame(store, items: Sequence[BenchmarkItem], *, n: int | None = None,
                       normalizer: Any = normalize_answer):
    """Figure 5 as a DataFrame: rows K = 1..N, columns per task and ``all`` (IDK share in %)."""
    table = k_at_n_table(store, items, n=n, normalizer=normalizer)
    tasks = sorted({it.task for it in table.items}, key=lambda t: ("sound", "music", "speech").index(t)
                   if t in ("sound", "music", "speech") else 9)
    data = {task: table.idk_fraction_by_k(task) for task in tasks}
    data["all"] = table.idk_fraction_by_k()
    frame = pd.DataFrame({name: {k: (100 * v if v is not None else np.nan) for k, v in col.items()}
                          for name, col in data.items()})
    frame.index.name = "K"
    frame.attrs["n"] = table.n
    frame.attrs["items"] = len(table.items)
    frame.attrs["skipped"] = table.skip_counts()
    return frame


@dataclass
class IdkDataset:
    """SFT examples for one K@N threshold, plus what was left out and the label counts."""

    k: int
    n: int
    prompt_method: str
    examples: list[SFTExample]
    skipped: dict[str, list[str]]
    n_idk: int
    n_kept: int
    sampling: dict[str, Any] = field(default_factory=dict)  # the sampler's recorded settings (temperature, ...)

    @property
    def idk_fraction(self) -> float | None:
        total = self.n_idk + self.n_kept
        return self.n_idk / total if total else None

    def summary(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "prompt_method": self.prompt_method, "examples": len(self.examples),
                "idk": self.n_idk, "kept": self.n_kept, "idk_fraction": self.idk_fraction,
                "skipped": {r: len(v) for r, v in self.skipped.items()}, "sampling": self.sampling}


def sft_target(item: BenchmarkItem, k_at_n: KAtNItem, k: int) -> str:
    """The answer text (the baseline prompt's "Output: {Answer}") or ``IDK``."""
    return item.answer if k_at_n.keeps_label(k) else IDK_TARGET


def build_idk_dataset(items: Sequence[BenchmarkItem], store, k: int, n: int | None = None,
                      prompt_method: str = "baseline", *, table: KAtNTable | None = None,
                      audio_loader: Callable[..., np.ndarray] = load_audio,
                      normalizer: Any = normalize_answer) -> IdkDataset:
    """The K@N IDK training set of ``items`` from a sample ``store`` (audio loaded per item);
    ``normalizer`` judges the samples (pass the evaluation's, as the paper's GPT-4o-mini judge)."""
    if prompt_method not in TRAIN_PROMPT_METHODS:
        raise ValueError(f"prompt_method must be one of {TRAIN_PROMPT_METHODS}, not {prompt_method!r}")
    table = table or k_at_n_table(store, items, n=n, normalizer=normalizer)
    if not 0 <= k <= table.n:
        raise ValueError(f"K must be in 0..N={table.n}, got {k}")
    by_id = {it.item_id: it for it in table.items}
    skipped = {reason: list(ids) for reason, ids in table.skipped.items()}
    examples: list[SFTExample] = []
    n_idk = n_kept = 0
    for item in items:
        k_at_n = by_id.get(item.id)
        if k_at_n is None:
            continue  # already counted in table.skipped
        try:
            audio = audio_loader(item.audio_path, item_id=item.id)
        except ItemError:
            skipped.setdefault(AUDIO_ERROR, []).append(item.id)
            continue
        target = sft_target(item, k_at_n, k)
        n_idk += target == IDK_TARGET
        n_kept += target != IDK_TARGET
        examples.append(SFTExample(audio=audio, prompt=build_prompt(prompt_method, item.question, item.choices),
                                   target=target, item_id=item.id))
    return IdkDataset(k=k, n=table.n, prompt_method=prompt_method, examples=examples, skipped=skipped,
                      n_idk=n_idk, n_kept=n_kept, sampling=sampling_settings(store))
