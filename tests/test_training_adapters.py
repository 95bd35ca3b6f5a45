"""The training seam: LoRA SFT of a second model family (a tiny random Audio Flamingo 3) through the
same ``train_lora_sft`` as Qwen2-Audio, the adapter lookup through the model registry, and the one
fp32-only merge rule for loading base + adapter in every family."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_fixtures import language_model_qkv  # noqa: E402
from model_probes import logits_of  # noqa: E402
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.models import hf_generic, qwen2_audio, registry
from reliable_lalm.models.families import FAMILIES
from reliable_lalm.models.native_tiny import build_tiny, save_tiny
from reliable_lalm.models.training_adapter import TrainingNotSupported
from reliable_lalm.training import adapter_check, lora_config, lora_model, lora_sft, merge
from reliable_lalm.training.sft_data import SFTExample

CHOICES = ("dog bark", "siren", "rain")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


def _examples() -> list[SFTExample]:
    # 3 s clips span two of the tiny AF3's 2 s feature windows: feature rows are windows, not examples.
    rng = np.random.default_rng(0)
    questions = ["Which sound is heard?", "What do you hear?", "Which event is loudest?", "What is heard first?"]
    return [SFTExample(audio=(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32),
                       prompt=build_prompt("baseline", q, CHOICES), target=t, item_id=f"af3-{i}")
            for i, (q, t, s) in enumerate(zip(questions, ["dog bark", "IDK", "rain", "IDK"], [3.0, 1.0, 2.5, 1.5]))]


@pytest.fixture(scope="module")
def tiny_af3(tmp_path_factory):
    model, processor = build_tiny("audioflamingo3")
    return save_tiny(model, processor, tmp_path_factory.mktemp("af3") / "audioflamingo3")


def test_adapters_are_found_through_the_model_registry(tiny_af3):
    assert isinstance(registry.adapter_for_source("demo"), qwen2_audio.Qwen2AudioTraining)
    af3 = registry.adapter_for_source(tiny_af3)
    assert isinstance(af3, hf_generic.NativeTraining) and af3.family is FAMILIES["audioflamingo3"]
    assert af3.feature_keys == ("input_features", "input_features_mask")
    model, _ = build_tiny("audioflamingo3")
    assert registry.adapter_for_model(model).name == "audioflamingo3"
    for family in FAMILIES.values():
        if family.name == "voxtral":  # refused: test_voxtral_is_refused_for_training_in_one_line
            continue
        for model_type in family.model_types:
            assert registry.adapter_for_model_type(model_type).family is family
    with pytest.raises(TrainingNotSupported):
        registry.adapter_for_model_type("bert")
    with pytest.raises(TrainingNotSupported):
        registry.adapter_for_source("openai:some-model@http://127.0.0.1:9/v1")


def test_af3_collation_labels_the_answer_only(tiny_af3):
    adapter = registry.adapter_for_source(tiny_af3)
    model, processor = lora_model.load_base(tiny_af3, device="cpu", dtype=torch.float32)
    examples = _examples()
    batch = adapter.collate(processor, examples)
    assert {"input_ids", "attention_mask", "input_features", "input_features_mask", "labels"} <= set(batch)
    assert batch["input_features"].shape[0] == 2 + 1 + 2 + 1  # windows of 3, 1, 2.5 and 1.5 s
    mask = batch["attention_mask"]
    assert bool((mask[:, 1:] <= mask[:, :-1]).all())  # right padding
    tok = processor.tokenizer
    for row, ex in enumerate(examples):
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert tok.decode(labelled) == ex.target + "<|im_end|>"
    # The answer loss restricted to the answer positions equals the model's own full-vocabulary loss.
    peft_model = lora_model.add_lora(model, lora_config.LoraSFTConfig())
    peft_model.eval()
    with torch.no_grad():
        ours = lora_model.answer_loss(peft_model, batch)
        theirs = peft_model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_lora_sft_of_audio_flamingo3_trains_only_the_language_models_lora(tiny_af3, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    examples = _examples()
    config = lora_config.LoraSFTConfig.for_modality("sound", learning_rate=5e-2, epochs=3, batch_size=2, grad_accum=1,
                                          save_every=2, seed=1)
    out = tmp_path / "adapter"
    result = lora_sft.train_lora_sft(tiny_af3, examples, out, config, progress=False, device="cpu")
    assert result.steps == 6 and len(result.losses) == 6 and all(np.isfinite(result.losses))
    assert np.mean(result.losses[-2:]) < np.mean(result.losses[:2])
    # Every LoRA tensor is in the language model; the audio encoder's q/k/v (there are some) got none.
    base, processor = lora_model.load_base(tiny_af3, device="cpu", dtype=torch.float32)
    lm_qkv = sorted(language_model_qkv(base))
    report = adapter_check.verify_adapter(out, expected_modules=lm_qkv)
    assert report.modules == len(lm_qkv) and report.lora_b_abs_mean > 0
    saved = load_file(str(out / lora_config.ADAPTER_WEIGHTS))
    assert saved and all("language_model" in k and "lora_" in k for k in saved)
    # Reloaded on the base: base weights as they were, outputs changed by the adapter.
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    base_logits = logits_of(base, processor, examples)
    tuned = PeftModel.from_pretrained(base, str(out)).eval()
    for name, param in tuned.named_parameters():
        if "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(param, before[key]), name
    assert (logits_of(tuned, processor, examples) - base_logits).abs().max() > 1e-3
    # The merged checkpoint (fp32) is a plain AF3 folder whose greedy outputs equal base + adapter.
    merged = merge.merge_adapter(tiny_af3, out, tmp_path / "merged", check_examples=examples[:2], max_new_tokens=4)
    assert merged["mismatched_items"] == []


def test_native_loading_merges_an_adapter_only_in_fp32(tiny_af3, tmp_path):
    """The one merge rule (hf_loading.attach_adapter) for the native families too: merged in fp32,
    kept as an unmerged PeftModel in bf16, where a merge would round most of the update away."""
    from peft import PeftModel

    out = tmp_path / "adapter"
    lora_sft.train_lora_sft(tiny_af3, _examples()[:2], out, lora_config.LoraSFTConfig(learning_rate=5e-2, batch_size=2, epochs=1),
                     progress=False, device="cpu")
    fp32 = hf_generic.NativeHFBackend.from_pretrained(tiny_af3, device="cpu", dtype="float32", adapter=out)
    assert not isinstance(fp32.model, PeftModel) and not any("lora_" in n for n, _ in fp32.model.named_parameters())
    bf16 = hf_generic.NativeHFBackend.from_pretrained(tiny_af3, device="cpu", dtype="bfloat16", adapter=out)
    assert isinstance(bf16.model, PeftModel)
    assert all(p.dtype == torch.float32 for n, p in bf16.model.named_parameters() if "lora_" in n)
    fp32.close()
    bf16.close()


@pytest.mark.parametrize("family", ["qwen2_5_omni_thinker", "qwen3_omni_moe_thinker"])
def test_lora_sft_of_the_omni_thinkers(family, tmp_path):
    """Two more families through the same entry point. Qwen2.5-Omni's forward ignores
    ``logits_to_keep``, which the native adapter handles; for the Qwen3-Omni MoE thinker PEFT rewrites
    a target regex into bare q/k/v names (which match its audio encoder too), so LoRA is given the
    resolved module names and the adapter holds the language model's q/k/v only."""
    from safetensors.torch import load_file

    model, processor = build_tiny(family)
    source = save_tiny(model, processor, tmp_path / "omni")
    out = tmp_path / "adapter"
    result = lora_sft.train_lora_sft(source, _examples(), out, lora_config.LoraSFTConfig(learning_rate=5e-2, batch_size=2, epochs=1),
                              progress=False, device="cpu")
    assert result.steps == 2 and all(np.isfinite(result.losses))
    lm_qkv = language_model_qkv(model)
    assert adapter_check.verify_adapter(out, expected_modules=lm_qkv).modules == len(lm_qkv)
    saved = load_file(str(out / lora_config.ADAPTER_WEIGHTS))
    assert saved and all("language_model" in k for k in saved), sorted(saved)[:3]


def test_voxtral_is_refused_for_training_in_one_line():
    """Its prompts are mistral-common's, which the shared SFT collation does not build: the lookup
    says so before any model is loaded, instead of failing inside the processor."""
    with pytest.raises(TrainingNotSupported, match="Voxtral cannot be fine-tuned"):
        registry.adapter_for_model_type("voxtral")
