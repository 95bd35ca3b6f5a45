"""Cross-modal protocol: paired scoring against the base model, paper-shaped views, caching, and
one end-to-end run on a tiny untrained demo model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reliable_lalm import reporting
from reliable_lalm.experiments import crossmodal as C
from reliable_lalm.core.items import BenchmarkItem
from reliable_lalm.core.results import ResultStore

CHOICES = ("dog bark", "siren", "rain")
TASKS = ("sound", "music", "speech")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


def _items(tmp_path, per_task=6):
    return [BenchmarkItem(id=f"{t}{i}", audio_path=str(tmp_path / f"{t}{i}.wav"), question=f"What is heard ({t} {i})?",
                          choices=CHOICES, answer="dog bark", task=t) for t in TASKS for i in range(per_task)]


def _fake_adapter(directory, seed):
    """A structurally valid LoRA adapter (the scoring tests need no model)."""
    directory.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj"):
            prefix = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(8, 16, generator=g)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(16, 8, generator=g)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    return directory


def _write_eval_store(directory, outputs: dict[str, str], items):
    """A finished evaluation store, its records keyed by the items' content like a real run's."""
    from reliable_lalm.methods.registry import get_method
    from reliable_lalm.methods.generation import input_fingerprint

    prompt = get_method("baseline")
    inputs = {it.id: input_fingerprint(it, lambda x: prompt.build_prompt(x.question, x.choices)) for it in items}
    store = ResultStore.open(directory, {"test": str(directory)})
    store.extend([{"item_id": i, "sample_index": 0, "model_output": o, "error": None, "input": inputs[i]}
                  for i, o in outputs.items()])


BASELINE = {f"{t}{i}": ("dog bark" if i < 3 else "siren") for t in TASKS for i in range(6)}
# Speech-trained adapter: on sound 1 of 3 correct answers and 2 of 3 wrong ones turn into IDK (RGI > 0),
# on music 2 correct and 1 wrong (RGI < 0), on speech nothing changes (ΔCon = ΔHum = 0: undefined).
SPEECH_ADAPTER = {**BASELINE,
                  "sound1": "IDK", "sound3": "IDK", "sound4": "I don't know",
                  "music0": "IDK", "music1": "IDK", "music3": "IDK"}


@pytest.fixture()
def handmade(tmp_path):
    items = _items(tmp_path)
    ResultStore.open(tmp_path / "k_at_n", {"kind": "knn"})  # identity only: adapters are given
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")  # the base model is identified by its files
    config = C.CrossModalConfig(base_model=str(tmp_path / "base"), k_at_n_store=str(tmp_path / "k_at_n"),
                                cache_dir=str(tmp_path / "cache"), n_boot=200, progress=False)
    adapters = {("speech", 16.0): str(_fake_adapter(tmp_path / "ad16", 0)),
                ("speech", 64.0): str(_fake_adapter(tmp_path / "ad64", 1))}
    cm = C.CrossModal(config, items, adapters=adapters)
    _write_eval_store(cm.eval_store_dir(None), BASELINE, items)
    _write_eval_store(cm.eval_store_dir(tmp_path / "ad16"), SPEECH_ADAPTER, items)
    # alpha 64: everything refused on sound and music (over-conservative: ΔCon = ΔHum, RGI = 0).
    _write_eval_store(cm.eval_store_dir(tmp_path / "ad64"),
                      {**BASELINE, **{f"{t}{i}": "IDK" for t in ("sound", "music") for i in range(6)}}, items)
    return cm


def test_crossmodal_rows_against_the_base_model(handmade):
    frame = handmade.results(train_tasks=("speech",))
    rows = {r["test"]: r for r in frame.to_dict("records")}
    assert set(rows) == set(TASKS)
    sound, music, speech = rows["sound"], rows["music"], rows["speech"]
    # Subset convention (the paper's printed values): ΔCon = (Nc - Ncc) / N, ΔHum = (Nw - Nww) / N.
    assert (sound["ncc"], sound["ncr"], sound["nww"], sound["nwr"]) == (2, 1, 1, 2)
    assert sound["d_con"] == pytest.approx(1 / 6) and sound["d_hum"] == pytest.approx(2 / 6)
    assert sound["rgi"] == pytest.approx(math.log10(2))
    assert sound["rej"] == pytest.approx(3 / 6) and sound["acc"] == pytest.approx(2 / 6)
    assert sound["rel"] == pytest.approx(0.5 * (2 / 6) + 0.5 * (1 - 1 / 6))
    # A negative RGI is a result, reported as such.
    assert music["rgi"] == pytest.approx(math.log10(0.5)) and music["rgi"] < 0
    assert speech["rgi"] is None or np.isnan(speech["rgi"])
    assert "0" in str(speech["rgi_reason"]) and speech["in_domain"] and not sound["in_domain"]
    assert sound["rgi_class"] == pytest.approx(math.log10((2 / 3) / (1 / 3)))
    assert sound["rgi_low"] is not None and sound["rgi_low"] <= sound["rgi"] <= sound["rgi_high"]
    assert sound["baseline_acc"] == pytest.approx(0.5) and sound["alpha"] == 16

    # The notebooks' layouts of these cells (reliable_lalm.reporting.artifacts), paper labels.
    fig3 = reporting.figure3(frame)
    heat = fig3.data
    assert list(heat.index) == ["Speech"] and list(heat.columns) == ["Sound", "Music", "Speech"]
    assert heat.loc["Speech", "Sound"] == pytest.approx(math.log10(2)) and np.isnan(heat.loc["Speech", "Speech"])
    t10, t11, t12 = reporting.table10(frame), reporting.table11(frame), reporting.table12(frame)
    assert t10.loc["Speech", ("Sound", "Acc%")] == pytest.approx(100 * 2 / 6)
    assert np.isnan(t10.loc["Speech", ("Speech", "Acc%")])  # train = test prints "-", as in Tables 10-11
    assert "| Speech | 33.33 |" in reporting.to_markdown(t10) and reporting.to_markdown(t10).endswith("| - | - | - |\n")
    assert t11.loc["Speech", ("Music", "RGI")] == pytest.approx(math.log10(0.5))
    assert t12.loc["Speech", ("Rejection Rate (%)", "Sound")] == pytest.approx(50.0)
    assert ("Rejection Rate (%)", "IDK Dataset") in t12.columns
    import matplotlib.pyplot as plt

    plt.close(fig3.figure)


def test_each_score_writes_the_judge_log(handmade, tmp_path):
    handmade.sample_log_dir = tmp_path / "samples"
    handmade.results(train_tasks=("speech",))
    logs = sorted((tmp_path / "samples").glob("*.jsonl"))
    assert logs and all(log.name.endswith("-vs-baseline.jsonl") for log in logs)
    rows = [json.loads(line) for log in logs for line in log.read_text(encoding="utf-8").splitlines()]
    refused = [r for r in rows if r["side"] == "pred" and r["output"] == "I don't know"]
    assert refused and all(r["decision"] == "IDK" and r["method"] == "refusal" for r in refused)


def test_alpha_sweep_rows_and_pooled(handmade):
    frame = handmade.alpha_sweep(alphas=(16, 64))
    fig4 = reporting.figure4(frame)
    assert list(fig4.data.index.names) == ["alpha", "modality"] and len(fig4.figure.axes) == 3
    assert fig4.data.loc[(64.0, "sound"), "rej"] == pytest.approx(100.0)
    import matplotlib.pyplot as plt

    plt.close(fig4.figure)
    assert len(frame) == 2 * 3 and set(frame["test"]) == {"sound", "music", "sound+music"}
    pooled = frame[(frame["alpha"] == 16) & (frame["test"] == "sound+music")].iloc[0]
    # Pooled: Nc = 6, Ncc = 3, Nw = 6, Nww = 3 -> ΔCon = ΔHum = 3/12, RGI = 0.
    assert pooled["n"] == 12 and pooled["rgi"] == pytest.approx(0.0)
    over = frame[(frame["alpha"] == 64) & (frame["test"] == "sound")].iloc[0]
    assert over["rej"] == 1.0 and over["rgi"] == pytest.approx(0.0) and over["acc"] == 0.0


def test_cache_keys_follow_the_parameters(handmade, tmp_path):
    cm = handmade
    key = cm.adapter_key("speech")
    assert key == cm.adapter_key("speech")  # stable
    assert key != cm.adapter_key("speech", alpha=8) and key != cm.adapter_key("sound")
    other = C.CrossModal(C.CrossModalConfig(**{**cm.config.__dict__, "k": 3}), cm.eval_items)
    assert other.adapter_key("speech") != key
    lr = C.CrossModal(C.CrossModalConfig(**{**cm.config.__dict__, "sft": {"learning_rate": 1e-3}}), cm.eval_items)
    assert lr.adapter_key("speech") != key
    # New samples in the K@N store change every adapter key.
    ResultStore(tmp_path / "k_at_n").append({"item_id": "sound0", "sample_index": 0, "model_output": "rain"})
    assert cm.adapter_key("speech") != key
    assert cm.adapter_dir("speech").name.startswith("speech-a16-")


def test_end_to_end_on_the_demo_model(tmp_path, monkeypatch):
    from reliable_lalm.training import lora_sft as training
    from reliable_lalm.core.items import load_benchmark
    from reliable_lalm.demo.model import create_untrained
    from reliable_lalm.models.base import GenerationSettings
    from reliable_lalm.models.qwen2_audio import Qwen2AudioBackend
    from reliable_lalm.methods.execution import sample_k_at_n
    from reliable_lalm.methods.registry import build_prompt
    from reliable_lalm.demo.synthetic import build_benchmark

    bench = load_benchmark(build_benchmark(tmp_path / "bench", seed=3, n_per_task=2, progress=False))
    corpus = [build_prompt("baseline", it.question, it.choices) + " IDK" for it in bench.items] * 10
    model = create_untrained(tmp_path / "model", corpus)
    backend = Qwen2AudioBackend.from_pretrained(model, device="cpu", dtype="float32")
    sample_k_at_n(backend, bench.items, tmp_path / "k_at_n", n_samples=2, progress=False,
               settings=GenerationSettings(max_new_tokens=4, do_sample=True, seed=0))
    backend.close()
    config = C.CrossModalConfig(base_model=str(model), k_at_n_store=str(tmp_path / "k_at_n"), cache_dir=str(tmp_path / "c"),
                                k=1, eval_max_new_tokens=4, n_boot=20, progress=False, device="cpu",
                                sft={"learning_rate": 2e-2, "batch_size": 2, "epochs": 1})
    cm = C.CrossModal(config, bench.items)
    frame = cm.results(train_tasks=("speech",))
    assert len(frame) == 3 and frame["n"].tolist() == [2, 2, 2]
    adapter = cm.adapter_dir("speech")
    summary = training.read_summary(adapter)
    assert summary["complete"] and summary["config"]["alpha"] == 16 and summary["data"]["train_task"] == "speech"
    # The untrained model answers nothing correctly, so every item is an IDK target at 1@2.
    assert summary["data"]["idk_dataset"]["idk_fraction"] == 1.0

    def forbidden(*a, **k):
        raise AssertionError("cached results must be reused")

    monkeypatch.setattr(C, "train_lora_sft", forbidden)
    monkeypatch.setattr(C, "run_method", forbidden)
    again = C.CrossModal(config, bench.items).results(train_tasks=("speech",))
    assert again.drop(columns=[c for c in again.columns if c.endswith(("_low", "_high"))]).equals(
        frame.drop(columns=[c for c in frame.columns if c.endswith(("_low", "_high"))]))


def test_k_at_n_store_must_come_from_the_model_being_tuned(tmp_path):
    from reliable_lalm.core.fingerprint import model_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"x")
    (model / "config.json").write_text("{}")
    ours = ResultStore.open(tmp_path / "ours", {"model": {"weights": model_fingerprint(model)}})
    C.check_k_at_n_store_matches(ours, str(model))
    copy = tmp_path / "copy"  # the same weights elsewhere: content, not path, identifies the model
    copy.mkdir()
    (copy / "model.safetensors").write_bytes(b"x")
    (copy / "config.json").write_text("{}")
    C.check_k_at_n_store_matches(ours, str(copy))
    other = ResultStore.open(tmp_path / "other", {"model": {"weights": "0123456789abcdef"}})
    with pytest.raises(C.ForeignKAtNStore, match="sampled from"):
        C.check_k_at_n_store_matches(other, str(model))
    weights.write_bytes(b"retrained")  # same path, new weights after the samples were drawn
    with pytest.raises(C.ForeignKAtNStore, match="sampled from"):
        C.check_k_at_n_store_matches(ours, str(model))