"""The LoRA SFT step benchmark (:func:`benchmark_sft_step`): one step's wall time against its FLOP
count (:func:`sft_step_flops`) and the device's peak."""
from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig

from reliable_lalm.models.hf_loading import random_weights_7b_config
from reliable_lalm.models.registry import adapter_for_model_type
from reliable_lalm.training.lora_config import LoraSFTConfig, default_device, resolve_dtype
from reliable_lalm.training.lora_model import AnswerLoss, add_lora, to_device
from reliable_lalm.models.training_adapter import IGNORE_INDEX


# --------------------------------------------------------------------------------------------
# step benchmark


# Dense bf16 tensor-core peak (TFLOP/s) for the FLOP floor; None elsewhere.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def _peak_tflops(device: str) -> float | None:
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
    config = config or LoraSFTConfig()
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype or config.dtype, device)
    if isinstance(model_config, str) and model_config in ("qwen2-audio-7b", "7b"):
        mconf = random_weights_7b_config()
    elif hasattr(model_config, "model_type"):  # a config object
        mconf = model_config
    else:
        mconf = AutoConfig.from_pretrained(str(model_config))
    if mconf.audio_token_index >= mconf.text_config.vocab_size:
        # A config meant for another tokenizer (e.g. a scaled-down 7B layout with the 7B's token ids):
        # any in-vocabulary id serves as the audio placeholder for timing.
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
    inputs = to_device(inputs, device)
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
