"""Checks of a saved LoRA adapter (:func:`verify_adapter`): every LoRA tensor present, non-empty and
finite, ``lora_B`` not all zeros after training. This catches the ZeRO-3 pitfall of saving
partitioned (empty) parameters."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.torch import load_file

from reliable_lalm.training.lora_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS


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
