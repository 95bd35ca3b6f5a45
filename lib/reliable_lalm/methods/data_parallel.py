"""Data-parallel inference under an existing launcher: ``torchrun`` or ``accelerate launch``.

    accelerate launch --num_processes 8 -m reliable_lalm.cli infer --model ... --out OUT
    torchrun --nproc_per_node 8 -m reliable_lalm.cli infer --model ... --out OUT

A launcher starts one process per GPU and tells each its ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (``accelerate launch`` runs torchrun underneath and sets the same variables). Each
process runs shard ``RANK`` of ``WORLD_SIZE`` (:mod:`.shards`, ``--shard-by`` as for ``--shard``)
into its own resumable store ``OUT/shards/RANK-of-WORLD_SIZE`` on its own GPU
(``cuda:LOCAL_RANK`` for ``--device auto|cuda``). When its shard is finished and marked, it joins
a CPU (gloo) rendezvous of all the processes; once every process has arrived, the main process
(rank 0) merges the shards into ``OUT`` with :func:`.shards.merge_shards` (the merge that
``rlalm merge-shards`` does), so ``OUT`` is the store a single process would have written.

A process that fails exits non-zero before the rendezvous; the launcher then stops the others
(torchrun's rule), and the finished shards stay on disk: running the same command again resumes
every shard and merges. Processes wait for each other at most :data:`RENDEZVOUS_TIMEOUT` (shards
of one run finish within minutes of each other, but a slow endpoint can make that hours).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist

from reliable_lalm.methods.shards import MergeSummary, Shard, merge_shards

RENDEZVOUS_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class LaunchedProcess:
    """This process's place in a launcher's group."""
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, by: str = "hash") -> Shard:
        return Shard(self.rank, self.world_size, by)


def _env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"a launcher set WORLD_SIZE but not {name}")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"launcher variable {name}={value!r} is not an integer") from None


def launched_process(environ: Mapping[str, str] | None = None) -> LaunchedProcess | None:
    """This process's rank if a launcher started it as one of several (``WORLD_SIZE`` > 1), else None."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    world = _env_int(env, "WORLD_SIZE")
    if world <= 1:
        return None
    rank = _env_int(env, "RANK")
    if not 0 <= rank < world:
        raise ValueError(f"launcher variables RANK={rank} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return LaunchedProcess(rank, world, _env_int(env, "LOCAL_RANK", rank))


def process_shard(shard: str | None, by: str = "hash", environ: Mapping[str, str] | None = None
                  ) -> tuple[Shard | None, LaunchedProcess | None]:
    """``(shard, launched process)`` of this process: ``--shard i/n`` as given, or the launcher's rank
    (both at once is an error: the launcher's rank already selects the shard)."""
    launched = launched_process(environ)
    if launched is not None and shard:
        raise ValueError(f"--shard {shard} under a launcher (WORLD_SIZE={launched.world_size}): the "
                         "launcher's rank already selects the shard; drop --shard")
    if launched is not None:
        return launched.shard(by), launched
    return (Shard.parse(shard, by) if shard else None), None


def process_device(device: str, process: LaunchedProcess) -> str:
    """``--device auto|cuda`` of a launched process: its own GPU, ``cuda:LOCAL_RANK`` (modulo the GPUs
    it sees); any other device (``cpu``, an explicit ``cuda:N``) as given."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{process.local_rank % torch.cuda.device_count()}"
    return device


def gather_and_merge(out: str | os.PathLike, process: LaunchedProcess) -> MergeSummary | None:
    """Wait until every process of the group has finished its shard, then (main process only) merge
    them into ``out``. Call it after this process's shard is marked (:func:`.shards.mark_shard`).

    The other processes wait for the merge too, so the launcher's exit means the store is merged.
    Raises :class:`.shards.ShardError` (main process) when the shards cannot be merged.
    """
    dist.init_process_group("gloo", rank=process.rank, world_size=process.world_size, timeout=RENDEZVOUS_TIMEOUT)
    try:
        dist.barrier()  # every shard is finished and marked
        summary = failure = None
        if process.is_main:
            try:
                summary = merge_shards(out)
            except Exception as err:  # raised after the last barrier, so the others are not left waiting
                failure = err
        dist.barrier()  # the merge is done (or failed)
    finally:
        dist.destroy_process_group()
    if failure is not None:
        raise failure
    return summary
