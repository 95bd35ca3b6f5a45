"""LoRA supervised fine-tuning of an audio LM on an IDK dataset (paper section 3.2, Appendix D):
:func:`train_lora_sft`.

The model family is reached only through its :class:`~reliable_lalm.models.training_adapter.TrainingAdapter`
(Qwen2-Audio, Audio Flamingo 3, the Omni thinkers): loading, collation, the answer-loss forward, where
its language model is. One data/loss code path and the one training loop
(:mod:`reliable_lalm.training.loop`), with two optimisation back-ends:

* a plain single-process PyTorch loop (AdamW, gradient accumulation, checkpoints, resume);
* DeepSpeed (``deepspeed.initialize``; ZeRO-2 by default, ``params/deepspeed_zero2.json``), for one
  or several processes: ``torchrun --nproc_per_node 2 -m reliable_lalm.cli.train sft ...
  --deepspeed params/deepspeed_zero2.json``. NCCL on GPUs, gloo on CPUs (:mod:`.distributed`).

The rest of LoRA SFT, by concern: the configuration and the adapter's file names
(:mod:`.lora_config`); the model with LoRA attached and the answer-only loss (:mod:`.lora_model`);
the checks of a saved adapter (:mod:`.adapter_check`); merging an adapter into the base weights
(:mod:`.merge`); the step benchmark (:mod:`.sft_benchmark`).

Which modules get LoRA is a choice (``lora_targets``, :data:`~.lora_config.LORA_TARGETS`). Table 9
names {k_proj, q_proj, v_proj}. Given to PEFT as those plain names (``paper_names``) they match every
layer so named, the Whisper audio encoder's attention included; ``language_model_only`` (the
notebooks' default, with which the demo's adapters were trained) restricts them to the language
model (audio encoder, projector, embeddings and every other weight frozen, which
:func:`~.lora_model.assert_only_lora_trainable` enforces). The paper does not say which; the alpha of
music is ambiguous too (:mod:`reliable_lalm.training.table9`). Both are profile settings; the
readings, their evidence and the paper profile's choices are in ``docs/paper_settings.md``.

Adapters are written in the standard peft format (``save_pretrained``, rank 0 only) and checked
after saving (:func:`~.adapter_check.verify_adapter`).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from transformers import get_scheduler

from reliable_lalm.core.results import provenance
from reliable_lalm.training import loop
from reliable_lalm.training.adapter_check import AdapterReport, verify_adapter
from reliable_lalm.models.registry import adapter_for_source
from reliable_lalm.training.distributed import init_distributed, resolve_deepspeed_config
from reliable_lalm.training.lora_config import LR_SCHEDULES, SUMMARY_FILE, LoraSFTConfig, default_device, resolve_dtype
from reliable_lalm.training.lora_model import (AnswerLoss, add_lora, assert_only_lora_trainable, lora_target_names,
                                               to_device)
from reliable_lalm.training.sft_data import SFTExample


# --------------------------------------------------------------------------------------------
# data order


def epoch_batches(n_examples: int, *, epoch: int, seed: int, batch_size: int, grad_accum: int,
                  world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """This process' micro-batches (example indices) for one epoch.

    One shuffled order per epoch, the same on every process; global batch ``g`` holds
    ``batch_size * world_size`` examples and process ``r`` takes its ``r``-th slice. The last
    optimizer step is filled by wrapping around the order (like ``DistributedSampler``), so every
    process runs the same number of steps (collectives must match) and every step is full.
    """
    if n_examples < 1:
        raise ValueError("no training example")
    per_step = batch_size * world_size * grad_accum
    steps = math.ceil(n_examples / per_step)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    order = np.resize(order, steps * per_step)
    per_micro = batch_size * world_size
    return [order[m * per_micro + rank * batch_size: m * per_micro + (rank + 1) * batch_size].tolist()
            for m in range(steps * grad_accum)]


def steps_per_epoch(n_examples: int, config: LoraSFTConfig, world_size: int = 1) -> int:
    return math.ceil(n_examples / (config.batch_size * world_size * config.grad_accum))


def lr_scheduler(optimizer, config: LoraSFTConfig, total_steps: int):
    """The learning-rate schedule of ``config`` over ``total_steps`` optimizer steps, built by
    ``transformers.get_scheduler`` (the schedules the Trainer uses) rather than by hand.

    ``constant`` / ``linear`` (to 0) / ``cosine`` (half a cycle, to 0) after ``warmup_steps`` of
    linear warm-up. Without warm-up (every shipped run and profile) the per-step rates equal the
    hand-written schedule this replaced (tests/test_training.py checks it). With warm-up they
    cannot be equal: transformers ramps ``step / warmup`` (0 at the first step, the peak at step
    ``warmup``) where the old schedule ramped ``(step + 1) / warmup``; the schedule's kind and its
    decay after warm-up are unchanged, and :meth:`LoraSFTConfig.training_fingerprint` names the
    new ramp so no adapter trained under the old one is reused.
    """
    name = LR_SCHEDULES[config.lr_schedule]
    if name == "constant" and config.warmup_steps:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)



# --------------------------------------------------------------------------------------------
# training


@dataclass
class SFTResult:
    adapter_dir: Path
    backend: str  # torch | deepspeed
    steps: int  # optimizer steps in the whole run
    resumed_from: int  # 0, or the step of the checkpoint it resumed from
    losses: list[float]  # mean training loss of each optimizer step (whole run, resumed ones included)
    examples: int
    world_size: int
    seconds: float  # this invocation's wall time spent in steps
    seconds_per_step: float
    adapter: AdapterReport | None
    config: LoraSFTConfig = field(default_factory=LoraSFTConfig)


def _optimization(loss_module, config: LoraSFTConfig, total_steps: int, ds_config: dict | None):
    """AdamW over the LoRA parameters and the config's schedule, on the plain loop or on DeepSpeed."""
    params = [p for p in loss_module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = lr_scheduler(optimizer, config, total_steps)
    if ds_config is not None:
        return loop.DeepSpeedOptimization(loss_module, params, optimizer, scheduler, ds_config,
                                          keep_checkpoints=config.keep_checkpoints)
    return loop.TorchOptimization(loss_module, params, optimizer, scheduler, max_grad_norm=config.max_grad_norm,
                                  keep_checkpoints=config.keep_checkpoints)




def train_lora_sft(model_path: str | Path, examples: Sequence[SFTExample], out_dir: str | Path,
                   config: LoraSFTConfig | None = None, *, deepspeed_config: str | Path | dict | None = None,
                   checkpoint_dir: str | Path | None = None, resume: bool = True, device: str | None = None,
                   progress: bool = True, on_step: Callable[[int, float], None] | None = None,
                   keep_checkpoints_after: bool = False, extra_summary: dict[str, Any] | None = None) -> SFTResult:
    """LoRA SFT of the model at ``model_path`` on ``examples``; the adapter goes to ``out_dir``.

    Without ``deepspeed_config`` this is a single-process loop; with it, every process launched by
    ``torchrun``/``deepspeed`` calls this function and DeepSpeed shards the work. Checkpoints every
    ``config.save_every`` optimizer steps go to ``checkpoint_dir`` (default ``out_dir/checkpoints``);
    with ``resume`` a rerun continues from the last complete one. ``on_step(step, loss)`` is called
    after every optimizer step (and checkpoint). Only rank 0 writes the adapter, which is then
    verified (:func:`verify_adapter`); checkpoints are removed after success unless
    ``keep_checkpoints_after``. ``extra_summary`` (e.g. the IDK dataset and sampling settings) is
    recorded under ``data`` in ``training_summary.json``.
    """
    config = config or LoraSFTConfig()
    examples = list(examples)
    if not examples:
        raise ValueError("no training example")
    out_dir = Path(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    device = device or default_device()
    dtype = resolve_dtype(config.dtype, device)

    rank, world_size = 0, 1
    ds_config = None
    if deepspeed_config is not None:
        rank, world_size, local_rank = init_distributed(device)
        if str(device).startswith("cuda"):
            device = f"cuda:{local_rank}"
        ds_config, config = resolve_deepspeed_config(deepspeed_config, config, bf16=dtype == torch.bfloat16)
        dtype = torch.float32 if not ds_config["bf16"]["enabled"] else torch.bfloat16
    is_main = rank == 0

    adapter = adapter_for_source(model_path)
    base, processor = adapter.load(model_path, device=device, dtype=dtype, merge_adapter=False)
    expected_modules = lora_target_names(base, config.target_modules)
    peft_model = add_lora(base, config, adapter)
    trainable = assert_only_lora_trainable(peft_model, language_model_only=not config.wraps_audio_encoder,
                                           adapter=adapter)
    loss_module = AnswerLoss(peft_model, adapter)
    loss_module.train()

    per_epoch = steps_per_epoch(len(examples), config, world_size)
    total_steps = per_epoch * config.epochs
    optimization = _optimization(loss_module, config, total_steps, ds_config)
    run_identity = {"config": config.training_fingerprint(), "examples": len(examples), "world_size": world_size,
                    "item_ids": _ids_digest(examples), "backend": optimization.name}
    training = loop.TrainingLoop(optimization, total_steps=total_steps, checkpoint_dir=checkpoint_dir,
                                 save_every=config.save_every, identity=run_identity, world_size=world_size,
                                 show_progress=progress and is_main, desc="LoRA SFT")
    if resume:
        training.resume()

    epoch_cache: dict[int, list[list[int]]] = {}

    def micro_batches(step: int):
        epoch, in_epoch = divmod(step, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = epoch_batches(len(examples), epoch=epoch, seed=config.seed,
                                               batch_size=config.batch_size, grad_accum=config.grad_accum,
                                               world_size=world_size, rank=rank)
        group = epoch_cache[epoch][in_epoch * config.grad_accum:(in_epoch + 1) * config.grad_accum]
        # Dropout masks depend on (seed, step, rank) only, so a resumed run replays them exactly.
        torch.manual_seed((config.seed * 1_000_003 + step * 1_009 + rank) % (2**31))
        for indices in group:
            yield loop.MicroBatch(to_device(adapter.collate(processor, [examples[i] for i in indices]), device))

    result = training.run(micro_batches, on_step=on_step)
    start_step, losses, seconds = result.start_step, result.losses, result.seconds
    ran = total_steps - start_step

    gathered = optimization.gathered_state_dict()  # collective under ZeRO-3: every rank must call it
    report = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"state_dict": _peft_state_dict(gathered)} if gathered is not None else {}
        optimization.module.model.save_pretrained(str(out_dir), **kwargs)
        report = verify_adapter(out_dir, expected_modules=expected_modules, expect_trained=True)
        summary = {
            "complete": True, "backend": optimization.name, "model_path": str(model_path), "config": config.to_dict(),
            "deepspeed_config": ds_config, "examples": len(examples), "item_ids_sha": run_identity["item_ids"],
            "world_size": world_size, "steps": total_steps, "steps_per_epoch": per_epoch,
            "resumed_from": start_step, "losses": losses, "trainable_parameters": trainable,
            "seconds_this_run": seconds, "seconds_per_step": seconds / max(1, ran), "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "adapter": asdict(report), "data": extra_summary or {},
        }
        summary["provenance"] = provenance({"training": config.to_dict()}, seed=config.seed, device=str(device))
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        if not keep_checkpoints_after:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if world_size > 1:
        dist.barrier()  # other ranks wait until rank 0 has saved and checked the adapter
    return SFTResult(adapter_dir=out_dir, backend=optimization.name, steps=total_steps, resumed_from=start_step,
                     losses=losses, examples=len(examples), world_size=world_size, seconds=seconds,
                     seconds_per_step=seconds / max(1, ran), adapter=report, config=config)


def _peft_state_dict(gathered: dict[str, Any]) -> dict[str, Any]:
    """Gathered trainable parameters of the loss module (``model.<peft name>``) as the PeftModel names them."""
    return {name.removeprefix("model."): tensor for name, tensor in gathered.items()}


def _ids_digest(examples: Sequence[SFTExample]) -> str:
    blob = "\n".join(f"{ex.item_id}\t{ex.target}\t{ex.prompt}" for ex in examples)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_summary(adapter_dir: str | Path) -> dict | None:
    path = Path(adapter_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
