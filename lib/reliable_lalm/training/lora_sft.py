"""LoRA supervised fine-tuning of an audio LM on an IDK dataset (paper section 3.2, Appendix D).

The model family is reached only through its :class:`~reliable_lalm.models.training_adapter.TrainingAdapter`
(Qwen2-Audio, Audio Flamingo 3, the Omni thinkers): loading, collation, the answer-loss forward, where
its language model is. One data/loss code path and the one training loop
(:mod:`reliable_lalm.training.loop`), with two optimisation back-ends:

* a plain single-process PyTorch loop (AdamW, gradient accumulation, checkpoints, resume);
* DeepSpeed (``deepspeed.initialize``; ZeRO-2 by default, ``params/deepspeed_zero2.json``), for one
  or several processes: ``torchrun --nproc_per_node 2 -m reliable_lalm.cli.train sft ...
  --deepspeed params/deepspeed_zero2.json``. NCCL on GPUs, gloo on CPUs.

Which modules get LoRA is a choice (``lora_targets``, :data:`LORA_TARGETS`). Table 9 names
{k_proj, q_proj, v_proj}. Given to PEFT as those plain names (``paper_names``) they match every
layer so named, the Whisper audio encoder's attention included; ``language_model_only`` (the
notebooks' default, with which the demo's adapters were trained) restricts them to the language
model (audio encoder, projector, embeddings and every other weight frozen, which
:func:`assert_only_lora_trainable` enforces). The paper does not say which; the alpha of music is
ambiguous too (:mod:`reliable_lalm.training.table9`). Both are profile settings; the readings, their
evidence and the paper profile's choices are in ``docs/paper_settings.md``.
The loss is on the answer tokens only (:meth:`TrainingAdapter.collate` labels), the LM head run on
those positions alone (:class:`AnswerLoss`), so the 156k-entry vocabulary projection is never
materialised for the ~330 prompt/audio positions of a batch.

Adapters are written in the standard peft format (``save_pretrained``, rank 0 only) and checked
after saving (:func:`verify_adapter`): every LoRA tensor present, non-empty and finite, ``lora_B``
not all zeros after training. This catches the ZeRO-3 pitfall of saving partitioned (empty)
parameters. :func:`merge_adapter` folds an adapter into the base weights for serving (vLLM cannot
load LoRA adapters for Qwen2-Audio) and checks that greedy outputs are unchanged by the merge.
Loading base + adapter for evaluation merges only in fp32, for every family
(:func:`reliable_lalm.models.hf_loading.attach_adapter`).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from reliable_lalm.models.families import LANGUAGE_MODEL_QKV, LORA_TARGETS
from reliable_lalm.models.registry import adapter_for_model, adapter_for_model_type, adapter_for_source
from reliable_lalm.models.training_adapter import IGNORE_INDEX, TrainingAdapter
from reliable_lalm.training import loop
from reliable_lalm.training.loop import UnsafeCheckpointError, load_torch_state  # noqa: F401 - public API
from reliable_lalm.training.sft_data import SFTExample
from reliable_lalm.training.table9 import ALPHA_READINGS, DEFAULT_ALPHA_READING, table9_alpha

DEFAULT_TARGET_MODULES = LANGUAGE_MODEL_QKV
DEFAULT_LORA_TARGETS = "language_model_only"
# Table 9's LoRA alpha per training modality under the default reading (training.table9).
TABLE9_ALPHA = ALPHA_READINGS[DEFAULT_ALPHA_READING]
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
SUMMARY_FILE = "training_summary.json"
MERGE_REPORT = "merge_report.json"


# --------------------------------------------------------------------------------------------
# configuration


# LoraSFTConfig.lr_schedule -> the name transformers.get_scheduler knows it by.
LR_SCHEDULES = {"constant": "constant", "linear": "linear", "cosine": "cosine"}


@dataclass
class LoraSFTConfig:
    """Hyper-parameters of one LoRA SFT run.

    Defaults are Table 9 of the paper (for the 7B model). What the paper does not state is marked:
    batch size, dropout, schedule, clipping and weight decay are this project's choices.
    """

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.05  # not stated in the paper
    target_modules: Any = None  # None: LORA_TARGETS[lora_targets] (a regex, or a list of names)
    lora_targets: str = DEFAULT_LORA_TARGETS  # language_model_only | paper_names (module docstring)
    learning_rate: float = 3e-5
    epochs: int = 1
    batch_size: int = 8  # micro-batch per process; not stated in the paper
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear | cosine (decay to 0 after warmup)
    max_grad_norm: float = 1.0
    seed: int = 0
    gradient_checkpointing: bool = False
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    save_every: int = 0  # optimizer steps between checkpoints (0: none)
    keep_checkpoints: int = 2
    modality: str | None = None  # the training modality, recorded for provenance

    @classmethod
    def for_modality(cls, modality: str, *, alpha_reading: str | None = None, **overrides: Any) -> "LoraSFTConfig":
        """Table 9 for ``modality`` under ``alpha_reading`` (:mod:`~reliable_lalm.training.table9`;
        default ``"32-32-16"``: 32 for sound and music, 16 for speech), then ``overrides`` (an explicit
        ``alpha`` wins over the reading). The reading only chooses the alpha: the training key is the
        resulting config's, so a reading giving the same alpha trains the same adapter."""
        config = cls(alpha=table9_alpha(modality, alpha_reading or DEFAULT_ALPHA_READING), modality=modality)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "lora_targets" in overrides and "target_modules" not in overrides:
            overrides["target_modules"] = None  # re-derived from the new lora_targets
        return replace(config, **overrides)

    def __post_init__(self) -> None:
        if self.lora_targets not in LORA_TARGETS:
            raise ValueError(f"lora_targets must be one of {', '.join(LORA_TARGETS)}, not {self.lora_targets!r}")
        if self.target_modules is None:
            self.target_modules = LORA_TARGETS[self.lora_targets]
        elif isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be constant, linear or cosine, not {self.lr_schedule!r}")
        for name in ("rank", "epochs", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoraSFTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def training_fingerprint(self) -> dict[str, Any]:
        """The fields that change the trained weights (checkpoint bookkeeping excluded)."""
        data = self.to_dict()
        for key in ("save_every", "keep_checkpoints", "lora_targets"):  # lora_targets acts via target_modules
            data.pop(key)
        if self.warmup_steps:
            # The warm-up ramp of transformers.get_scheduler (step / warmup) differs from the one
            # before it ((step + 1) / warmup): other weights, so another key (see lr_scheduler).
            data["warmup_ramp"] = "transformers.get_scheduler"
        return data

    @property
    def wraps_audio_encoder(self) -> bool:
        return not (isinstance(self.target_modules, str) and "language_model" in self.target_modules)

    def lora_config(self, module_names: Sequence[str] | None = None):
        """PEFT's config; ``module_names``: the modules ``target_modules`` resolved to on the model.

        Given the names, PEFT wraps exactly those: given a regex, transformers-5 MoE models (Qwen3-Omni)
        have PEFT rewrite it into bare ``q_proj|k_proj|v_proj``, which also matches the audio encoder."""
        from peft import LoraConfig

        targets = sorted(module_names) if module_names is not None else self.target_modules
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, bias="none")


def resolve_dtype(name: Any, device: str):
    """The model loader's dtype rule (:func:`reliable_lalm.models.hf_loading.resolve_dtype`), one for
    inference and training: ``auto`` is bf16 on GPU, fp32 on CPU."""
    from reliable_lalm.models.hf_loading import resolve_dtype as loader_dtype

    return loader_dtype(name, device)


def default_device() -> str:
    from reliable_lalm.models.hf_loading import resolve_device

    return resolve_device("auto")


# --------------------------------------------------------------------------------------------
# model preparation and loss


def lora_target_names(model, pattern: Any = DEFAULT_TARGET_MODULES) -> list[str]:
    """Names of the ``nn.Linear`` modules LoRA will wrap, matched as peft does: a string with
    ``re.fullmatch``, a list of names by the module name's last parts (``q_proj`` matches
    ``...self_attn.q_proj`` anywhere in the model)."""
    import torch

    def matches(name: str) -> bool:
        if isinstance(pattern, str):
            return re.fullmatch(pattern, name) is not None
        return any(name == t or name.endswith(f".{t}") for t in pattern)

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and matches(name)]


def assert_only_lora_trainable(model, *, language_model_only: bool = True,
                               adapter: TrainingAdapter | None = None) -> int:
    """Raise unless every parameter that requires grad is a LoRA parameter (and, with
    ``language_model_only``, inside the language model as ``adapter`` places it); return their count."""
    adapter = adapter or adapter_for_model(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, _ in trainable if "lora_" not in n]
    if bad:
        raise AssertionError(f"{len(bad)} non-LoRA parameters would be trained, e.g. {bad[:3]}")
    if not trainable:
        raise AssertionError("no trainable parameter: LoRA was not applied")
    outside_lm = [n for n, _ in trainable if not adapter.in_language_model(n)]
    if outside_lm and language_model_only:
        raise AssertionError(f"LoRA parameters outside the language model: {outside_lm[:3]}")
    return sum(p.numel() for _, p in trainable)


def add_lora(model, config: LoraSFTConfig, adapter: TrainingAdapter | None = None):
    """Wrap ``model`` with LoRA on ``config.target_modules`` (by default the language model's q/k/v);
    everything else frozen."""
    import torch
    from peft import get_peft_model

    adapter = adapter or adapter_for_model(model)
    targets = lora_target_names(model, config.target_modules)
    if not targets:
        raise ValueError(f"target_modules {config.target_modules!r} matches no linear layer")
    if not config.wraps_audio_encoder and not all(adapter.in_language_model(name) for name in targets):
        raise ValueError(f"target_modules {config.target_modules!r} matches layers outside the language model")
    for param in model.parameters():
        param.requires_grad_(False)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(config.seed)  # lora_A initialisation
    peft_model = get_peft_model(model, config.lora_config(targets))
    assert_only_lora_trainable(peft_model, language_model_only=not config.wraps_audio_encoder, adapter=adapter)
    return peft_model


class AnswerLoss(torch.nn.Module):
    """Mean next-token cross-entropy over the label (answer) positions of a collated batch.

    Same value as the model's own ``(..., labels=...).loss``, but the LM head runs on the answer
    positions only and the softmax is in float32. Both back-ends train this module.
    """

    def __init__(self, peft_model, adapter: TrainingAdapter | None = None):
        super().__init__()
        self.model = peft_model  # the PeftModel; adapters are saved through it
        self.adapter = adapter or adapter_for_model(peft_model)

    def forward(self, **batch):
        return answer_loss(self.model, batch, self.adapter)


def answer_loss(model, batch: dict, adapter: TrainingAdapter | None = None):
    import torch.nn.functional as F

    adapter = adapter or adapter_for_model(model)
    labels = batch["labels"]
    shift_labels = labels[:, 1:]
    keep = (shift_labels != IGNORE_INDEX) & (batch["attention_mask"][:, 1:] != 0)
    if not bool(keep.any()):
        raise ValueError("batch has no answer token to train on")
    logits = adapter.answer_logits(model, batch, keep)
    return F.cross_entropy(logits, shift_labels[keep].to(logits.device))


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
    from transformers import get_scheduler

    name = LR_SCHEDULES[config.lr_schedule]
    if name == "constant" and config.warmup_steps:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total_steps)


# --------------------------------------------------------------------------------------------
# adapter checks


class AdapterCheckError(RuntimeError):
    """A saved adapter is missing tensors, has empty (e.g. ZeRO-3 partitioned) or untrained weights."""


@dataclass
class AdapterReport:
    directory: str
    modules: int  # LoRA-wrapped modules found
    tensors: int
    parameters: int
    rank: int
    lora_b_abs_mean: float  # 0 for a freshly initialised adapter


def _module_of(key: str) -> str:
    """'base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight' -> module name."""
    name = re.sub(r"\.lora_[AB](\.[^.]+)?\.weight$", "", key)
    return name.removeprefix("base_model.model.")


def verify_adapter(adapter_dir: str | Path, *, expected_modules: Sequence[str] | None = None,
                   expect_trained: bool = True) -> AdapterReport:
    """Load a saved adapter's tensors back and fail loudly unless it is complete and usable."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    weights, config_path = adapter_dir / ADAPTER_WEIGHTS, adapter_dir / ADAPTER_CONFIG
    for path in (weights, config_path):
        if not path.is_file():
            raise AdapterCheckError(f"{adapter_dir}: {path.name} missing")
    config = json.loads(config_path.read_text())
    rank = int(config.get("r", 0))
    tensors = load_file(str(weights))
    a_keys = {_module_of(k): k for k in tensors if ".lora_A" in k}
    b_keys = {_module_of(k): k for k in tensors if ".lora_B" in k}
    problems: list[str] = []
    if not a_keys:
        problems.append("no LoRA tensor saved")
    if set(a_keys) != set(b_keys):
        problems.append(f"lora_A/lora_B mismatch: {sorted(set(a_keys) ^ set(b_keys))[:4]}")
    if expected_modules is not None:
        missing = sorted(set(expected_modules) - set(a_keys))
        extra = sorted(set(a_keys) - set(expected_modules))
        if missing:
            problems.append(f"{len(missing)} target modules have no LoRA weights, e.g. {missing[:3]}")
        if extra:
            problems.append(f"unexpected LoRA modules {extra[:3]}")
    b_means = []
    for module, key in sorted(a_keys.items()):
        a = tensors[key]
        b = tensors.get(b_keys.get(module, ""))
        for name, t in (("lora_A", a), ("lora_B", b)):
            if t is None:
                continue
            if t.numel() == 0 or t.dim() != 2:
                # ZeRO-3 saves partitioned parameters as empty tensors unless they are gathered.
                problems.append(f"{module}.{name} is empty/shape {tuple(t.shape)} (ZeRO-3 partitioned?)")
            elif not bool(t.float().isfinite().all()):
                problems.append(f"{module}.{name} has NaN/inf")
        if a.dim() == 2 and a.shape[0] != rank:
            problems.append(f"{module}.lora_A has rank {a.shape[0]}, config says {rank}")
        if b is not None and b.numel():
            mean = float(b.float().abs().mean())
            b_means.append(mean)
            if expect_trained and mean == 0.0:
                # lora_B starts at zero: all zeros means no optimizer step reached the saved weights.
                problems.append(f"{module}.lora_B is all zeros (adapter untrained)")
    if problems:
        raise AdapterCheckError(f"{adapter_dir}: " + "; ".join(problems[:6])
                                + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else ""))
    return AdapterReport(directory=str(adapter_dir), modules=len(a_keys), tensors=len(tensors),
                         parameters=int(sum(t.numel() for t in tensors.values())), rank=rank,
                         lora_b_abs_mean=float(np.mean(b_means)) if b_means else 0.0)


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
    import deepspeed.ops

    compatible = deepspeed.ops.__compatible_ops__  # probed once, then cached in the module (mutable)
    compatible["deepspeed_shm_comm"] = False


def init_distributed(device: str) -> tuple[int, int, int]:
    """Start (or join) the process group: NCCL on GPUs, gloo on CPUs. Returns (rank, world, local_rank).

    Without a launcher (plain ``python``) the environment of a one-process group is filled in.
    """
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        import torch

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


def zero_stage(ds_config: dict | None) -> int:
    return int((ds_config or {}).get("zero_optimization", {}).get("stage", 0))


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


def _to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def load_base(model_path: str | Path, *, device: str, dtype, adapter: str | Path | None = None):
    """The base model (and, with ``adapter``, the LoRA on top, not merged) and its processor, loaded
    by the loader inference uses for its family ("demo", a registered name, a folder or a cached hub
    id, never a download). Its left padding does not reach training: collation pads on the right."""
    return adapter_for_source(model_path).load(model_path, device=device, dtype=dtype, adapter=adapter,
                                               merge_adapter=False)


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
            yield loop.MicroBatch(_to_device(adapter.collate(processor, [examples[i] for i in indices]), device))

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
        from reliable_lalm.core.results import provenance

        summary["provenance"] = provenance({"training": config.to_dict()}, seed=config.seed, device=str(device))
        (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        if not keep_checkpoints_after:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()  # other ranks wait until rank 0 has saved and checked the adapter
    return SFTResult(adapter_dir=out_dir, backend=optimization.name, steps=total_steps, resumed_from=start_step,
                     losses=losses, examples=len(examples), world_size=world_size, seconds=seconds,
                     seconds_per_step=seconds / max(1, ran), adapter=report, config=config)


def _peft_state_dict(gathered: dict[str, Any]) -> dict[str, Any]:
    """Gathered trainable parameters of the loss module (``model.<peft name>``) as the PeftModel names them."""
    return {name.removeprefix("model."): tensor for name, tensor in gathered.items()}


def _ids_digest(examples: Sequence[SFTExample]) -> str:
    import hashlib

    blob = "\n".join(f"{ex.item_id}\t{ex.target}\t{ex.prompt}" for ex in examples)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_summary(adapter_dir: str | Path) -> dict | None:
    path = Path(adapter_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------------------------
# loading, generation and merging


def load_adapter_model(base_path: str | Path, adapter_dir: str | Path, *, device: str = "cpu", dtype=None):
    """Base model + adapter (``PeftModel``, not merged), in eval mode, and the processor."""
    return load_base(base_path, device=device, dtype=dtype or resolve_dtype("auto", device), adapter=adapter_dir)


def greedy_token_ids(model, processor, examples: Sequence[SFTExample], *, max_new_tokens: int = 16) -> list[list[int]]:
    """Greedy continuation token ids of each example's prompt (one at a time: no padding effects)."""
    import torch

    adapter = adapter_for_model(model)
    stop = {processor.tokenizer.convert_tokens_to_ids(adapter.end_of_turn), processor.tokenizer.pad_token_id}
    outputs = []
    for ex in examples:
        inputs = adapter.prompt_inputs(model, processor, ex.prompt, ex.audio)
        with torch.no_grad():
            generated = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        new = generated[0, inputs["input_ids"].shape[1]:].tolist()
        cut = next((i for i, t in enumerate(new) if t in stop), len(new))
        outputs.append(new[:cut])
    return outputs


def logits_of(model, processor, examples: Sequence[SFTExample]):
    """Next-token logits at the end of each prompt (float32, CPU), for comparing models."""
    import torch

    adapter = adapter_for_model(model)
    rows = []
    for ex in examples:
        inputs = adapter.prompt_inputs(model, processor, ex.prompt, ex.audio)
        with torch.no_grad():
            rows.append(model(**inputs).logits[0, -1].float().cpu())
    return torch.stack(rows)


class MergeMismatch(RuntimeError):
    """The merged model's greedy outputs differ from the base + adapter outputs."""


def merge_adapter(base_path: str | Path, adapter_dir: str | Path, out_dir: str | Path, *,
                  check_examples: Sequence[SFTExample] = (), device: str = "cpu", dtype=None,
                  max_new_tokens: int = 16) -> dict:
    """Fold the adapter into the base weights (``merge_and_unload``) and save model + processor.

    The saved folder is a plain checkpoint of the base's family (what vLLM serves). With ``check_examples``
    the merged model is reloaded from disk and its greedy outputs must equal those of base +
    adapter, else :class:`MergeMismatch`. Returns the report also written to ``merge_report.json``.
    """
    verify_adapter(adapter_dir, expect_trained=False)
    adapter = adapter_for_source(base_path)
    model, processor = load_adapter_model(base_path, adapter_dir, device=device, dtype=dtype)
    expected = greedy_token_ids(model, processor, check_examples, max_new_tokens=max_new_tokens)
    merged = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    reloaded = adapter.model_class().from_pretrained(str(out_dir), dtype=merged.dtype).to(device)
    reloaded.eval()
    got = greedy_token_ids(reloaded, processor, check_examples, max_new_tokens=max_new_tokens)
    mismatched = [ex.item_id for ex, a, b in zip(check_examples, expected, got) if a != b]
    report = {
        "base_path": str(base_path), "adapter_dir": str(adapter_dir), "out_dir": str(out_dir),
        "checked_items": [ex.item_id for ex in check_examples], "mismatched_items": mismatched,
        "adapter_outputs": [processor.tokenizer.decode(t) for t in expected],
        "merged_outputs": [processor.tokenizer.decode(t) for t in got],
    }
    (out_dir / MERGE_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    if mismatched:
        raise MergeMismatch(f"merged greedy outputs differ from adapter outputs for {mismatched}")
    return report


def merge_rounding_loss(base_path: str | Path, adapter_dir: str | Path, *, dtype: str = "bfloat16",
                        device: str = "cpu") -> dict[str, float]:
    """What merging ``adapter_dir`` into the base weights held in ``dtype`` keeps of the LoRA update.

    Per wrapped layer, the exact update is ``scaling * B @ A`` in fp32; the merge (PEFT's
    ``merge_and_unload``, as evaluation used to do) writes ``W + update`` back in ``dtype``.
    Returns ``update_lost`` (L1 norm of (merged - base) - update over L1 norm of the update: the share
    of the update the rounding loses) and ``touched_unchanged`` (share of the weights with a nonzero
    update whose stored value does not change at all), summed over all wrapped layers.
    """
    from peft import PeftModel

    torch_dtype = resolve_dtype(dtype, device)
    base, _ = load_base(base_path, device=device, dtype=torch_dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    lost = total = unchanged = touched = 0.0
    layers = [(name, module) for name, module in model.named_modules() if hasattr(module, "get_delta_weight")
              and hasattr(module, "base_layer")]
    before = {name: module.base_layer.weight.detach().clone() for name, module in layers}
    updates = {}
    for name, module in layers:
        name_adapter = module.active_adapters[0]
        a = module.lora_A[name_adapter].weight.detach().float()
        b = module.lora_B[name_adapter].weight.detach().float()
        updates[name] = (b @ a) * float(module.scaling[name_adapter])
    merged = model.merge_and_unload()
    after = dict(merged.named_modules())
    for name, _ in layers:
        key = name.removeprefix("base_model.model.")
        new = after[key].weight.detach()
        applied = new.float() - before[name].float()
        update = updates[name]
        lost += float((applied - update).abs().sum())
        total += float(update.abs().sum())
        nonzero = update != 0
        touched += float(nonzero.sum())
        unchanged += float(((new == before[name]) & nonzero).sum())
    return {"dtype": str(torch_dtype).replace("torch.", ""), "layers": len(layers),
            "update_lost": lost / total if total else 0.0,
            "touched_unchanged": unchanged / touched if touched else 0.0}


# --------------------------------------------------------------------------------------------
# step benchmark


# Dense bf16 tensor-core peak (TFLOP/s) for the FLOP floor; None elsewhere.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def _peak_tflops(device: str) -> float | None:
    import torch

    if not str(device).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sft_step_flops(model_config, *, batch: int, seq_len: int, audio_frames: int, gradient_checkpointing: bool,
                   answer_tokens: int) -> float:
    """FLOPs of one LoRA SFT step: encoder forward (frozen, no backward), LM forward + input-gradient
    backward (frozen weights need no weight gradient), recompute under checkpointing, LM head on the
    answer positions only. LoRA's own FLOPs (rank 8) are negligible and left out."""
    a, t = model_config.audio_config, model_config.text_config
    d, L = a.d_model, a.encoder_layers
    enc_positions = (audio_frames - 1) // 2 + 1  # after conv2 (stride 2); the encoder sees the whole window
    enc_params = L * (4 * d * d + 2 * d * a.encoder_ffn_dim)
    enc = batch * (2 * enc_params * enc_positions + L * 4 * enc_positions**2 * d)
    h, Lt = t.hidden_size, t.num_hidden_layers
    kv = h // t.num_attention_heads * t.num_key_value_heads
    layer_params = 2 * h * h + 2 * h * kv + 3 * h * t.intermediate_size
    fwd = batch * (2 * Lt * layer_params * seq_len + Lt * 4 * seq_len**2 * h)
    head = batch * answer_tokens * 2 * h * t.vocab_size
    lm = fwd * (2 + (1 if gradient_checkpointing else 0)) + 3 * head  # fwd + bwd(inputs) [+ recompute]
    return float(enc + lm)


def benchmark_sft_step(config: LoraSFTConfig | None = None, *, model_config: Any = "qwen2-audio-7b",
                       batch: int = 8, seq_len: int = 330, audio_seconds: float = 10.0, answer_tokens: int = 4,
                       steps: int = 10, warmup: int = 3, device: str | None = None, dtype: str | None = None,
                       loss_impl: str = "answer", seed: int = 0) -> dict[str, Any]:
    """Time LoRA SFT steps (forward, backward, AdamW) on a random-weights model of a given architecture.

    ``model_config``: ``"qwen2-audio-7b"`` (the real 8.4B architecture; needs a GPU), a
    ``Qwen2AudioConfig``, or a model folder whose ``config.json`` is used (weights are not read).
    Inputs mimic one MMAU batch: ``audio_seconds`` of audio in the encoder's full window, expanded
    into audio tokens, text up to ``seq_len`` tokens, the last ``answer_tokens`` labelled.
    ``loss_impl``: ``"answer"`` (this module's loss) or ``"hf"`` (the model's own, full-vocabulary).
    Returns ms/step (mean, median), peak GPU memory, FLOP estimate and floor.
    """
    import torch
    from transformers import AutoConfig

    config = config or LoraSFTConfig()
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype or config.dtype, device)
    if isinstance(model_config, str) and model_config in ("qwen2-audio-7b", "7b"):
        from reliable_lalm.models.hf_loading import random_weights_7b_config

        mconf = random_weights_7b_config()
    elif hasattr(model_config, "model_type"):  # a config object
        mconf = model_config
    else:
        mconf = AutoConfig.from_pretrained(str(model_config))
    if mconf.audio_token_index >= mconf.text_config.vocab_size:
        # A config meant for another tokenizer (e.g. a scaled-down 7B layout with the 7B's token ids):
        # any in-vocabulary id serves as the audio placeholder for timing.
        import copy

        mconf = copy.deepcopy(mconf)
        mconf.audio_token_index = mconf.text_config.vocab_size - 1
    adapter = adapter_for_model_type(mconf.model_type)
    torch.manual_seed(seed)
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    with torch.device(device):
        model = adapter.model_class()._from_config(mconf, dtype=torch_dtype)
    built_params = sum(p.numel() for p in model.parameters())
    peft_model = add_lora(model, config, adapter)
    peft_model.train()
    loss_module = AnswerLoss(peft_model, adapter)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)

    # Synthetic batch shaped like the processor's output.
    a = mconf.audio_config
    window = a.max_source_positions * 2  # mel frames of the full window (3000 = 30 s for the 7B)
    frames = min(window, int(audio_seconds * 100))
    n_audio = adapter.audio_positions(model, frames)
    if seq_len < n_audio + answer_tokens + 4:
        raise ValueError(f"seq_len {seq_len} cannot hold {n_audio} audio tokens and an answer")
    vocab = min(mconf.text_config.vocab_size, mconf.audio_token_index)
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    input_ids[:, 3:3 + n_audio] = mconf.audio_token_index
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, -answer_tokens:] = input_ids[:, -answer_tokens:]
    feature_mask = torch.zeros(batch, window, dtype=torch.long)
    feature_mask[:, :frames] = 1
    features_key, mask_key = adapter.feature_keys
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              features_key: torch.randn(batch, a.num_mel_bins, window, generator=g),
              mask_key: feature_mask, "labels": labels}
    inputs = _to_device(inputs, device)
    inputs["input_features"] = inputs["input_features"].to(torch_dtype)

    def one_step():
        if loss_impl == "answer":
            loss = loss_module(**inputs)
        elif loss_impl == "hf":
            loss = peft_model(**inputs, use_cache=False).loss
        else:
            raise ValueError(f"loss_impl must be 'answer' or 'hf', not {loss_impl!r}")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        one_step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = one_step()
        sync()
        times.append(time.perf_counter() - start)
    flops = sft_step_flops(mconf, batch=batch, seq_len=seq_len, audio_frames=window,
                           gradient_checkpointing=config.gradient_checkpointing, answer_tokens=answer_tokens)
    peak = _peak_tflops(device)
    result = {
        "device": torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else "cpu",
        "dtype": str(torch_dtype).removeprefix("torch."), "batch": batch, "seq_len": seq_len,
        "audio_tokens": n_audio, "audio_window_frames": window, "gradient_checkpointing": config.gradient_checkpointing,
        "loss_impl": loss_impl, "parameters": built_params, "trainable_parameters": sum(p.numel() for p in params),
        "steps": steps, "warmup": warmup, "ms_per_step_mean": 1000 * float(np.mean(times)),
        "ms_per_step_median": 1000 * float(np.median(times)), "ms_per_step_min": 1000 * float(np.min(times)),
        "tokens_per_s": batch * seq_len / float(np.median(times)), "final_loss": float(loss.detach()),
        "flops_per_step": flops, "peak_tflops": peak,
        "flop_floor_ms": 1000 * flops / (peak * 1e12) if peak else None,
        "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30
                            if str(device).startswith("cuda") else None),
        "torch_threads": torch.get_num_threads(),
    }
    del model, peft_model, optimizer
    return result
