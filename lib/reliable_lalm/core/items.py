"""Benchmark items, the MMAU loader, validation and audio reading.

Every benchmark (MMAU test-mini, the synthetic demo benchmark) is a JSON list (or JSONL file) of
MMAU-schema records plus a folder of audio files. Loading never stops on one bad record: each record
is either accepted as a :class:`BenchmarkItem` or rejected with a :class:`RejectedRecord` naming the
item and the cause. That includes a JSONL line that is not JSON or not UTF-8 (rejected with its line
number) and a record of a JSON list holding a byte that is not UTF-8 (rejected with the byte's
offset); only a file whose structure is broken raises, in one line naming the file.
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import soundfile as sf

TASKS: tuple[str, ...] = ("sound", "music", "speech")
SAMPLING_RATE = 16_000
MIN_CHOICES, MAX_CHOICES = 2, 8
UTF8_BOM = b"\xef\xbb\xbf"
# Characters of a question and its choices together. MMAU's longest is under 1 000; a model's
# context is checked per item in tokens before batching (models.base.context_problem), this cap
# only stops absurd inputs (a 1 MB question) at load, before anything is tokenized.
MAX_PROMPT_CHARS = 20_000


class ItemError(ValueError):
    """A benchmark record or its audio cannot be used. ``item_id`` names the record."""

    def __init__(self, item_id: str, cause: str):
        super().__init__(f"item {item_id!r}: {cause}")
        self.item_id = item_id
        self.cause = cause


class ItemSkipped(ItemError):
    """A record the benchmark's loader leaves out by design (an open-ended or multi-audio item of a
    multiple-choice evaluation): counted and named like any rejection, but not an error in the data."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One multiple-choice audio question (MMAU schema, normalized)."""

    id: str
    audio_path: str  # absolute path of the audio file
    question: str
    choices: tuple[str, ...]
    answer: str  # option text, one of ``choices``
    task: str  # sound | music | speech
    category: str = ""
    sub_category: str = ""
    difficulty: str = ""
    dataset: str = ""
    notes: tuple[str, ...] = ()  # what the loader changed (e.g. duplicated choices removed)
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # original record

    def to_record(self) -> dict[str, Any]:
        """The original MMAU-schema record (what exports and the official scorer see)."""
        if self.record:
            return dict(self.record)
        out = asdict(self)
        out.pop("record")
        out["choices"] = list(self.choices)
        return out

    # -- other benchmark schemas (MMAR, MMSU, MMAU-Pro, answerless test splits) --------------------
    def scoring_record(self) -> dict[str, Any]:
        """:meth:`to_record` plus ``id``, ``task``, ``choices`` and ``answer`` where the benchmark's
        own schema lacks them (MMAR has ``modality``, MMSU ``choice_a`` ...), so the scorer reads
        every benchmark the same way. ``choices`` is also replaced when the loader repaired more
        than the scorer repairs itself (stripping, dropping duplicates), e.g. MMAR's empty options.
        An MMAU record is returned unchanged."""
        out = self.to_record()
        for key, value in (("id", self.id), ("task", self.task), ("choices", list(self.choices)),
                           ("answer", self.answer)):
            out.setdefault(key, value)
        own = out["choices"]
        if not isinstance(own, (list, tuple)) or tuple(dict.fromkeys(str(c).strip() for c in own)) != self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class RejectedRecord:
    index: int  # position in the JSON list (JSONL: line number - 1)
    item_id: str
    cause: str
    line: int | None = None  # JSONL: the line number (from 1)
    skipped: bool = False  # left out by the loader's design (ItemSkipped), not bad data

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.item_id, "index": self.index, "line": self.line, "reason": self.cause,
                "skipped": self.skipped}


@dataclass
class LoadedBenchmark:
    items: list[BenchmarkItem]
    rejected: list[RejectedRecord]
    source: str = ""
    modalities: tuple[str, ...] = TASKS  # the benchmark's modality groups, in table order
    kind: str = ""  # the registry name it was loaded as (set by the benchmark registry)

    def __len__(self) -> int:
        return len(self.items)

    def by_task(self, task: str) -> list[BenchmarkItem]:
        return [item for item in self.items if item.task == task]

    def summary(self) -> dict[str, Any]:
        counts = {task: len(self.by_task(task)) for task in self.modalities}
        return {"source": self.source, "accepted": len(self.items), "rejected": len(self.rejected), **counts}


def _as_text(value: Any) -> str:
    """MMAU stores ``category`` as a list for a few records; join lists with '; '."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def clean_choices(choices_raw: Any, *, dedupe: bool = True) -> tuple[list[str], list[str]]:
    """``(choices, notes)``: the choice texts stripped, checked and (with ``dedupe``) de-duplicated,
    or ``ValueError`` with the reason. The one check of a choice list: benchmark records
    (:func:`validate_record`), prediction records (:func:`reliable_lalm.core.scoring.check_record`)
    and items about to be prompted (:func:`reliable_lalm.methods.generation.check_choices`), so a
    record is never accepted by one and refused by another."""
    if not isinstance(choices_raw, (list, tuple)):
        raise ValueError(f"choices must be a list, got {type(choices_raw).__name__}")
    choices = [str(c).strip() for c in choices_raw]
    if any(not c for c in choices):
        raise ValueError("a choice is empty")
    notes: list[str] = []
    if len(set(choices)) != len(choices):
        if not dedupe:
            raise ValueError(f"duplicated choices {choices}")
        deduped = list(dict.fromkeys(choices))  # MMAU has a few duplicated options
        notes.append(f"duplicated choices removed: {choices} -> {deduped}")
        choices = deduped
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise ValueError(f"{len(choices)} distinct choices; {MIN_CHOICES}-{MAX_CHOICES} are supported")
    return choices, notes


def checked_answer(answer: Any, choices: Sequence[str], *, require_answer: bool = True) -> str:
    """The answer, stripped, if it is one of ``choices`` (else ``ValueError``); without
    ``require_answer`` a missing answer (a hidden test split) is ``""``."""
    if not require_answer and (answer is None or answer == ""):
        return ""  # a hidden test split: inference and export only, never scored
    if not isinstance(answer, str) or answer.strip() not in choices:
        raise ValueError(f"answer {answer!r} is not among the choices {list(choices)}")
    return answer.strip()


def validate_record(
    record: dict[str, Any],
    audio_dir: str | Path | None,
    *,
    check_audio: bool = True,
    dedupe_choices: bool = True,
    index: int | None = None,
    modalities: Sequence[str] = TASKS,
    require_answer: bool = True,
) -> BenchmarkItem:
    """Turn one MMAU-schema record into a :class:`BenchmarkItem` or raise :class:`ItemError`.

    ``audio_dir`` is the folder the record's ``audio_id`` (e.g. ``./test-mini-audios/x.wav``) is
    relative to; an absolute ``audio_id`` is used as is. With ``check_audio`` the file must exist
    (readability is checked when the audio is read, per item, by :func:`load_audio`).
    ``require_answer=False`` is for a split without answers (MMAU's hidden test split): a missing,
    null or empty ``answer`` is accepted as ``""``; an answer that is given must still be a choice.
    """
    if not isinstance(record, dict):
        raise ItemError(f"#{index}", f"record is a {type(record).__name__}, not an object")
    item_id = str(record.get("id") or "").strip() or f"#{index}"
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ItemError(item_id, "empty question")
    try:
        choices, notes = clean_choices(record.get("choices"), dedupe=dedupe_choices)
        answer = checked_answer(record.get("answer"), choices, require_answer=require_answer)
    except ValueError as err:
        raise ItemError(item_id, str(err)) from None
    size = len(question) + sum(len(c) for c in choices)
    if size > MAX_PROMPT_CHARS:
        raise ItemError(item_id, f"question and choices are {size} characters, over the cap of {MAX_PROMPT_CHARS}")
    task = str(record.get("task") or "").strip().lower()
    if task not in modalities:
        raise ItemError(item_id, f"task {record.get('task')!r} is not one of {tuple(modalities)}")
    audio_id = record.get("audio_id") or record.get("audio_path")
    if not isinstance(audio_id, str) or not audio_id.strip():
        raise ItemError(item_id, "no audio_id")
    audio_path = Path(audio_id)
    if not audio_path.is_absolute():
        if audio_dir is None:
            raise ItemError(item_id, f"relative audio_id {audio_id!r} but no audio folder was given")
        audio_path = Path(audio_dir) / audio_path
    audio_path = audio_path.resolve()
    if check_audio and not audio_path.is_file():
        raise ItemError(item_id, f"audio file missing: {audio_path}")
    return BenchmarkItem(
        id=item_id,
        audio_path=str(audio_path),
        question=question.strip(),
        choices=tuple(choices),
        answer=answer,
        task=task,
        category=_as_text(record.get("category")),
        sub_category=_as_text(record.get("sub-category", record.get("sub_category"))),
        difficulty=_as_text(record.get("difficulty")),
        dataset=_as_text(record.get("dataset")),
        notes=tuple(notes),
        record=dict(record),
    )


def load_records(records: Iterable[dict[str, Any]], audio_dir: str | Path | None, *, source: str = "",
                 check_audio: bool = True, dedupe_choices: bool = True,
                 positions: Sequence[tuple[int, int | None]] | None = None,
                 rejected: Sequence[RejectedRecord] = (),
                 modalities: Sequence[str] = TASKS, require_answer: bool = True) -> LoadedBenchmark:
    """Validate records. ``positions``: (index, JSONL line) of each record in its file (default:
    enumeration); ``rejected``: records already rejected while reading the file, reported first."""
    items: list[BenchmarkItem] = []
    rejected = list(rejected)
    seen: set[str] = set()
    for n, record in enumerate(records):
        index, line = positions[n] if positions is not None else (n, None)
        try:
            item = validate_record(record, audio_dir, check_audio=check_audio,
                                   dedupe_choices=dedupe_choices, index=index, modalities=modalities,
                                   require_answer=require_answer)
            if item.id in seen:
                raise ItemError(item.id, "duplicated id")
        except ItemError as err:
            rejected.append(RejectedRecord(index=index, item_id=err.item_id, cause=err.cause, line=line))
            continue
        seen.add(item.id)
        items.append(item)
    return LoadedBenchmark(items=items, rejected=rejected, source=source, modalities=tuple(modalities))


def _bad_utf8_offsets(raw: bytes) -> list[int]:
    """Byte offsets where ``raw`` stops being valid UTF-8 (one per undecodable sequence)."""
    offsets, pos = [], 0
    while True:
        try:
            raw[pos:].decode("utf-8")
            return offsets
        except UnicodeDecodeError as err:
            offsets.append(pos + err.start)
            pos += err.end


def _escaped_bytes(value: Any) -> int:
    """How many undecodable bytes (surrogateescape'd as U+DC80..U+DCFF) a parsed JSON value holds."""
    if isinstance(value, str):
        return sum(0xDC80 <= ord(ch) <= 0xDCFF for ch in value)
    if isinstance(value, dict):
        return sum(_escaped_bytes(k) + _escaped_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_escaped_bytes(v) for v in value)
    return 0


def _record_id(record: Any, fallback: str) -> str:
    raw = record.get("id") if isinstance(record, dict) else None
    text = str(raw).strip() if raw is not None else ""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if text else fallback


def read_json_records(path: str | Path) -> tuple[list[Any], list[tuple[int, int | None]], list[RejectedRecord]]:
    """Records of a JSON list (or ``{"items": [...]}``) or ``.jsonl`` file, tolerating bad lines and bytes.

    Returns ``(records, positions, rejected)``: ``positions[i]`` is ``(index, line)`` of
    ``records[i]`` (``line`` for JSONL only). A JSONL line that is not UTF-8 or not JSON, and a
    record of a JSON list holding a byte that is not UTF-8, are rejected (cause: the byte and its
    offset in the file, or the JSON error); the other records load. Raises ``ValueError`` (one line,
    naming the file) when the file as a whole cannot be read as records.
    """
    path = Path(path)
    raw = path.read_bytes()
    raw = raw[len(UTF8_BOM):] if raw.startswith(UTF8_BOM) else raw  # editors on Windows write one
    records: list[Any] = []
    positions: list[tuple[int, int | None]] = []
    rejected: list[RejectedRecord] = []
    if path.suffix == ".jsonl":
        offset = 0
        for n, chunk in enumerate(raw.split(b"\n"), start=1):
            start, offset = offset, offset + len(chunk) + 1
            if not chunk.strip():
                continue
            bad = _bad_utf8_offsets(chunk)
            try:
                if bad:
                    raise ValueError(f"not valid UTF-8: byte 0x{chunk[bad[0]]:02x} at offset {start + bad[0]}")
                records.append(json.loads(chunk.decode("utf-8")))
                positions.append((n - 1, n))
            except RecursionError:
                rejected.append(RejectedRecord(index=n - 1, item_id=f"#line {n}", cause="JSON nested too deeply to read",
                                               line=n))
            except ValueError as err:
                cause = f"invalid JSON: {err.msg} (column {err.colno})" if isinstance(err, json.JSONDecodeError) else str(err)
                rejected.append(RejectedRecord(index=n - 1, item_id=f"#line {n}", cause=cause, line=n))
        return records, positions, rejected
    bad = _bad_utf8_offsets(raw)
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as err:
        where = f"; not valid UTF-8 either: byte 0x{raw[bad[0]]:02x} at offset {bad[0]}" if bad else ""
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}){where}") from None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records (or JSONL)")
    pending = list(bad)  # undecodable bytes, in file order, as the records hold them
    for index, record in enumerate(data):
        count = _escaped_bytes(record) if pending else 0
        if count:
            mine, pending = pending[:count], pending[count:]
            where = mine[0] if mine else bad[-1]
            rejected.append(RejectedRecord(index=index, item_id=_record_id(record, f"#{index}"),
                                           cause=f"not valid UTF-8: byte 0x{raw[where]:02x} at offset {where}"))
            continue
        records.append(record)
        positions.append((index, None))
    if pending:
        raise ValueError(f"{path}: not valid UTF-8: byte 0x{raw[pending[0]]:02x} at offset {pending[0]} "
                         "(outside any record)")
    return records, positions, rejected


def load_benchmark(json_path: str | Path, audio_dir: str | Path | None = None, *,
                   check_audio: bool = True, dedupe_choices: bool = True,
                   modalities: Sequence[str] = TASKS, require_answer: bool = True) -> LoadedBenchmark:
    """Load an MMAU-schema JSON (a list) or JSONL file.

    ``audio_dir`` defaults to the JSON file's folder (MMAU's ``audio_id`` values start with
    ``./test-mini-audios/``, relative to where the JSON sits in the official release).
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {json_path}")
    records, positions, rejected = read_json_records(json_path)
    root = Path(audio_dir) if audio_dir is not None else json_path.parent
    return load_records(records, root, source=str(json_path), check_audio=check_audio,
                        dedupe_choices=dedupe_choices, positions=positions, rejected=rejected,
                        modalities=modalities, require_answer=require_answer)


def _decoder_hint(path: Path) -> str:
    """What to install when libsndfile cannot read a format (compressed audio needs ffmpeg)."""
    suffix = path.suffix.lower() or "(no extension)"
    if suffix.lstrip(".").upper() in sf.available_formats():
        return f"; {suffix} is a format libsndfile reads: the file is probably corrupt or truncated"
    if shutil.which("ffmpeg") is None:
        return (f"; the {suffix} format needs a decoder beyond libsndfile: install ffmpeg "
                "(apt-get install ffmpeg, brew install ffmpeg or conda install -c conda-forge ffmpeg) "
                "or convert the clip to WAV/FLAC")
    return f"; ffmpeg is installed but could not decode it either: the file may be corrupt ({suffix})"


def load_audio(path: str | Path, *, sampling_rate: int = SAMPLING_RATE, item_id: str | None = None) -> np.ndarray:
    """Read an audio file as mono float32 at ``sampling_rate`` (downmix stereo, resample if needed).

    Raises :class:`ItemError` naming the item for a missing, unreadable, empty or non-finite file.
    """
    name = item_id or str(path)
    path = Path(path)
    if not path.is_file():
        raise ItemError(name, f"audio file missing: {path}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt files
        try:  # formats libsndfile cannot read (e.g. some mp3/m4a): let librosa/audioread try
            with warnings.catch_warnings():  # librosa's fallback chatter; a failure is raised below
                warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
                warnings.filterwarnings("ignore", message=r"(?s).*__audioread_load", category=FutureWarning)
                warnings.filterwarnings("ignore", message="'(aifc|audioop|sunau)' is deprecated",
                                        category=DeprecationWarning)
                # local import: librosa (numba) loads only for a format libsndfile cannot read
                import librosa

                audio, sr = librosa.load(str(path), sr=None, mono=False)
            audio = np.atleast_2d(audio).T.astype(np.float32)
        except Exception:
            raise ItemError(name, f"audio file unreadable: {path} ({err}){_decoder_hint(path)}") from err
    if audio.size == 0:
        raise ItemError(name, f"audio file is empty: {path}")
    audio = audio.mean(axis=1)  # downmix
    if sr != sampling_rate:
        # local import: librosa (numba) loads only when a clip needs resampling
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=sampling_rate)
    if not np.all(np.isfinite(audio)):
        raise ItemError(name, f"audio contains NaN or inf: {path}")
    return np.ascontiguousarray(audio, dtype=np.float32)

