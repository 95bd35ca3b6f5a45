"""Benchmarks in their Hugging Face release formats, read through :mod:`datasets`.

Where a benchmark's records may come from (the ``PATH`` of ``kind:PATH``), besides JSON/JSONL:

* a parquet file (MMAU-Pro's ``test.parquet``) or a folder of data files laid out as on the Hub
  (``data/test-00000-of-00001.parquet``, or a README's ``configs``; ``datasets`` resolves the
  splits): parquet is streamed :data:`BATCH_ROWS` rows at a time by pyarrow (the engine
  ``datasets`` reads parquet with) without pre-buffering, which is what bounds the memory (the
  streaming reader of ``datasets`` 5.2 holds about twice the file in memory); other data files
  are streamed by ``datasets``;
* a folder written by ``datasets`` ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``):
  memory-mapped;
* ``hf:<owner>/<name>[:split]``: a dataset repository in the local Hugging Face hub cache (what
  ``huggingface-cli download --repo-type dataset <owner>/<name>`` or an earlier ``load_dataset``
  left there), read offline; nothing is downloaded.

A folder with several splits takes ``:split`` after it (``FOLDER:test``); without one, the
``test`` split is read, or the only split.

Audio is either a path (relative to ``--audio-dir``; by default the parquet file's folder, the
folder, or the hub snapshot) or embedded: a ``{"bytes", "path"}`` value (a ``datasets.Audio``
column, as the Hub copies of MMAU and MMSU store clips) or a plain binary column. ``datasets``
never decodes it here: the bytes are written once, unchanged, to the content-keyed cache
``paths.CACHE_DIR/audio/<sha256><ext>`` (never beside the user's data) and the item's audio is
that file, so it is read, resampled and fingerprinted by content like every other clip. The
item's kept ``record`` holds the clip's original name (its ``path``, else ``sha256:<hex>``) in
place of the bytes, so exports stay small and name the clip as the release does.

Memory: rows are read :data:`BATCH_ROWS` at a time and only their text fields are kept, so a
9000-item split with embedded audio loads in bounded memory (``tools/measure_dataset_memory.py``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_bytes
from reliable_lalm.core.progress import progress_bar

HF_PREFIX = "hf:"


def _datasets():
    """The ``datasets`` library, imported when a Hugging Face release is first read."""
    # local import: datasets takes seconds to import; `rlalm score` and `rlalm benchmark` on JSON files never need it
    import datasets

    return datasets
BATCH_ROWS = 64
PARQUET_BUFFER_BYTES = 1 << 20  # read buffer of the parquet stream (no pre-buffering of whole row groups)
AUDIO_CACHE_SUBDIR = "audio"
EMBEDDED_KEY = "_embedded_audio"  # in a resolved record: the columns whose clip was embedded
DEFAULT_SPLIT = "test"
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm")
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"))
_SAVE_TO_DISK_MARKERS = ("state.json", "dataset_dict.json")


def _split_suffix(text: str) -> tuple[Path, str | None]:
    """``FOLDER:split`` -> (FOLDER, split) when FOLDER exists and the whole does not."""
    path = Path(text)
    if not path.exists():
        head, sep, split = text.rpartition(":")
        if sep and head and split and "/" not in split and Path(head).exists():
            return Path(head), split
    return path, None


def is_dataset_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names a dataset (parquet, folder, ``hf:``) rather than a JSON/JSONL file."""
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return True
    path, _ = _split_suffix(text)
    return path.suffix == ".parquet" or path.is_dir()


@dataclass
class DatasetRows:
    """An opened dataset split: ``batches()`` yields its rows as arrow tables in order; ``root`` is
    the folder its relative audio paths are read from; ``total`` its row count when known."""
    spec: str
    batches: Callable[[], Iterable[pa.Table | pa.RecordBatch]]
    root: Path
    total: int | None = None


def _dataset_batches(dataset: Any) -> Callable[[], Iterable[pa.Table]]:
    """A ``datasets`` split's rows in the arrow format: the stored values, no audio decoded."""
    return lambda: dataset.with_format("arrow").iter(batch_size=BATCH_ROWS)


def _parquet_batches(files: Sequence[Path]) -> Callable[[], Iterator[pa.RecordBatch]]:
    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            reader = pq.ParquetFile(str(file), pre_buffer=False, buffer_size=PARQUET_BUFFER_BYTES)
            yield from reader.iter_batches(batch_size=BATCH_ROWS)
    return batches


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _call(spec: str, what: Callable[[], Any]) -> Any:
    """Run a ``datasets`` call; its many error types become one ValueError naming ``spec``."""
    verbosity = _datasets().logging.get_verbosity()
    _datasets().logging.set_verbosity(_datasets().logging.CRITICAL)  # its error log would repeat our one line
    try:
        return what()
    except FileNotFoundError:
        raise
    except Exception as err:  # datasets/pyarrow raise a zoo of types (DatasetNotFoundError, ArrowInvalid, ...)
        raise ValueError(f"{spec}: cannot be read as a dataset ({type(err).__name__}: {_one_line(err)})") from None
    finally:
        _datasets().logging.set_verbosity(verbosity)


def _pick_split(dataset: Any, split: str | None, spec: str) -> Any:
    """The split of a ``DatasetDict`` (or a dict by split name): ``split``, else ``test``, else the only one."""
    if isinstance(dataset, (dict, _datasets().DatasetDict, _datasets().IterableDatasetDict)):
        names = list(dataset)
        if split is None:
            split = DEFAULT_SPLIT if DEFAULT_SPLIT in names else (names[0] if len(names) == 1 else None)
        if split not in dataset:
            raise ValueError(f"{spec}: " + (f"no split {split!r}" if split else "several splits")
                             + f" (splits: {', '.join(names)}); name one by appending :SPLIT")
        return dataset[split]
    if split is not None and getattr(dataset, "split", None) not in (None, split):
        raise ValueError(f"{spec}: the dataset holds split {dataset.split!r}, not {split!r}")
    return dataset


def _parquet_rows(files: list[Path]) -> int | None:
    try:
        return sum(pq.ParquetFile(str(f)).metadata.num_rows for f in files)
    except Exception:  # an unreadable footer fails again, with its reason, when the rows are read
        return None


def open_rows(spec: str | Path) -> DatasetRows:
    """Open the dataset split ``spec`` names (see the module doc); nothing is read yet but metadata.

    Raises ``FileNotFoundError`` (nothing there, or not in the local cache) or ``ValueError`` (one
    line: not a dataset, an unknown split, an unreadable file).
    """
    text = str(spec)
    if text.startswith(HF_PREFIX):
        return _open_hub(text)
    path, split = _split_suffix(text)
    if not path.exists():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: not a parquet file (a dataset file must end in .parquet)")
        total = _call(text, lambda: pq.ParquetFile(str(path)).metadata.num_rows)  # a broken file fails here
        return DatasetRows(text, _parquet_batches([path]), path.parent, total)
    if any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        dataset = _pick_split(_call(text, lambda: _datasets().load_from_disk(str(path))), split, text)  # memory-mapped
        return DatasetRows(text, _dataset_batches(dataset), path, len(dataset))
    return _open_folder(text, path, split)


def _open_folder(spec: str, folder: Path, split: str | None) -> DatasetRows:
    """A folder of data files (the Hub's layout: ``data/<split>-*.parquet``, or a README's configs):
    ``datasets`` resolves its splits and files; parquet files are then streamed by pyarrow."""
    builder = _call(spec, lambda: _datasets().load_dataset_builder(str(folder)))
    files_by_split = {str(name): [Path(str(f)) for f in files]
                      for name, files in (builder.config.data_files or {}).items()}
    chosen = _pick_split(files_by_split, split, spec)
    if chosen and all(f.suffix == ".parquet" for f in chosen):
        return DatasetRows(spec, _parquet_batches(chosen), folder, _parquet_rows(chosen))
    dataset = _pick_split(_call(spec, lambda: _datasets().load_dataset(str(folder), streaming=True)), split, spec)
    return DatasetRows(spec, _dataset_batches(dataset), folder)


def _open_hub(spec: str) -> DatasetRows:
    repo, _, split = spec[len(HF_PREFIX):].partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{spec}: expected hf:<owner>/<name>[:split]")
    try:
        folder = Path(huggingface_hub.snapshot_download(repo, repo_type="dataset", local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError and kin: not cached, and we never download
        raise FileNotFoundError(
            f"{spec}: dataset {repo!r} is not in the local Hugging Face cache ({type(err).__name__}); "
            f"download it where there is network: huggingface-cli download --repo-type dataset {repo}") from None
    return _open_folder(spec, folder, split or None)


def audio_cache_dir() -> Path:
    return paths.CACHE_DIR / AUDIO_CACHE_SUBDIR


def _suffix(data: bytes, name: str | None) -> str:
    suffix = Path(name).suffix.lower() if name else ""
    if suffix in AUDIO_SUFFIXES:
        return suffix
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return ".bin"  # libsndfile/librosa sniff the content; a clip they cannot read is an item error


def materialise_audio(data: bytes, name: str | None = None) -> Path:
    """The cache file holding ``data`` (written unless already there), named by its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    target = audio_cache_dir() / f"{digest}{_suffix(data, name)}"
    if not (target.is_file() and target.stat().st_size == len(data)):
        # No fsync: a clip lost or cut short by a power failure has the wrong size and is rewritten.
        atomic_write_bytes(target, data, fsync=False)
    return target


def _is_audio_value(value: Any) -> bool:
    return isinstance(value, dict) and "bytes" in value and set(value) <= {"bytes", "path", "sampling_rate"}


def _resolve_value(value: Any) -> tuple[Any, Any, bool]:
    """``(kept, resolved, embedded)`` of one column value: an embedded clip becomes its name (kept)
    and its cache file (resolved); lists element by element; anything else unchanged."""
    if _is_audio_value(value):
        data, name = value.get("bytes"), value.get("path")
        if data:
            path = materialise_audio(data, name)
            return name or f"sha256:{path.stem}", str(path), True
        return name, name, False
    if isinstance(value, (bytes, bytearray)) and value:
        path = materialise_audio(bytes(value))
        return f"sha256:{path.stem}", str(path), True
    if isinstance(value, list):
        parts = [_resolve_value(v) for v in value]
        return [p[0] for p in parts], [p[1] for p in parts], any(p[2] for p in parts)
    return value, value, False


def resolve_record(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(kept, resolved)``: the record as exports keep it (clip names, no bytes) and as loaders read
    it (cache paths; :data:`EMBEDDED_KEY` lists the columns whose clip was embedded)."""
    kept: dict[str, Any] = {}
    resolved: dict[str, Any] = {}
    embedded: list[str] = []
    for key, value in record.items():
        kept[key], resolved[key], was_embedded = _resolve_value(value)
        if was_embedded:
            embedded.append(key)
    if embedded:
        resolved[EMBEDDED_KEY] = embedded
    return kept, resolved


def iter_records(rows: DatasetRows, *, progress: bool = True) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(kept, resolved)`` per row (:func:`resolve_record`), in order, :data:`BATCH_ROWS` rows at a time.

    Rows come as arrow tables (pyarrow's parquet reader, or ``datasets`` in its arrow format): the
    stored values, so no audio is decoded here.
    """
    batches = iter(_call(rows.spec, rows.batches))
    with progress_bar(total=rows.total, desc=f"reading {rows.spec}", unit="record", enabled=progress) as bar:
        while True:
            table = _call(rows.spec, lambda: next(batches, None))
            if table is None:
                return
            for record in table.to_pylist():
                yield resolve_record(record)
                bar.update(1)
