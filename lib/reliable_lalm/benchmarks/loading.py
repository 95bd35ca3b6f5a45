"""Loading a benchmark whose schema is not MMAU's: read the file, translate each record to the
MMAU view the scoring core validates, keep the original record. The file may also be a dataset in
a Hugging Face release format (parquet, ``save_to_disk``, ``hf:<repo>``; :mod:`.hf_data`).

A benchmark module supplies ``translate(record, index) -> dict``: it returns the record's MMAU
view (``id, question, choices, answer, task, audio_id`` plus ``category``, ``sub-category``,
``difficulty``, and under :data:`NOTES_KEY` what it repaired) or raises :class:`~reliable_lalm.core.items.ItemError` with the reason the record
is skipped (open-ended, several audio clips, an unknown modality, ...). Validation is then the
scoring core's (:func:`~reliable_lalm.core.items.validate_record`), so every benchmark is checked
by the same rules, and the accepted item keeps the *original* record (what an export to the
benchmark's own scorer must carry).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from reliable_lalm.benchmarks import hf_data
from reliable_lalm.core.items import BenchmarkItem, ItemError, ItemSkipped, LoadedBenchmark, RejectedRecord, validate_record

NOTES_KEY = "_loader_notes"  # a translated view may carry what the translation repaired
Translate = Callable[[dict[str, Any], int], dict[str, Any]]


def read_raw_records(path: str | Path) -> list[Any]:
    """Records of a JSON list, ``{"items": [...]}``/``{"data": [...]}`` or JSONL file.

    Raises ``FileNotFoundError`` or ``ValueError`` (naming the file and the line) when the file
    cannot be read as records at all; a single bad record is the loader's business.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {n} is not valid JSON ({err.msg})") from err
                except RecursionError:
                    raise ValueError(f"{path}: line {n} is JSON nested too deeply to read") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None
    if isinstance(data, dict):
        for key in ("items", "data"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records (or JSONL)")
    return data


def record_id(record: Any, index: int) -> str:
    if isinstance(record, dict):
        value = str(record.get("id") or "").strip()
        if value:
            return value
    return f"#{index}"


def source_records(path: str | Path, audio_dir: str | Path | None
                   ) -> tuple[Iterable[tuple[Any, Any]], Path, str]:
    """``(records, audio root, source name)`` of a benchmark file or dataset (:mod:`.hf_data`).

    ``records`` yields ``(kept, resolved)`` pairs: the record as exports keep it and as loaders read
    it (they differ only where a dataset embeds the audio). ``audio_dir`` defaults to the file's
    folder (the audio paths of MMAR, MMSU and MMAU-Pro are relative to where the metadata sits in
    their releases), a dataset folder, or a hub snapshot.
    """
    if hf_data.is_dataset_spec(path):
        rows = hf_data.open_rows(path)
        root = Path(audio_dir) if audio_dir is not None else rows.root
        return hf_data.iter_records(rows), root, rows.spec
    path = Path(path)
    raw = read_raw_records(path)
    root = Path(audio_dir) if audio_dir is not None else path.parent
    return ((record, record) for record in raw), root, str(path)


def load_translated(path: str | Path, audio_dir: str | Path | None, translate: Translate, *,
                    modalities: Sequence[str], check_audio: bool = True, dedupe_choices: bool = True,
                    require_answer: bool = True, open_groups: Callable[[str], bool] | None = None
                    ) -> LoadedBenchmark:
    """Every record of ``path`` (a JSON/JSONL file or a dataset, :func:`source_records`) accepted
    (translated, validated) or rejected with its reason.

    ``open_groups``: a translated ``task`` outside ``modalities`` for which it returns True is
    accepted as a further modality group (appended, sorted) instead of rejected.
    """
    records, root, source = source_records(path, audio_dir)
    groups = list(modalities)
    extra: set[str] = set()
    items: list[BenchmarkItem] = []
    rejected: list[RejectedRecord] = []
    seen: set[str] = set()
    for index, (kept, record) in enumerate(records):
        try:
            if not isinstance(record, dict):
                raise ItemError(f"#{index}", f"record is a {type(record).__name__}, not an object")
            view = translate(record, index)
            notes = tuple(view.pop(NOTES_KEY, ()))
            task = str(view.get("task") or "").strip().lower()
            if open_groups is not None and task not in groups and open_groups(task):
                extra.add(task)
                groups.append(task)
            item = validate_record(view, root, check_audio=check_audio, dedupe_choices=dedupe_choices,
                                   index=index, modalities=groups, require_answer=require_answer)
            if item.id in seen:
                raise ItemError(item.id, "duplicated id")
        except ItemError as err:
            rejected.append(RejectedRecord(index=index, item_id=err.item_id, cause=err.cause,
                                           skipped=isinstance(err, ItemSkipped)))
            continue
        seen.add(item.id)
        items.append(dataclasses.replace(item, record=dict(kept), notes=notes + item.notes))
    return LoadedBenchmark(items=items, rejected=rejected, source=source,
                           modalities=tuple(modalities) + tuple(sorted(extra)))


def text_field(record: dict[str, Any], *names: str) -> str:
    """The first of ``names`` the record has, as stripped text ('' when absent or null)."""
    for name in names:
        value = record.get(name)
        if value is not None:
            if isinstance(value, (list, tuple)):
                return "; ".join(str(v) for v in value)
            return str(value).strip()
    return ""


def audio_field(record: dict[str, Any], *names: str) -> Any:
    """The record's clip: an embedded one first (a column that held the audio bytes, now its cache
    file; :mod:`.hf_data`), else the first of ``names`` the record has (a path, or a list of paths)."""
    for name in record.get(hf_data.EMBEDDED_KEY, ()):
        return record[name]
    for name in names:
        value = record.get(name)
        if value is not None and value != "":
            return value
    return None
