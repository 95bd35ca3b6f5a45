"""LoRA SFT on a tiny untrained demo model: what trains, the loss, saved adapters, resume, merge,
DeepSpeed ZeRO-2 on CPU (one process, and two under torchrun), the step benchmark."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from model_probes import logits_of

from reliable_lalm.demo.model import create_untrained
from reliable_lalm.methods.registry import build_prompt
from reliable_lalm.core.results import ResultStore
from reliable_lalm.models.registry import adapter_for_model
from reliable_lalm.training.sft_data import SFTExample
from reliable_lalm.training import adapter_check, distributed, lora_config, lora_model, lora_sft, merge, sft_benchmark

REPO = Path(__file__).resolve().parents[1]
DS_CONFIG = REPO / "params" / "deepspeed_zero2.json"
CHOICES = ("dog bark", "siren", "rain")
QUESTIONS = ["Which sound is heard?", "What is heard first?", "Which event is loudest?", "What do you hear?"]


def _audio(seed: int, seconds: float = 1.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    corpus = [build_prompt("baseline", q, CHOICES) + "\nIDK dog bark siren rain" for q in QUESTIONS] * 20
    return create_untrained(tmp_path_factory.mktemp("demo") / "model", corpus)


@pytest.fixture(scope="module")
def examples() -> list[SFTExample]:
    targets = ["dog bark", "IDK", "rain", "IDK"]
    return [SFTExample(audio=_audio(i), prompt=build_prompt("baseline", q, CHOICES), target=t, item_id=f"item{i}")
            for i, (q, t) in enumerate(zip(QUESTIONS, targets))]


def _config(**overrides) -> lora_config.LoraSFTConfig:
    # The demo model needs a far larger step than Table 9's 3e-5 (tuned for the 7B) to move in a few steps.
    base = dict(learning_rate=2e-2, epochs=4, batch_size=2, save_every=2, seed=3)
    return lora_config.LoraSFTConfig.for_modality("sound", **{**base, **overrides})


@pytest.fixture(scope="module")
def reference(demo, examples, tmp_path_factory):
    """One uninterrupted single-process run (8 optimizer steps)."""
    out = tmp_path_factory.mktemp("ref") / "adapter"
    return lora_sft.train_lora_sft(demo, examples, out, _config(), progress=False)


def _lora_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / lora_config.ADAPTER_WEIGHTS))


def test_table9_defaults():
    sound, music, speech = (lora_config.LoraSFTConfig.for_modality(m) for m in ("sound", "music", "speech"))
    assert (sound.alpha, music.alpha, speech.alpha) == (32, 32, 16)
    for c in (sound, music, speech):
        assert (c.rank, c.learning_rate, c.epochs) == (8, 3e-5, 1)
        assert c.target_modules == r".*language_model.*\.(q_proj|k_proj|v_proj)"
    assert lora_config.LoraSFTConfig.for_modality("speech", learning_rate=1e-3, alpha=None).alpha == 16
    with pytest.raises(ValueError):
        lora_config.LoraSFTConfig.for_modality("video")


def test_only_lora_on_the_language_model_trains(demo, examples):
    model, processor = lora_model.load_base(demo, device="cpu", dtype=torch.float32)
    targets = lora_model.lora_target_names(model)
    assert len(targets) == 2 * 3 and all("language_model" in t for t in targets)  # 2 layers x q/k/v
    assert not any("audio_tower" in t for t in targets)  # the encoder has q/k/v_proj too
    peft_model = lora_model.add_lora(model, lora_config.LoraSFTConfig())
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all("language_model" in n for n in trainable)
    assert lora_model.assert_only_lora_trainable(peft_model) == sum(p.numel() for p in trainable.values())
    # The guard fails loudly when anything else would train.
    next(p for n, p in peft_model.named_parameters() if "audio_tower" in n).requires_grad_(True)
    with pytest.raises(AssertionError, match="non-LoRA"):
        lora_model.assert_only_lora_trainable(peft_model)


def test_answer_loss_equals_the_models_own_loss(demo, examples):
    model, processor = lora_model.load_base(demo, device="cpu", dtype=torch.float32)
    peft_model = lora_model.add_lora(model, lora_config.LoraSFTConfig())
    peft_model.eval()
    batch = adapter_for_model(model).collate(processor, examples[:3])
    with torch.no_grad():
        ours = lora_model.answer_loss(peft_model, batch)
        theirs = peft_model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)
    # Labels cover the answer (and <|im_end|>) only, a small part of prompt + audio + answer.
    assert (batch["labels"] != -100).sum() < 0.2 * batch["attention_mask"].sum()


def _hand_written_lr_factor(config, total_steps: int, step: int) -> float:
    """The schedule lora_sft computed by hand before transformers.get_scheduler (kept to compare)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.lr_schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + np.cos(np.pi * progress))


def _per_step_lrs(config, total_steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = lora_sft.lr_scheduler(optimizer, config, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(scheduler.get_last_lr()[0])  # the rate the optimizer step at this index uses
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_without_warmup_equals_the_hand_written_one(schedule):
    config = lora_config.LoraSFTConfig(learning_rate=3e-3, lr_schedule=schedule)
    expected = [3e-3 * _hand_written_lr_factor(config, 17, s) for s in range(17)]
    assert _per_step_lrs(config, 17) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    if schedule != "constant":
        assert _per_step_lrs(config, 17)[-1] < 3e-3 / 10  # decays towards 0


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_warmup_is_transformers_ramp(schedule):
    # transformers ramps step / warmup (0 first); after the warm-up the decay is the old one.
    config = lora_config.LoraSFTConfig(learning_rate=1.0, lr_schedule=schedule, warmup_steps=4)
    lrs = _per_step_lrs(config, 20)
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([_hand_written_lr_factor(config, 20, s) for s in range(4, 20)])
    # Another ramp means other weights: the training key says so, only where a warm-up is set.
    assert config.training_fingerprint()["warmup_ramp"] == "transformers.get_scheduler"
    assert "warmup_ramp" not in lora_config.LoraSFTConfig(lr_schedule=schedule).training_fingerprint()


def test_epoch_batches_shard_and_cover():
    shards = [lora_sft.epoch_batches(7, epoch=0, seed=1, batch_size=2, grad_accum=1, world_size=2, rank=r) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2  # ceil(7 / 4) steps, same count on both ranks
    flat = [i for s in shards for b in s for i in b]
    assert set(flat) == set(range(7)) and len(flat) == 8  # one example repeated to fill the last step
    assert lora_sft.epoch_batches(7, epoch=0, seed=1, batch_size=2, grad_accum=1) != \
        lora_sft.epoch_batches(7, epoch=1, seed=1, batch_size=2, grad_accum=1)


def test_single_process_sft(reference, demo, examples):
    from peft import PeftModel

    losses = reference.losses
    assert reference.steps == len(losses) == 8 and reference.backend == "torch"
    assert np.mean(losses[-2:]) < np.mean(losses[:2]) - 0.4, losses  # fits 4 examples (~0.9 nats in 8 steps)
    report = adapter_check.verify_adapter(reference.adapter_dir)
    assert report.modules == 6 and report.rank == 8 and report.lora_b_abs_mean > 0
    summary = lora_sft.read_summary(reference.adapter_dir)
    assert summary["complete"] and summary["losses"] == losses and summary["config"]["alpha"] == 32
    assert not (reference.adapter_dir / "checkpoints").exists()  # removed after success
    base, processor = lora_model.load_base(demo, device="cpu", dtype=torch.float32)
    base.eval()
    base_logits = logits_of(base, processor, examples)
    tuned = PeftModel.from_pretrained(base, str(reference.adapter_dir)).eval()
    tuned_logits = logits_of(tuned, processor, examples)
    assert (tuned_logits - base_logits).abs().max() > 1e-2


def test_verify_adapter_fails_loudly(reference, tmp_path):
    from safetensors.torch import save_file

    tensors = _lora_tensors(reference.adapter_dir)

    def variant(name, change):
        d = tmp_path / name
        shutil.copytree(reference.adapter_dir, d)
        save_file(change(dict(tensors)), str(d / lora_config.ADAPTER_WEIGHTS))
        return d

    # ZeRO-3 without gathering saves partitioned parameters as empty tensors.
    empty = variant("empty", lambda t: {k: torch.empty(0) for k in t})
    with pytest.raises(adapter_check.AdapterCheckError, match="empty"):
        adapter_check.verify_adapter(empty)
    zero_b = variant("zero_b", lambda t: {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in t.items()})
    with pytest.raises(adapter_check.AdapterCheckError, match="all zeros"):
        adapter_check.verify_adapter(zero_b)
    assert adapter_check.verify_adapter(zero_b, expect_trained=False).lora_b_abs_mean == 0
    dropped = variant("dropped", lambda t: {k: v for k, v in t.items() if "layers.1.self_attn.v_proj" not in k})
    expected = [adapter_check._module_of(k) for k in tensors if "lora_A" in k]
    adapter_check.verify_adapter(reference.adapter_dir, expected_modules=expected)
    with pytest.raises(adapter_check.AdapterCheckError, match="no LoRA weights"):
        adapter_check.verify_adapter(dropped, expected_modules=expected)


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(reference, demo, examples, tmp_path):
    out = tmp_path / "adapter"

    def crash(step, loss):
        if step == 5:
            raise KeyboardInterrupt("simulated crash after step 5")

    with pytest.raises(KeyboardInterrupt):
        lora_sft.train_lora_sft(demo, examples, out, _config(), progress=False, on_step=crash)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-0000002", "step-0000004"]
    assert not (out / lora_config.ADAPTER_WEIGHTS).exists()
    # A checkpoint torn by a crash mid-save is never picked up.
    (out / "checkpoints" / ".tmp-step-0000006").mkdir()
    (out / "checkpoints" / ".tmp-step-0000006" / "optimizer.pt").write_bytes(b"torn")
    resumed = lora_sft.train_lora_sft(demo, examples, out, _config(), progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == 8
    assert np.allclose(resumed.losses, reference.losses, atol=1e-6)
    ref, got = _lora_tensors(reference.adapter_dir), _lora_tensors(out)
    assert ref.keys() == got.keys()
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)
    # Another run's checkpoints are refused rather than silently mixed in.
    with pytest.raises(KeyboardInterrupt):
        lora_sft.train_lora_sft(demo, examples, tmp_path / "other", _config(), progress=False, on_step=crash)
    with pytest.raises(RuntimeError, match="another run"):
        lora_sft.train_lora_sft(demo, examples, tmp_path / "other", _config(learning_rate=1e-3), progress=False)


def test_merge_equals_adapter(reference, demo, examples, tmp_path):
    from transformers import Qwen2AudioForConditionalGeneration

    merged_dir = tmp_path / "merged"
    report = merge.merge_adapter(demo, reference.adapter_dir, merged_dir, check_examples=examples, max_new_tokens=6)
    assert report["mismatched_items"] == [] and len(report["checked_items"]) == 4
    assert report["adapter_outputs"] == report["merged_outputs"]
    assert not (merged_dir / lora_config.ADAPTER_CONFIG).exists()
    adapter_model, processor = merge.load_adapter_model(demo, reference.adapter_dir)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(merged_dir)  # the merged folder is self-contained for serving
    merged = Qwen2AudioForConditionalGeneration.from_pretrained(merged_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits_of(merged, processor, examples), logits_of(adapter_model, processor, examples),
                          atol=1e-4)


def test_merge_detects_a_mismatch(reference, demo, examples, tmp_path, monkeypatch):
    # If merging changed the outputs (e.g. a broken merge), the check must say so.
    calls = []
    real = merge.greedy_token_ids

    def fake(model, processor, exs, **kw):
        calls.append(1)
        out = real(model, processor, exs, **kw)
        return out if len(calls) == 1 else [o + [0] for o in out]

    monkeypatch.setattr(merge, "greedy_token_ids", fake)
    with pytest.raises(merge.MergeMismatch):
        merge.merge_adapter(demo, reference.adapter_dir, tmp_path / "m", check_examples=examples[:1], max_new_tokens=2)


def test_deepspeed_config_resolution():
    ds, config = distributed.resolve_deepspeed_config(DS_CONFIG, _config(batch_size=3, grad_accum=2), bf16=False)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is False
    ds, config = distributed.resolve_deepspeed_config({**ds, "train_micro_batch_size_per_gpu": 5}, _config(), bf16=True)
    assert config.batch_size == 5  # a number in the JSON wins and the data loader follows it
    with pytest.raises(ValueError, match="optimizer"):
        distributed.resolve_deepspeed_config({"optimizer": {"type": "Adam"}}, _config(), bf16=False)


# ------------------------------------------------------------------------------------------------
# DeepSpeed through the command line (subprocesses: a process group must not leak into pytest)


@pytest.fixture(scope="module")
def cli_data(demo, tmp_path_factory):
    """A 4-item MMAU-style benchmark and a hand-made 2-sample K@N store for it."""
    root = tmp_path_factory.mktemp("bench")
    records, store_records = [], []
    # answers: dog bark, siren, rain, dog bark -> correct samples 2, 0, 2, 1 -> IDK at 2@2 for s1 and s3
    outputs = [["dog bark", "dog bark"], ["rain", "IDK"], ["rain", "The answer is rain."], ["rain", "dog bark"]]
    for i, q in enumerate(QUESTIONS):
        sf.write(str(root / f"a{i}.wav"), _audio(i), 16000)
        answer = CHOICES[i % 3]
        records.append({"id": f"s{i}", "audio_id": f"./a{i}.wav", "question": q, "choices": list(CHOICES),
                        "answer": answer, "task": "sound"})
        for j, out in enumerate(outputs[i]):
            store_records.append({"item_id": f"s{i}", "sample_index": j, "model_output": out, "error": None})
    (root / "bench.json").write_text(json.dumps(records))
    store = ResultStore.open(root / "k_at_n", {"kind": "knn", "settings": {"num_samples": 2, "temperature": 1.0}})
    store.extend(store_records)
    return root


def _sft_args(demo, data: Path, out: Path, *extra: str) -> list[str]:
    return ["sft", "--model", str(demo), "--benchmark", str(data / "bench.json"), "--modality", "sound",
            "--samples-store", str(data / "k_at_n"), "--k", "2", "--out", str(out), "--lr", "2e-2", "--epochs", "2",
            "--batch-size", "1", "--no-progress", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _check_adapter_changes_outputs(demo, adapter_dir: Path, examples) -> None:
    from peft import PeftModel

    adapter_check.verify_adapter(adapter_dir)
    base, processor = lora_model.load_base(demo, device="cpu", dtype=torch.float32)
    base.eval()
    before = logits_of(base, processor, examples[:2])
    after = logits_of(PeftModel.from_pretrained(base, str(adapter_dir)).eval(), processor, examples[:2])
    assert (after - before).abs().max() > 1e-3


def test_deepspeed_zero2_single_process_matches_the_plain_loop(demo, cli_data, examples, tmp_path):
    from reliable_lalm.core.items import load_benchmark
    from reliable_lalm.training.idk_dataset import build_idk_dataset

    out = tmp_path / "ds1"
    cmd = [sys.executable, "-m", "reliable_lalm.cli.train", *_sft_args(demo, cli_data, out, "--deepspeed", str(DS_CONFIG))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = lora_sft.read_summary(out)
    assert summary["backend"] == "deepspeed" and summary["world_size"] == 1 and summary["steps"] == 8
    assert summary["data"]["idk_dataset"]["idk"] == 2  # items s1, s3 have < 2 correct samples
    _check_adapter_changes_outputs(demo, out, examples)
    # Same data order, loss and optimizer: DeepSpeed ZeRO-2 on one process = the plain loop.
    items = load_benchmark(cli_data / "bench.json").items
    plain = lora_sft.train_lora_sft(demo, build_idk_dataset(items, ResultStore(cli_data / "k_at_n"), 2).examples, tmp_path / "plain",
                             lora_config.LoraSFTConfig.for_modality("sound", learning_rate=2e-2, epochs=2, batch_size=1),
                             progress=False)
    assert np.allclose(plain.losses, summary["losses"], atol=1e-4)


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_torchrun(demo, cli_data, examples, tmp_path):
    out = tmp_path / "ds2"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "reliable_lalm.cli.train",
           *_sft_args(demo, cli_data, out, "--deepspeed", str(DS_CONFIG))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = lora_sft.read_summary(out)
    assert summary["backend"] == "deepspeed" and summary["world_size"] == 2
    assert summary["steps"] == 4  # 4 examples, 1 per process per step, 2 epochs
    _check_adapter_changes_outputs(demo, out, examples)


def test_benchmark_sft_step_on_cpu(demo):
    result = sft_benchmark.benchmark_sft_step(lora_config.LoraSFTConfig(), model_config=demo, batch=2, seq_len=96, audio_seconds=2.0,
                                  steps=2, warmup=1, device="cpu")
    # 2 s of the 4 s window: 200 mel frames -> 100 -> 50 audio tokens. LoRA r=8 on q (128->128),
    # k and v (128->64) in 2 layers: 2 * (3 * 8 * 128 + 8 * (128 + 64 + 64)) = 10240.
    assert result["audio_tokens"] == 50 and result["trainable_parameters"] == 10240
    assert result["ms_per_step_median"] > 0 and np.isfinite(result["final_loss"])
    assert result["flops_per_step"] > 0 and result["flop_floor_ms"] is None  # no peak for a CPU
    hf = sft_benchmark.benchmark_sft_step(lora_config.LoraSFTConfig(gradient_checkpointing=True), model_config=demo, batch=2, seq_len=96,
                              audio_seconds=2.0, steps=1, warmup=1, device="cpu", loss_impl="hf")
    assert hf["gradient_checkpointing"] and hf["flops_per_step"] > result["flops_per_step"]


ZERO3_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from reliable_lalm.training import adapter_check, distributed, lora_config, lora_model, lora_sft, merge, sft_benchmark
from reliable_lalm.training.sft_data import SFTExample
from reliable_lalm.methods.registry import build_prompt
demo, out, gather = sys.argv[1], sys.argv[2], sys.argv[3] == "gather"
rng = np.random.default_rng(0)
ex = [SFTExample((0.1 * rng.standard_normal(16000)).astype(np.float32),
                 build_prompt("baseline", f"Which sound {i}?", ["dog bark", "siren", "rain"]), t, f"i{i}")
      for i, t in enumerate(["dog bark", "IDK", "rain", "IDK"])]
ds = distributed.load_deepspeed_config(sys.argv[4])
# Persistence threshold 0: every parameter, LoRA included, is partitioned (the default 1e5 keeps small ones whole).
ds["zero_optimization"] = {"stage": 3, "stage3_param_persistence_threshold": 0}
if not gather:
    from reliable_lalm.training import loop
    loop.DeepSpeedOptimization.gathered_state_dict = lambda self: None  # what a naive save_pretrained on rank 0 does
lora_sft.train_lora_sft(demo, ex, out, lora_config.LoraSFTConfig(learning_rate=2e-2, batch_size=2), deepspeed_config=ds, progress=False)
"""


@pytest.mark.slow
def test_zero3_adapter_is_gathered_and_an_empty_one_is_caught(demo, tmp_path):
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    runs = {}
    for mode in ("gather", "naive"):
        runs[mode] = subprocess.run([sys.executable, str(script), str(demo), str(tmp_path / mode), mode, str(DS_CONFIG)],
                                    capture_output=True, text=True, env=_env(), timeout=900)
    assert runs["gather"].returncode == 0, runs["gather"].stderr[-3000:]
    assert adapter_check.verify_adapter(tmp_path / "gather").modules == 6
    # Without gathering, rank 0 saves the partitioned (empty) tensors; the check must fail the run.
    assert runs["naive"].returncode != 0 and "AdapterCheckError" in runs["naive"].stderr
    assert "empty" in runs["naive"].stderr


def test_benchmark_sft_step_with_the_7b_layout_scaled_down():
    from reliable_lalm.models import hf_loading as modeling

    # The 7B's 30 s window (3000 mel frames) and token ids, tiny widths: 10 s of audio -> 250 audio tokens.
    config = modeling._config_from(modeling.scaled_down_7b_spec())
    result = sft_benchmark.benchmark_sft_step(lora_config.LoraSFTConfig(), model_config=config, batch=2, seq_len=330, steps=1, warmup=1,
                                  device="cpu")
    assert result["audio_window_frames"] == 3000 and result["audio_tokens"] == 250
    assert np.isfinite(result["final_loss"]) and result["ms_per_step_median"] > 0
    # The FLOP model of the real 7B (batch 8, 330 tokens): ~8.8e13 per step, ~1.2e14 with recomputation.
    full = modeling.random_weights_7b_config()
    flops = sft_benchmark.sft_step_flops(full, batch=8, seq_len=330, audio_frames=3000, gradient_checkpointing=False, answer_tokens=4)
    assert 8.0e13 < flops < 9.5e13
    assert sft_benchmark.sft_step_flops(full, batch=8, seq_len=330, audio_frames=3000, gradient_checkpointing=True,
                            answer_tokens=4) > 1.3 * flops
