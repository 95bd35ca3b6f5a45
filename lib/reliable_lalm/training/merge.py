"""An adapter folded into the base weights for serving (:func:`merge_adapter`: vLLM cannot load LoRA
adapters for Qwen2-Audio), checked by greedy outputs unchanged by the merge. Loading base + adapter for
evaluation merges only in fp32, for every family (:func:`reliable_lalm.models.hf_loading.attach_adapter`):
a merge in a low-precision dtype rounds much of the update away (measured in tests/test_paper_settings.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from reliable_lalm.training.adapter_check import verify_adapter
from reliable_lalm.models.registry import adapter_for_model, adapter_for_source
from reliable_lalm.training.lora_config import MERGE_REPORT, resolve_dtype
from reliable_lalm.training.lora_model import load_base
from reliable_lalm.training.sft_data import SFTExample


# --------------------------------------------------------------------------------------------
# loading, generation and merging


def load_adapter_model(base_path: str | Path, adapter_dir: str | Path, *, device: str = "cpu", dtype=None):
    """Base model + adapter (``PeftModel``, not merged), in eval mode, and the processor."""
    return load_base(base_path, device=device, dtype=dtype or resolve_dtype("auto", device), adapter=adapter_dir)


def greedy_token_ids(model, processor, examples: Sequence[SFTExample], *, max_new_tokens: int = 16) -> list[list[int]]:
    """Greedy continuation token ids of each example's prompt (one at a time: no padding effects)."""
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
