"""Content fingerprints: one key for every cached artifact, computed from what determines it.

A cached result may be reused only when everything it was computed from is the same: the model's
weights (and an adapter's) by content, each item's content including its audio bytes, the
rendered prompt text, the generation settings and seed. Names, paths and modification times are
never part of a key, so a cache travels between clones and machines, and a change of any input
is never answered from the cache.

File hashes are memoized, by (real path, device, inode, size, mtime and ctime in ns), in memory and
in a small JSON file under the cache folder, so the 1000 audio files of MMAU or the 15 GB of a 7B
checkpoint are read once, not once per process; the memo is only a shortcut to the hash, and the
hash is the key. The ctime is in the memo key because an mtime can be set back (``touch -r``,
``cp -p``, ``rsync -t``) but a ctime cannot: the kernel sets it on every write or metadata change,
so new bytes copied in under an old mtime are hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_json

HASH_CHUNK = 1 << 20
# A file changed less than this before it was hashed is not memoized: file times come from a coarse
# clock (one tick, up to 10 ms), so a second change within the tick could leave the ctime as it was.
RACY_NS = 2_000_000_000
SHORT = 16  # hex digits kept in keys: 64 bits, plenty against accidental collisions
# The files of a checkpoint folder that determine its outputs (weights, configs, tokenizer, template).
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".json", ".jinja", ".model", ".txt", ".tiktoken", ".py")
# ... except the files that only describe it.
CHECKPOINT_IGNORED = frozenset({"README.md", "card_metrics.json", "training.json", "training_args.bin",
                                "trainer_state.json", "summary.json", "manifest.json"})

_memo: dict[str, str] = {}
_memo_lock = threading.Lock()
_memo_loaded: set[str] = set()


def digest(value: Any, *, length: int = SHORT) -> str:
    """sha256 of a value's canonical JSON (sorted keys), as hex."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def text_digest(text: str, *, length: int = SHORT) -> str:
    return hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:length]


def _memo_path() -> Path:
    return paths.CACHE_DIR / "file-sha256.json"


def _load_memo(path: Path) -> None:
    key = str(path)
    if key in _memo_loaded:
        return
    _memo_loaded.add(key)
    try:
        _memo.update(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass  # no memo yet, or a torn one: hashes are recomputed


def _save_memo(path: Path) -> None:
    try:
        atomic_write_json(path, _memo, indent=None, sort_keys=True)
    except OSError:
        pass  # a read-only cache folder only costs re-hashing


def file_sha256(path: str | Path, *, persist_above: int = 1 << 20) -> str:
    """Full sha256 of a file's bytes (memoized by real path, inode, size, mtime and ctime; see the module doc).

    Files larger than ``persist_above`` bytes also go into the on-disk memo.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = f"{real}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    with _memo_lock:
        if memo_key in _memo:
            return _memo[memo_key]
    memo_file = _memo_path()
    if st.st_size > persist_above:
        with _memo_lock:
            _load_memo(memo_file)
            if memo_key in _memo:
                return _memo[memo_key]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_CHUNK), b""):
            h.update(block)
    value = h.hexdigest()
    if time.time_ns() - st.st_ctime_ns < RACY_NS:
        return value  # changed just now: a further change within the clock's tick could keep this ctime
    with _memo_lock:
        _memo[memo_key] = value
        if st.st_size > persist_above:
            _save_memo(memo_file)
    return value


def directory_fingerprint(directory: str | Path, *, suffixes: Iterable[str] = CHECKPOINT_SUFFIXES,
                          ignored: Iterable[str] = CHECKPOINT_IGNORED) -> str:
    """Hash of a folder's relevant files: their names (relative) and content hashes."""
    root = Path(directory)
    suffixes, ignored = tuple(suffixes), frozenset(ignored)
    entries = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name in ignored or p.name.startswith(".") or not p.name.endswith(suffixes):
            continue
        rel = p.relative_to(root)
        if any(part.startswith(("checkpoint", ".")) for part in rel.parts[:-1]):
            continue  # training checkpoints inside an output folder are not the model
        entries.append([rel.as_posix(), file_sha256(p)])
    if not entries:
        raise FileNotFoundError(f"{root}: no model files to fingerprint")
    return digest(entries)


def resolve_checkpoint_dir(name_or_path: str | Path) -> Path | None:
    """A local folder as is; a hub id as its snapshot folder in the HF cache (no download); else None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        # local import: huggingface_hub comes with the model stack; the scoring core does not need it
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # not in the cache (or not a hub id): nothing to hash
        return None


def model_fingerprint(name_or_path: str | Path | None) -> str | None:
    """Content hash of a checkpoint (local folder or cached hub snapshot); ``None`` for no model."""
    if name_or_path is None:
        return None
    folder = resolve_checkpoint_dir(name_or_path)
    if folder is None:
        # Unhashable (e.g. a served model behind an API): its name is all we know; say so in the key.
        return f"name:{name_or_path}"
    return directory_fingerprint(folder)


def audio_fingerprint(path: str | Path) -> str:
    """The audio file's content hash, or a marker naming why there is none (the item fails anyway)."""
    try:
        return file_sha256(path)[:SHORT]
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable:{type(err).__name__}"


def item_fingerprint(item: Any) -> dict[str, str]:
    """Per-part hashes of one benchmark item: its text fields and its audio bytes."""
    text = {"id": item.id, "question": item.question, "choices": list(item.choices), "answer": item.answer,
            "task": item.task}
    return {"item": digest(text), "audio": audio_fingerprint(item.audio_path)}


def items_fingerprint(items: Iterable[Any]) -> str:
    """One hash of a list of items, audio included (order matters: it is the evaluation order)."""
    return digest([item_fingerprint(it) for it in items])
