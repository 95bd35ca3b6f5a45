"""The configuration of LoRA SFT (:class:`LoraSFTConfig`: rank, alpha, targets, schedule, batch
sizes) and the file names of a saved adapter. Which modules get LoRA is a choice (``lora_targets``:
:data:`LORA_TARGETS`); the alpha per modality follows Table 9 (:mod:`reliable_lalm.training.table9`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Sequence

from peft import LoraConfig

from reliable_lalm.models.hf_loading import resolve_device
from reliable_lalm.models.hf_loading import resolve_dtype as loader_dtype
from reliable_lalm.models.families import LANGUAGE_MODEL_QKV, LORA_TARGETS
from reliable_lalm.training.table9 import DEFAULT_ALPHA_READING, EPOCHS, LEARNING_RATE, LORA_RANK, table9_alpha


DEFAULT_TARGET_MODULES = LANGUAGE_MODEL_QKV
DEFAULT_LORA_TARGETS = "language_model_only"
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

    rank: int = LORA_RANK
    alpha: float = 32.0
    dropout: float = 0.05  # not stated in the paper
    target_modules: Any = None  # None: LORA_TARGETS[lora_targets] (a regex, or a list of names)
    lora_targets: str = DEFAULT_LORA_TARGETS  # language_model_only | paper_names (module docstring)
    learning_rate: float = LEARNING_RATE
    epochs: int = EPOCHS
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
        targets = sorted(module_names) if module_names is not None else self.target_modules
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, bias="none")


def resolve_dtype(name: Any, device: str):
    """The model loader's dtype rule (:func:`reliable_lalm.models.hf_loading.resolve_dtype`), one for
    inference and training: ``auto`` is bf16 on GPU, fp32 on CPU."""
    return loader_dtype(name, device)


def default_device() -> str:
    return resolve_device("auto")
