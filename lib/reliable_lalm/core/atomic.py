"""Atomic file writes: the one way this package replaces a file.

Why: result stores, manifests, exported predictions, score reports, the LLM reply cache and the
file-hash memo are all read back by later runs; a crash (or ``kill -9``) half-way through a plain
``write_text`` would leave a torn file that looks like a result. Each write here goes to a
temporary file beside the target (same folder, so the rename stays on one file system), is flushed
and fsync'ed, then renamed over the target with ``os.replace`` (atomic on POSIX): a reader sees the
old file or the new one, never a mix. A failed write removes its temporary file.

The temporary name carries the process and thread id, so concurrent writers (the LLM normalizer's
threads, two processes) never share one; files keep the permissions a plain ``open`` gives them
(``tempfile.mkstemp`` would make them owner-only).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

TEMP_SUFFIX = ".tmp"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) atomically; creates the folder."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically; creates the folder. ``fsync=False`` only where the
    caller checks the file on reuse (e.g. a content-keyed cache checks its size)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      ensure_ascii: bool = False, default: Callable[[Any], Any] | None = None) -> Path:
    """Replace ``path`` with ``data`` as JSON and a final newline, atomically (:func:`atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                                              default=default) + "\n")
