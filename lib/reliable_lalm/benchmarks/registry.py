"""The benchmark registry: ``name`` or ``name:path`` to a loader, its modalities and its conventions.

Spelling of a benchmark parameter (notebooks, profiles, ``rlalm infer --benchmark``):

* ``synthetic``: a registered benchmark with a built-in default file;
* ``mmau-test-mini:data/mmau/mmau-test-mini.json``: a registered kind and a file;
* ``path/to/file.json``: a file of the generic MMAU schema (``mmau``): scored the same way,
  but never set beside the paper's numbers (only ``mmau-test-mini`` is);
* ``mmar:../shared/mmar/MMAR-meta.jsonl``, ``mmsu:FILE``, ``mmau-pro:FILE``: the other schemas;
* ``mmau-test:FILE``: MMAU's hidden test split (no answers: inference and export only).

``FILE`` may also be a dataset in a Hugging Face release format: a parquet file or folder, a
``save_to_disk`` folder, or ``hf:<owner>/<name>[:split]`` from the local cache, with the audio as
paths or embedded bytes (:mod:`reliable_lalm.benchmarks.hf_data`), e.g. ``mmau-pro:test.parquet``.

``rlalm benchmark list`` prints the registered benchmarks.

Adding a benchmark: one loader module under :mod:`reliable_lalm.benchmarks` plus one
:class:`BenchmarkEntry` in :data:`BUILTIN_BENCHMARKS` (or an entry point in the group
``reliable_lalm.benchmarks`` for another package).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from reliable_lalm.benchmarks.hf_data import HF_PREFIX
from reliable_lalm.benchmarks.mmar import MODALITIES as MMAR_MODALITIES
from reliable_lalm.benchmarks.mmau_pro import MODALITIES as MMAU_PRO_MODALITIES
from reliable_lalm.benchmarks.mmsu import MODALITIES as MMSU_MODALITIES
from reliable_lalm.core.items import TASKS, LoadedBenchmark
from reliable_lalm.core.plugins import entry_point_objects, load_object
from reliable_lalm.core.records import OUTPUT_FIELD

ENTRY_POINT_GROUP = "reliable_lalm.benchmarks"
DEFAULT_KIND = "mmau"  # what a bare file path is read as


class UnknownBenchmarkError(ValueError):
    """A benchmark name that is not registered, or a registered kind without a file."""


@dataclass(frozen=True)
class BenchmarkEntry:
    name: str
    loader: str  # "module:function"; function(path, audio_dir=None, *, check_audio=..., modalities=...) -> LoadedBenchmark
    modalities: tuple[str, ...] = TASKS  # the modality groups, in table order
    output_field: str = OUTPUT_FIELD  # where the official scorer reads the model's answer
    paper_reference: bool = False  # the paper's tables (tables/reference/) apply to this benchmark
    default_path: str | Callable[[], str] | None = None  # used when no path is given
    has_answers: bool = True  # False: a hidden test split (inference and export only)
    description: str = ""
    # The official scorer's rule, "module:function"(answer, prediction, choices) -> bool; an export
    # lists the items where it judges the exported answer differently from our scoring.
    official_rule: str | None = None
    # The official scorer cannot count a refusal (MMAU-Pro's embedding match): export refusals and
    # unmapped outputs as the model's text instead of "IDK" / "".
    verbatim_refusals: bool = False

    def resolve_path(self, path: str | None) -> str:
        if path:
            return path
        if self.default_path is None:
            raise UnknownBenchmarkError(f"benchmark {self.name!r} needs a file: write '{self.name}:PATH'")
        return str(self.default_path() if callable(self.default_path) else self.default_path)

    def load(self, path: str | None = None, audio_dir: str | None = None, **kwargs: Any) -> LoadedBenchmark:
        loader = load_object(self.loader)
        loaded = loader(self.resolve_path(path), audio_dir, modalities=self.modalities, **kwargs)
        loaded.kind = self.name
        return loaded


BUILTIN_BENCHMARKS: dict[str, BenchmarkEntry] = {e.name: e for e in (
    BenchmarkEntry("mmau-test-mini", "reliable_lalm.benchmarks.mmau:load", paper_reference=True,
                   description="MMAU test-mini (1000 items; the 2025-03-25 release matches the paper)"),
    # The paper-dryrun profile's benchmark: the mmau-test-mini loader on the real metadata of a few
    # items per modality with generated audio (reliable_lalm.benchmarks.mmau_standin), written on first use.
    BenchmarkEntry("mmau-test-mini-standin", "reliable_lalm.benchmarks.mmau:load", paper_reference=True,
                   default_path=lambda: load_object("reliable_lalm.benchmarks.mmau_standin:default_path")(),
                   description="MMAU test-mini metadata (../shared/mmau/, 2025-03-25), first 4 items per "
                               "modality, generated stand-in audio (CPU dry run of the paper profile)"),
    BenchmarkEntry(DEFAULT_KIND, "reliable_lalm.benchmarks.mmau:load",
                   description="any file of the MMAU schema (sound/music/speech); no paper values"),
    BenchmarkEntry("mmau-test", "reliable_lalm.benchmarks.mmau:load_test", has_answers=False,
                   description="MMAU's 9000-item test split without answers: inference and leaderboard "
                               "export only"),
    BenchmarkEntry("mmar", "reliable_lalm.benchmarks.mmar:load", modalities=MMAR_MODALITIES,
                   output_field="answer_prediction", official_rule="reliable_lalm.benchmarks.mmar:mmar_string_match",
                   description="MMAR (1000 items; seven modality groups incl. mixes; Signal..Cultural Layer)"),
    BenchmarkEntry("mmsu", "reliable_lalm.benchmarks.mmsu:load", modalities=MMSU_MODALITIES,
                   description="MMSU (5000 spoken-language items, 47 sub-tasks; all speech; loader "
                               "tested on schema fixtures only)"),
    BenchmarkEntry("mmau-pro", "reliable_lalm.benchmarks.mmau_pro:load", modalities=MMAU_PRO_MODALITIES,
                   verbatim_refusals=True,
                   description="MMAU-Pro, multiple-choice single-audio part (open-ended, instruction-"
                               "following and multi-audio items skipped; loader tested on files built from the release's "
                               "columns only)"),
)}


def registered_benchmarks() -> dict[str, BenchmarkEntry]:
    entries = dict(BUILTIN_BENCHMARKS)
    for name, obj in entry_point_objects(ENTRY_POINT_GROUP).items():
        if not isinstance(obj, BenchmarkEntry):
            raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not a BenchmarkEntry")
        entries[obj.name] = obj
    return entries


def parse_benchmark(spec: str) -> tuple[BenchmarkEntry, str | None]:
    """``(entry, path or None)`` for ``name``, ``name:path`` or a bare path (see the module doc)."""
    entries = registered_benchmarks()
    spec = str(spec)
    if spec in entries:
        return entries[spec], None
    if spec.startswith(HF_PREFIX):  # hf:<repo>[:split] of the generic MMAU schema
        return entries[DEFAULT_KIND], spec
    name, sep, path = spec.partition(":")
    if sep and name in entries:
        return entries[name], path
    if sep and not Path(spec).exists() and len(name) > 1:  # "mmar:x" with an unknown kind (not "C:\...")
        raise UnknownBenchmarkError(f"unknown benchmark kind {name!r} in {spec!r} "
                                    f"(registered: {', '.join(sorted(entries))})")
    return entries[DEFAULT_KIND], spec


def load(spec: str, audio_dir: str | None = None, **kwargs: Any) -> LoadedBenchmark:
    entry, path = parse_benchmark(spec)
    return entry.load(path, audio_dir, **kwargs)


def resolve_benchmark(benchmark: Any) -> Any:
    """The benchmark a result store is joined with, loaded: a spec (``mmar:FILE``, a JSON file, ...)
    is loaded without checking its audio (scoring and export read no clip); a loaded benchmark, a
    sequence of items or None is passed through."""
    if isinstance(benchmark, (str, Path)):
        return load(str(benchmark), check_audio=False)
    return benchmark
