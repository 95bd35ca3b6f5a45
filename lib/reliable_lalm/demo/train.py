"""Training recipe of the embedded demo model (``rlalm demo train``).

The demo model learns, from the synthetic benchmark's *training* generator (never the test split),
every behaviour the notebooks exercise, in the very prompt formats used at evaluation:

- multiple-choice answers with the baseline prompt (paper Table 4);
- the IDK prompt (Table 5): the answer, or ``IDK`` on a share of unanswerable clips (the
  question's audio replaced by noise) and of *hard* items (the benchmark's noisiest, subtlest
  level), so that training-free IDK prompting has something to act on and its refusals follow
  difficulty, as an instruction-tuned LALM's do;
- the audio type (task agent step 1), a content description (step 2), the answer given the
  content (step 3);
- a step-by-step answer for the MCoT prompt (Table 6).

Partial knowledge comes from the benchmark's difficulty (noise, subtlety), not from undertraining:
the training runs long enough for easy items to saturate.

The run is resumable: a checkpoint (model, optimizer, scheduler, RNG states, step) is written every
``checkpoint_every`` steps and picked up by the same command after a crash.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reliable_lalm.core import prompts
from reliable_lalm.core.items import TASKS
from reliable_lalm.training.sft_data import SFTExample, collate_sft

IDK_TARGET = "IDK"
FORMATS = ("baseline", "idk", "mcot", "agent_type", "agent_content", "agent_answer")


@dataclass
class DemoTrainConfig:
    seed: int = 0
    steps: int = 3300
    batch_size: int = 32
    # Each batch runs as this many micro-batches of similar length (gradients accumulated): MCoT
    # prompts are ~2x longer than the rest, and padding every row to them wastes ~20% of a step.
    micro_batches: int = 2
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 150
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    pool_per_task: int = 3000  # training items generated once per modality, reused across formats
    pool_seed: int = 777  # generator seed of the training pool (the test split uses its own seed)
    # Share of each prompt format in a batch.
    mix: dict[str, float] = field(default_factory=lambda: {
        "baseline": 0.45, "idk": 0.15, "mcot": 0.08,
        "agent_type": 0.07, "agent_content": 0.15, "agent_answer": 0.10,
    })
    unanswerable_share: float = 0.25  # of IDK-instructed examples whose audio is replaced by noise
    # Of IDK-instructed examples on hard items, the share whose target is IDK (the rest: the answer).
    # Below one half, so the model refuses a hard item only when no option is likely enough.
    hard_idk_share: float = 0.35
    mcot_few_shot: int = 1  # few-shot examples shown in MCoT prompts (kept short: 4 s clips, tiny model)
    checkpoint_every: int = 250
    threads: int = 2
    log_every: int = 50

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mcot_target(record: dict[str, Any], answer: str) -> str:
    """The step-by-step answer the demo learns for the MCoT prompt."""
    return f"This is {record['audio_type'].lower()}: {record['content']}. {record['reasoning']} So the answer is {answer}"


def few_shot_examples(pool: list[tuple[np.ndarray, dict]], n: int) -> list[prompts.FewShotExample]:
    """Fixed few-shot examples for MCoT, taken from the training pool (never the test split)."""
    out = []
    for _, record in pool[:n]:
        out.append(prompts.FewShotExample(question=record["question"], choices=tuple(record["choices"]),
                                          reasoning=mcot_target(record, record["answer"]),
                                          answer=record["answer"]))
    return out


def _noise_like(rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
    """An unanswerable clip: the question's audio buried under coloured noise (or noise alone).

    Half of these keep the signal 20-35 dB below the noise, so what the model learns to refuse
    resembles the benchmark's hardest (noisiest) items rather than only pure noise.
    """
    from scipy.signal import lfilter

    white = rng.standard_normal(len(audio)).astype(np.float32)
    alpha = rng.uniform(0.0, 0.95)  # one-pole low-pass: from white to strongly coloured noise
    noise = lfilter([1 - alpha], [1, -alpha], white).astype(np.float32)
    noise /= np.sqrt(np.mean(noise ** 2)) + 1e-8
    if rng.random() < 0.5:
        signal_rms = np.sqrt(np.mean(audio ** 2)) + 1e-8
        snr_db = rng.uniform(-35.0, -20.0)
        noise = audio / signal_rms * 10 ** (snr_db / 20) + noise
    return (noise * (0.5 / (np.abs(noise).max() + 1e-8))).astype(np.float32)


def make_example(fmt: str, audio: np.ndarray, record: dict[str, Any], rng: np.random.Generator,
                 cfg: DemoTrainConfig, few_shot: list[prompts.FewShotExample]) -> SFTExample:
    question, choices, answer = record["question"], list(record["choices"]), record["answer"]
    item_id = record["id"]
    if fmt == "baseline":
        return SFTExample(audio, prompts.build_prompt("baseline", question, choices), answer, item_id)
    if fmt in ("idk", "mcot"):
        prompt = (prompts.build_prompt("idk", question, choices) if fmt == "idk"
                  else prompts.build_prompt("mcot", question, choices, few_shot=few_shot))
        refusal = IDK_TARGET if fmt == "idk" else f"The audio is unclear. {IDK_TARGET}"
        if rng.random() < cfg.unanswerable_share:
            return SFTExample(_noise_like(rng, audio), prompt, refusal, item_id)
        # Draw for every item (not only hard ones) so the RNG stream does not depend on difficulty.
        refuse_hard = rng.random() < cfg.hard_idk_share
        if refuse_hard and record.get("difficulty") == "hard":
            return SFTExample(audio, prompt, refusal, item_id)
        return SFTExample(audio, prompt, answer if fmt == "idk" else mcot_target(record, answer), item_id)
    if fmt == "agent_type":
        return SFTExample(audio, prompts.agent_type_prompt(), record["audio_type"], item_id)
    if fmt == "agent_content":
        return SFTExample(audio, prompts.agent_content_prompt(record["audio_type"]), record["content"], item_id)
    if fmt == "agent_answer":
        prompt = prompts.agent_answer_prompt(record["audio_type"], record["content"], question, choices)
        return SFTExample(audio, prompt, answer, item_id)
    raise ValueError(f"unknown training format {fmt!r}")


def build_pool(cfg: DemoTrainConfig, *, progress: bool = True) -> list[tuple[np.ndarray, dict]]:
    """Training items from the synthetic generator, interleaved across modalities."""
    from tqdm.auto import tqdm

    from reliable_lalm.demo import synthetic

    rng = np.random.default_rng(cfg.pool_seed)
    pool: list[tuple[np.ndarray, dict]] = []
    for i in tqdm(range(cfg.pool_per_task), desc="demo training pool", disable=not progress):
        for task in TASKS:
            audio, record = synthetic.generate_item(rng, task)
            record = dict(record, id=f"demo-train-{task}-{i:05d}", split="demo-train")
            pool.append((audio, record))
    return pool


def tokenizer_corpus(pool: list[tuple[np.ndarray, dict]], few_shot: list[prompts.FewShotExample]) -> list[str]:
    """Every text the model will read or write, for training the BPE tokenizer."""
    texts = ["You are a helpful assistant.", "system", "user", "assistant", "Audio 1: ", IDK_TARGET,
             prompts.agent_type_prompt()]
    for _, record in pool:
        q, c, a = record["question"], list(record["choices"]), record["answer"]
        texts += [prompts.build_prompt("idk", q, c), prompts.build_prompt("mcot", q, c, few_shot=few_shot),
                  prompts.agent_content_prompt(record["audio_type"]),
                  prompts.agent_answer_prompt(record["audio_type"], record["content"], q, c),
                  mcot_target(record, a)]
    return texts


def per_example_loss(logits, labels):
    """Cross-entropy averaged over each example's target tokens, then over the batch.

    The usual token-level mean lets long targets (content descriptions, chain-of-thought) drown the
    one- or two-token multiple-choice answers; weighting examples equally keeps the answers, which
    every notebook scores, in the gradient.
    """
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    token_loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.clamp_min(0).reshape(-1), reduction="none",
    ).view_as(shift_labels) * mask
    per_example = token_loss.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    return per_example.mean()


def _length_buckets(examples: list[SFTExample], n: int) -> list[list[SFTExample]]:
    """``n`` groups of examples of similar text length (characters: a cheap proxy for tokens)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt) + len(examples[i].target))
    size = math.ceil(len(examples) / max(1, n))
    return [[examples[i] for i in order[k:k + size]] for k in range(0, len(order), size)]


def accumulate_gradients(model, processor, examples: list[SFTExample], micro_batches: int) -> float:
    """Backpropagate the batch's loss (mean over its examples) in length-grouped micro-batches;
    returns the loss."""
    value = 0.0
    for chunk in _length_buckets(examples, micro_batches):
        batch = collate_sft(processor, chunk)
        labels = batch.pop("labels")
        loss = per_example_loss(model(**batch).logits, labels) * (len(chunk) / len(examples))
        loss.backward()
        value += float(loss.detach())
    return value


def _lr_at(step: int, cfg: DemoTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def train_demo(out_dir: str | Path, cfg: DemoTrainConfig | None = None, *, work_dir: str | Path | None = None,
               progress: bool = True) -> Path:
    """Build the tokenizer and model, train them, and save the checkpoint to ``out_dir``.

    ``work_dir`` keeps resumable checkpoints (default: ``out_dir/../<name>-work``).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from reliable_lalm.demo import model as demo_model

    cfg = cfg or DemoTrainConfig()
    out_dir = Path(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.parent / f"{out_dir.name}-work"
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    pool = build_pool(cfg, progress=progress)
    few_shot = few_shot_examples(pool, cfg.mcot_few_shot)
    init_dir = work_dir / "init"
    if not (init_dir / "config.json").exists():
        demo_model.create_untrained(init_dir, tokenizer_corpus(pool, few_shot), seed=cfg.seed)
    processor = AutoProcessor.from_pretrained(init_dir)
    ckpt_path = work_dir / "checkpoint.pt"
    model = Qwen2AudioForConditionalGeneration.from_pretrained(init_dir, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step = 0
    log: list[dict[str, Any]] = []
    running = None  # the logged loss is an EMA, resumed with the rest
    if ckpt_path.exists():
        from reliable_lalm.training.lora_sft import load_torch_state

        state = load_torch_state(ckpt_path)  # weights_only: a planted checkpoint.pt cannot run code
        if state["config"] != cfg.to_json():
            raise RuntimeError(f"{ckpt_path} was written with another training config; delete {work_dir} to restart")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step, log, running = state["step"], state["log"], state.get("running_loss")
    model.train()
    formats = list(cfg.mix)
    weights = np.array([cfg.mix[f] for f in formats], dtype=float)
    weights /= weights.sum()
    started = time.time()
    bar = tqdm(range(start_step, cfg.steps), desc="demo training", disable=not progress,
               initial=start_step, total=cfg.steps)
    for step in bar:
        # Per-step RNG from (seed, step): a resumed run draws exactly the batches it would have drawn.
        rng = np.random.default_rng([cfg.seed, step])
        picks = rng.integers(0, len(pool), size=cfg.batch_size)
        fmts = rng.choice(len(formats), size=cfg.batch_size, p=weights)
        examples = [make_example(formats[f], *pool[i], rng, cfg, few_shot) for i, f in zip(picks, fmts)]
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        value = accumulate_gradients(model, processor, examples, cfg.micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.set_postfix(loss=f"{running:.3f}")
        if (step + 1) % cfg.log_every == 0:
            log.append({"step": step + 1, "loss": running, "lr": _lr_at(step, cfg), "elapsed_s": time.time() - started})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                        "torch_rng": torch.get_rng_state(), "config": cfg.to_json(), "log": log,
                        "running_loss": running}, tmp)
            os.replace(tmp, ckpt_path)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "demo_config.json").write_text((init_dir / "demo_config.json").read_text())
    from reliable_lalm.demo import synthetic

    (out_dir / "training.json").write_text(json.dumps({
        "config": cfg.to_json(), "log": log, "generator_version": synthetic.GENERATOR_VERSION,
        "few_shot": [asdict(ex) for ex in few_shot],
    }, indent=2) + "\n")
    return out_dir
