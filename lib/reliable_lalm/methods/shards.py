"""Multi-process inference: shard a benchmark over processes, each with its own store, then merge.

Why: one process drives one GPU (or one endpoint client); a large run (MMAU-Pro, K@N over
thousands of items, several GPUs or data-parallel vLLM replicas) is split into ``n`` shards run as
separate processes, e.g. ``CUDA_VISIBLE_DEVICES=i rlalm infer ... --shard i/n``. Each shard writes
its own resumable store; :func:`merge_shards` joins them into one store that is indistinguishable
from a single-process run's (same parameters, hence the same fingerprint; the same records).

Layout: the store of shard ``i`` of ``n`` for the output folder ``OUT`` is ``OUT/shards/i-of-n``;
the merged store is ``OUT`` itself, so a later (single-process) run on ``OUT`` resumes from it.

Selection (:func:`select_shard`) is deterministic:

* ``by="hash"`` (default): an item belongs to shard ``sha256(item id) mod n``; independent of the
  items' order and of other items, so adding items to a benchmark does not move the others.
* ``by="position"``: items ``i, i+n, i+2n, ...`` of the given order; balanced to one item.

A shard's store parameters are exactly those of the unsharded run (the shard is not a parameter:
it selects items, it does not change any answer); the shard is recorded in the manifest
(``shard``: index, count, selection rule and its item ids), written by :func:`mark_shard` when the
shard's run ends. :func:`merge_shards` checks that all ``n`` shards are present and marked, agree on
the count and rule, have identical parameters, hold only their own items, do not overlap, and are
complete (every item of every shard has all its sample indices, error records included), then
writes the union sorted by ``(item_id, sample_index)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from reliable_lalm.core.atomic import atomic_write_text
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore

SHARDS_DIR = "shards"
BY = ("hash", "position")
_DIR_RE = re.compile(r"^(\d+)-of-(\d+)$")


class ShardError(RuntimeError):
    """Shard stores that cannot be merged (missing, unfinished, different parameters, overlapping)."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    by: str = "hash"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < n")
        if self.by not in BY:
            raise ValueError(f"shard selection must be one of {BY}, not {self.by!r}")

    @classmethod
    def parse(cls, text: str, by: str = "hash") -> "Shard":
        """``"i/n"`` (0-based ``i``) -> Shard."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"--shard expects i/n (e.g. 0/2), not {text!r}")
        return cls(int(match.group(1)), int(match.group(2)), by)

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"


def shard_of(item_id: str, count: int) -> int:
    """The hash shard of an item id (stable across processes, machines and Python versions)."""
    digest = hashlib.sha256(str(item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(items: Sequence[BenchmarkItem], shard: Shard) -> list[BenchmarkItem]:
    """The items of ``shard``, in their given order."""
    if shard.by == "position":
        return list(items[shard.index::shard.count])
    return [it for it in items if shard_of(it.id, shard.count) == shard.index]


def shard_store_dir(out: str | os.PathLike, shard: Shard) -> Path:
    return Path(out) / SHARDS_DIR / shard.name


def check_shard_dir(store_dir: str | os.PathLike, shard: Shard, items: Sequence[BenchmarkItem]) -> None:
    """Before a shard runs: refuse a store already marked for another selection rule or other items."""
    path = Path(store_dir) / "manifest.json"
    if not path.exists():
        return
    recorded = json.loads(path.read_text(encoding="utf-8")).get("shard")
    if recorded is None:
        return
    if recorded.get("by") != shard.by or recorded.get("item_ids") != [it.id for it in items]:
        raise ShardError(f"{store_dir} holds shard {shard.name} selected {recorded.get('by')!r} over other items; "
                         "use another output folder or delete it")


def mark_shard(store_dir: str | os.PathLike, shard: Shard, items: Sequence[BenchmarkItem]) -> None:
    """Record in the shard's manifest which shard it is and which items it was given."""
    ResultStore(Path(store_dir)).update_manifest(
        shard={"index": shard.index, "count": shard.count, "by": shard.by, "item_ids": [it.id for it in items]})


@dataclass
class MergeSummary:
    store: str
    shards: int
    records: int
    items: int
    errors: int
    incomplete: dict[str, int]  # shard name -> keys missing (only with allow_incomplete)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _shard_dirs(out: Path) -> dict[int, Path]:
    root = out / SHARDS_DIR
    if not root.is_dir():
        raise ShardError(f"no shard stores under {root}")
    found: dict[int, dict[int, Path]] = {}
    for child in sorted(root.iterdir()):
        match = _DIR_RE.match(child.name)
        if match and child.is_dir():
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = child
    if not found:
        raise ShardError(f"no shard stores (i-of-n folders) under {root}")
    if len(found) > 1:
        raise ShardError(f"{root} mixes shard counts {sorted(found)}: merge one sharding only")
    (count, dirs), = found.items()
    missing = [f"{i}-of-{count}" for i in range(count) if i not in dirs]
    if missing:
        raise ShardError(f"shard store(s) {', '.join(missing)} missing under {root}")
    return dirs


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def merge_shards(out: str | os.PathLike, *, allow_incomplete: bool = False) -> MergeSummary:
    """Merge ``out/shards/*-of-n`` into the store ``out``; see the module docstring for the checks.

    Re-merging the same shards into ``out`` is a no-op; ``out`` holding other records is an error.
    """
    out = Path(out)
    dirs = _shard_dirs(out)
    count = len(dirs)
    manifests = {i: json.loads((d / "manifest.json").read_text(encoding="utf-8")) for i, d in dirs.items()
                 if (d / "manifest.json").exists()}
    unmarked = [dirs[i].name for i in sorted(dirs) if "shard" not in manifests.get(i, {})]
    if unmarked:
        raise ShardError(f"shard(s) {', '.join(unmarked)} have no finished run (no shard record in the manifest): "
                         "run them (again) to the end first")
    first = manifests[0]
    for i in sorted(dirs):
        m = manifests[i]
        shard = m["shard"]
        if (shard.get("index"), shard.get("count")) != (i, count) or shard.get("by") != first["shard"].get("by"):
            raise ShardError(f"{dirs[i]}: manifest says shard {shard.get('index')}-of-{shard.get('count')} "
                             f"selected by {shard.get('by')!r}, the folder says {dirs[i].name} "
                             f"selected by {first['shard'].get('by')!r}")
        if m.get("params_fingerprint") != first.get("params_fingerprint"):
            keys = _diff(first.get("params"), m.get("params")) or ["(fingerprint)"]
            raise ShardError(f"{dirs[i].name} was run with other parameters than {dirs[0].name}: "
                             f"{', '.join(keys[:10])} differ")
    by = first["shard"]["by"]
    num_samples = int((first.get("params") or {}).get("settings", {}).get("num_samples", 1) or 1)

    merged: dict[tuple[str, int], dict[str, Any]] = {}
    owner: dict[str, str] = {}
    incomplete: dict[str, int] = {}
    for i in sorted(dirs):
        name = dirs[i].name
        ids = [str(x) for x in manifests[i]["shard"]["item_ids"]]
        own = set(ids)
        for item_id in ids:
            if item_id in owner:
                raise ShardError(f"item {item_id!r} is in shards {owner[item_id]} and {name}")
            owner[item_id] = name
        if by == "hash":
            stray = [x for x in ids if shard_of(x, count) != i]
            if stray:
                raise ShardError(f"{name} lists items of other hash shards: {stray[:5]}")
        for record in ResultStore(dirs[i]).records():
            key = (str(record["item_id"]), int(record.get("sample_index", 0)))
            if key[0] not in own:
                raise ShardError(f"{name} holds a record of item {key[0]!r}, which is not one of its items")
            merged[key] = record
        missing = sum((x, j) not in merged for x in ids for j in range(num_samples))
        if missing:
            if not allow_incomplete:
                raise ShardError(f"{name} is incomplete: {missing} of {len(ids) * num_samples} records missing; "
                                 "rerun that shard (it resumes) or pass allow_incomplete")
            incomplete[name] = missing

    params = first.get("params") or {}
    records = [merged[k] for k in sorted(merged)]
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True, default=str) + "\n" for r in records)
    target = ResultStore.open(out, params, seed=first.get("seed"))  # same parameters as every shard
    if target.manifest().get("params_fingerprint") != first.get("params_fingerprint"):
        raise ShardError(f"{out} would not get the shards' parameters (fingerprint mismatch)")
    existing = target.records_path.read_text(encoding="utf-8") if target.records_path.exists() else ""
    if existing and existing != lines:
        raise ShardError(f"{target.records_path} already holds other records; merge into an empty folder")
    if existing != lines:
        atomic_write_text(target.records_path, lines)
    target.update_manifest(merged_from=[
        {"shard": dirs[i].name, "by": by, "items": len(manifests[i]["shard"]["item_ids"]),
         "git_sha": manifests[i].get("git_sha"), "git_dirty": manifests[i].get("git_dirty"),
         "created": manifests[i].get("created"), "last_run": manifests[i].get("last_run")}
        for i in sorted(dirs)])
    return MergeSummary(store=str(out), shards=count, records=len(records), items=len({k[0] for k in merged}),
                        errors=sum(r.get("error") is not None for r in records), incomplete=incomplete)
