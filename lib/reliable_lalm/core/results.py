"""Append-only, crash-safe result stores with provenance.

A store is a folder with ``records.jsonl`` (one JSON object a line, one line per
``(item_id, sample_index)``) and ``manifest.json`` (parameters and provenance). Each record is
written with a single ``write`` of a whole line, flushed and fsync'ed, so a crash (even ``kill -9``)
loses at most the line being written. On open, a torn last line (no newline) is cut off; on read,
a later duplicate of a key is ignored, so an earlier record is never lost or doubled.

Every record carries the fingerprint of the parameters it was made with (``params_fingerprint``,
as in the manifest, which is created under the writer lock); reading a store whose records were
made with other parameters than its manifest's raises :class:`ParamsMismatch` instead of reusing
them. (Records written before records carried it are read as before.)

One writer at a time: a run holds :meth:`ResultStore.writer_lock` (``fcntl.flock`` on
``writer.lock`` in the store) while it writes; a second process gets :class:`StoreLocked` naming
the store and the pid holding it, instead of redoing all the work and writing every key twice.
The kernel drops a flock when its process dies, so ``kill -9`` never leaves a stale lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from reliable_lalm import paths
from reliable_lalm.core.atomic import atomic_write_json
from reliable_lalm.core.numerics import numerics_description

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = "writer.lock"
RECORD_FINGERPRINT = "params_fingerprint"  # each record: the fingerprint of the parameters it was made with
# A key is secret-like when one of its "_"/"-"-separated parts is one of these (parts, not substrings:
# max_new_tokens stays visible, api_key and hf_token do not).
SECRET_PARTS = frozenset({"key", "apikey", "token", "secret", "secrets", "password", "passwd", "credential",
                          "credentials"})

Key = tuple[str, int]


def is_secret_key(name: Any) -> bool:
    """Whether a parameter name looks like a secret (one rule for manifests and notebook parameters)."""
    lowered = str(name).lower()
    return any(part in SECRET_PARTS for part in re.split(r"[_\W]+", lowered)) or "apikey" in lowered.replace("_", "")


def _redact(value: Any) -> Any:
    """Drop anything that looks like a secret from parameters before they are written."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if is_secret_key(k) and v else _redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def params_fingerprint(params: dict[str, Any]) -> str:
    blob = json.dumps(_redact(params), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_revision(root: Path | None = None) -> dict[str, Any]:
    root = root or paths.REPO_ROOT
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha or None, "git_dirty": dirty if sha else None}


def package_versions(names: Iterable[str] = ("reliable-lalm", "torch", "transformers", "peft", "deepspeed",
                                               "accelerate", "numpy", "librosa", "openai", "tokenizers")) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_description(device: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    torch = sys.modules.get("torch")  # described when loaded; the scoring core never imports it
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if device is not None:
        info["device"] = str(device)
    # CPU, kernels, math libraries, threads and numerics env vars (SFT bits differ by CPU).
    info["numerics"] = numerics_description()
    return info


def provenance(params: dict[str, Any], *, seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Everything needed to tell where a result came from. Secrets in ``params`` are redacted."""
    return {
        **git_revision(),
        "versions": package_versions(),
        "device": device_description(device),
        "seed": seed,
        "params": _redact(params),
        "params_fingerprint": params_fingerprint(params),
        "created_unix": time.time(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def record_line(record: dict[str, Any]) -> str:
    """One JSONL line for a record. Text that UTF-8 cannot encode (a lone surrogate such as
    ``"\\ud83d"``, valid in JSON and so in a benchmark) is written \\u-escaped: the line stays valid
    UTF-8 and reads back as the same string."""
    line = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, sort_keys=True, default=str)
    return line + "\n"


def _write_manifest(path: Path, data: Any) -> None:
    # ensure_ascii as json.dump's default: manifests written before keep their exact bytes.
    atomic_write_json(path, data, sort_keys=True, ensure_ascii=True, default=str)


class ParamsMismatch(RuntimeError):
    """A store reopened with other parameters (the message names the keys that differ)."""


def params_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two parameter trees (``settings.seed``, ``model.weights``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += params_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    same = json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str)
    return [] if same else [prefix.rstrip(".") or "params"]


class StoreLocked(RuntimeError):
    """Another process is writing this result store."""


# Locks this process holds: real path of the lock file -> [fd, depth]. flock conflicts between two
# open() calls of one process too, so nested runs on one store (the agent's steps) reuse the fd.
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


@dataclass
class ResultStore:
    """A resumable store of per-(item, sample) records.

    ``ResultStore.open(dir, params)`` creates the store or reopens it; reopening with different
    parameters raises :class:`ParamsMismatch` (results of different settings never mix).
    """

    directory: Path
    # The parameters' fingerprint every record is written with and checked against (records made
    # with other settings are never reused). Set by :meth:`open`; a store opened without
    # parameters reads it from its manifest.
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def _expected_fingerprint(self) -> str | None:
        if self.fingerprint is None and self.manifest_path.exists():
            self.fingerprint = self.manifest().get("params_fingerprint")
        return self.fingerprint

    @property
    def records_path(self) -> Path:
        return self.directory / RECORDS_FILE

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @classmethod
    def open(cls, directory: str | Path, params: dict[str, Any] | None = None, *, seed: int | None = None,
             device: str | None = None) -> "ResultStore":
        store = cls(Path(directory))
        store.directory.mkdir(parents=True, exist_ok=True)
        params = params or {}
        fingerprint = params_fingerprint(params)
        # Checked and created under the writer lock: two processes starting together on a fresh
        # folder with other settings must not both find it empty (one of them is refused here).
        with store.writer_lock():
            if store.manifest_path.exists():
                manifest = store.manifest()
                if manifest.get("params_fingerprint") != fingerprint:
                    differs = ", ".join(params_differences(manifest.get("params") or {}, _redact(params))[:6])
                    raise ParamsMismatch(
                        f"{store.directory} holds results for other parameters ({differs or 'fingerprint'} "
                        f"differ); use another directory or delete it")
            else:
                _write_manifest(store.manifest_path, provenance(params, seed=seed, device=device))
            store._repair_tail()
        store.fingerprint = fingerprint
        return store

    @property
    def lock_path(self) -> Path:
        return self.directory / LOCK_FILE

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator["ResultStore"]:
        """Hold the store's exclusive writer lock; :class:`StoreLocked` if another process holds it.

        Re-entrant within a process. The lock file stays (deleting it would race with a new
        holder); it contains the pid of the last holder, read only to name a live one.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.lock_path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
            else:
                fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise StoreLocked(f"result store {self.directory} is being written by another process "
                                      f"(pid {holder}); wait for it to finish, or use another folder") from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
                _HELD[key] = [fd, 1]
        try:
            yield self
        finally:
            with _HELD_GUARD:
                held = _HELD[key]
                held[1] -= 1
                if held[1] == 0:
                    del _HELD[key]
                    fcntl.flock(held[0], fcntl.LOCK_UN)
                    os.close(held[0])

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.manifest()
        manifest.update(_redact(fields))
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_manifest(self.manifest_path, manifest)

    def _repair_tail(self) -> None:
        """Cut a torn last line left by a crash mid-write."""
        path = self.records_path
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            data = path.read_bytes()
            cut = data.rfind(b"\n") + 1  # 0 when the only line is torn
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def records(self) -> list[dict[str, Any]]:
        """All complete records, the first of each key only, in write order."""
        out: list[dict[str, Any]] = []
        seen: set[Key] = set()
        if not self.records_path.exists():
            return out
        expected = self._expected_fingerprint()
        foreign: list[str] = []
        with open(self.records_path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn tail of a crashed writer
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    continue
                key = (str(record["item_id"]), int(record.get("sample_index", 0)))
                if key in seen:
                    continue
                made_with = record.get(RECORD_FINGERPRINT)
                if expected is not None and made_with is not None and made_with != expected:
                    foreign.append(key[0])
                seen.add(key)
                out.append(record)
        if foreign:
            raise ParamsMismatch(
                f"{self.directory}: {len(foreign)} record(s) were made with other parameters than its manifest "
                f"says (item {foreign[0]!r}: settings fingerprint differs); use another directory or delete it")
        return out

    def done_keys(self) -> set[Key]:
        return {(str(r["item_id"]), int(r.get("sample_index", 0))) for r in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        lines = []
        fingerprint = self._expected_fingerprint()
        for record in records:
            if "item_id" not in record:
                raise ValueError(f"record without item_id: {record}")
            record.setdefault("sample_index", 0)
            if fingerprint is not None:
                record[RECORD_FINGERPRINT] = fingerprint
            lines.append(record_line(record))
        if not lines:
            return
        # One write per batch of whole lines; O_APPEND keeps concurrent appenders line-atomic.
        fd = os.open(self.records_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def item_warnings(self, sample_index: int = 0) -> list[tuple[str, str]]:
        """``(item id, warning)`` of every record at ``sample_index`` written with a warning (a clip
        longer than the model's window, an agent step that named no audio type, ...), in write order."""
        return [(str(r["item_id"]), str(r["warning"])) for r in self.records()
                if r.get("warning") and int(r.get("sample_index", 0)) == sample_index]

    def by_item(self, sample_index: int | None = 0) -> dict[str, dict[str, Any]]:
        """Records keyed by item id (``sample_index=None`` keeps every sample as a list)."""
        if sample_index is None:
            grouped: dict[str, Any] = {}
            for record in self.records():
                grouped.setdefault(record["item_id"], []).append(record)
            return grouped
        return {r["item_id"]: r for r in self.records() if int(r.get("sample_index", 0)) == sample_index}
