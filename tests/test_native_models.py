"""Native transformers LALMs (Audio Flamingo 3, Qwen2.5-Omni thinker, Qwen3-Omni thinker, Voxtral) on
tiny random-weight instances of their real classes, built offline (seconds each).

What each family must do: hear the audio (passed as ``audio=``, right-padded features, every frame
reaching the model), batched greedy = batch-size-1, K@N reproducible and independent of batching,
the paper's prompts through the model's own chat template, LoRA targets in the language model only,
and load back from a checkpoint folder through the registry. Voxtral needs the optional extra
``voxtral`` (mistral-common); without it its cases are skipped, saying so.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lora_fixtures import language_model_qkv, language_model_qkv_regex  # noqa: E402
from reliable_lalm.core import prompts
from reliable_lalm.core.plugins import load_object
from reliable_lalm.models import hf_generic
from reliable_lalm.models.base import AudioNotReachedError, GenerationRequest, GenerationSettings
from reliable_lalm.models.families import FAMILIES
from reliable_lalm.models.native_tiny import build_tiny, save_tiny, tiny_specs

NATIVE = sorted(tiny_specs())  # the families with a tiny instance: every one served by the native backend


def _missing(family: str) -> list[str]:
    """Modules of an optional extra that the family's tiny instance needs and that are not installed."""
    return [m for m in tiny_specs()[family].requires if importlib.util.find_spec(m) is None]


TINY_FAMILIES = [pytest.param(f, marks=pytest.mark.skipif(bool(_missing(f)), reason=(
    f"{f} needs {', '.join(_missing(f))}, not installed (its optional extra in pyproject.toml)"))) for f in NATIVE]
needs_voxtral = pytest.mark.skipif(bool(_missing("voxtral")), reason=(
    "Voxtral needs mistral-common, not installed (pip install -e '.[voxtral]')"))
# The end of each family's rendered prompt: where the assistant's answer begins.
GENERATION_PROMPT_END = {"voxtral": "[/INST]"}
CHATML_GENERATION_PROMPT_END = "<|im_start|>assistant\n"


def backend_class(family: str):
    return load_object(FAMILIES[family].backend)

QUESTION = "What is the primary sound source heard in the recording?"
CHOICES = ["Dog barking", "Car horn", "Piano melody", "Human speech"]


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny(request, one_torch_thread):
    model, processor = build_tiny(request.param)
    return request.param, model, processor


@pytest.fixture
def backend(tiny):
    family, model, processor = tiny
    b = backend_class(family)(model, processor, batch_size=4)
    yield b
    b.close()


def _clips():
    rng = np.random.default_rng(0)
    # 3 s (two windows of the tiny AF3's 2 s), 1 s, 0.5 s
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (48000, 16000, 8000)]


def _requests(settings=GenerationSettings(max_new_tokens=6), **kw):
    texts = [prompts.baseline_prompt(QUESTION, CHOICES), prompts.idk_prompt(QUESTION, CHOICES), "Describe the audio."]
    return [GenerationRequest(f"item-{i}", audio, text, settings, **kw) for i, (audio, text) in
            enumerate(zip(_clips(), texts))]


def test_audio_is_passed_as_audio_and_features_are_right_padded(backend, monkeypatch):
    if backend.family.name == "voxtral":
        pytest.skip("VoxtralProcessor.__call__ takes no audio (clips go in the mistral-common chat request) and "
                    "returns no feature mask: test_voxtral_clips_reach_mistral_common_unchanged and "
                    "test_voxtral_text_is_left_padded_and_features_right_padded check the same trap")
    calls = []
    original = type(backend.processor).__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(backend.processor), "__call__", spy)
    texts = [backend.chat_text("a much longer prompt than the other one, to force padding"), backend.chat_text("Hi")]
    enc = backend.encode(texts, [_clips()[1], _clips()[2]])
    assert calls and "audio" in calls[0] and "audios" not in calls[0] and len(calls[0]["audio"]) == 2
    assert "input_features" in enc and backend.family.mask_key in enc
    assert int(enc["attention_mask"][1, 0]) == 0 and int(enc["attention_mask"][1, -1]) == 1  # text: left-padded
    mask = enc[backend.family.mask_key]
    lengths = mask.sum(-1)
    assert int(lengths[0]) > int(lengths[-1])  # the 1 s clip has more valid frames than the 0.5 s one
    for row, n in zip(mask, lengths):  # features: right-padded (valid frames first)
        assert bool(row[: int(n)].all()) and not bool(row[int(n):].any())


def test_audio_reaches_the_model_and_the_check_fires_without_it(backend, monkeypatch):
    backend.generate(_requests()[:2])  # passes the check: every processed frame reached the encoder
    original = backend.encode

    def without_features(texts, audios):
        enc = original(texts, audios)
        del enc["input_features"]  # the model then only sees the audio placeholder tokens
        return enc

    monkeypatch.setattr(backend, "encode", without_features)
    with pytest.raises(AudioNotReachedError):
        backend.generate(_requests()[:2])


def test_processor_output_without_features_is_an_error(backend, monkeypatch):
    if backend.family.name == "voxtral":  # the audio goes in the chat request: drop it there
        original = type(backend.processor).apply_chat_template

        def drop_audio(self, conversations, *args, **kwargs):
            text_only = [[{**m, "content": [p for p in m["content"] if p["type"] != "audio"]} for m in c]
                         for c in conversations]
            return original(self, text_only, *args, **kwargs)

        monkeypatch.setattr(type(backend.processor), "apply_chat_template", drop_audio)
    else:
        original = type(backend.processor).__call__

        def drop_audio(self, *args, **kwargs):
            kwargs.pop("audio", None)  # as if `audios=` had been passed: silently text only
            return original(self, *args, **kwargs)

        monkeypatch.setattr(type(backend.processor), "__call__", drop_audio)
    with pytest.raises((AudioNotReachedError, ValueError)):
        backend.generate(_requests()[:1])


def test_batched_greedy_equals_batch_size_one(backend):
    requests = _requests(GenerationSettings(max_new_tokens=8))
    backend.batch_size = 3
    batched = backend.generate(requests)
    backend.batch_size = 1
    single = backend.generate(requests)
    assert [g.texts for g in batched] == [g.texts for g in single]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]
    assert len({g.texts[0] for g in batched}) > 1  # the answers depend on the input (not a constant)


def test_audio_flamingo_windows_are_not_prompts():
    model, processor = build_tiny("audioflamingo3")
    backend = hf_generic.NativeHFBackend(model, processor)
    enc = backend.encode([backend.chat_text("Q?")] * 2, _clips()[:2])
    assert enc["input_features"].shape[0] == 3  # 3 s clip -> two 2 s windows, 1 s clip -> one
    backend.close()


@pytest.fixture(scope="module")
def voxtral(one_torch_thread):
    from reliable_lalm.models.voxtral import VoxtralBackend

    model, processor = build_tiny("voxtral")
    b = VoxtralBackend(model, processor, batch_size=4)
    yield b
    b.close()


@needs_voxtral
def test_voxtral_clips_reach_mistral_common_unchanged(voxtral, monkeypatch):
    received = []
    original = type(voxtral.processor)._retrieve_input_features

    def spy(self, audio, *args, **kwargs):  # the arrays mistral-common decoded from the chat request
        received.extend(audio)
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(type(voxtral.processor), "_retrieve_input_features", spy)
    clips = _clips()[:2]
    voxtral.encode([voxtral.chat_text("Q?"), voxtral.chat_text("Another question?")], clips)
    assert len(received) == 2
    for clip, audio in zip(clips, received):
        assert np.array_equal(audio[: len(clip)], clip)  # bit-exact through the float WAV
        assert len(audio) % voxtral.chunk_samples == 0 and not audio[len(clip):].any()  # silence to 30 s


@needs_voxtral
def test_voxtral_text_is_left_padded_and_features_right_padded(voxtral, monkeypatch):
    clips = _clips()[1:]  # 1 s, 0.5 s
    texts = [voxtral.chat_text("a much longer prompt than the other one, to force padding"), voxtral.chat_text("Hi")]
    enc = voxtral.encode(texts, clips)
    assert int(enc["attention_mask"][1, 0]) == 0 and int(enc["attention_mask"][1, -1]) == 1  # text: left-padded
    features = enc["input_features"]
    assert features.shape == (2, 128, voxtral.chunk_frames)  # one 30 s chunk per clip, no mask
    for row, clip in zip(features, clips):
        audio_frames = len(clip) // voxtral.hop_length
        silence = row[:, audio_frames + 2:]
        assert bool((silence == silence[0, 0]).all())  # after the clip: the silence value only
        assert bool((row[:, :audio_frames] != silence[0, 0]).any())  # the clip itself comes first

    from mistral_common.tokens.tokenizers.audio import AudioEncoder

    def pad_left(self, audio_array, sampling_rate, *args, **kwargs):  # silence before the clip instead
        target = self.next_multiple_of_chunk_frames(audio_array.shape[-1], sampling_rate)
        return np.pad(audio_array, (target - audio_array.shape[-1], 0))

    monkeypatch.setattr(AudioEncoder, "pad", pad_left)
    with pytest.raises(AudioNotReachedError, match="right-padded"):
        voxtral.encode(texts, clips)


@needs_voxtral
def test_voxtral_chunks_are_not_prompts(voxtral):
    long_clip = (0.1 * np.random.default_rng(1).standard_normal(31 * 16000)).astype(np.float32)
    assert voxtral.fit_audio(long_clip).shape == long_clip.shape  # not cut to one 30 s window
    enc = voxtral.encode([voxtral.chat_text("Q?")] * 2, [long_clip, _clips()[1]])
    assert enc["input_features"].shape[0] == 3  # 31 s clip -> two 30 s chunks, 1 s clip -> one
    assert (enc["input_ids"] == voxtral.audio_token_id).sum(-1).tolist() == [750, 375]
    requests = [GenerationRequest("long", long_clip, "Describe the audio.", GenerationSettings(max_new_tokens=6)),
                *_requests()[:2]]
    voxtral.batch_size = 3
    batched = voxtral.generate(requests)
    voxtral.batch_size = 1
    assert [g.texts for g in batched] == [g.texts for g in voxtral.generate(requests)]
    voxtral.batch_size = 4


@needs_voxtral
def test_voxtral_is_served_by_its_own_backend_only(voxtral):
    with pytest.raises(TypeError, match="VoxtralBackend"):
        hf_generic.NativeHFBackend(voxtral.model, voxtral.processor)  # its processor takes no audio= at all
    with pytest.raises(ValueError, match="rendered by chat_text"):
        voxtral.encode(["<s>[INST]typed by hand[/INST]"], _clips()[1:2])


def test_k_at_n_returns_n_samples_reproducibly_and_independent_of_batching(backend):
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.0, num_samples=3, seed=7)
    requests = _requests(settings)
    backend.batch_size = 3
    first = backend.generate(requests)
    again = backend.generate(requests)
    backend.batch_size = 1
    alone = backend.generate(requests)
    assert all(len(g.texts) == 3 and g.sample_indices == (0, 1, 2) for g in first)
    assert [g.texts for g in first] == [g.texts for g in again] == [g.texts for g in alone]
    assert any(len(set(g.texts)) > 1 for g in first)  # samples differ from one another
    # one sample requested on its own is the same sample
    sub = backend.generate([GenerationRequest(requests[0].item_id, requests[0].audio, requests[0].prompt, settings,
                                              sample_indices=(2,))])
    assert sub[0].texts == [first[0].texts[2]]
    other_seed = backend.generate([GenerationRequest(r.item_id, r.audio, r.prompt,
                                                     GenerationSettings(**{**settings.to_dict(), "seed": 8}))
                                   for r in requests])
    assert [g.texts for g in other_seed] != [g.texts for g in first]


def test_greedy_k_at_n_repeats_the_greedy_answer(backend):
    greedy = backend.generate(_requests()[:1])[0]
    k_at_n = backend.generate(_requests(GenerationSettings(max_new_tokens=6, num_samples=3))[:1])[0]
    assert k_at_n.texts == greedy.texts * 3


def test_top_k_1_sampling_is_greedy(backend):
    greedy = backend.generate(_requests(GenerationSettings(max_new_tokens=6)))
    sampled = backend.generate(_requests(GenerationSettings(max_new_tokens=6, do_sample=True, top_k=1, num_samples=2)))
    assert [g.texts * 2 for g in greedy] == [g.texts for g in sampled]


@pytest.mark.parametrize("make_prompt", [prompts.baseline_prompt, prompts.idk_prompt], ids=["baseline", "idk"])
def test_paper_prompts_go_through_the_chat_template(backend, make_prompt):
    prompt = make_prompt(QUESTION, CHOICES)
    text = backend.chat_text(prompt)
    assert prompt in text and text.endswith(GENERATION_PROMPT_END.get(backend.family.name,
                                                                      CHATML_GENERATION_PROMPT_END))
    audio_token = backend.processor.audio_token
    assert text.index(audio_token) < text.index(prompt)  # the audio comes before the question
    enc = backend.encode([text], [_clips()[1]])
    decoded = backend.tokenizer.decode(enc["input_ids"][0])
    assert prompt in decoded and decoded.count(audio_token) > 1  # placeholder expanded to the clip's frames
    assert backend.generate([GenerationRequest("p", _clips()[1], prompt, GenerationSettings(max_new_tokens=4))])


def test_lora_targets_are_the_language_models_qkv_only(tiny):
    from reliable_lalm.training.lora_config import DEFAULT_TARGET_MODULES
    from reliable_lalm.training.lora_model import lora_target_names

    family, model, _ = tiny
    targets = language_model_qkv(model)
    audio_qkv = [n for n, _ in model.named_modules() if "audio_tower" in n and n.endswith("q_proj")]
    assert audio_qkv, "the audio encoder has attention projections too (that is the trap)"
    assert targets and not any("audio_tower" in n or "visual" in n for n in targets)
    assert {n.rsplit(".", 1)[-1] for n in targets} == {"q_proj", "k_proj", "v_proj"}
    n_layers = model.config.text_config.num_hidden_layers
    assert len(targets) == 3 * n_layers
    regex = language_model_qkv_regex(family)
    assert [n for n in targets if re.fullmatch(regex, n)] == targets
    assert sorted(lora_target_names(model, regex)) == sorted(targets)
    assert sorted(lora_target_names(model, DEFAULT_TARGET_MODULES)) == sorted(targets)  # the training default too


def test_registry_serves_every_native_family():
    from reliable_lalm.models.registry import BUILTIN_MODELS, backends_by_model_type, registered_models

    for family in FAMILIES.values():
        for model_type in family.model_types:
            assert backends_by_model_type()[model_type] == family.backend
    assert FAMILIES["voxtral"].backend == "reliable_lalm.models.voxtral:VoxtralBackend"
    # a named checkpoint repeats nothing of its family's row: its backend and extras come from it
    assert all(e.backend == FAMILIES[e.family].backend and e.extra_requirements == FAMILIES[e.family].extra_requirements
               for e in BUILTIN_MODELS.values() if e.family in FAMILIES)
    assert BUILTIN_MODELS["voxtral-mini-3b"].extra_requirements == ("mistral_common",)

    entries = {e.family: e for e in BUILTIN_MODELS.values() if e.family in NATIVE}
    assert set(entries) == set(NATIVE)
    assert entries["audioflamingo3"].source == "nvidia/audio-flamingo-3-hf"
    # the demo's shipped tiny random Audio Flamingo 3 comes through an entry point, served the same way
    assert registered_models()["audio-flamingo-3-tiny-random"].backend_class() is hf_generic.NativeHFBackend
    assert entries["qwen2_5_omni_thinker"].resolve_source().startswith("Qwen/Qwen2.5-Omni-")
    assert {e.resolve_source() for e in BUILTIN_MODELS.values() if e.family == "voxtral"} == {
        "mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"}
    # every backend class is the native one or a subclass of it (imports without the optional extras)
    assert all(issubclass(e.backend_class(), hf_generic.NativeHFBackend) for e in entries.values())
    assert all(e.backend_class() is backend_class(e.family) for e in entries.values())


def test_a_checkpoint_folder_loads_through_the_registry(tiny, tmp_path):
    from reliable_lalm.models.registry import resolve_model

    family, model, processor = tiny
    folder = save_tiny(model, processor, tmp_path / family)
    entry = resolve_model(folder)
    assert entry.backend_class() is backend_class(family)
    loaded = entry.load(device="cpu", dtype="float32")
    import transformers

    assert loaded.family.name == family
    assert isinstance(loaded.processor, getattr(transformers, FAMILIES[family].processor_class))
    assert loaded.processor.chat_template == processor.chat_template
    fresh = backend_class(family)(model, processor)
    requests = _requests()
    assert [g.texts for g in loaded.generate(requests)] == [g.texts for g in fresh.generate(requests)]
    fresh.close()
    loaded.close()


def test_rlalm_infer_serves_a_native_folder_by_its_model_type(tiny, tmp_path, capsys):
    """``rlalm infer --model <folder>`` goes through the registry: a native checkpoint folder is
    served by its own backend (it used to be handed to the Qwen2-Audio engine, which crashed)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from inference_fixtures import make_items, write_benchmark_json

    from reliable_lalm.cli import main
    from reliable_lalm.core.results import ResultStore

    family, model, processor = tiny
    folder = save_tiny(model, processor, tmp_path / family)
    bench = write_benchmark_json(tmp_path / "bench.json", make_items(tmp_path / "audio", 2, max_seconds=1.5))
    rc = main(["infer", "--model", str(folder), "--benchmark", str(bench), "--method", "idk", "--out",
               str(tmp_path / "out"), "--device", "cpu", "--max-new-tokens", "3", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    records = ResultStore(tmp_path / "out").records()
    assert len(records) == 2 and all(r["error"] is None for r in records), records


def test_rlalm_models_lists_and_checks(capsys):
    from reliable_lalm.cli import main
    from reliable_lalm.models.registry import registered_models

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for name in registered_models():
        assert name in listing
    assert "NativeHFBackend" in listing and "Qwen2-Audio-Instruct" in listing

    # Without an optional extra its family is reported as not verified, and the check fails (by design).
    unverified = {f for f in tiny_specs() if _missing(f)}
    assert main(["models", "--check"]) == (1 if unverified else 0)
    lines = capsys.readouterr().out.strip().splitlines()
    native_backends = {f.backend for f in FAMILIES.values() if f.tiny}
    native = [e for e in registered_models().values() if e.backend in native_backends]
    checked = [line for line in lines if "[" in line.split(":")[0]]
    assert len(checked) == len(native) >= 6
    for line in checked:
        family = line.split("[", 1)[1].split("]", 1)[0]
        expected = ": skipped (needs " if family in unverified else ": ok ("
        assert expected in line, lines


def test_rlalm_models_check_fails_when_a_family_fails(capsys, monkeypatch):
    from reliable_lalm.cli import main
    def broken(seed=0):
        raise RuntimeError("simulated build failure")

    monkeypatch.setitem(FAMILIES, "qwen3_omni_moe_thinker", replace(FAMILIES["qwen3_omni_moe_thinker"], tiny=broken))
    monkeypatch.setitem(FAMILIES, "audioflamingo3", replace(FAMILIES["audioflamingo3"],
                                                            extra_requirements=("a_package_that_is_not_installed",)))
    assert main(["models", "--check"]) == 1
    out = capsys.readouterr().out
    assert "simulated build failure" in out
    assert "skipped (needs a_package_that_is_not_installed" in out


def test_the_context_check_knows_each_familys_positions_and_prompt_length(backend):
    """Every family reports its context (the text model's positions) and a prompt's length as its
    processor lays it out, so an item over the context is refused before batching."""
    from reliable_lalm.models.base import context_problem

    assert backend.max_positions and backend.max_positions > 0
    request = _requests()[0]
    n = backend.prompt_tokens(request)
    assert n > request.audio.size // 16000  # the audio tokens are counted
    assert context_problem(backend, request) is None
    backend.max_positions = n + request.settings.max_new_tokens - 1
    problem = context_problem(backend, request)
    assert problem and f"{n} prompt tokens" in problem and f"its {backend.max_positions} positions" in problem
