"""The demo model's training recipe (``rlalm demo train``): which examples teach IDK (those the model
itself gets wrong), determinism, resumption, and the retrain check against a model card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reliable_lalm.demo import synthetic
from reliable_lalm.demo.card import RETRAIN_TOLERANCE_POINTS, _by_difficulty, compare_to_card
from reliable_lalm.demo.train import IDK_TARGET, DemoTrainConfig, make_example, train_demo


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(5)
    return [synthetic.generate_item(rng, task) for _ in range(40) for task in ("sound", "music", "speech")]


@pytest.mark.parametrize("fmt", ["idk", "mcot"])
def test_idk_targets_follow_what_the_model_knows_only(pool, fmt):
    """Under the IDK and MCoT prompts the target is a refusal exactly when the model got the item
    wrong, whatever its difficulty; the audio is always the item's own."""
    cfg = DemoTrainConfig()
    rng = np.random.default_rng(0)
    for audio, record in pool:
        for knows in (True, False):
            example = make_example(fmt, audio, record, rng, cfg, [], knows=knows)
            assert example.audio is audio
            assert (IDK_TARGET in example.target) == (not knows), (record["difficulty"], knows, example.target)
            if knows:
                assert record["answer"] in example.target


class _FakeModel:
    """Scores, at each row's last real position, the first token of a chosen option highest."""

    def __init__(self, tokenizer, pick):
        self.tokenizer, self.pick = tokenizer, pick

    def __call__(self, input_ids, attention_mask, **kwargs):
        import torch

        logits = torch.zeros(*input_ids.shape, len(self.tokenizer))
        last = attention_mask.sum(dim=1) - 1
        for row, option in enumerate(self.pick):
            token = self.tokenizer(option, add_special_tokens=False)["input_ids"][0]
            logits[row, int(last[row]), token] = 5.0
        return type("Out", (), {"logits": logits})()


def test_model_knows_reads_the_models_own_answer(pool, one_torch_thread):
    from transformers import AutoProcessor

    from reliable_lalm import paths
    from reliable_lalm.demo.train import model_knows

    if not (paths.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip("no shipped demo checkpoint")
    processor = AutoProcessor.from_pretrained(paths.DEMO_MODEL_DIR)
    # Items of different lengths, so that right padding puts the last real token at different places.
    items = [pool[0], pool[1], pool[5], pool[7]]
    right = [r["answer"] for _, r in items]
    wrong = [next(c for c in r["choices"] if c != r["answer"]) for _, r in items]
    assert model_knows(_FakeModel(processor.tokenizer, right), processor, items) == [True] * 4
    assert model_knows(_FakeModel(processor.tokenizer, wrong), processor, items) == [False] * 4
    mixed = [right[0], wrong[1], right[2], wrong[3]]
    assert model_knows(_FakeModel(processor.tokenizer, mixed), processor, items) == [True, False, True, False]
    assert model_knows(_FakeModel(processor.tokenizer, []), processor, []) == []


def test_baseline_and_agent_formats_never_refuse(pool):
    cfg = DemoTrainConfig()
    rng = np.random.default_rng(1)
    for audio, record in pool:
        for fmt in ("baseline", "agent_type", "agent_content", "agent_answer"):
            example = make_example(fmt, audio, record, rng, cfg, [])
            assert IDK_TARGET not in example.target and example.audio is audio


def test_training_is_deterministic(tmp_path, one_torch_thread):
    import torch

    cfg = DemoTrainConfig(steps=2, batch_size=4, pool_per_task=2, warmup_steps=1, checkpoint_every=1, log_every=1,
                          threads=1, audio_pretrain_steps=2)
    a = train_demo(tmp_path / "a", cfg, progress=False)
    b = train_demo(tmp_path / "b", cfg, progress=False)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    init = load_file(tmp_path / "a-work" / "init" / "model.safetensors")
    assert any(not torch.equal(init[k], wa[k]) for k in wa)  # it trained
    training = json.loads((a / "training.json").read_text())
    assert training["config"] == cfg.to_json() and len(training["log"]) == 2


def _card(acc, rej=0.1):
    row = {"acc": acc, "idk_prompt_acc": acc, "idk_prompt_rej": rej}
    return {**row, "by_task": {t: dict(row) for t in ("sound", "music", "speech")}}


def test_compare_to_card_flags_what_is_outside_the_tolerance():
    lines, problems = compare_to_card(_card(0.50), _card(0.50))
    assert len(lines) == 12 and problems == []
    step = RETRAIN_TOLERANCE_POINTS / 100
    lines, problems = compare_to_card(_card(0.50 + 0.9 * step), _card(0.50))
    assert problems == []
    measured = _card(0.50)
    measured["by_task"]["music"]["acc"] = 0.50 - 1.1 * step
    lines, problems = compare_to_card(measured, _card(0.50))
    assert len(problems) == 1 and problems[0].startswith("music") and " acc " in problems[0]


def test_by_difficulty_counts_accuracy_and_rejections():
    class Item:
        def __init__(self, i, d):
            self.id, self.difficulty = i, d

    items = [Item("a", "easy"), Item("b", "hard"), Item("c", "hard")]
    base = [{"id": "a", "outcome": "correct"}, {"id": "b", "outcome": "wrong"}, {"id": "c", "outcome": "correct"}]
    idk = [{"id": "a", "outcome": "correct"}, {"id": "b", "outcome": "rejected"}, {"id": "c", "outcome": "wrong"}]
    out = _by_difficulty(items, base, idk)
    assert list(out) == ["easy", "hard"]
    assert out["easy"] == {"n": 1, "acc": 1.0, "idk_prompt_rej": 0.0}
    assert out["hard"] == {"n": 2, "acc": 0.5, "idk_prompt_rej": 0.5}


def test_micro_batches_give_the_gradient_of_the_whole_batch(pool, one_torch_thread):
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from reliable_lalm import paths
    from reliable_lalm.demo.train import DemoLoss, micro_batches
    from reliable_lalm.training.loop import backward

    if not (paths.DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip("no shipped demo checkpoint")
    processor = AutoProcessor.from_pretrained(paths.DEMO_MODEL_DIR)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(paths.DEMO_MODEL_DIR, dtype=torch.float32)
    cfg, rng = DemoTrainConfig(), np.random.default_rng(3)
    fmts = ["baseline", "mcot", "agent_content", "idk", "baseline", "agent_type", "mcot"]
    examples = [make_example(f, *pool[i], rng, cfg, []) for i, f in enumerate(fmts)]
    tok = processor.tokenizer
    # The audio-to-answer loss on some of the examples (an item id without an entry adds nothing).
    answers = {ex.item_id: ([tok(c, add_special_tokens=False)["input_ids"][0] for c in pool[i][1]["choices"]],
                            list(pool[i][1]["choices"]).index(pool[i][1]["answer"]))
               for i, ex in enumerate(examples) if i % 2 == 0}
    for answer_weight in (0.0, 0.7):
        loss_module = DemoLoss(model, answer_weight)
        grads, losses = [], []
        for n in (1, 2, 3):
            model.zero_grad(set_to_none=True)
            batches = micro_batches(processor, examples, n, answers, answer_weight)
            assert len(batches) == n and sum(b.share for b in batches) == pytest.approx(1.0)
            losses.append(sum(backward(loss_module, b, len(batches)) for b in batches))
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5) == pytest.approx(losses[2], rel=1e-5)
        assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
        assert torch.allclose(grads[0], grads[2], rtol=1e-4, atol=1e-6)
        if not answer_weight:
            plain = losses[0]
    assert losses[0] > plain  # the auxiliary loss is on


def test_a_crashed_training_run_resumes_to_the_same_weights(tmp_path, one_torch_thread, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from reliable_lalm.demo import train as demo_train

    cfg = DemoTrainConfig(steps=4, batch_size=4, pool_per_task=2, warmup_steps=1, checkpoint_every=2, log_every=1,
                          threads=1, audio_pretrain_steps=2)
    whole = train_demo(tmp_path / "whole", cfg, progress=False)

    real_batches, calls = demo_train.micro_batches, []

    def crash_in_step_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_batches(*args, **kwargs)

    monkeypatch.setattr(demo_train, "micro_batches", crash_in_step_three)
    with pytest.raises(KeyboardInterrupt):
        train_demo(tmp_path / "resumed", cfg, progress=False)
    checkpoints = tmp_path / "resumed-work" / "checkpoints"
    assert [p.name for p in checkpoints.glob("step-*")] == ["step-0000002"]
    assert json.loads((checkpoints / "step-0000002" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(demo_train, "micro_batches", real_batches)
    resumed = train_demo(tmp_path / "resumed", cfg, progress=False)

    wa, wb = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log_whole = json.loads((whole / "training.json").read_text())["log"]
    log_resumed = json.loads((resumed / "training.json").read_text())["log"]
    assert [(r["step"], r["loss"]) for r in log_whole] == [(r["step"], r["loss"]) for r in log_resumed]
