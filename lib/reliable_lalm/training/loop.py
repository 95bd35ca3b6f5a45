"""The one training loop: optimizer steps over micro-batches, clipping, the LR schedule, periodic
resumable checkpoints (with RNG states), the loss log and the progress bar.

A recipe supplies, per optimizer step, its micro-batches (:class:`MicroBatch`: the inputs of a loss
module and the share of the step's loss they carry) and the loss module itself; everything else is
here. LoRA SFT (:func:`reliable_lalm.training.lora_sft.train_lora_sft`) and the demo model's
recipe (``rlalm demo train``) both run on it. Two optimisation back-ends:

* :class:`TorchOptimization`: AdamW (or any given optimizer), manual accumulation and clipping, a
  ``torch.optim.lr_scheduler`` (``transformers.get_scheduler`` for SFT);
* :class:`DeepSpeedOptimization`: a DeepSpeed engine, which owns accumulation and clipping.

A run resumes from the last complete checkpoint of ``checkpoint_dir`` when its ``identity`` (config,
data, world size, back-end: whatever changes the weights) equals the checkpoint's, and refuses a
checkpoint of another run rather than mixing it in.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from reliable_lalm.core.progress import progress_bar
from reliable_lalm.models.hf_loading import refusing_pickled_code

TRAINABLE_WEIGHTS = "trainable.safetensors"
OPTIMIZER_STATE = "optimizer.pt"
LOOP_STATE = "state.json"


@dataclass
class MicroBatch:
    """Inputs of the loss module for one micro-batch.

    ``share``: the weight of this micro-batch's loss in the step's loss (the backward runs on
    ``loss * share``, and the step's loss is the sum of the weighted losses). ``None``: every
    micro-batch of the step counts the same (``loss / n``; the step's loss is their mean).
    """

    inputs: dict[str, Any]
    share: float | None = None


def backward(module, batch: MicroBatch, n_micro: int) -> float:
    """Forward ``module`` on one micro-batch and backpropagate its share of the step's loss; returns
    the value it adds to the step's loss (see :class:`MicroBatch`)."""
    loss = module(**batch.inputs)
    if batch.share is None:
        (loss / n_micro).backward()
        return float(loss.detach())
    weighted = loss * batch.share
    weighted.backward()
    return float(weighted.detach())


def step_loss(values: Sequence[float], batches: Sequence[MicroBatch]) -> float:
    """The step's loss from its micro-batches' values: a mean for equal shares, else their sum."""
    if all(b.share is None for b in batches):
        return float(np.mean(values))
    return sum(values)


def rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA) generator states: what dropout and sampling inside a step draw from."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_torch_state(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings and containers only.

    A ``.pt`` file is a pickle, and unpickling can call any function: a file planted in a checkpoint
    folder (``optimizer.pt``) would run code on resume. Optimizer, scheduler and RNG states are plain
    data, so the restricted unpickler loads every checkpoint this library writes and refuses anything
    else with one line naming the file.
    """
    with refusing_pickled_code(path):
        return torch.load(path, weights_only=True, map_location="cpu")


def prune_checkpoints(directory: Path, keep: int) -> None:
    done = sorted(p for p in directory.glob("step-*") if p.is_dir())
    for old in done[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)


def step_tag(step: int) -> str:
    return f"step-{step:07d}"


# --------------------------------------------------------------------------------------------
# optimisation back-ends


class TorchOptimization:
    """One process: ``optimizer`` over ``params``, gradients accumulated over the micro-batches,
    clipped to ``max_grad_norm`` (0: off), then one optimizer and one scheduler step.

    ``module`` is called on each micro-batch's inputs and returns its loss. Checkpoints hold the
    parameters that require grad of ``weights_of`` (an ``nn.Module``, by name; default ``module``),
    the optimizer and scheduler states and the RNG states; written to a temporary folder then
    renamed, so a crash mid-save never leaves a checkpoint that looks complete.
    """

    name = "torch"

    def __init__(self, module, params: Iterable, optimizer, scheduler, *, max_grad_norm: float = 0.0,
                 weights_of=None, keep_checkpoints: int = 2):
        self.module = module
        self.weights_of = weights_of if weights_of is not None else module
        self.params = list(params)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_grad_norm = max_grad_norm
        self.keep_checkpoints = keep_checkpoints

    def micro_step(self, batch: MicroBatch, n_micro: int) -> float:
        return backward(self.module, batch, n_micro)

    def optimizer_step(self) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def _trainable(self) -> dict[str, Any]:
        return {n: p for n, p in self.weights_of.named_parameters() if p.requires_grad}

    def save_checkpoint(self, directory: Path, step: int, state: dict) -> None:
        final, tmp = directory / step_tag(step), directory / f".tmp-{step_tag(step)}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in self._trainable().items()}, str(tmp / TRAINABLE_WEIGHTS))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": rng_state()}, tmp / OPTIMIZER_STATE)
        (tmp / LOOP_STATE).write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        prune_checkpoints(directory, self.keep_checkpoints)

    def load_checkpoint(self, directory: Path) -> dict | None:
        done = sorted(p for p in directory.glob("step-*") if (p / LOOP_STATE).is_file())
        if not done:
            return None
        last = done[-1]
        saved_weights = load_file(str(last / TRAINABLE_WEIGHTS))
        trainable = self._trainable()
        if set(saved_weights) != set(trainable):
            raise RuntimeError(f"{last}: its trainable parameters are not this model's; delete {directory}")
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(saved_weights[name])
        saved = load_torch_state(last / OPTIMIZER_STATE)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        return json.loads((last / LOOP_STATE).read_text())

    def gathered_state_dict(self):
        return None  # parameters are whole on this process: save_pretrained reads them directly


class DeepSpeedOptimization:
    """A DeepSpeed engine around ``module``: it owns accumulation (``engine.step()`` is an optimizer
    step only at the accumulation boundary), clipping, and the (client) optimizer and schedule."""

    name = "deepspeed"

    def __init__(self, module, params: Iterable, optimizer, scheduler, ds_config: dict, *, keep_checkpoints: int = 2):
        # local import: deepspeed loads (and probes its ops) only when a DeepSpeed run starts
        import deepspeed

        self.ds_config = ds_config
        self.keep_checkpoints = keep_checkpoints
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, model_parameters=list(params), optimizer=optimizer, lr_scheduler=scheduler,
            config=ds_config)

    @property
    def module(self):
        return self.engine.module

    def micro_step(self, batch: MicroBatch, n_micro: int) -> float:
        if batch.share is not None:
            raise ValueError("DeepSpeed scales every micro-batch by 1/gradient_accumulation_steps: no shares")
        loss = self.engine(**batch.inputs)
        self.engine.backward(loss)  # scaled by 1/gradient_accumulation_steps inside
        self.engine.step()  # optimizer step only at the accumulation boundary
        return float(loss.detach())

    def optimizer_step(self) -> None:
        pass  # engine.step() in the last micro_step of the group was the accumulation boundary

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save_checkpoint(self, directory: Path, step: int, state: dict) -> None:
        # Collective: every rank writes its optimizer partition. Frozen base weights are left out
        # (a 7B base would otherwise be copied into every checkpoint).
        self.engine.save_checkpoint(str(directory), tag=step_tag(step),
                                    client_state={"rlalm": state, "rlalm_rng": rng_state()},
                                    exclude_frozen_parameters=True)
        dist.barrier()
        if dist.get_rank() == 0:
            prune_checkpoints(directory, self.keep_checkpoints)
        dist.barrier()

    def load_checkpoint(self, directory: Path) -> dict | None:
        if not (directory / "latest").is_file():
            return None
        path, client = self.engine.load_checkpoint(str(directory), load_module_strict=False)
        if path is None:
            return None
        if (client or {}).get("rlalm_rng") is not None:
            set_rng_state(client["rlalm_rng"])
        return (client or {}).get("rlalm")

    def gathered_state_dict(self):
        """ZeRO-3 partitions parameters: gather the trainable ones (collective) before rank 0 saves."""
        if int((self.ds_config or {}).get("zero_optimization", {}).get("stage", 0)) < 3:
            return None
        # local import: deepspeed loads (and probes its ops) only when a DeepSpeed run starts
        import deepspeed

        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().cpu().clone() for n, p in named}


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class LoopResult:
    start_step: int  # 0, or the step of the checkpoint it resumed from
    losses: list[float]  # the loss of every optimizer step (whole run, resumed ones included)
    seconds: float  # this invocation's wall time spent in steps
    recipe_state: dict[str, Any] = field(default_factory=dict)


class TrainingLoop:
    """``total_steps`` optimizer steps of ``optimization``, resumable from ``checkpoint_dir``.

    ``save_every``: optimizer steps between checkpoints (0: none); ``checkpoint_at_end`` also
    saves after the last step (a finished run then reloads instead of retraining).
    ``world_size > 1``: the logged loss is the mean over processes.
    """

    def __init__(self, optimization, *, total_steps: int, checkpoint_dir: Path | None, save_every: int,
                 identity: Any, checkpoint_at_end: bool = False, world_size: int = 1, show_progress: bool = True,
                 desc: str = "training", other_run_hint: str = ""):
        self.optimization = optimization
        self.total_steps = int(total_steps)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.save_every = int(save_every)
        self.identity = identity
        self.checkpoint_at_end = checkpoint_at_end
        self.world_size = world_size
        self.show_progress = show_progress
        self.desc = desc
        self.other_run_hint = other_run_hint
        self.start_step = 0
        self.losses: list[float] = []
        self.recipe_state: dict[str, Any] | None = None

    def resume(self) -> dict[str, Any] | None:
        """Load the last complete checkpoint (weights, optimizer, schedule, RNG) if there is one;
        returns the recipe's state saved with it (``None``: starting afresh)."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.exists():
            return None
        state = self.optimization.load_checkpoint(self.checkpoint_dir)
        if state is None:
            return None
        if state.get("identity") != self.identity:
            raise RuntimeError(f"{self.checkpoint_dir} holds a checkpoint of another run (different config, data, "
                               f"world size or back-end); {self.other_run_hint or 'delete it or pass another checkpoint_dir'}")
        self.start_step, self.losses = int(state["step"]), list(state["losses"])
        self.recipe_state = state.get("recipe")
        return self.recipe_state or {}

    def _save(self, done: int, recipe_state: dict[str, Any] | None) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.optimization.save_checkpoint(self.checkpoint_dir, done, {
            "step": done, "losses": self.losses, "identity": self.identity, "recipe": recipe_state or {}})

    def run(self, micro_batches: Callable[[int], Iterable[MicroBatch]], *,
            record: Callable[[int, float], None] | None = None,
            recipe_state: Callable[[], dict[str, Any]] | None = None,
            on_step: Callable[[int, float], None] | None = None) -> LoopResult:
        """Run the remaining steps. ``micro_batches(step)`` yields the step's micro-batches (called
        at the start of the step, so it may look at the model as it is then). After each optimizer
        step: ``record(done, loss)`` (the recipe's own log), the checkpoint, which saves
        ``recipe_state()`` (handed back by :meth:`resume`), then ``on_step(done, loss)``."""
        bar = progress_bar(total=self.total_steps, initial=self.start_step, enabled=self.show_progress,
                           desc=self.desc, unit="step")
        started = time.perf_counter()
        for step in range(self.start_step, self.total_steps):
            batches = list(micro_batches(step))
            values = [self.optimization.micro_step(batch, len(batches)) for batch in batches]
            self.optimization.optimizer_step()
            loss = step_loss(values, batches)
            if self.world_size > 1:
                loss = mean_over_ranks(loss)
            self.losses.append(loss)
            done = step + 1
            if record is not None:
                record(done, loss)
            periodic = self.save_every and done % self.save_every == 0 and done < self.total_steps
            if self.checkpoint_dir is not None and (periodic or (self.checkpoint_at_end and done == self.total_steps)):
                self._save(done, recipe_state() if recipe_state else None)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.optimization.lr():.2e}")
            if on_step is not None:
                on_step(done, loss)
        bar.close()
        return LoopResult(start_step=self.start_step, losses=self.losses, seconds=time.perf_counter() - started,
                          recipe_state=recipe_state() if recipe_state else {})


def mean_over_ranks(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()
