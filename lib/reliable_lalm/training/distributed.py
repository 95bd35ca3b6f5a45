"""Distributed LoRA SFT: the process group (NCCL on GPUs, gloo on CPUs, :func:`init_distributed`) and
the DeepSpeed config whose ``"auto"`` values come from :class:`~reliable_lalm.training.lora_config.LoraSFTConfig`
(:func:`resolve_deepspeed_config`)."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from reliable_lalm.training.lora_config import LoraSFTConfig


# --------------------------------------------------------------------------------------------
# distributed helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _disable_deepspeed_shm_op() -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory all-reduce op on CPU.

    On the CPU accelerator every ``TorchBackend`` compiles ``deepspeed_shm_comm`` with the system
    C++ compiler on first use (a minute or more, several on a busy machine, and a lock file that
    blocks every other process meanwhile). It only speeds up intra-node reductions; gloo does them
    without it. ``RLALM_DS_SHM=1`` keeps DeepSpeed's default.
    """
    # local import: deepspeed loads (and probes its ops) only when a distributed run starts
    import deepspeed.ops

    compatible = deepspeed.ops.__compatible_ops__  # probed once, then cached in the module (mutable)
    compatible["deepspeed_shm_comm"] = False


def init_distributed(device: str) -> tuple[int, int, int]:
    """Start (or join) the process group: NCCL on GPUs, gloo on CPUs. Returns (rank, world, local_rank).

    Without a launcher (plain ``python``) the environment of a one-process group is filled in.
    """
    # local import: deepspeed loads (and probes its ops) only when a distributed run starts
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not str(device).startswith("cuda") and os.environ.get("RLALM_DS_SHM", "0") != "1":
        _disable_deepspeed_shm_op()
    if not dist.is_initialized():
        # DeepSpeed's CPU accelerator would pick oneCCL; gloo ships with torch.
        deepspeed.init_distributed(dist_backend="nccl" if str(device).startswith("cuda") else "gloo",
                                   auto_mpi_discovery=False, verbose=False)
    return dist.get_rank(), dist.get_world_size(), local_rank


def load_deepspeed_config(source: str | Path | dict) -> dict[str, Any]:
    if isinstance(source, dict):
        return json.loads(json.dumps(source))
    return json.loads(Path(source).read_text())


def resolve_deepspeed_config(source: str | Path | dict, config: LoraSFTConfig, *, bf16: bool) -> tuple[dict, LoraSFTConfig]:
    """Fill the ``"auto"`` values of a DeepSpeed config from ``config``.

    A number in the JSON wins over ``config`` (and is copied into the returned config, so the data
    loader produces the micro-batches DeepSpeed expects). Optimizer and scheduler stay ours (AdamW,
    same as the plain loop), so the JSON must not define them.
    """
    ds = load_deepspeed_config(source)
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ValueError(f"DeepSpeed config defines {key!r}; remove it: the optimizer and schedule come "
                             "from LoraSFTConfig so both training paths share them")
    for key in ("fp16",):
        if ds.get(key, {}).get("enabled") is True:
            raise ValueError("fp16 loss scaling is not supported here; use bf16")
    mapping = {"train_micro_batch_size_per_gpu": "batch_size", "gradient_accumulation_steps": "grad_accum",
               "gradient_clipping": "max_grad_norm"}
    updates = {}
    for ds_key, field_name in mapping.items():
        value = ds.get(ds_key, "auto")
        if value == "auto":
            ds[ds_key] = getattr(config, field_name)
        else:
            updates[field_name] = type(getattr(config, field_name))(value)
    ds.pop("train_batch_size", None)  # derived by DeepSpeed: micro * accum * world
    bf16_section = ds.setdefault("bf16", {"enabled": "auto"})
    if bf16_section.get("enabled") == "auto":
        bf16_section["enabled"] = bf16
    return ds, replace(config, **updates)

