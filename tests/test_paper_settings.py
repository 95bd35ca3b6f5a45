"""The paper profile's settings (issue 17 items 3-8): LoRA evaluation keeps the update, the LLM
normalizes every output (and a fallback to the rules is said), K@N judged by the evaluation's
normalizer, MCoT's examples before the audio, LoRA targets explicit, RGI conventions explained."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inference_fixtures import items_dir, make_items, tiny_demo_dir, tiny_model  # noqa: F401
from reliable_lalm import paths
from reliable_lalm.core import metrics, prompts
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.items import load_audio
from reliable_lalm.models.base import GenerationRequest, GenerationSettings

DEMO = paths.DEMO_MODEL_DIR
ADAPTER = paths.ASSETS_DIR / "demo_adapters" / "sound-a32"
needs_demo = pytest.mark.skipif(not (DEMO / "config.json").exists() or not ADAPTER.is_dir(),
                                reason="shipped demo model or adapters not built")
EXAMPLES = [prompts.FewShotExample("Which animal barks?", ("Dog", "Cat"), "A bark is a dog's call.", "Dog")]


# ---------------------------------------------------------------- item 3: LoRA evaluation

@needs_demo
def test_adapter_merged_in_fp32_and_unmerged_give_the_same_greedy_outputs(items_dir):
    import torch
    from peft import PeftModel

    from reliable_lalm.models.hf_loading import load_model_and_processor
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    items = make_items(items_dir / "lora", 8)
    reqs = [GenerationRequest(it.id, load_audio(it.audio_path), build_prompt("baseline", it.question, it.choices),
                              GenerationSettings(max_new_tokens=12)) for it in items]
    merged, processor = load_model_and_processor(DEMO, device="cpu", adapter=ADAPTER)  # fp32: merged by default
    unmerged, _ = load_model_and_processor(DEMO, device="cpu", adapter=ADAPTER, merge_adapter=False)
    plain, _ = load_model_and_processor(DEMO, device="cpu")
    assert not isinstance(merged, PeftModel) and isinstance(unmerged, PeftModel)
    assert merged.dtype == torch.float32
    outs = {}
    for name, model in (("merged", merged), ("unmerged", unmerged), ("base", plain)):
        backend = Qwen2AudioBackend(model, processor, batch_size=4)
        outs[name] = [g.text for g in backend.generate(reqs)]
        backend.close()
    assert outs["merged"] == outs["unmerged"]
    assert outs["merged"] != outs["base"]  # the adapter changes answers: the comparison is not vacuous


@needs_demo
def test_bf16_evaluation_keeps_the_adapter_unmerged_with_fp32_lora_weights():
    import torch
    from peft import PeftModel

    from reliable_lalm.models.hf_loading import load_model_and_processor, merges_exactly_enough

    assert merges_exactly_enough(torch.float32) and not merges_exactly_enough(torch.bfloat16)
    model, _ = load_model_and_processor(DEMO, device="cpu", dtype="bfloat16", adapter=ADAPTER)
    assert isinstance(model, PeftModel)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)


def merge_rounding_loss(base_path: str | Path, adapter_dir: str | Path, *, dtype: str = "bfloat16",
                        device: str = "cpu") -> dict[str, float]:
    """What merging ``adapter_dir`` into the base weights held in ``dtype`` keeps of the LoRA update.

    Per wrapped layer, the exact update is ``scaling * B @ A`` in fp32; the merge (PEFT's
    ``merge_and_unload``, as evaluation used to do) writes ``W + update`` back in ``dtype``.
    Returns ``update_lost`` (L1 norm of (merged - base) - update over L1 norm of the update: the share
    of the update the rounding loses) and ``touched_unchanged`` (share of the weights with a nonzero
    update whose stored value does not change at all), summed over all wrapped layers.
    """
    # local import: torch and PEFT load only for the tests that use the demo model
    import torch
    from peft import PeftModel

    from reliable_lalm.training.lora_config import resolve_dtype
    from reliable_lalm.training.lora_model import load_base

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


@needs_demo
def test_merge_rounding_loss_is_measured_per_dtype():
    fp32 = merge_rounding_loss(DEMO, ADAPTER, dtype="float32")
    bf16 = merge_rounding_loss(DEMO, ADAPTER, dtype="bfloat16")
    assert fp32["layers"] == bf16["layers"] == 6
    assert fp32["update_lost"] < 1e-4 and fp32["touched_unchanged"] == 0.0
    assert bf16["update_lost"] > 100 * fp32["update_lost"]  # bf16 rounds at ~4e-3 of a weight


# ---------------------------------------------------------------- item 4: normalization

def test_normalizer_all_sends_every_output_or_says_it_fell_back(monkeypatch):
    from reliable_lalm.methods import llm_judge as ln

    monkeypatch.delenv(ln.API_KEY_ENV, raising=False)
    monkeypatch.delenv(ln.BASE_URL_ENV, raising=False)
    rules = ln.build_normalizer("all")
    assert ln.fell_back_to_rules("all", rules)
    assert "no OPENAI_API_KEY" in ln.describe_normalizer("all", rules)
    assert not ln.fell_back_to_rules("rule", rules)
    llm = ln.build_normalizer("all", base_url="http://127.0.0.1:9/v1")
    assert isinstance(llm, ln.OpenAINormalizer) and llm.mode == "all"
    assert "every output" in ln.describe_normalizer("all", llm)
    assert ln.build_normalizer("auto", base_url="http://127.0.0.1:9/v1").mode == "fallback"


def test_experiment_warns_loudly_and_the_runner_records_it(monkeypatch, capsys, tmp_path):
    import nbformat

    from reliable_lalm.methods import llm_judge as ln
    from reliable_lalm.experiments import Experiment
    from reliable_lalm.runner.reproduce import notebook_warnings

    monkeypatch.delenv(ln.API_KEY_ENV, raising=False)
    monkeypatch.delenv(ln.BASE_URL_ENV, raising=False)
    exp = Experiment(normalizer="all")
    with pytest.warns(UserWarning, match="RULES"):
        exp.normalizer_object
    err = capsys.readouterr().err
    assert err.startswith("WARNING (rlalm): LLM answer normalization was asked for ('all')")
    assert "rule-based normalizer" in exp.normalizer_caption
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text="noise\n" + err)])])
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    assert notebook_warnings(path) == [err.strip()]


def test_k_at_n_correctness_is_judged_by_the_given_normalizer(tmp_path):
    from reliable_lalm.core.items import BenchmarkItem
    from reliable_lalm.core.normalize_types import Normalized
    from reliable_lalm.core.results import ResultStore
    from reliable_lalm.training.idk_dataset import build_idk_dataset, k_at_n_table

    items = [BenchmarkItem(id=f"i{k}", audio_path=str(tmp_path / "x.wav"), question="Q?", choices=("A", "B"),
                           answer="A", task="sound") for k in range(2)]
    store = ResultStore.open(tmp_path / "k_at_n", {"settings": {"num_samples": 2}}, seed=0)
    store.extend([{"item_id": it.id, "sample_index": j, "model_output": "it is probably the first one",
                   "error": None} for it in items for j in range(2)])

    class Judge:  # an LLM judge reads "the first one" as A; the rules cannot
        calls = 0

        def normalize_many(self, outputs, choices):
            Judge.calls += 1
            return [Normalized("choice", c[0], "llm") for c in choices]

    assert k_at_n_table(store, items, n=2).items[0].n_correct == 0  # rules: invalid
    judged = k_at_n_table(store, items, n=2, normalizer=Judge())
    assert [it.n_correct for it in judged.items] == [2, 2] and Judge.calls == 1  # one batched call
    dataset = build_idk_dataset(items, store, k=2, n=2, normalizer=Judge(), audio_loader=lambda *a, **k: None)
    assert dataset.n_kept == 2 and dataset.n_idk == 0


# ---------------------------------------------------------------- item 5: MCoT order

def test_mcot_prompt_parts_put_the_examples_before_the_audio(tiny_model):
    from reliable_lalm.methods.registry import get_method
    from reliable_lalm.models.chat import chat_text

    _, processor = tiny_model
    parts = get_method("mcot").build_parts("What is it?", ["Dog", "Cat"], EXAMPLES)
    assert parts.before_audio == prompts.render_few_shot(EXAMPLES)
    assert parts.text == prompts.mcot_prompt("What is it?", ["Dog", "Cat"], EXAMPLES)
    text = chat_text(processor, parts.after_audio, parts.before_audio)
    assert text.index("Example 1:") < text.index("Audio 1: <|audio_bos|>") < text.index("What is it?")
    assert get_method("baseline").build_parts("Q?", ["A", "B"]).before_audio == ""


def test_runner_sends_examples_before_the_audio_and_keys_the_order(tiny_model, items_dir, tmp_path):
    from reliable_lalm.methods import execution as runners
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend

    model, processor = tiny_model
    items = make_items(items_dir / "mcot", 4)
    seen = []

    class Recording(Qwen2AudioBackend):
        def generate_iter(self, requests):
            seen.extend(requests)
            yield from super().generate_iter(requests)

    backend = Recording(model, processor, batch_size=2)
    settings = GenerationSettings(max_new_tokens=6)
    runners.run_method(backend, items, "mcot", tmp_path / "s", settings=settings, few_shot=EXAMPLES, progress=False)
    backend.close()
    recorded = list(seen)
    by_id = {it.id: it for it in items}
    assert len(recorded) == len(items)
    for r in recorded:
        parts = prompts.mcot_prompt_parts(by_id[r.item_id].question, by_id[r.item_id].choices, EXAMPLES)
        assert (r.text_before_audio, r.prompt) == (parts.before_audio, parts.after_audio)
    single, batched = Qwen2AudioBackend(model, processor, batch_size=1), Qwen2AudioBackend(model, processor, batch_size=4)
    assert [g.texts for g in single.generate(recorded)] == [g.texts for g in batched.generate(recorded)]
    single.close()
    batched.close()
    key = runners.method_inputs(items[:1], "mcot", EXAMPLES)[items[0].id]["prompt"]
    from reliable_lalm.core.fingerprint import text_digest
    assert key != text_digest(prompts.mcot_prompt(items[0].question, items[0].choices, EXAMPLES))


def test_few_shot_file_of_the_paper_profile_is_ours_and_valid():
    from reliable_lalm.experiments import Experiment

    exp = Experiment(few_shot_file="params/mcot_few_shot.json")
    examples = exp.few_shot()
    assert len(examples) == 4 and any(e.answer == "IDK" for e in examples)
    prompts.render_few_shot(examples)  # every answer is a choice or IDK
    shared = paths.SHARED_DIR / "mmau"
    releases = sorted(shared.glob("mmau-test-mini*.json"))
    if not releases:
        pytest.skip("MMAU test-mini metadata not in ../shared/mmau/")
    questions = {" ".join(r["question"].lower().split()) for f in releases for r in json.loads(f.read_text())}
    assert not {" ".join(e.question.lower().split()) for e in examples} & questions
    with pytest.raises(FileNotFoundError):
        Experiment(few_shot_file="params/no_such_file.json").few_shot()


# ---------------------------------------------------------------- item 7: LoRA targets

def test_lora_targets_choose_which_modules_are_wrapped(tiny_model):
    from reliable_lalm.training.lora_config import LoraSFTConfig
    from reliable_lalm.training.lora_model import lora_target_names

    model, _ = tiny_model
    default = LoraSFTConfig.for_modality("sound")
    paper = LoraSFTConfig.for_modality("sound", lora_targets="paper_names")
    assert default.lora_targets == "language_model_only"
    lm = lora_target_names(model, default.target_modules)
    everywhere = lora_target_names(model, paper.target_modules)
    assert lm and all("language_model" in n for n in lm)
    encoder = [n for n in everywhere if "audio_tower" in n]
    assert encoder and set(everywhere) == set(lm) | set(encoder)
    assert all(n.rsplit(".", 1)[1] in ("q_proj", "k_proj", "v_proj") for n in everywhere)
    # The default trains what it trained before: the adapters' training key is unchanged.
    assert "lora_targets" not in default.training_fingerprint()
    assert paper.training_fingerprint() != default.training_fingerprint()
    with pytest.raises(ValueError):
        LoraSFTConfig(lora_targets="everything")


def test_paper_names_adapter_trains_the_audio_encoder_too(tiny_model):
    import copy

    from reliable_lalm.training.lora_config import LoraSFTConfig
    from reliable_lalm.training.lora_model import add_lora

    model, _ = tiny_model
    wrapped = add_lora(copy.deepcopy(model), LoraSFTConfig.for_modality("sound", lora_targets="paper_names"))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("audio_tower" in n for n in trainable) and any("language_model" in n for n in trainable)
    only_lm = add_lora(copy.deepcopy(model), LoraSFTConfig.for_modality("sound"))
    assert not any("audio_tower" in n for n, p in only_lm.named_parameters() if p.requires_grad)


# ---------------------------------------------------------------- item 8: RGI conventions

@pytest.mark.parametrize("nc,nw", [(88, 112), (120, 80), (50, 50)])
def test_random_rejection_scores_zero_only_in_the_class_convention(nc, nw):
    gains = metrics.random_rejection_gains(nc, nw, rate=0.2)
    assert gains["class"].rgi == pytest.approx(0.0, abs=1e-12)
    assert gains["subset"].rgi == pytest.approx(math.log10(nw / nc))


def test_notebook_02_shows_the_worked_example_computed_by_the_library():
    cells = json.loads((paths.NOTEBOOKS_DIR / "02_idk_prompting.ipynb").read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert any("metrics.random_rejection_gains(" in c for c in code)
    readme = (paths.REPO_ROOT / "README.md").read_text()
    assert "## Which RGI?" in readme and "log10(Nw / Nc)" in readme


# ---------------------------------------------------------------- Table 9's ambiguous cells

def test_table9_alpha_readings_differ_on_music_only():
    from reliable_lalm.training.lora_config import LoraSFTConfig
    from reliable_lalm.training.table9 import ALPHA_READINGS, table9_alpha

    assert set(ALPHA_READINGS) == {"32-32-16", "32-16-16"}
    for reading in ALPHA_READINGS:
        assert [table9_alpha(m, reading) for m in ("sound", "music", "speech")] == \
            [float(a) for a in reading.split("-")]  # the name is the sound-music-speech reading
    assert LoraSFTConfig.for_modality("music").alpha == 32  # the notebooks' default reading
    assert LoraSFTConfig.for_modality("music", alpha_reading="32-16-16").alpha == 16
    assert LoraSFTConfig.for_modality("music", alpha_reading="32-16-16", alpha=4.0).alpha == 4  # explicit wins
    # The reading only picks the alpha: the same alpha is the same training key (shipped adapters stay valid).
    assert LoraSFTConfig.for_modality("sound", alpha_reading="32-16-16").training_fingerprint() == \
        LoraSFTConfig.for_modality("sound").training_fingerprint()
    with pytest.raises(ValueError, match="lora_alpha_reading"):
        LoraSFTConfig.for_modality("music", alpha_reading="16-16-16")


def test_paper_profile_names_both_readings_and_the_profiles_validate_them():
    from reliable_lalm.runner.profiles import load_profile
    from reliable_lalm.runner.schema import Sft, validate

    paper = load_profile("paper").defaults
    assert (paper["lora_alpha_reading"], paper["lora_targets"]) == ("32-16-16", "paper_names")
    assert Sft().lora_alpha_reading == "32-32-16"  # the demo's (shipped adapters)
    assert "lora_alpha_reading" not in load_profile("demo").defaults
    assert validate("04_sft", Sft, {"lora_alpha_reading": "32-16-16"}) == ({"lora_alpha_reading": "32-16-16"}, [])
    assert validate("04_sft", Sft, {"lora_alpha_reading": "32/16/16"})[1]
    assert validate("04_sft", Sft, {"lora_targets": "everything"})[1]
    docs = (paths.REPO_ROOT / "docs" / "paper_settings.md").read_text()
    for name in ("32-32-16", "32-16-16", "paper_names", "language_model_only"):
        assert f"`{name}`" in docs


def test_crossmodal_trains_music_with_the_chosen_reading(tmp_path):
    from reliable_lalm.experiments.crossmodal import CrossModal, CrossModalConfig

    def music_alpha(sft):
        config = CrossModalConfig(base_model="demo", k_at_n_store=str(tmp_path), cache_dir=str(tmp_path), sft=sft)
        return CrossModal.sft_config(type("C", (), {"config": config})(), "music").alpha

    assert music_alpha({}) == 32.0
    assert music_alpha({"alpha_reading": "32-16-16"}) == 16.0
