"""Adding a native model family the way README's "How to add a model" says: one ``ModelFamily`` row
and one tiny builder, nothing else. Music Flamingo (a transformers class this package does not serve)
stands in for the new family; everything else (its backend per model_type, its tiny instance, its
training adapter and LoRA targets, a named checkpoint's backend and extras, ``rlalm infer`` on a
checkpoint folder) must follow from the row."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AudioFlamingo3EncoderConfig, MusicFlamingoConfig, MusicFlamingoForConditionalGeneration,
                          MusicFlamingoProcessor, Qwen2Config)

from inference_fixtures import infer_idk_on_two_items  # noqa: E402
from lora_fixtures import language_model_qkv  # noqa: E402
from reliable_lalm.models import families, native_tiny, registry
from reliable_lalm.models.base import GenerationRequest, GenerationSettings
from reliable_lalm.models.hf_generic import NativeHFBackend, NativeTraining
from reliable_lalm.models.native_tiny import _finish, _text_config, chat_template, feature_extractor, train_tokenizer
from reliable_lalm.training.lora_model import lora_target_names

README = Path(__file__).resolve().parents[1] / "README.md"


# ---- the new family: what a contributor writes -------------------------------------------------

def tiny_musicflamingo(seed: int = 0):
    """The tiny builder (it would sit in models/native_tiny.py beside the others)."""
    tokenizer = train_tokenizer(["<sound>", "<|sound_bos|>", "<|sound_eos|>"], {})
    processor = MusicFlamingoProcessor(feature_extractor=feature_extractor(2), tokenizer=tokenizer,
                                       chat_template=chat_template("<sound>", "You are a helpful assistant."),
                                       max_audio_len=6)
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in (
        ("audio_token_id", "<sound>"), ("audio_bos_token_id", "<|sound_bos|>"), ("audio_eos_token_id", "<|sound_eos|>"))}
    config = MusicFlamingoConfig(
        audio_config=AudioFlamingo3EncoderConfig(num_mel_bins=128, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, hidden_size=16, max_source_positions=100),
        text_config=Qwen2Config(**_text_config(tokenizer), tie_word_embeddings=False), **ids)
    torch.manual_seed(seed)
    return _finish(MusicFlamingoForConditionalGeneration(config), tokenizer), processor


ROW = families.ModelFamily(  # the one row (it would sit in models/families.py's FAMILIES)
    "musicflamingo", "MusicFlamingoForConditionalGeneration", "MusicFlamingoProcessor", ("musicflamingo",),
    mask_key="input_features_mask", window_attr="max_audio_len", tiny=tiny_musicflamingo,
    description="Music Flamingo (stand-in for a new family in this test)")


@pytest.fixture
def added(monkeypatch, one_torch_thread):
    before = dict(families.FAMILIES)
    monkeypatch.setitem(families.FAMILIES, ROW.name, ROW)
    assert {k: v for k, v in families.FAMILIES.items() if k != ROW.name} == before  # one row, nothing else
    return ROW


# ---- what follows from it ---------------------------------------------------------------------

def test_the_readme_names_the_files_this_test_fills():
    """README's native-family paragraph names exactly two files: the row's and the builder's."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### How to add a model", 1)[1].split("\n### ", 1)[0]
    paragraph = next(p for p in section.split("\n\n") if p.startswith("A native transformers family"))
    named = set(re.findall(r"`(lib/reliable_lalm/[\w/]+\.py)`", paragraph))
    assert named == {"lib/reliable_lalm/models/families.py", "lib/reliable_lalm/models/native_tiny.py"}
    assert "two files" in paragraph
    # ... and those are where the rows and the builders of the shipped families are
    assert Path(families.__file__).name == "families.py" and Path(native_tiny.__file__).name == "native_tiny.py"
    assert all(f.tiny.startswith("reliable_lalm.models.native_tiny:") for f in families.FAMILIES.values() if f.tiny)


def test_a_new_row_is_served_trained_and_built_from_the_table(added, tmp_path):
    assert registry.backends_by_model_type()["musicflamingo"] == families.NATIVE_BACKEND
    assert native_tiny.tiny_specs()["musicflamingo"].build is tiny_musicflamingo
    entry = registry.named_checkpoint("music-flamingo", "musicflamingo", "nvidia/music-flamingo-hf")
    assert entry.backend == families.NATIVE_BACKEND and entry.extra_requirements == ()

    model, processor = native_tiny.build_tiny("musicflamingo")
    backend = NativeHFBackend(model, processor, batch_size=2)
    assert backend.family is added
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32)  # spans two 2 s windows
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=1.0, num_samples=3, seed=5)
    together = backend.generate([GenerationRequest("a", clip, "Which sound? A. dog B. cat", settings),
                                 GenerationRequest("b", clip[:16000], "Which one? A. x B. y", settings)])
    alone = backend.generate([GenerationRequest("b", clip[:16000], "Which one? A. x B. y", settings)])
    assert together[1].texts == alone[0].texts  # K@N samples independent of the batch
    backend.close()

    folder = native_tiny.save_tiny(model, processor, tmp_path / "musicflamingo")
    assert registry.resolve_model(folder).backend_class() is NativeHFBackend
    adapter = registry.adapter_for_source(folder)
    assert isinstance(adapter, NativeTraining) and adapter.family is added
    # the default LoRA targets are derived from the row's language-model prefix: the LM's q/k/v only
    pattern = adapter.lora_target_modules("language_model_only")
    assert sorted(lora_target_names(model, pattern)) == sorted(language_model_qkv(model))


def test_rlalm_infer_serves_a_checkpoint_of_the_new_family(added, tmp_path, capsys):
    model, processor = native_tiny.build_tiny("musicflamingo")
    folder = native_tiny.save_tiny(model, processor, tmp_path / "musicflamingo")
    rc, records = infer_idk_on_two_items(folder, tmp_path)
    assert rc == 0, capsys.readouterr().err
    assert len(records) == 2 and all(r["error"] is None for r in records), records


def test_lora_targets_follow_a_language_model_that_sits_elsewhere():
    """A family whose language model is not ``model.language_model.`` gets targets under its own prefix."""
    pattern = families.ModelFamily("x", "X", "XProcessor", ("x",), mask_key=None,
                                   language_model_prefix="model.text_decoder.").lora_targets["language_model_only"]
    assert re.fullmatch(pattern, "model.text_decoder.layers.3.self_attn.k_proj")
    assert not re.fullmatch(pattern, "model.audio_tower.layers.0.self_attn.q_proj")
    assert not re.fullmatch(pattern, "model.language_model.layers.0.self_attn.q_proj")
    # the default prefix keeps the pattern the shipped demo adapters were trained with
    assert families.LORA_TARGETS["language_model_only"] == r".*language_model.*\.(q_proj|k_proj|v_proj)"


def test_default_lora_config_trains_a_language_model_that_sits_elsewhere():
    """add_lora with the default config wraps the q/k/v of the family's own language model, wherever
    its row says it sits, and nothing of the audio encoder."""
    from transformers import PretrainedConfig

    from reliable_lalm.models.training_adapter import TrainingAdapter
    from reliable_lalm.training.lora_config import LoraSFTConfig
    from reliable_lalm.training.lora_model import add_lora

    def attention():
        return torch.nn.ModuleDict({name: torch.nn.Linear(4, 4) for name in ("q_proj", "k_proj", "v_proj")})

    class TwoTowers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = PretrainedConfig()
            self.model = torch.nn.Module()
            self.model.text_decoder = torch.nn.ModuleDict({"self_attn": attention()})
            self.model.audio_tower = torch.nn.ModuleDict({"self_attn": attention()})

    family = families.ModelFamily("x", "X", "XProcessor", ("x",), mask_key=None,
                                  language_model_prefix="model.text_decoder.")
    peft_model = add_lora(TwoTowers(), LoraSFTConfig(), adapter=TrainingAdapter(family))
    wrapped = {n.removesuffix(".lora_A.default.weight") for n, p in peft_model.named_parameters()
               if p.requires_grad and n.endswith("lora_A.default.weight")}
    assert wrapped == {f"base_model.model.model.text_decoder.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")}
